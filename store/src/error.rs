//! The one error type of `blixard-store`.
//!
//! Each variant names what went wrong and, where it helps an operator, the
//! path or hash involved. Peer-supplied data never panics the store: it ends in
//! one of the decode or verification variants below.

use std::{io, path::PathBuf};

use crate::Hash;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The metadata database could not be opened (damaged or locked).
    #[error("cannot open store metadata at {path}: {reason}")]
    OpenMetadata { path: PathBuf, reason: String },
    /// The data directory was written by an incompatible format version.
    #[error("store at {path} has format version {found}, this build reads version {expected}")]
    FormatVersion { path: PathBuf, found: u32, expected: u32 },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An I/O error on a stream (reader or writer supplied by the caller).
    #[error("stream i/o: {0}")]
    Stream(#[source] io::Error),
    /// The metadata database reported an error.
    #[error("metadata database: {0}")]
    Db(#[from] sled::Error),
    /// A persisted record could not be decoded.
    #[error("corrupt {what} record: {reason}")]
    CorruptRecord { what: &'static str, reason: String },
    /// The blob is not in the store (or not complete, where completeness is required).
    #[error("blob {0} not found")]
    NotFound(Hash),
    /// The blob is only partially present.
    #[error("blob {0} is incomplete")]
    Incomplete(Hash),
    /// A response's size header disagrees with what the store already verified.
    #[error("size mismatch for {hash}: response says {claimed} bytes, store has {known} bytes")]
    SizeMismatch { hash: Hash, claimed: u64, known: u64 },
    /// Received data failed BLAKE3 verification.
    #[error("verification of {hash} failed: {reason}")]
    Verification { hash: Hash, reason: String },
    /// A response stream ended before all requested data arrived.
    #[error("response for {hash} ended early: {reason}")]
    Truncated { hash: Hash, reason: String },
    /// A referenced (not copied) file changed on disk after import.
    #[error("referenced file {path} of blob {hash} changed since import: {reason}")]
    ReferenceChanged { hash: Hash, path: PathBuf, reason: String },
    /// Bytes at rest do not match the blob's tree (bit rot, a damaged
    /// disk). The damaged ranges are missing again and will be fetched anew.
    #[error("blob {hash} is damaged at rest: bytes {} do not match its tree; they are missing again and the next download fetches them from peers", crate::ranges::byte_ranges_text(.ranges, *.size))]
    Damaged {
        /// The blob.
        hash: Hash,
        /// Its size.
        size: u64,
        /// The chunk ranges that did not verify.
        ranges: crate::ChunkRanges,
    },
    /// A blob's tree (outboard) is damaged at rest.
    #[error("blob {hash} is damaged at rest: its tree does not verify ({reason})")]
    DamagedTree {
        /// The blob.
        hash: Hash,
        /// What was wrong with it.
        reason: String,
    },
    /// A file to be written exists already.
    #[error("{0} exists (overwrite it explicitly)")]
    Exists(PathBuf),
    /// A request asked for something outside the store's documented limits.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// An invalid argument from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A content index (from a peer, or read back) is malformed.
    #[error("bad content index: {0}")]
    BadIndex(String),
    /// A background task failed.
    #[error("background task failed: {0}")]
    Task(String),
}

/// Shorthand result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path it happened on.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// True if this error means the disk is full (or a quota was hit).
    pub fn is_disk_full(&self) -> bool {
        let src = match self {
            Error::Io { source, .. } | Error::Stream(source) => source,
            _ => return false,
        };
        matches!(src.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
