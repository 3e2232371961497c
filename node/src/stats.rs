//! [`Stats`]: node-wide figures, for `blixard status`, the TUI and the
//! control API.

use std::net::SocketAddr;

use blixard_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::Node;

/// Node-wide figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// This node's id.
    pub node_id: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Connected peers.
    pub peers_connected: usize,
    /// Known peers.
    pub peers_known: usize,
    /// Transfers running.
    pub transfers_active: usize,
    /// Transfers waiting.
    pub transfers_queued: usize,
    /// Blob bytes served.
    pub bytes_sent: u64,
    /// Verified blob bytes received.
    pub bytes_received: u64,
    /// Local resources.
    pub resources: usize,
    /// P2P is on (serving, dialing, downloading).
    #[serde(default = "yes")]
    pub p2p_enabled: bool,
    /// The relay this node keeps a connection to (peers that cannot reach
    /// it over UDP come through it).
    #[serde(default)]
    pub home_relay: Option<blixard_protocol::RelayAddr>,
    /// Datagram bytes sent through relays.
    #[serde(default)]
    pub relay_bytes_sent: u64,
    /// Datagram bytes received through relays.
    #[serde(default)]
    pub relay_bytes_received: u64,
    /// Download bytes copied from blobs already held instead of fetched
    /// (since the node started).
    #[serde(default)]
    pub reused_bytes: u64,
    /// Download bytes that were zero groups, never fetched (since start).
    #[serde(default)]
    pub zero_bytes_skipped: u64,
    /// The store's blobs: their logical size and the disk their data takes
    /// (zero pages are holes).
    #[serde(default)]
    pub store: blixard_store::StoreUsage,
}

fn yes() -> bool {
    true
}

impl Node {
    /// Node-wide figures.
    pub fn stats(&self) -> Stats {
        let (transfers_active, transfers_queued) = self.inner.transfers.counts();
        let m = &self.inner.metrics;
        m.sync();
        Stats {
            node_id: self.node_id(),
            addr: self.addr(),
            peers_connected: self.inner.peers.connected_count(),
            peers_known: self.inner.peers.known_count(),
            transfers_active,
            transfers_queued,
            bytes_sent: m.bytes_sent.get(),
            bytes_received: m.bytes_received.get(),
            resources: self.inner.store.resources(None).map(|r| r.len()).unwrap_or(0),
            p2p_enabled: self.p2p_enabled(),
            home_relay: self.inner.endpoint.home_relay(),
            relay_bytes_sent: m.relay_bytes_sent.get(),
            relay_bytes_received: m.relay_bytes_received.get(),
            reused_bytes: m.reused_bytes.get(),
            zero_bytes_skipped: m.zero_bytes.get(),
            store: self.inner.store.usage().unwrap_or_default(),
        }
    }
}
