//! `blixard`: the Blixard P2P command-line tool.

mod bench;
mod cli;
mod daemon;
mod demo;
mod swarm_bench;
mod transfer_bench;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use blixard_protocol::NodeAddr;
use blixard_store::ImportMode;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "blixard", version, about = "Blixard P2P: verified, resumable content-addressed transfer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: serve its store to peers, download through the queue,
    /// answer the control API.
    Node {
        /// Numeric node id (names the default data dir).
        #[arg(long)]
        id: u64,
        /// UDP address to listen on; BLIXARD_P2P_PORT overrides its port. The
        /// control API listens on TCP 127.0.0.1 at the same port (or a free one).
        #[arg(long, default_value = "0.0.0.0:7001")]
        bind: SocketAddr,
        /// Accepted for compatibility: P2P is always on.
        #[arg(long)]
        enable_p2p: bool,
        /// A peer to reach at start: HOST:PORT or NODE_ID@HOST:PORT (repeatable).
        #[arg(long = "p2p-peer")]
        p2p_peers: Vec<NodeAddr>,
        /// Data directory (identity key, store, control file); default ./blixard-data/node-ID.
        #[arg(long, env = "BLIXARD_P2P_CACHE_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML file of P2pConfig settings; the flags below win over it.
        #[arg(long, env = "BLIXARD_CONFIG")]
        config: Option<PathBuf>,
        /// Downloads running at once (default 3).
        #[arg(long, env = "BLIXARD_P2P_MAX_CONCURRENT_TRANSFERS")]
        max_concurrent_transfers: Option<usize>,
        /// Seconds before a download attempt fails (default 300).
        #[arg(long, env = "BLIXARD_P2P_TRANSFER_TIMEOUT")]
        transfer_timeout: Option<f64>,
        /// Retries of a failed download or dial (default 3).
        #[arg(long, env = "BLIXARD_P2P_MAX_RETRY_ATTEMPTS")]
        max_retry_attempts: Option<u32>,
        /// Seconds between peer exchanges (default 30).
        #[arg(long, env = "BLIXARD_P2P_DISCOVERY_INTERVAL")]
        peer_discovery_interval: Option<f64>,
        /// Seconds between health pings (default 60).
        #[arg(long, env = "BLIXARD_P2P_HEALTH_INTERVAL")]
        health_check_interval: Option<f64>,
        /// Upload and download limit, megabits per second (default unlimited).
        #[arg(long, env = "BLIXARD_P2P_BANDWIDTH_LIMIT_MBPS")]
        bandwidth_limit_mbps: Option<f64>,
        /// Only these node ids may connect (repeatable; default: anyone).
        #[arg(long = "allow")]
        allow: Vec<blixard_protocol::NodeId>,
        /// Trust this publisher to name resources (repeatable; configured
        /// peers, the allowlist and this node are trusted already).
        #[arg(long = "trust", env = "BLIXARD_P2P_TRUST", value_delimiter = ',')]
        trust: Vec<blixard_protocol::NodeId>,
    },
    /// VM images: upload into a node, download through its peers, list.
    Vm {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: VmCommand,
    },
    /// The peers a node knows.
    Peers {
        #[command(flatten)]
        target: Target,
    },
    /// A node's status.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Check every blob at rest (complete and partial) against its tree;
    /// exits 1 if any is damaged and not repaired.
    Verify {
        #[command(flatten)]
        target: Target,
        /// Turn damaged groups back into missing ones, so the next download
        /// fetches them from peers.
        #[arg(long)]
        repair: bool,
    },
    /// See it work: three nodes in this process, an image uploaded on two
    /// and downloaded, verified, on the third from both. Cleans up after.
    Demo {
        /// Size of the generated image.
        #[arg(long, default_value = "256MiB", value_parser = bench::parse_size)]
        size: u64,
    },
    /// Check a peer against the protocol specification; exits non-zero on any failure.
    Conformance {
        /// The peer: NODE_ID@HOST:PORT.
        peer: NodeAddr,
        /// The blob to fetch (hex hash); default: the first resource the peer lists.
        #[arg(long)]
        hash: Option<blixard_store::Hash>,
    },
    /// Measure throughput against baselines in the same run.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
}

