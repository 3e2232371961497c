//! The command line as clap reads it: commands, their flags and
//! environment variables, and the checks on their values.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use blixard_protocol::NodeAddr;
use clap::{Parser, Subcommand, ValueEnum};

use crate::{bench, cli};

#[derive(Parser)]
#[command(name = "blixard", version, about = "Blixard P2P: verified, resumable content-addressed transfer")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Changes to a transfer.
#[derive(Subcommand, Debug)]
pub(crate) enum TransfersCommand {
    /// Give a queued or running transfer a new priority (a queued one
    /// takes its new place at once).
    Priority {
        /// The transfer, as `blixard transfers` shows it.
        id: blixard_node::TransferId,
        /// low, normal, high or critical.
        priority: blixard_node::TransferPriority,
    },
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        #[arg(long, env = "BLIXARD_P2P_MAX_CONCURRENT_TRANSFERS", allow_negative_numbers = true, value_parser = at_least_one)]
        max_concurrent_transfers: Option<usize>,
        /// Seconds before a download attempt fails (default 300).
        #[arg(long, env = "BLIXARD_P2P_TRANSFER_TIMEOUT", allow_negative_numbers = true, value_parser = seconds)]
        transfer_timeout: Option<Duration>,
        /// Retries of a failed download or dial (default 3).
        #[arg(long, env = "BLIXARD_P2P_MAX_RETRY_ATTEMPTS", allow_negative_numbers = true, value_parser = count)]
        max_retry_attempts: Option<u32>,
        /// Seconds between peer exchanges (default 30).
        #[arg(long, env = "BLIXARD_P2P_DISCOVERY_INTERVAL", allow_negative_numbers = true, value_parser = seconds)]
        peer_discovery_interval: Option<Duration>,
        /// Seconds between health pings (default 60).
        #[arg(long, env = "BLIXARD_P2P_HEALTH_INTERVAL", allow_negative_numbers = true, value_parser = seconds)]
        health_check_interval: Option<Duration>,
        /// Upload and download limit, megabits per second (default unlimited).
        #[arg(long, env = "BLIXARD_P2P_BANDWIDTH_LIMIT_MBPS", allow_negative_numbers = true, value_parser = mbps)]
        bandwidth_limit_mbps: Option<f64>,
        /// Most bytes of downloaded images to keep, e.g. 50GiB; the least
        /// recently used downloads go first. Uploads never count (default: no limit).
        #[arg(long, env = "BLIXARD_P2P_MAX_CACHE_SIZE", value_parser = cache_size)]
        max_cache_size: Option<u64>,
        /// Only these node ids may connect (repeatable; default: anyone).
        #[arg(long = "allow")]
        allow: Vec<blixard_protocol::NodeId>,
        /// Trust this publisher to name resources (repeatable; configured
        /// peers, the allowlist and this node are trusted already).
        #[arg(long = "trust", env = "BLIXARD_P2P_TRUST", value_delimiter = ',')]
        trust: Vec<blixard_protocol::NodeId>,
        /// A relay to keep a connection to, RELAY_ID@HOST:PORT or
        /// relay://RELAY_ID@HOST:PORT (repeatable, or comma-separated in
        /// BLIXARD_P2P_RELAY); the nearest is home. Peers that cannot
        /// reach this node over UDP come through it.
        #[arg(long = "relay", env = "BLIXARD_P2P_RELAY", value_delimiter = ',')]
        relays: Vec<blixard_protocol::RelayAddr>,
        /// Also run a relay on this TCP address (its id is this node's id).
        #[arg(long)]
        relay_server: Option<SocketAddr>,
    },
    /// Run a relay: forwards QUIC datagrams over TLS/TCP between nodes that
    /// cannot reach each other over UDP, and answers the UDP echo probe on
    /// the same port. Prints `blixard relay id=<relay-id> addr=<addr>`.
    Relay {
        /// TCP (and UDP probe) address.
        #[arg(long, default_value = "0.0.0.0:3340")]
        bind: SocketAddr,
        /// Where the relay's identity key is kept (clients pin its id).
        #[arg(long, default_value = "blixard-data/relay")]
        data_dir: PathBuf,
        /// Serve Prometheus metrics on this address (`/metrics`).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Clients logged in at once.
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
        max_clients: usize,
        /// TCP connections from one IP at once.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        max_per_ip: usize,
        /// Each client's read rate, megabits per second (default 2000).
        #[arg(long, default_value_t = 2000.0, value_parser = mbps)]
        client_rate_mbps: f64,
    },
    /// VM images: upload into a node, download through its peers, list.
    Vm {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: VmCommand,
    },
    /// The node's transfers: queued, running and finished; `transfers
    /// priority ID PRIORITY` moves one in the queue.
    Transfers {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        change: Option<TransfersCommand>,
    },
    /// Cancel a queued or running transfer (what it verified is kept).
    Cancel {
        #[command(flatten)]
        target: Target,
        /// The transfer, as `blixard transfers` shows it.
        id: blixard_node::TransferId,
    },
    /// The peers a node knows.
    Peers {
        #[command(flatten)]
        target: Target,
    },
    /// A live view of a node: peers, transfers, resources, events; keys to
    /// connect, upload, download and queue, and to turn P2P off and on
    /// (`?` lists them).
    Tui {
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
    /// Collect blobs nothing names any more (and evict the least recently
    /// used downloads if over --max-cache-size). The node also does this
    /// every gc_interval.
    Gc {
        #[command(flatten)]
        target: Target,
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
pub(crate) struct Target {
    /// The node's id: its data dir is ./blixard-data/node-ID.
    #[arg(long, env = "BLIXARD_NODE", default_value_t = 1, global = true)]
    pub(crate) node: u64,
    /// The node's data dir (wins over --node).
    #[arg(long, env = "BLIXARD_P2P_CACHE_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,
}

impl Target {
    /// The flags that name this node again, for hints the user may type.
    pub(crate) fn flags(&self) -> String {
        match &self.data_dir {
            Some(dir) => format!("--data-dir {}", dir.display()),
            None => format!("--node {}", self.node),
        }
    }

    pub(crate) fn control(&self) -> Result<blixard_node::client::ControlClient> {
        cli::find(&self.dir())
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| default_data_dir(self.node))
    }
}

pub(crate) fn default_data_dir(id: u64) -> PathBuf {
    PathBuf::from(format!("blixard-data/node-{id}"))
}

#[derive(Subcommand)]
pub(crate) enum VmCommand {
    /// Import a VM image file into the node and publish it to peers.
    Upload {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        file: PathBuf,
        /// Replace the image if this name and version is already published here.
        #[arg(long)]
        force: bool,
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
        /// Queue the download and return; without it, Ctrl-C cancels it.
        #[arg(long, conflicts_with = "output")]
        detach: bool,
        /// This download's own limit, megabits per second (under the node's
        /// --bandwidth-limit-mbps).
        #[arg(long, value_parser = mbps, allow_negative_numbers = true)]
        limit_mbps: Option<f64>,
        /// Seed from this local version of the image: groups it shares with
        /// the new one are copied, not fetched (other local versions of the
        /// name are used anyway).
        #[arg(long)]
        base: Option<String>,
        /// Seed from this local blob (hex hash), e.g. a similar image of
        /// another name.
        #[arg(long)]
        base_hash: Option<blixard_store::Hash>,
    },
    /// VM images on the node (and, with --remote, on its peers).
    List {
        #[arg(long)]
        remote: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    Copy,
    Reference,
    Both,
}

#[derive(Subcommand)]
pub(crate) enum BenchScenario {
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
    /// The same get of one image on 127.0.0.1, directly and through a
    /// relay in this process, alternating: relayed throughput vs direct.
    Relay {
        /// Size of the generated image.
        #[arg(long, default_value = "256MiB", value_parser = bench::parse_size)]
        size: u64,
        /// Runs of each, alternating; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// What new versions cost on the wire: rewritten groups, an append, an
    /// insertion, a mostly-zero image, an image sharing half its chunks;
    /// each against its baseline (and rsync, if installed) in one run.
    Incremental {
        /// Size of the generated image.
        #[arg(long, default_value = "1GiB", value_parser = bench::parse_size)]
        size: u64,
        /// Directory for the stores and files.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A download that ends in a file (`vm download --output`: the store's
    /// copy handed over) vs the download alone, the old copy out of the
    /// store, and optionally sendme, in one network namespace.
    Output {
        /// Size of the generated image.
        #[arg(long, default_value = "1GiB", value_parser = bench::parse_size)]
        size: u64,
        /// Runs of each; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Directory for the stores and files.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// A sendme binary (0.37) to time on the same file, as an external
        /// program only.
        #[arg(long)]
        sendme: Option<PathBuf>,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Already inside the bench's network namespace.
        #[arg(long, hide = true)]
        in_netns: bool,
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

/// A number of megabits per second: positive and finite.
pub(crate) fn mbps(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a positive number of megabits per second, not {v}")),
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

/// Seconds (fractions allowed), at least the node's minimum interval.
pub(crate) fn seconds(text: &str) -> std::result::Result<Duration, String> {
    let min = blixard_node::config::MIN_INTERVAL;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= min.as_secs_f64() && v <= 1e9 => Ok(Duration::from_secs_f64(v)),
        Ok(v) => Err(format!("must be between {} and 1e9 seconds, not {v}", min.as_secs_f64())),
        Err(_) => Err(format!("{text:?} is not a number of seconds")),
    }
}

/// A size like 50GiB, 500MB or 1048576.
pub(crate) fn cache_size(text: &str) -> std::result::Result<u64, String> {
    bench::parse_size(text).map_err(|e| format!("{e} (a size such as 50GiB)"))
}

/// A count of at least 1.
pub(crate) fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<i64>() {
        Ok(v) if v >= 1 => Ok(v as usize),
        Ok(v) => Err(format!("must be at least 1, not {v}")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A count of 0 or more.
pub(crate) fn count(text: &str) -> std::result::Result<u32, String> {
    match text.parse::<i64>() {
        Ok(v) if (0..=u32::MAX as i64).contains(&v) => Ok(v as u32),
        Ok(v) => Err(format!("must be 0 or more, not {v}")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}
