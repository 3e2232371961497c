//! `P2pEvent`: what the node reports, on a broadcast channel
//! ([`crate::Node::events`]) and through the control API.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use blixard_protocol::NodeId;

use crate::{transfer_id::TransferId, transfers::TransferFailure};

/// A peer as events and the control API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Node id (64 hex digits in JSON).
    pub id: NodeId,
    /// Address it was reached or seen at.
    pub addr: SocketAddr,
    /// Connected now.
    pub connected: bool,
    /// Last measured round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
}

/// A resource as events and the control API show it: the store's record
/// (kind, name, version, hash, size, creation time).
pub use blixard_store::Resource as ResourceInfo;

/// A resource a peer lists: the publisher's claim, the peer that listed
/// it, and whether the publisher is trusted here (only trusted claims name
/// things; others can be chosen by hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteResource {
    /// The peer that listed it.
    pub peer: blixard_protocol::NodeId,
    /// Who claims the name.
    pub publisher: blixard_protocol::NodeId,
    /// True if that publisher names things for this node.
    pub trusted: bool,
    /// The claim.
    pub resource: ResourceInfo,
}

/// Progress of one transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferProgress {
    /// Verified bytes held so far.
    pub bytes: u64,
    /// The blob's size.
    pub total: u64,
    /// Recent speed, bytes per second.
    pub speed_bps: f64,
    /// Estimated seconds left at that speed.
    pub eta_secs: Option<f64>,
    /// Providers currently sending.
    pub providers: usize,
}

/// An upload (import) in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadProgress {
    /// The file being imported.
    pub path: std::path::PathBuf,
    /// Bytes hashed (and copied) so far.
    pub bytes: u64,
    /// The file's size.
    pub total: u64,
}

/// Everything significant the node does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum P2pEvent {
    /// A peer became known (configured, exchanged or connecting to us).
    PeerDiscovered(PeerInfo),
    /// A connection to a peer was established (node id).
    PeerConnected(NodeId),
    /// A peer stopped answering or closed (node id).
    PeerDisconnected(NodeId),
    /// A resource became available locally (uploaded or downloaded).
    ResourceAvailable(ResourceInfo),
    /// A transfer left the queue and started.
    TransferStarted(TransferId),
    /// A transfer's progress.
    TransferProgress(TransferId, TransferProgress),
    /// A transfer finished and its blob is verified and complete.
    TransferCompleted(TransferId),
    /// A transfer failed for good, or was cancelled: why.
    TransferFailed(TransferId, TransferFailure),
    /// A provider sent data that failed verification and was cut off
    /// (node id, reason).
    PeerMisbehaved(NodeId, String),
    /// A downloaded resource was evicted from the cache (least recently
    /// used, over `max_cache_size`).
    ResourceEvicted(ResourceInfo),
}

impl P2pEvent {
    /// The event as the control API's `/v1/events` stream sends it: one
    /// JSON object with a `type` (the variant's name) and named fields,
    /// a stable shape documented in the README:
    ///
    /// | type | fields |
    /// |---|---|
    /// | `PeerDiscovered` | `peer` (a [`PeerInfo`]) |
    /// | `PeerConnected`, `PeerDisconnected` | `peer` (node id) |
    /// | `PeerMisbehaved` | `peer`, `reason` |
    /// | `ResourceAvailable`, `ResourceEvicted` | `resource` |
    /// | `TransferStarted`, `TransferCompleted` | `transfer` (id) |
    /// | `TransferProgress` | `transfer`, `progress` |
    /// | `TransferFailed` | `transfer`, `failure` (`reason`, `message`) |
    ///
    /// ```
    /// use blixard_node::{P2pEvent, TransferId};
    ///
    /// let json = P2pEvent::TransferCompleted(TransferId(7)).to_json();
    /// assert_eq!(json, serde_json::json!({"type": "TransferCompleted", "transfer": 7}));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            P2pEvent::PeerDiscovered(p) => json!({"type": "PeerDiscovered", "peer": p}),
            P2pEvent::PeerConnected(id) => json!({"type": "PeerConnected", "peer": id}),
            P2pEvent::PeerDisconnected(id) => json!({"type": "PeerDisconnected", "peer": id}),
            P2pEvent::PeerMisbehaved(id, why) => json!({"type": "PeerMisbehaved", "peer": id, "reason": why}),
            P2pEvent::ResourceAvailable(r) => json!({"type": "ResourceAvailable", "resource": r}),
            P2pEvent::ResourceEvicted(r) => json!({"type": "ResourceEvicted", "resource": r}),
            P2pEvent::TransferStarted(id) => json!({"type": "TransferStarted", "transfer": id}),
            P2pEvent::TransferProgress(id, p) => json!({"type": "TransferProgress", "transfer": id, "progress": p}),
            P2pEvent::TransferCompleted(id) => json!({"type": "TransferCompleted", "transfer": id}),
            P2pEvent::TransferFailed(id, f) => json!({"type": "TransferFailed", "transfer": id, "failure": f}),
        }
    }
}