/// Which running node a client command drives.
#[derive(clap::Args)]
struct Target {
    /// The node's id: its data dir is ./blixard-data/node-ID.
    #[arg(long, env = "BLIXARD_NODE", default_value_t = 1, global = true)]
    node: u64,
    /// The node's data dir (wins over --node).
    #[arg(long, env = "BLIXARD_P2P_CACHE_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

impl Target {
    fn control(&self) -> Result<cli::Control> {
        let dir = self.data_dir.clone().unwrap_or_else(|| default_data_dir(self.node));
        cli::Control::find(&dir)
    }
}

fn default_data_dir(id: u64) -> PathBuf {
    PathBuf::from(format!("blixard-data/node-{id}"))
}

#[derive(Subcommand)]
enum VmCommand {
    /// Import a VM image file into the node and publish it to peers.
    Upload {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Download a VM image through the node's peers, verified.
    Download {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// low, normal, high or critical.
        #[arg(long, default_value = "normal")]
        priority: blixard_node::TransferPriority,
        /// Also write the image to this file (verified as it is written).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Replace an existing --output file (a link there is replaced, not followed).
        #[arg(long)]
        force: bool,
        /// Download this blob (hex hash) under the name, whoever claims it:
        /// picks one of several claims, or an untrusted publisher's.
        #[arg(long)]
        hash: Option<blixard_store::Hash>,
    },
    /// VM images on the node (and, with --remote, on its peers).
    List {
        #[arg(long)]
        remote: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Copy,
    Reference,
    Both,
}

#[derive(Subcommand)]
enum BenchScenario {
    /// Import a file into a fresh store vs BLAKE3 (mmap + update_rayon) of the same file.
    Import {
        /// Size of the generated input (ignored with --file).
        #[arg(long, default_value = "1GiB", value_parser = bench::parse_size)]
        size: u64,
        /// Import this file instead of a generated one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Import mode.
        #[arg(long, value_enum, default_value = "both")]
        mode: ModeArg,
        /// Runs per mode; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Directory for the generated file and stores.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Get a blob between two processes on loopback vs a raw quinn stream.
    Transfer {
        /// Size of the generated blob (ignored with --file).
        #[arg(long, default_value = "1GiB", value_parser = bench::parse_size)]
        size: u64,
        /// Transfer this file instead of a generated one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Runs of each, interleaved; medians are reported. A VM's speed can
        /// drift from run to run, so fewer than 5 say little.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Directory for the generated file and stores.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One seeder and N leechers, every node bandwidth-limited: time until
    /// all leechers are done vs one source at that limit (N x size / limit).
    Swarm {
        /// Size of the generated image.
        #[arg(long, default_value = "256MiB", value_parser = bench::parse_size)]
        size: u64,
        /// Leechers.
        #[arg(long, default_value_t = 4)]
        peers: usize,
        /// Every node's upload (and download) limit, megabits per second.
        #[arg(long, default_value_t = 200.0)]
        upload_limit_mbps: f64,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The serving side of `bench transfer` (started by it).
    #[command(hide = true)]
    TransferServer {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`blixard bench ... |
/// head`) panics. Commands that print restore the default: they end quietly
/// when the reader goes away, as other Unix tools do. The daemon keeps
/// ignoring it.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default, before any
    // other thread of ours could rely on it being ignored (sockets send with
    // MSG_NOSIGNAL anyway).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. }) {
        restore_sigpipe();
    }
    match cli.command {
        Command::Node {
            id,
            mut bind,
            enable_p2p: _,
            p2p_peers,
            data_dir,
            config,
            max_concurrent_transfers,
            transfer_timeout,
            max_retry_attempts,
            peer_discovery_interval,
            health_check_interval,
            bandwidth_limit_mbps,
            allow,
            trust,
        } => {
            if let Ok(port) = std::env::var("BLIXARD_P2P_PORT") {
                bind.set_port(port.parse().with_context(|| format!("BLIXARD_P2P_PORT={port:?} is not a port"))?);
            }
            let mut c = match &config {
                Some(path) => blixard_node::P2pConfig::from_toml_file(path)?,
                None => blixard_node::P2pConfig::default(),
            };
            let secs = |s: f64| Duration::try_from_secs_f64(s).context("a duration in seconds");
            if let Some(v) = max_concurrent_transfers {
                c.max_concurrent_transfers = v;
            }
            if let Some(v) = transfer_timeout {
                c.transfer_timeout = secs(v)?;
            }
            if let Some(v) = max_retry_attempts {
                c.max_retry_attempts = v;
            }
            if let Some(v) = peer_discovery_interval {
                c.peer_discovery_interval = secs(v)?;
            }
            if let Some(v) = health_check_interval {
                c.health_check_interval = secs(v)?;
            }
            if bandwidth_limit_mbps.is_some() {
                c.bandwidth_limit_mbps = bandwidth_limit_mbps;
            }
            if !allow.is_empty() {
                c.allowlist = Some(allow);
            }
            if !trust.is_empty() {
                c.trust = trust;
            }
            c.validate()?;
            let data_dir = data_dir.unwrap_or_else(|| default_data_dir(id));
            daemon::run(daemon::NodeArgs { id, bind, data_dir, peers: p2p_peers, config: c }).await?;
        }
        Command::Vm { target, command } => {
            tokio::task::spawn_blocking(move || -> Result<()> {
                let node = target.control()?;
                match command {
                    VmCommand::Upload { name, version, file } => cli::upload(&node, &name, &version, &file),
                    VmCommand::Download { name, version, priority, output, force, hash } => {
                        cli::download(&node, &name, &version, priority, output.as_deref(), force, hash)
                    }
                    VmCommand::List { remote } => cli::list(&node, remote),
                }
            })
            .await??;
        }
        Command::Peers { target } => tokio::task::spawn_blocking(move || cli::peers(&target.control()?)).await??,
        Command::Status { target } => tokio::task::spawn_blocking(move || cli::status(&target.control()?)).await??,
        Command::Verify { target, repair } => {
            tokio::task::spawn_blocking(move || cli::verify(&target.control()?, repair)).await??
        }
        Command::Demo { size } => demo::run(size).await?,
        Command::Conformance { peer, hash } => {
            let (Some(id), Some(&addr)) = (peer.id, peer.direct_addrs.first()) else {
                bail!("conformance needs the peer's identity and a direct address: NODE_ID@HOST:PORT, not {peer}");
            };
            let scratch = tempfile::Builder::new().prefix("blixard-conformance-").tempdir()?;
            let report = blixard_protocol::conformance::run(id, addr, hash, scratch.path()).await;
            print!("{}", report.table());
            if !report.passed() {
                std::process::exit(1);
            }
        }
        Command::Bench { scenario: BenchScenario::Transfer { size, file, runs, dir, json } } => {
            let figures =
                transfer_bench::run(transfer_bench::TransferArgs { size, file, runs: runs.max(1), dir }).await?;
            for f in figures {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::Swarm { size, peers, upload_limit_mbps, json } } => {
            let figures =
                swarm_bench::run(swarm_bench::SwarmArgs { size, peers, limit_mbps: upload_limit_mbps }).await?;
            for f in figures {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::TransferServer { file, dir } } => {
            transfer_bench::serve_child(file, dir).await?;
        }
        Command::Bench { scenario: BenchScenario::Import { size, file, mode, runs, dir, json } } => {
            let modes = match mode {
                ModeArg::Copy => vec![ImportMode::Copy],
                ModeArg::Reference => vec![ImportMode::Reference],
                ModeArg::Both => vec![ImportMode::Reference, ImportMode::Copy],
            };
            let figures = bench::import(bench::ImportArgs { size, file, modes, runs: runs.max(1), dir }).await?;
            for f in figures {
                f.print(json);
            }
        }
    }
    Ok(())
}
