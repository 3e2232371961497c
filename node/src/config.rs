//! How a node is started ([`NodeOptions`]) and its settings (`P2pConfig`),
//! with their documented defaults, read from a
//! TOML file, the environment and flags (flags win, then environment, then
//! the file, then defaults).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use blixard_protocol::{NodeId, RelayAddr};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The node's settings. Every field is used; see each for where.
///
/// ```
/// use std::time::Duration;
///
/// let config = blixard_node::P2pConfig {
///     max_concurrent_transfers: 8,
///     bandwidth_limit_mbps: Some(200.0),
///     transfer_timeout: Duration::from_secs(600),
///     ..Default::default()
/// };
/// config.validate()?;
/// let from_file = blixard_node::P2pConfig::from_toml("max_concurrent_transfers = 8\ngc_interval = 600\n")?;
/// assert_eq!(from_file.max_concurrent_transfers, 8);
/// # Ok::<(), blixard_node::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Downloads running at once; more wait in the priority queue. Default 3.
    pub max_concurrent_transfers: usize,
    /// A download that has not finished after this long fails (and may be
    /// retried). Default 5 minutes.
    #[serde(with = "secs")]
    pub transfer_timeout: Duration,
    /// How often connected peers are asked for the peers they know. Default 30 s.
    #[serde(with = "secs")]
    pub peer_discovery_interval: Duration,
    /// How often each peer is pinged; a failed ping disconnects it. Default 60 s.
    #[serde(with = "secs")]
    pub health_check_interval: Duration,
    /// Attempts after the first for a failed download, and for dialing a
    /// peer, with exponential backoff. Default 3.
    pub max_retry_attempts: u32,
    /// Upload and download limit in megabits per second, per node; `None`
    /// is unlimited (the default).
    pub bandwidth_limit_mbps: Option<f64>,
    /// If set, only these nodes may connect; others are refused at the
    /// handshake. Node ids in hex. Allowlisted nodes are also trusted
    /// publishers.
    pub allowlist: Option<Vec<NodeId>>,
    /// Publishers whose resource claims name things (besides this node,
    /// its configured peers and the allowlist). Node ids in hex.
    pub trust: Vec<NodeId>,
    /// Most peers the peer book keeps (configured and allowlisted ones are
    /// never dropped; the least recently seen others go first). Default 512.
    pub max_peers: usize,
    /// A peer not seen for this long is forgotten (unless configured or
    /// allowlisted). Default 7 days.
    #[serde(with = "secs")]
    pub peer_max_age: Duration,
    /// Most bytes of downloaded blobs to keep (the cache); past it the
    /// least recently used downloaded resources are evicted. Uploaded,
    /// tagged and leased blobs never count or go. `None`: no limit (default).
    pub max_cache_size: Option<u64>,
    /// How often unreachable blobs are collected (and the cache limit
    /// enforced). Default 1 hour.
    #[serde(with = "secs")]
    pub gc_interval: Duration,
    /// How often a running transfer reports its progress (a
    /// `TransferProgress` event and the transfer's record). Default 500 ms.
    #[serde(with = "secs")]
    pub progress_interval: Duration,
    /// Relays this node may keep a connection to, as
    /// `RELAY_ID@HOST:PORT` (or `relay://RELAY_ID@HOST:PORT`); the nearest
    /// that answers (lowest round trip) is home, and peers reach this node
    /// through it when UDP does not get through. Peers' own relays are used
    /// to reach them whatever this says. Default none.
    #[serde(with = "relay_list")]
    pub relays: Vec<RelayAddr>,
    /// Also run a relay server in this node, on this TCP address (and the
    /// UDP echo probe on the same port), with the node's identity as the
    /// relay's. Default none.
    pub relay_server: Option<SocketAddr>,
    /// Before fetching a blob of more than one group, fetch its tree and
    /// copy what local blobs already hold (other versions of the same name,
    /// and bases the request names), each group verified against the new
    /// tree, and keep zero groups as holes: only what differs crosses the
    /// network (`docs/INCREMENTAL.md`). Costs 64 bytes per 16 KiB (0.4%)
    /// when nothing matches. Default true.
    pub incremental: bool,
}

/// The default of [`P2pConfig::max_peers`].
pub const DEFAULT_MAX_PEERS: usize = 512;

/// The shortest interval or timeout accepted: anything shorter would spin
/// (a near-zero health interval pings in a loop and burns a core).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            max_concurrent_transfers: 3,
            transfer_timeout: Duration::from_secs(5 * 60),
            peer_discovery_interval: Duration::from_secs(30),
            health_check_interval: Duration::from_secs(60),
            max_retry_attempts: 3,
            bandwidth_limit_mbps: None,
            allowlist: None,
            trust: Vec::new(),
            max_peers: DEFAULT_MAX_PEERS,
            peer_max_age: Duration::from_secs(7 * 24 * 3600),
            max_cache_size: None,
            gc_interval: Duration::from_secs(3600),
            progress_interval: Duration::from_millis(500),
            relays: Vec::new(),
            relay_server: None,
            incremental: true,
        }
    }
}

