//! What a transfer is, as the API, events and the control API show it: its
//! state, its progress, and why it failed. Plain data; the table
//! ([`super::table`]) changes it.

use blixard_protocol::NodeId;
use blixard_store::ResourceKind;
use serde::{Deserialize, Serialize};

use super::id::TransferId;
use crate::{error::Error, queue::TransferPriority};

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Waiting for a permit.
    Queued,
    /// Fetching.
    Running,
    /// Done: the blob is complete and verified, the resource recorded.
    Completed,
    /// Gave up after the retries.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl TransferState {
    /// True while queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, TransferState::Queued | TransferState::Running)
    }
}

/// Why a transfer failed, to match on (the message says the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureReason {
    /// No connected peer had the resource.
    NotFound,
    /// No peers were connected.
    NoPeers,
    /// Only untrusted publishers claim the name.
    Untrusted,
    /// Trusted publishers disagree on what the name is.
    Conflict,
    /// Peers refused this node (caps, allowlists) and no other had it.
    Refused,
    /// It did not finish within the transfer timeout.
    Timeout,
    /// The providers went away before the blob was complete.
    Incomplete,
    /// The caller cancelled it.
    Cancelled,
    /// This node's store, database or disk failed.
    Local,
    /// Anything else (a protocol failure the retries did not get past).
    Other,
}

/// How a transfer failed: a reason to match on and the full message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct TransferFailure {
    /// What kind of failure.
    pub reason: FailureReason,
    /// The error, as text.
    pub message: String,
}

impl From<&Error> for TransferFailure {
    fn from(e: &Error) -> Self {
        let reason = match e {
            Error::NotFound { .. } => FailureReason::NotFound,
            Error::NoPeers => FailureReason::NoPeers,
            Error::Untrusted { .. } => FailureReason::Untrusted,
            Error::Conflict { .. } => FailureReason::Conflict,
            Error::Refused { .. } | Error::NotAllowed(_) => FailureReason::Refused,
            Error::Timeout(_) => FailureReason::Timeout,
            Error::Incomplete(_) => FailureReason::Incomplete,
            Error::Store(_) | Error::Database(_) | Error::CorruptRecord { .. } | Error::Io { .. } => {
                FailureReason::Local
            }
            _ => FailureReason::Other,
        };
        TransferFailure { reason, message: e.to_string() }
    }
}

impl TransferFailure {
    pub(crate) fn cancelled() -> Self {
        TransferFailure { reason: FailureReason::Cancelled, message: "cancelled".into() }
    }
}

/// A transfer as the API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Its id.
    pub id: TransferId,
    /// Resource kind.
    pub kind: ResourceKind,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Priority.
    pub priority: TransferPriority,
    /// State.
    pub state: TransferState,
    /// Progress, once running.
    pub progress: Option<TransferProgress>,
    /// The blob, once resolved (or as chosen, if `pinned`).
    pub hash: Option<blixard_store::Hash>,
    /// The hash was chosen by the requester (`--hash`): the claim for it is
    /// used whoever made it.
    #[serde(default)]
    pub pinned: bool,
    /// The only peers it may use, if the requester chose them.
    #[serde(default)]
    pub providers: Vec<NodeId>,
    /// Its own download limit, megabits per second, under the node's.
    #[serde(default)]
    pub limit_mbps: Option<f64>,
    /// Local blobs the requester named to seed it from, besides other
    /// versions of the same name (not kept across a restart).
    #[serde(default)]
    pub bases: Vec<blixard_store::Hash>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed (or that it was cancelled).
    pub error: Option<TransferFailure>,
    /// Seconds it ran, once finished.
    pub duration_secs: Option<f64>,
}

/// One provider's part in a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderShare {
    /// The provider.
    pub peer: NodeId,
    /// Verified bytes it sent in this transfer.
    pub bytes: u64,
}

/// Progress of one transfer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Verified bytes from each provider so far (this run of the transfer).
    #[serde(default)]
    pub shares: Vec<ProviderShare>,
    /// Bytes read from the network so far (responses, the tree included).
    #[serde(default)]
    pub fetched_bytes: u64,
    /// Bytes copied from blobs already held (equal groups of another
    /// version), each verified against the new tree.
    #[serde(default)]
    pub reused_bytes: u64,
    /// Bytes of zero groups: never fetched, kept as holes.
    #[serde(default)]
    pub zero_bytes: u64,
}
