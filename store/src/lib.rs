//! `blixard-store`: a persistent, content-addressed blob store built on
//! BLAKE3 and bao-tree, with metadata in sled.
//!
//! Blobs are addressed by their BLAKE3 hash (the bao root at 16 KiB chunk
//! groups). A blob is *complete* or *partial*: a partial blob holds verified
//! chunk ranges, received from peers in any order, checkpointed so that a
//! crash loses at most one checkpoint interval. Every byte written from the
//! network is verified first; bytes served from a referenced file are
//! re-verified as they are read.
//!
//! - [`Store::import_path`], [`Store::import_bytes`], [`Store::import_reader`]:
//!   add blobs (copy or reference mode), hashing on all cores.
//! - [`Store::write_response`] / [`Store::write_encoded`]: serve a bao
//!   response (size header + pre-order encoding) for chunk ranges.
//! - [`Store::start_receive`] ([`IncomingBlob`]), [`Store::receive_response`],
//!   [`Store::receive_encoded`]: take one in.
//! - [`Store::status`], [`Store::reader`], [`Store::export`].
//! - Resources `(kind, name, version) → hash`, tags, leases and [`Store::gc`].
//!
//! The on-disk format is documented in `docs/STORE.md`.
//!
//! # Modules
//!
//! Each module has one job (private ones are linked for readers of the
//! source: `cargo doc --document-private-items`).
//!
//! | module | job |
//! | --- | --- |
//! | [`store`] | open a data directory: layout, format version, the shared state behind accessors |
//! | [`metadata`] | open a sled database: lock waits, damage set aside |
//! | [`entries`] | the one writer of blob entries: typed transitions, the roots lock as a guard |
//! | [`entry`] | the persisted records: blob entries, resource records, checkpoints |
//! | [`codec`] | the one encoding of persisted records (bincode 2, capped); also used by the node |
//! | [`hash`] | [`Hash`](struct@Hash): a blob's BLAKE3 address, hex in text and JSON |
//! | [`ranges`] | chunk range sets, the effective ranges of a request (rounded to 16 KiB groups) |
//! | [`tree`] | bao tree geometry: sizes, pre-order positions, leaf and parent hashing |
//! | [`tree_walk`] | a tree verified top-down as it streams in ([`TreeWalk`]) |
//! | [`tree_reader`] | a complete blob's tree served in verified pieces ([`TreeReader`]) |
//! | [`leaves`] | hashing many full groups at once at SIMD width |
//! | [`outboard`] | the parallel outboard builder (byte-identical to bao-tree's) |
//! | [`aligned`] | page-aligned buffers for direct I/O |
//! | [`source_map`] | guarded read-only maps of import sources (a shrinking file is an error, not SIGBUS) |
//! | [`sparse`] | zero pages as holes; logical against physical usage |
//! | [`hashing`] | the import hashing engine: windows on all cores, copy or reference |
//! | [`import`] | the import API: paths, bytes, async readers |
//! | [`commit`] | the one place a blob becomes complete; background durability |
//! | [`partial`] | partial blobs: files, verified ranges, completion |
//! | [`checkpoint`] | checkpoint files: write, read, rebuild by re-verification |
//! | [`decode`] | the sans-I/O verifying decoder of one bao response body |
//! | [`receive`] | where a response goes, the decoder's batching sink, blocking receive calls |
//! | [`incoming`] | the async push receive path ([`IncomingBlob`]) |
//! | [`bridge`] | blocking reads over an async stream, for the generic receive call |
//! | [`opened`] | opening a blob for reading (inline, owned, referenced, partial) |
//! | [`encode`] | serving: the bao encoding of requested ranges, zero-copy from maps |
//! | [`reader`] | reading a complete blob ([`BlobReader`]), its outboard |
//! | [`export`] | copying a complete blob out to a path, or handing the file over |
//! | [`seed`] | seeding a download from local blobs: equal groups, zeros, moved chunks |
//! | [`content_index`] | content-defined chunk indexes of complete blobs |
//! | [`resources`] | `(kind, name, version) → hash`, validated kinds and names |
//! | [`roots`] | tags, leases and garbage collection |
//! | [`salvage`] | recovery at open, and after a damaged or lost metadata database |
//! | [`recovery`] | [`Recovery`]: what opening found and took back |
//! | [`verify`] | checking bytes at rest against the tree; damaged groups become missing again |
//! | [`error`] | the crate's one error type |
//!
//! # Async and blocking
//!
//! `async` methods (imports, [`Store::export`], [`Store::write_response`],
//! [`Store::receive_response`], [`Store::async_reader`], [`IncomingBlob`])
//! never block the runtime: their disk work runs on tokio's blocking pool.
//! Every other method that touches the disk says "Blocking" in its docs
//! (opening the store, tags, resources, GC, verification, the `Read`
//! readers, the `*_encoded` pair): in async code, call those inside
//! `tokio::task::spawn_blocking`. Cheap lookups ([`Store::status`],
//! [`Store::resource`], [`Store::lease`]) read the metadata database and
//! may be called anywhere.
//!
//! # Encoded responses
//!
//! A response is the blob's size (8 bytes, u64 little endian) followed by
//! the pre-order bao encoding of the requested ranges, rounded to 16 KiB
//! groups. Every function that writes or reads a whole response includes
//! the size header ([`Store::write_encoded`], [`Store::encode_batches`],
//! [`Store::write_response`], [`Store::receive_encoded`],
//! [`Store::receive_response`]). [`Store::start_receive`] is the one
//! lower-level entry: its caller has read the header (to check the size
//! before committing to it) and passes the size, then pushes the rest.
//!
//! # Example
//!
//! Import a blob into one store, serve half of it to another, then the rest:
//!
//! ```
//! use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, ResourceKind, Store};
//!
//! # #[tokio::main] async fn main() -> blixard_store::Result<()> {
//! let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! let seeder = Store::open(a.path())?;
//! let leecher = Store::open(b.path())?;
//!
//! let image = vec![7u8; 1 << 20];
//! let imported = seeder.import_bytes(image.clone()).await?;
//! let hash = imported.hash;
//! seeder.put_resource_and_release(&ResourceKind::VmImage, "alpine", "3.18", imported.lease)?;
//!
//! // the first half, then the rest, each as one bao response
//! let first = ranges::round_to_groups(&ChunkRanges::from(ChunkNum(0)..ChunkNum(512)));
//! for want in [first.clone(), ranges::all(image.len() as u64) - &first] {
//!     let mut response = Vec::new();
//!     seeder.write_encoded(&hash, &want, &mut response)?;
//!     leecher.receive_encoded(hash, &want, &mut &response[..])?;
//! }
//! assert_eq!(leecher.status(&hash)?, BlobStatus::Complete { size: 1 << 20 });
//! assert_eq!(leecher.read_to_vec(&hash)?, image);
//! # Ok(()) }
//! ```

