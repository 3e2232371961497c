//! `blixard`: the Blixard P2P command-line tool.

mod bench;
mod daemon;
mod transfer_bench;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context, Result};
use blixard_protocol::PeerAddr;
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
    /// Run a node: serve this node's store to peers over QUIC.
    Node {
        /// Numeric node id (names the default data dir).
        #[arg(long)]
        id: u64,
        /// UDP address to listen on; BLIXARD_P2P_PORT overrides its port.
        #[arg(long, default_value = "0.0.0.0:7001")]
        bind: SocketAddr,
        /// Accepted for compatibility: P2P is always on.
        #[arg(long)]
        enable_p2p: bool,
        /// A peer to reach at start: ADDR or NODE_ID@ADDR (repeatable).
        #[arg(long = "p2p-peer")]
        p2p_peers: Vec<PeerAddr>,
        /// Data directory (identity key and store); default ./blixard-data/node-ID.
        #[arg(long, env = "BLIXARD_P2P_CACHE_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check a peer against the protocol specification; exits non-zero on any failure.
    Conformance {
        /// The peer: NODE_ID@HOST:PORT.
        peer: PeerAddr,
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
        /// Runs of each; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Directory for the generated file and stores.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
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

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Node { id, mut bind, enable_p2p: _, p2p_peers, data_dir } => {
            if let Ok(port) = std::env::var("BLIXARD_P2P_PORT") {
                bind.set_port(port.parse().with_context(|| format!("BLIXARD_P2P_PORT={port:?} is not a port"))?);
            }
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("blixard-data/node-{id}")));
            daemon::run(daemon::NodeArgs { id, bind, data_dir, peers: p2p_peers }).await?;
        }
        Command::Conformance { peer, hash } => {
            let Some(id) = peer.id else {
                bail!("conformance needs the peer's identity: NODE_ID@{}", peer.addr);
            };
            let scratch = tempfile::Builder::new().prefix("blixard-conformance-").tempdir()?;
            let report = blixard_protocol::conformance::run(id, peer.addr, hash, scratch.path()).await;
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
