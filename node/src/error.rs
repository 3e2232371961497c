//! The node's one error type.

use std::path::PathBuf;

/// What went wrong in the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] blixard_store::Error),
    /// The protocol failed (connecting, a request, a peer's answer).
    #[error(transparent)]
    Protocol(#[from] blixard_protocol::Error),
    /// The node could not start: data dir, identity, store, database, port.
    #[error("Failed to create node: {what}: {source}")]
    Start {
        /// What could not be opened or bound.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A configuration value or file is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A request's argument is invalid (a priority, a transfer id...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The node's database failed.
    #[error("node database: {0}")]
    Database(#[from] sled::Error),
    /// A record in the node's database is damaged or of another format.
    #[error("damaged {what} record in the node database: {reason}")]
    CorruptRecord {
        /// Which kind of record.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Peers refused this node's connections (connection caps, allowlists),
    /// and no other peer had the resource.
    #[error("no peer had {what}, and peers refused this node: {refusals}")]
    Refused {
        /// The resource.
        what: String,
        /// Each refusing peer and its reason.
        refusals: String,
    },
    /// The resource was downloaded here, then evicted from the cache to keep
    /// it under `max_cache_size` before this use.
    #[error("{what} was evicted from the download cache (max_cache_size) before it was used; download it again, or raise max_cache_size")]
    Evicted {
        /// The resource.
        what: String,
    },
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
    /// Only publishers this node does not trust claim the resource.
    #[error("only untrusted publishers claim {what}: {claims}; trust a publisher (--trust NODE_ID, or configure it with --p2p-peer) or choose the content with --hash HASH")]
    Untrusted {
        /// The resource.
        what: String,
        /// Each hash and who claims it.
        claims: String,
    },
    /// Trusted publishers disagree on what a name is.
    #[error("trusted publishers disagree on {what}: {claims}; choose one with --hash HASH")]
    Conflict {
        /// The resource.
        what: String,
        /// Each hash and who claims it.
        claims: String,
    },
    /// The allowlist (`--allow`) does not name this node: it is neither
    /// dialed, learned from peer exchange, nor downloaded from.
    #[error("node {0} is not on the allowlist (--allow): not dialed")]
    NotAllowed(blixard_protocol::NodeId),
    /// The peer book is full of configured and connected peers: a new
    /// peer is not kept.
    #[error("not keeping peer {0}: the peer book is full of configured and connected peers (raise max_peers)")]
    BookFull(blixard_protocol::NodeId),
    /// A peer did not answer a dial in time.
    #[error("cannot reach peer {peer}: no answer within {after:?} (is it running, is the address right, does a firewall drop UDP?)")]
    Unreachable {
        /// The peer as given.
        peer: String,
        /// How long each attempt waited.
        after: std::time::Duration,
    },
    /// P2P is off on this node ([`crate::Node::set_p2p_enabled`]): it
    /// dials no peer.
    #[error("P2P is off on this node: turn it on first (`p` in `blixard tui`, or PUT /v1/p2p)")]
    P2pOff,
    /// The node's control API answered with an error.
    #[error("{message} (HTTP {status})")]
    ControlApi {
        /// The HTTP status.
        status: u16,
        /// The node's explanation.
        message: String,
    },
    /// The node's control API could not be reached or answered nonsense.
    #[error("cannot use the node's control API at {addr}: {reason}")]
    ControlUnreachable {
        /// Where it was asked.
        addr: std::net::SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// There are no connected peers to ask.
    #[error("no peers connected: start nodes with --p2p-peer, or connect one")]
    NoPeers,
    /// The transfer did not finish within the transfer timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A transfer failed or was cancelled ([`crate::Node::wait`]).
    #[error("transfer {id} failed: {failure}")]
    Transfer {
        /// Which.
        id: crate::TransferId,
        /// Why, with a reason to match on.
        failure: crate::TransferFailure,
    },
    /// No such transfer.
    #[error("no transfer {0}")]
    UnknownTransfer(u64),
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
    pub(crate) fn start(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Start { what: what.into(), source: source.into() }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// The node's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<blixard_net::Error> for Error {
    fn from(e: blixard_net::Error) -> Self {
        Error::Protocol(e.into())
    }
}