#![allow(rustdoc::private_intra_doc_links)]

mod aligned;
mod bridge;
mod checkpoint;
// The on-disk record encodings and entry layout are internal; the fuzz
// targets reach them through the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod codec;
#[cfg(not(feature = "fuzzing"))]
mod codec;
mod commit;
pub mod content_index;
mod decode;
mod encode;
mod entries;
#[cfg(feature = "fuzzing")]
pub mod entry;
#[cfg(not(feature = "fuzzing"))]
mod entry;
pub mod error;
mod export;
pub mod hash;
mod hashing;
mod import;
mod incoming;
mod leaves;
mod metadata;
mod opened;
mod outboard;
mod partial;
pub mod ranges;
mod reader;
mod receive;
mod recovery;
mod resources;
mod roots;
mod salvage;
mod seed;
mod source_map;
mod sparse;
mod store;
mod tree;
mod tree_reader;
mod tree_walk;
mod verify;

pub use bao_tree::io::BaoContentItem;
/// The shared byte buffer the store takes and hands out (re-exported so
/// embedders need no `bytes` dependency of their own).
pub use bytes::Bytes;
pub use codec::{decode_record, encode_record};
pub use encode::{EncodedResponse, ServeOutcome, MAP_WINDOW};
pub use error::{Error, Result};
pub use export::ExportOptions;
pub use hash::{Hash, ParseHashError};
pub use import::{ImportMode, ImportOutcome};
pub use incoming::IncomingBlob;
pub use metadata::open_or_set_aside;
pub use ranges::{ChunkNum, ChunkRanges};
pub use reader::{is_not_held, AsyncBlobReader, BlobReader};
pub use receive::{ReceiveOutcome, BATCH_BYTES};
pub use recovery::Recovery;
pub use resources::{validate_resource_key, Resource, ResourceKind, MAX_NAME_LEN};
pub use roots::{GcStats, Lease, MAX_TAG_LEN};
pub use seed::{SeedOutcome, Seeder, MAX_SEED_BASES};
pub use sparse::StoreUsage;
pub use store::{BlobStatus, Store, StoreConfig, FORMAT_VERSION};
pub use tree_reader::TreeReader;
pub use tree_walk::{TreeWalk, WalkError};
pub use verify::VerifyReport;

/// Blobs and outboards up to this size are stored inline in the metadata database.
pub const INLINE_MAX: u64 = 16 * 1024;
/// Largest blob the store accepts (32 TiB); larger size headers are rejected.
pub const MAX_BLOB_SIZE: u64 = 1 << 45;
