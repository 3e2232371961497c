//! A network lab for tests that need real networks: Linux network
//! namespaces joined by veth pairs, two NAT routers (nftables) with a host
//! behind each, and a relay host, all on a simulated public segment (a
//! bridge). Built from `../shared/tools/natlab.sh`:
//!
//! ```text
//! h1 (10.0.1.2) -- nat1 (10.0.1.1 | 203.0.113.11) --+
//!                                                   +-- br0 in "pub" (203.0.113.1)
//! h2 (10.0.2.2) -- nat2 (10.0.2.1 | 203.0.113.12) --+
//!                         relay (203.0.113.10) -----+
//! ```
//!
//! Nothing is routable but the public /24, so a host's private address is
//! unreachable from the other host, and traffic never leaves the lab. A
//! router may also drop every UDP datagram its host sends (a firewall that
//! lets only TCP out). [`Lab`] removes its namespaces and kills what runs
//! in them when dropped, so a failing test cleans up too.
//!
//! It needs root, `ip` and `nft`; [`unavailable`] says why not, and
//! tests skip with that reason (or fail, with `BLIXARD_LAB_REQUIRED=1`, as
//! CI sets, so the lab cannot silently stop running).
//!
//! Beside the lab, what every crate's tests share: [`data`] (deterministic
//! test bytes) and [`tools`] (external checkers, required in CI).

pub mod data;
pub mod tools;

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// The relay host's public address.
pub const RELAY_IP: &str = "203.0.113.10";
/// The first host's private address (behind nat1).
pub const H1_IP: &str = "10.0.1.2";
/// The second host's private address (behind nat2).
pub const H2_IP: &str = "10.0.2.2";

/// A host in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Behind nat1.
    H1,
    /// Behind nat2.
    H2,
    /// On the public segment.
    Relay,
}

/// How a NAT router maps its host's outgoing flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Plain masquerade: the source port kept when free (endpoint-
    /// independent mapping, address- and port-dependent filtering).
    Eim,
    /// `masquerade random`: a new port per destination.
    Symmetric,
}

/// One router's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Router {
    /// Its NAT.
    pub nat: Nat,
    /// Drop every UDP datagram from its host (TCP still passes).
    pub block_udp: bool,
}

impl Router {
    /// A NAT with endpoint-independent mapping, UDP allowed.
    pub const EIM: Router = Router { nat: Nat::Eim, block_udp: false };
    /// A NAT that lets only TCP out.
    pub const UDP_BLOCKED: Router = Router { nat: Nat::Eim, block_udp: true };
}

/// Why the lab cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the network-namespace lab needs root (CI runs it as root)".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if found.is_err() {
            return Some(format!("`{tool}` is not installed (apt-get install iproute2 nftables)"));
        }
    }
    None
}

/// Returns a lab, or `None` after printing why the calling test is
/// skipped (panics instead when `BLIXARD_LAB_REQUIRED` is set).
pub fn lab_or_skip(test: &str, nat1: Router, nat2: Router) -> Option<Lab> {
    if let Some(why) = unavailable() {
        if std::env::var_os("BLIXARD_LAB_REQUIRED").is_some() {
            panic!("{test}: BLIXARD_LAB_REQUIRED is set but {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    Some(Lab::up(nat1, nat2).unwrap_or_else(|e| panic!("{test}: cannot build the lab: {e}")))
}

/// The `blixard` binary of this build (next to the test's own directory).
pub fn blixard_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").join("blixard");
    assert!(bin.exists(), "{} is missing: build it first (cargo build -p blixard-node --bin blixard)", bin.display());
    bin
}

/// A running lab; dropped, it kills its processes and removes its
/// namespaces.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

/// A process started in the lab; killed with the lab, or earlier with
/// [`Lab::kill`].
pub struct LabProcess {
    /// The first line it printed.
    pub line: String,
    index: usize,
}

impl LabProcess {
    /// The value of `name=` in its first line.
    pub fn field(&self, name: &str) -> String {
        let key = format!("{name}=");
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.line))
            .to_string()
    }
}

