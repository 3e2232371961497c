//! The one error type of the protocol crate.

use std::{net::SocketAddr, path::PathBuf};

use crate::{wire::ErrorCode, NodeId};

/// Everything that can go wrong in the protocol crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node's key file could not be read, created or parsed.
    #[error("identity key {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    /// A node id in text form did not parse.
    #[error("invalid node id {0:?}: expected 64 lowercase hex characters (an Ed25519 public key)")]
    InvalidNodeId(String),
    /// A peer address in text form did not parse.
    #[error("invalid peer address {0:?}: expected HOST:PORT or NODE_ID@HOST:PORT (more addresses after commas, a relay as relay=RELAY_ID@HOST:PORT)")]
    InvalidPeerAddr(String),
    /// Building the TLS configuration (certificate, rustls config) failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The peer's TLS identity is missing or not an Ed25519 node key.
    #[error("peer identity: {0}")]
    PeerIdentity(String),
    /// An endpoint was built outside a tokio runtime.
    #[error("no async runtime: endpoints must be built inside a tokio runtime")]
    NoRuntime,
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The socket given to an endpoint has no local address.
    #[error("the endpoint's socket has no local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The peer's key is not the node id we expected.
    #[error("peer at {addr} is node {actual}, expected {expected}")]
    WrongIdentity { addr: SocketAddr, expected: NodeId, actual: NodeId },
    /// A node address names no path this endpoint can use.
    #[error("no way to reach {0}: no direct address (relay paths are not supported yet)")]
    NoPath(String),
    /// Connecting failed (unreachable, handshake refused, wrong protocol version...).
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The connection was lost or closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer answered a request with a documented error code.
    #[error("peer refused the request: {0}")]
    Remote(ErrorCode),
    /// Writing to a stream failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed (a peer's reset is [`Error::Remote`]).
    #[error("stream read: {0}")]
    Read(quinn::ReadError),
    /// The stream was already finished or reset locally.
    #[error("stream: {0}")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// Reading a response stream failed (I/O error from its reader).
    #[error("stream: {0}")]
    StreamIo(#[source] std::io::Error),
    /// A message did not decode or broke a rule of the protocol.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A resource claim's signature does not verify.
    #[error("forged resource claim: {0}")]
    BadClaim(String),
    /// A length or count exceeded its documented limit.
    #[error("{what} is {actual}, over the limit of {limit}")]
    Limit { what: &'static str, actual: u64, limit: u64 },
    /// A relay refused, closed or broke the relay protocol.
    #[error("relay: {0}")]
    Relay(String),
    /// A deadline passed: the whole request, or no progress for too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The store refused or failed (verification failures included).
    #[error(transparent)]
    Store(#[from] blixard_store::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True if, returned from a request, the peer sent data that failed
    /// verification or broke the protocol: such a peer should be cut off and
    /// reported.
    pub fn is_peer_misbehaving(&self) -> bool {
        matches!(
            self,
            Error::Malformed { .. }
                | Error::BadClaim(_)
                | Error::WrongIdentity { .. }
                | Error::Store(blixard_store::Error::Verification { .. })
                | Error::Store(blixard_store::Error::SizeMismatch { .. })
                | Error::Store(blixard_store::Error::Limit(_))
        )
    }
}

impl From<quinn::ReadError> for Error {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => Error::Remote(ErrorCode::from_varint(code)),
            e => Error::Read(e),
        }
    }
}

impl From<quinn::ReadExactError> for Error {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::ReadError(e) => e.into(),
            quinn::ReadExactError::FinishedEarly(n) => {
                Error::Malformed { what: "message", reason: format!("stream ended after {n} bytes") }
            }
        }
    }
}
