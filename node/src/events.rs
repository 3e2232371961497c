//! `P2pEvent`: what the node reports, on a broadcast channel
//! ([`crate::Node::events`]) and through the control API.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A peer as events and the control API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Node id (64 hex digits).
    pub id: String,
    /// Address it was reached or seen at.
    pub addr: SocketAddr,
    /// Connected now.
    pub connected: bool,
    /// Last measured round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
}

/// A resource as events and the control API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// Kind in text form (`vm-image`, ...).
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// BLAKE3 hash, hex.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
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

/// Everything significant the node does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum P2pEvent {
    /// A peer became known (configured, exchanged or connecting to us).
    PeerDiscovered(PeerInfo),
    /// A connection to a peer was established (node id).
    PeerConnected(String),
    /// A peer stopped answering or closed (node id).
    PeerDisconnected(String),
    /// A resource became available locally (uploaded or downloaded).
    ResourceAvailable(ResourceInfo),
    /// A transfer left the queue and started (request id).
    TransferStarted(String),
    /// A transfer's progress (request id, progress).
    TransferProgress(String, TransferProgress),
    /// A transfer finished and its blob is verified and complete.
    TransferCompleted(String),
    /// A transfer failed for good (request id, reason).
    TransferFailed(String, String),
    /// A provider sent data that failed verification and was cut off
    /// (node id, reason).
    PeerMisbehaved(String, String),
}
