//! Persisted records: what the metadata database says about each blob and
//! resource. Encoded only through [`crate::codec`].

use serde::{Deserialize, Serialize};

use crate::Hash;

/// Where the bytes of a complete blob live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataLocation {
    /// Small blob (≤ [`crate::INLINE_MAX`]) stored in the metadata database.
    Inline(Vec<u8>),
    /// A file owned by the store: `blobs/<hash>.data`.
    Owned,
    /// A file the store references in place; re-verified whenever it is read.
    External {
        /// Absolute path of the file.
        path: String,
        /// Its length at import.
        len: u64,
        /// Its modification time at import (nanoseconds since the epoch).
        mtime_ns: i128,
    },
}

/// Where the pre-order outboard of a complete blob lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboardLocation {
    /// No outboard: the blob is a single chunk group.
    None,
    /// Small outboard (≤ [`crate::INLINE_MAX`]) stored in the database.
    Inline(Vec<u8>),
    /// A file owned by the store: `blobs/<hash>.obao4`.
    Owned,
}

/// The state of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryRecord {
    /// Every byte is present and verified.
    Complete {
        /// Blob size in bytes.
        size: u64,
        /// Where the data is.
        data: DataLocation,
        /// Where the outboard is.
        outboard: OutboardLocation,
        /// False until the owned files have been fsynced; an entry that is
        /// not durable at open is re-verified before it is trusted.
        durable: bool,
    },
    /// Some ranges are present; which ones is in the checkpoint file
    /// `partial/<hash>.ckpt`. Recorded when data first reaches disk.
    Partial {
        /// Size from the first response header (verified once the last chunk is).
        size: u64,
    },
}

/// A named resource: `(kind, name, version) → hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// The blob holding the resource.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
    /// When the resource was recorded, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// The verified-range record of a partial blob, persisted as a checksummed
/// checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The blob.
    pub hash: Hash,
    /// The size the ranges were verified against.
    pub size: u64,
    /// Boundaries of the verified chunk ranges (strictly increasing).
    pub boundaries: Vec<u64>,
}