impl P2pConfig {
    /// Reads and validates a TOML file; missing fields take their
    /// defaults, unknown ones are an error (a typo must not be silently
    /// ignored).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let c = Self::read_toml_file(path)?;
        c.validate().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Reads a TOML file without validating it: for merging with other
    /// sources (flags, environment) before one [`P2pConfig::validate`].
    pub fn read_toml_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let c: P2pConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that would make the node misbehave.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent_transfers == 0 {
            return Err(Error::Config("max_concurrent_transfers must be at least 1".into()));
        }
        if let Some(m) = self.bandwidth_limit_mbps {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::Config(format!("bandwidth_limit_mbps must be positive, not {m}")));
            }
        }
        for (name, d) in [
            ("transfer_timeout", self.transfer_timeout),
            ("peer_discovery_interval", self.peer_discovery_interval),
            ("health_check_interval", self.health_check_interval),
            ("peer_max_age", self.peer_max_age),
            ("gc_interval", self.gc_interval),
            ("progress_interval", self.progress_interval),
        ] {
            if d < MIN_INTERVAL {
                return Err(Error::Config(format!("{name} must be at least {MIN_INTERVAL:?}, not {d:?}")));
            }
        }
        if self.max_peers == 0 {
            return Err(Error::Config("max_peers must be at least 1".into()));
        }
        Ok(())
    }

    /// The bandwidth limit in bytes per second, if any.
    pub fn bandwidth_limit_bytes(&self) -> Option<u64> {
        self.bandwidth_limit_mbps.map(|m| (m * 1_000_000.0 / 8.0) as u64)
    }
}

/// Durations as seconds (fractions allowed) in TOML.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Relays as `RELAY_ID@HOST:PORT` strings in TOML.
mod relay_list {
    use blixard_protocol::RelayAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(relays: &[RelayAddr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(relays.iter().map(|r| r.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RelayAddr>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                t.parse()
                    .map_err(|e| serde::de::Error::custom(format!("relay {t:?}: {e} (expected RELAY_ID@HOST:PORT)")))
            })
            .collect()
    }
}

/// How a node is started.
///
/// ```
/// # #[tokio::main] async fn main() -> blixard_node::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let node = blixard_node::Node::spawn(blixard_node::NodeOptions {
///     id: 1,
///     data_dir: dir.path().to_path_buf(),
///     bind: "127.0.0.1:0".parse().unwrap(),
///     config: Default::default(),
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The operator's number for this node (names the default data dir).
    pub id: u64,
    /// Data directory: identity key, store, node database, control file.
    pub data_dir: PathBuf,
    /// UDP address for QUIC.
    pub bind: SocketAddr,
    /// Settings.
    pub config: P2pConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = P2pConfig::default();
        assert_eq!(c.max_concurrent_transfers, 3);
        assert_eq!(c.transfer_timeout, Duration::from_secs(300));
        assert_eq!(c.peer_discovery_interval, Duration::from_secs(30));
        assert_eq!(c.health_check_interval, Duration::from_secs(60));
        assert_eq!(c.max_retry_attempts, 3);
        assert_eq!(c.bandwidth_limit_mbps, None);
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_typos() {
        let c = P2pConfig::from_toml("max_concurrent_transfers = 1\ntransfer_timeout = 2.5\n").unwrap();
        assert_eq!(c.max_concurrent_transfers, 1);
        assert_eq!(c.transfer_timeout, Duration::from_millis(2500));
        assert_eq!(c.max_retry_attempts, 3);
        let err = P2pConfig::from_toml("max_concurrent_transfer = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(P2pConfig::from_toml("bandwidth_limit_mbps = -1.0\n").is_err());
    }

    #[test]
    fn relays_in_toml_are_id_at_address() {
        let id = "7f".repeat(32);
        let c = P2pConfig::from_toml(&format!(
            "relays = [\"{id}@10.0.0.1:3340\", \"relay://{id}@10.0.0.2:3340\"]\nrelay_server = \"0.0.0.0:3340\"\n"
        ))
        .unwrap();
        assert_eq!(c.relays.len(), 2);
        assert_eq!(c.relays[1].addr.to_string(), "10.0.0.2:3340");
        assert_eq!(c.relay_server, Some("0.0.0.0:3340".parse().unwrap()));
        let round = P2pConfig::from_toml(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round.relays, c.relays);
        let err = P2pConfig::from_toml("relays = [\"10.0.0.1:3340\"]\n").unwrap_err().to_string();
        assert!(err.contains("RELAY_ID@HOST:PORT"), "{err}");
    }

    #[test]
    fn node_ids_in_toml_are_hex() {
        let id = "7f".repeat(32);
        let c = P2pConfig::from_toml(&format!("allowlist = [\"{id}\"]\ntrust = [\"{id}\"]\n")).unwrap();
        assert_eq!(c.allowlist.unwrap()[0].to_string(), id);
        assert_eq!(c.trust[0].to_string(), id);
        assert!(P2pConfig::from_toml("trust = [\"not-a-node\"]\n")
            .unwrap_err()
            .to_string()
            .contains("invalid node id"));
    }
}