static LABS: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out)
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// The namespace a host runs in.
    pub fn namespace(&self, host: Host) -> String {
        self.ns(match host {
            Host::H1 => "h1",
            Host::H2 => "h2",
            Host::Relay => "r",
        })
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").args(args)).map(|_| ())
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Result<Output, String> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    fn nft(&self, ns: &str, rules: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        child.stdin.take().expect("piped").write_all(rules.as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    /// Builds the lab with these routers in front of h1 and h2.
    pub fn up(nat1: Router, nat2: Router) -> Result<Lab, String> {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("bx{}-{n}-", std::process::id() % 100_000);
        let mut lab = Lab { prefix, namespaces: Vec::new(), children: Vec::new() };
        lab.build(nat1, nat2)?;
        Ok(lab)
    }

    fn build(&mut self, nat1: Router, nat2: Router) -> Result<(), String> {
        for host in ["pub", "r", "nat1", "nat2", "h1", "h2"] {
            let ns = self.ns(host);
            let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
            self.ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // IPv4 only: no IPv6 or duplicate-address detection noise.
            self.exec(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        }
        let (public, r, n1, n2, h1, h2) =
            (self.ns("pub"), self.ns("r"), self.ns("nat1"), self.ns("nat2"), self.ns("h1"), self.ns("h2"));
        self.ip(&["-n", &public, "link", "add", "br0", "type", "bridge"])?;
        self.ip(&["-n", &public, "addr", "add", "203.0.113.1/24", "dev", "br0"])?;
        self.ip(&["-n", &public, "link", "set", "br0", "up"])?;
        // Bridged frames must not pass pub's IP hooks (br_netfilter).
        let _ = self.exec(&public, &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"]);
        for (ns, port, ip, dev) in [
            (&r, "p-r", "203.0.113.10", "eth0"),
            (&n1, "p-n1", "203.0.113.11", "wan"),
            (&n2, "p-n2", "203.0.113.12", "wan"),
        ] {
            self.ip(&["link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", &public])?;
            self.ip(&["-n", &public, "link", "set", port, "master", "br0", "up"])?;
            self.ip(&["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev])?;
            self.ip(&["-n", ns, "link", "set", dev, "up"])?;
            self.ip(&["-n", ns, "route", "add", "default", "via", "203.0.113.1"])?;
        }
        for (router, host, net) in [(&n1, &h1, "10.0.1"), (&n2, &h2, "10.0.2")] {
            self.ip(&["link", "add", "lan", "netns", router, "type", "veth", "peer", "name", "eth0", "netns", host])?;
            self.ip(&["-n", router, "addr", "add", &format!("{net}.1/24"), "dev", "lan"])?;
            self.ip(&["-n", router, "link", "set", "lan", "up"])?;
            self.ip(&["-n", host, "addr", "add", &format!("{net}.2/24"), "dev", "eth0"])?;
            self.ip(&["-n", host, "link", "set", "eth0", "up"])?;
            self.ip(&["-n", host, "route", "add", "default", "via", &format!("{net}.1")])?;
            self.exec(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        self.nft(&n1, &router_rules(nat1))?;
        self.nft(&n2, &router_rules(nat2))?;
        Ok(())
    }

    /// Starts `blixard ARGS` on `host` and waits for its first line of
    /// output (a node's or relay's "ready" line).
    pub fn start(&mut self, host: Host, args: &[&str]) -> LabProcess {
        let ns = self.namespace(host);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(blixard_bin())
            .args(args)
            .env_remove("BLIXARD_P2P_PORT")
            .env_remove("BLIXARD_P2P_CACHE_DIR")
            .env_remove("BLIXARD_P2P_RELAY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start blixard in the lab");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("read its first line");
        assert!(!line.is_empty(), "blixard {args:?} on {host:?} exited without a line");
        self.children.push(child);
        LabProcess { line, index: self.children.len() - 1 }
    }

    /// Kills a process started with [`Lab::start`] (SIGKILL).
    pub fn kill(&mut self, p: &LabProcess) {
        let child = &mut self.children[p.index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Runs `blixard ARGS` on `host` to completion.
    pub fn blixard(&self, host: Host, args: &[&str]) -> Output {
        let ns = self.namespace(host);
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(blixard_bin())
            .args(args)
            .env_remove("BLIXARD_P2P_CACHE_DIR")
            .output()
            .expect("run blixard in the lab")
    }

    /// `GET path` from a TCP port on `host`'s loopback (bash's /dev/tcp:
    /// no HTTP client needed), the whole answer.
    pub fn http_get(&self, host: Host, port: u16, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3; cat <&3"
        );
        let out = self.exec(&self.namespace(host), &["bash", "-c", &script]).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends the relay's UDP echo probe (`docs/RELAY.md`) from `host` to
    /// `ip:port` and returns the source address the relay saw, or `None`
    /// if no answer came within a second (UDP blocked on the way).
    pub fn udp_probe(&self, host: Host, ip: &str, port: u16) -> Option<std::net::SocketAddr> {
        let request = format!("\\x20BXP{}{}", "a".repeat(12), "\\x00".repeat(20));
        let script =
            format!("exec 3<>/dev/udp/{ip}/{port}; printf '{request}' >&3; timeout 1 head -c 23 <&3 | od -An -v -tx1");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.namespace(host), "bash", "-c", &script])
            .output()
            .expect("run bash in the lab");
        let bytes: Vec<u8> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect();
        // 0x21 "BXP", txid, family 4, port, address.
        if bytes.len() != 23 || bytes[0] != 0x21 || bytes[16] != 4 {
            return None;
        }
        let port = u16::from_be_bytes([bytes[17], bytes[18]]);
        Some(std::net::SocketAddr::from(([bytes[19], bytes[20], bytes[21], bytes[22]], port)))
    }

    /// Whether `host` can open a TCP connection to `ip:port`, trying for
    /// at most two seconds (a check of the lab itself).
    pub fn tcp_reaches(&self, host: Host, ip: &str, port: u16) -> bool {
        let script = format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{ip}/{port}'");
        self.exec(&self.namespace(host), &["bash", "-c", &script]).is_ok()
    }
}

fn router_rules(r: Router) -> String {
    let masquerade = match r.nat {
        Nat::Eim => "masquerade",
        Nat::Symmetric => "masquerade random",
    };
    let block = if r.block_udp { "iifname \"lan\" meta l4proto udp drop" } else { "" };
    // Unsolicited traffic to the router itself is dropped: an accepted one
    // would leave a conntrack entry that makes masquerade pick another port.
    format!(
        r#"table ip lab {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" {masquerade}
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    {block}
    iifname "lan" oifname "wan" accept
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }}
}}
"#
    )
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything else still running in it goes too.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// BLAKE3 of a file, hex.
pub fn b3_file(path: &std::path::Path) -> String {
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut std::fs::File::open(path).expect("open the file"), &mut h).expect("hash the file");
    h.finalize().to_hex().to_string()
}
