//! The one error type of the net crate: identities, TLS, binding, dialling
//! and the relay.

use std::{net::SocketAddr, path::PathBuf};

use crate::NodeId;

/// Everything that can go wrong in the net crate.
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
    /// A relay frame did not decode or broke a rule of the relay protocol.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A length or count exceeded its documented limit.
    #[error("{what} is {actual}, over the limit of {limit}")]
    Limit { what: &'static str, actual: u64, limit: u64 },
    /// A relay refused, closed or broke the relay protocol.
    #[error("relay: {0}")]
    Relay(String),
    /// Reading or writing a relay connection failed.
    #[error("relay connection: {0}")]
    Io(#[source] std::io::Error),
    /// A deadline passed (a relay login, say).
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
