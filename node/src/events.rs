//! `P2pEvent`: what the node reports, on a broadcast channel
//! ([`crate::Node::events`]) and through the control API.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use blixard_protocol::NodeId;

pub use crate::transfers::info::{ProviderShare, TransferProgress};
use crate::transfers::{id::TransferId, info::TransferFailure};

/// Events a receiver of [`crate::Node::events`] may fall behind by before it
/// misses some.
pub const EVENTS_CAPACITY: usize = 1024;

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
    /// The path its connection takes now (none while disconnected).
    #[serde(default)]
    pub path: Option<PeerPath>,
    /// UDP bytes sent to it over its open connections (QUIC overhead
    /// included; a new connection starts from zero).
    #[serde(default)]
    pub bytes_sent: u64,
    /// UDP bytes received from it over its open connections.
    #[serde(default)]
    pub bytes_received: u64,
}

/// How packets reach a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerPath {
    /// Straight to its UDP address (JSON: `{"direct":{"addr":"1.2.3.4:7001"}}`).
    Direct {
        /// The address packets go to.
        addr: SocketAddr,
    },
    /// Through a relay (JSON:
    /// `{"relay":{"relay":{"id":"<hex>","addr":"1.2.3.4:3340"}}}`).
    Relay {
        /// The relay.
        relay: blixard_protocol::RelayAddr,
    },
}

impl PeerPath {
    /// The path of a connection (`None`: a relayed mapping given up).
    pub(crate) fn of(conn: &blixard_protocol::Connection) -> Option<PeerPath> {
        Some(match conn.path()? {
            blixard_net::endpoint::Path::Direct(addr) => PeerPath::Direct { addr },
            blixard_net::endpoint::Path::Relay(relay) => PeerPath::Relay { relay },
            _ => return None,
        })
    }
}

impl std::fmt::Display for PeerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerPath::Direct { addr } => write!(f, "direct {addr}"),
            PeerPath::Relay { relay } => write!(f, "relay {}", relay.id),
        }
    }
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
    /// A connected peer is reached by another path now (it reconnected or
    /// its connection migrated): node id, the new path.
    PathChanged(NodeId, PeerPath),
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
    /// | `PathChanged` | `peer`, `path` (a [`PeerPath`]) |
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
            P2pEvent::PathChanged(id, path) => json!({"type": "PathChanged", "peer": id, "path": path}),
        }
    }

    /// Reads an event of the [`P2pEvent::to_json`] shape; a `type` this
    /// version does not know, or a missing or wrong field, is an error
    /// naming it.
    pub fn from_json(value: &serde_json::Value) -> Result<P2pEvent, String> {
        fn field<T: serde::de::DeserializeOwned>(v: &serde_json::Value, name: &str) -> Result<T, String> {
            let f = v.get(name).ok_or_else(|| format!("no `{name}` field"))?;
            serde_json::from_value(f.clone()).map_err(|e| format!("field `{name}`: {e}"))
        }
        let v = value;
        let kind = v.get("type").and_then(|t| t.as_str()).ok_or("no `type` field")?;
        Ok(match kind {
            "PeerDiscovered" => P2pEvent::PeerDiscovered(field(v, "peer")?),
            "PeerConnected" => P2pEvent::PeerConnected(field(v, "peer")?),
            "PeerDisconnected" => P2pEvent::PeerDisconnected(field(v, "peer")?),
            "PeerMisbehaved" => P2pEvent::PeerMisbehaved(field(v, "peer")?, field(v, "reason")?),
            "ResourceAvailable" => P2pEvent::ResourceAvailable(field(v, "resource")?),
            "ResourceEvicted" => P2pEvent::ResourceEvicted(field(v, "resource")?),
            "TransferStarted" => P2pEvent::TransferStarted(field(v, "transfer")?),
            "TransferProgress" => P2pEvent::TransferProgress(field(v, "transfer")?, field(v, "progress")?),
            "TransferCompleted" => P2pEvent::TransferCompleted(field(v, "transfer")?),
            "TransferFailed" => P2pEvent::TransferFailed(field(v, "transfer")?, field(v, "failure")?),
            "PathChanged" => P2pEvent::PathChanged(field(v, "peer")?, field(v, "path")?),
            other => return Err(format!("unknown event type {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FailureReason, TransferId};

    /// Every variant reads back as written.
    #[test]
    fn events_round_trip_through_json() {
        let peer = NodeId([7; 32]);
        let addr: SocketAddr = "10.0.0.2:7001".parse().unwrap();
        let resource = ResourceInfo {
            kind: blixard_store::ResourceKind::VmImage,
            name: "ubuntu".into(),
            version: "22.04".into(),
            hash: blixard_store::Hash([3; 32]),
            size: 42,
            created_unix_ms: 1,
        };
        let progress = TransferProgress {
            bytes: 1,
            total: 2,
            speed_bps: 3.5,
            eta_secs: Some(1.0),
            providers: 1,
            shares: vec![ProviderShare { peer, bytes: 1 }],
            fetched_bytes: 3,
            reused_bytes: 4,
            zero_bytes: 5,
        };
        let all = [
            P2pEvent::PeerDiscovered(PeerInfo {
                id: peer,
                addr,
                connected: true,
                rtt_ms: Some(0.5),
                path: Some(PeerPath::Direct { addr }),
                bytes_sent: 10,
                bytes_received: 20,
            }),
            P2pEvent::PeerConnected(peer),
            P2pEvent::PeerDisconnected(peer),
            P2pEvent::PeerMisbehaved(peer, "bad".into()),
            P2pEvent::ResourceAvailable(resource.clone()),
            P2pEvent::ResourceEvicted(resource),
            P2pEvent::TransferStarted(TransferId(1)),
            P2pEvent::TransferProgress(TransferId(1), progress),
            P2pEvent::TransferCompleted(TransferId(1)),
            P2pEvent::TransferFailed(
                TransferId(1),
                crate::TransferFailure { reason: FailureReason::Timeout, message: "slow".into() },
            ),
            P2pEvent::PathChanged(peer, PeerPath::Direct { addr }),
            P2pEvent::PathChanged(
                peer,
                PeerPath::Relay {
                    relay: blixard_protocol::RelayAddr { id: peer, addr: "10.0.0.1:3340".parse().unwrap() },
                },
            ),
        ];
        for e in all {
            assert_eq!(P2pEvent::from_json(&e.to_json()).as_ref(), Ok(&e));
        }
        let unknown = serde_json::json!({"type": "Nope"});
        assert!(P2pEvent::from_json(&unknown).unwrap_err().contains("Nope"));
        let missing = serde_json::json!({"type": "TransferStarted"});
        assert!(P2pEvent::from_json(&missing).unwrap_err().contains("transfer"));
    }
}
