//! The one error type of the protocol crate.

use crate::wire::ErrorCode;

/// Everything that can go wrong in the protocol crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Identities, TLS, binding, dialling, relays: see [`blixard_net::Error`].
    #[error(transparent)]
    Net(#[from] blixard_net::Error),
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
                | Error::Net(blixard_net::Error::WrongIdentity { .. })
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
