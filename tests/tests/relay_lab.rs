//! The relay in a real network lab (see the crate docs): real `blixard
//! relay` and `blixard node` processes on hosts behind NAT routers, one or
//! both of which drop all UDP. An image uploaded on h1 is downloaded with
//! `blixard vm download` on h2; it can only go through the relay.

use std::{
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use blixard_tests::{b3_file, lab_or_skip, Host, Lab, LabProcess, Router, H1_IP, RELAY_IP};

const SIZE: usize = 64 << 20;

/// One lab at a time: they would share two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn write_image(path: &Path, size: usize) {
    blixard_tests::data::write_file(path, size as u64, 0x9e37);
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn start_relay(lab: &mut Lab, dir: &Path) -> LabProcess {
    let data = dir.join("relay");
    let relay = lab.start(
        Host::Relay,
        &["relay", "--bind", "0.0.0.0:3340", "--data-dir", data.to_str().unwrap(), "--metrics", "127.0.0.1:9100"],
    );
    assert!(relay.line.starts_with("blixard relay id="), "{}", relay.line);
    relay
}

fn start_node(lab: &mut Lab, host: Host, id: u64, dir: &Path, extra: &[&str]) -> LabProcess {
    let data = dir.join(format!("node-{id}"));
    let mut args = vec!["node", "--id", if id == 1 { "1" } else { "2" }, "--bind", "0.0.0.0:7001", "--data-dir"];
    args.push(data.to_str().unwrap());
    args.extend_from_slice(extra);
    lab.start(host, &args)
}

fn data_dir(dir: &Path, id: u64) -> String {
    dir.join(format!("node-{id}")).to_str().unwrap().to_string()
}

/// Waits until the node's status names its home relay.
fn wait_for_home(lab: &Lab, host: Host, dir: &Path, id: u64, relay: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lab.blixard(host, &["status", "--data-dir", &data_dir(dir, id)]);
        if text(&out).contains(&format!("relay     {relay}@")) {
            return;
        }
        assert!(Instant::now() < deadline, "node {id} has no home relay after 20 s:\n{}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Prometheus counter from a node's control API.
fn metric(lab: &Lab, host: Host, node: &LabProcess, name: &str) -> u64 {
    let port: u16 = node.field("control").rsplit(':').next().unwrap().parse().unwrap();
    let page = lab.http_get(host, port, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

struct Moved {
    relayed_in: u64,
    seconds: f64,
}

/// h1 uploads a 64 MiB image; h2, told only h1's private address and
/// relay, downloads it; checks the hash and the path, returns figures.
fn move_image(lab: &mut Lab, dir: &Path, h2_blocked: bool) -> Moved {
    let relay = start_relay(lab, dir);
    let relay_id = relay.field("id");
    let relay_addr = format!("{relay_id}@{RELAY_IP}:3340");
    assert!(lab.tcp_reaches(Host::H1, RELAY_IP, 3340), "h1 cannot reach the relay over TCP");
    // The lab as built: UDP from h1 is dropped; h2's passes its NAT.
    assert_eq!(lab.udp_probe(Host::H1, RELAY_IP, 3340), None, "UDP from h1 must be blocked");
    if !h2_blocked {
        let seen = lab.udp_probe(Host::H2, RELAY_IP, 3340).expect("the relay answers h2's UDP probe");
        assert_eq!(seen.ip().to_string(), "203.0.113.12", "h2 is behind nat2");
    } else {
        assert_eq!(lab.udp_probe(Host::H2, RELAY_IP, 3340), None, "UDP from h2 must be blocked");
    }
    assert!(!lab.tcp_reaches(Host::H2, H1_IP, 7001), "h1's private address must be unreachable from h2");

    let a = start_node(lab, Host::H1, 1, dir, &["--relay", &relay_addr]);
    wait_for_home(lab, Host::H1, dir, 1, &relay_id);
    let image = dir.join("image.img");
    write_image(&image, SIZE);
    let up = lab.blixard(
        Host::H1,
        &[
            "vm",
            "upload",
            "--name",
            "lab",
            "--version",
            "1",
            "--file",
            image.to_str().unwrap(),
            "--data-dir",
            &data_dir(dir, 1),
        ],
    );
    assert!(up.status.success(), "upload: {}", text(&up));

    let peer = format!("{}@{H1_IP}:7001,relay={relay_addr}", a.field("id"));
    let b = start_node(lab, Host::H2, 2, dir, &["--relay", &relay_addr, "--p2p-peer", &peer]);
    let out = dir.join("out.img");
    let started = Instant::now();
    let down = lab.blixard(
        Host::H2,
        &[
            "vm",
            "download",
            "--name",
            "lab",
            "--version",
            "1",
            "--output",
            out.to_str().unwrap(),
            "--data-dir",
            &data_dir(dir, 2),
        ],
    );
    let seconds = started.elapsed().as_secs_f64();
    assert!(down.status.success(), "download: {}", text(&down));
    assert_eq!(b3_file(&out), b3_file(&image), "the downloaded image differs");

    let peers = text(&lab.blixard(Host::H2, &["peers", "--data-dir", &data_dir(dir, 2)]));
    assert!(peers.contains(&format!("relay {relay_id}")), "h1 is not reached through the relay:\n{peers}");
    let relayed_in = metric(lab, Host::H2, &b, "blixard_p2p_relay_bytes_received_total");
    assert!(relayed_in >= SIZE as u64, "relayed bytes {relayed_in} < image size {SIZE}");
    let relayed_out = metric(lab, Host::H1, &a, "blixard_p2p_relay_bytes_sent_total");
    assert!(relayed_out >= SIZE as u64, "h1 sent {relayed_out} relayed bytes");
    eprintln!(
        "moved {SIZE} bytes through the relay in {seconds:.1} s; h2 received {relayed_in} relayed bytes, h1 sent {relayed_out}"
    );
    Moved { relayed_in, seconds }
}

#[test]
fn an_image_goes_through_the_relay_from_a_udp_blocked_host_to_a_natted_one() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab_or_skip("udp-blocked to NAT", Router::UDP_BLOCKED, Router::EIM) else { return };
    let dir = tempfile::tempdir().unwrap();
    let moved = move_image(&mut lab, dir.path(), false);
    assert!(moved.relayed_in > 0 && moved.seconds > 0.0);
}

#[test]
fn an_image_goes_through_the_relay_between_two_udp_blocked_hosts() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab_or_skip("both udp-blocked", Router::UDP_BLOCKED, Router::UDP_BLOCKED) else { return };
    let dir = tempfile::tempdir().unwrap();
    move_image(&mut lab, dir.path(), true);
}

#[test]
fn a_relay_restarted_mid_transfer_is_reconnected_and_the_download_completes() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = lab_or_skip("relay restart", Router::UDP_BLOCKED, Router::EIM) else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let relay = start_relay(&mut lab, dir);
    let relay_id = relay.field("id");
    let relay_addr = format!("{relay_id}@{RELAY_IP}:3340");
    // 80 Mbit/s: 64 MiB take ~7 s, time to restart the relay in between.
    let a = start_node(&mut lab, Host::H1, 1, dir, &["--relay", &relay_addr, "--bandwidth-limit-mbps", "80"]);
    wait_for_home(&lab, Host::H1, dir, 1, &relay_id);
    let image = dir.join("image.img");
    write_image(&image, SIZE);
    let up = lab.blixard(
        Host::H1,
        &[
            "vm",
            "upload",
            "--name",
            "lab",
            "--version",
            "1",
            "--file",
            image.to_str().unwrap(),
            "--data-dir",
            &data_dir(dir, 1),
        ],
    );
    assert!(up.status.success(), "upload: {}", text(&up));
    let peer = format!("{}@{H1_IP}:7001,relay={relay_addr}", a.field("id"));
    let b = start_node(&mut lab, Host::H2, 2, dir, &["--relay", &relay_addr, "--p2p-peer", &peer]);

    let out = dir.join("out.img");
    let download = {
        let (ns, out, data) = (lab.namespace(Host::H2), out.clone(), data_dir(dir, 2));
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(blixard_tests::blixard_bin())
                .args(["vm", "download", "--name", "lab", "--version", "1", "--output"])
                .arg(&out)
                .args(["--data-dir", &data])
                .output()
                .unwrap()
        })
    };
    // Wait until part of it arrived, then kill the relay.
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let got = metric(&lab, Host::H2, &b, "blixard_p2p_bytes_received");
        if got >= 8 << 20 {
            break got;
        }
        assert!(Instant::now() < deadline, "the download did not start through the relay");
        std::thread::sleep(Duration::from_millis(100));
    };
    lab.kill(&relay);
    std::thread::sleep(Duration::from_secs(2));
    let during = metric(&lab, Host::H2, &b, "blixard_p2p_bytes_received");
    let restarted = start_relay(&mut lab, dir);
    assert_eq!(restarted.field("id"), relay_id, "the relay keeps its identity across restarts");
    let done = download.join().unwrap();
    assert!(done.status.success(), "download: {}", text(&done));
    assert_eq!(b3_file(&out), b3_file(&image), "the downloaded image differs");
    assert!(at_kill < SIZE as u64, "the relay was killed after the download ended");
    eprintln!(
        "relay killed with {at_kill} of {SIZE} bytes received ({during} two seconds later, relay down); \
         the download completed after the restart"
    );
}
