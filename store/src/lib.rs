//! wip
pub mod bridge;
pub mod codec;
pub mod entry;
pub mod error;
pub mod hash;
mod import;
mod partial;
pub mod ranges;
mod serve;
mod store;
pub mod tree;
mod roots;
mod resources;
pub use error::{Error, Result};
pub use hash::Hash;
pub use store::*;
pub use import::{ImportMode, ImportOutcome};
pub use roots::{Lease, GcStats};
pub use resources::{ResourceKind, Resource};
pub use serve::{BlobReader, ServeOutcome};
pub use partial::ReceiveOutcome;
pub use ranges::{ChunkNum, ChunkRanges};
pub use bao_tree::io::BaoContentItem;

/// Blobs and outboards up to this size are stored inline in the metadata database.
pub const INLINE_MAX: u64 = 16 * 1024;
/// Largest blob the store accepts (32 TiB); larger size headers are rejected.
pub const MAX_BLOB_SIZE: u64 = 1 << 45;
