//! The node's one error type.

use std::path::PathBuf;

/// What went wrong in the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] blixard_store::Error),
    /// The protocol failed (connecting, a request, a peer's answer).
    #[error(transparent)]
    Protocol(#[from] blixard_protocol::Error),
    /// The node could not start: data dir, identity, port.
    #[error("Failed to create node: {0}")]
    Start(String),
    /// A configuration value or file is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// No connected peer has the resource.
    #[error("no peer has {kind} {name} {version} (connected peers: {peers})")]
    NotFound {
        /// Resource kind.
        kind: String,
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// How many peers were asked.
        peers: usize,
    },
    /// A peer did not answer a dial in time.
    #[error("cannot reach peer {peer}: no answer within {after:?} (is it running, is the address right, does a firewall drop UDP?)")]
    Unreachable {
        /// The peer as given.
        peer: String,
        /// How long each attempt waited.
        after: std::time::Duration,
    },
    /// There are no connected peers to ask.
    #[error("no peers connected: start nodes with --p2p-peer, or connect one")]
    NoPeers,
    /// The transfer was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The transfer did not finish within the transfer timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// No such transfer.
    #[error("no transfer {0}")]
    UnknownTransfer(String),
    /// The providers failed before the blob was complete.
    #[error("incomplete: {0}")]
    Incomplete(String),
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// The node's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
