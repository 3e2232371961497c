//! `blixard-node`: the Blixard P2P node — peers, a priority transfer queue,
//! multi-source verified downloads, a localhost control API and Prometheus
//! metrics — over the `blixard-protocol` QUIC protocol and a
//! `blixard-store` chunk store. The `blixard` binary is a thin shell over
//! this library.
//!
//! # Modules
//!
//! | module | job |
//! | --- | --- |
//! | [`node`] | [`Node`], the facade: every public operation, delegated to the parts below |
//! | [`builder`] | [`NodeBuilder`] and the assembly of a node: database, endpoint, relay, tasks |
//! | [`shared`] | what a running node's parts share (store, endpoint, peers, transfer table, limits) |
//! | [`transfers`] | [`DownloadRequest`], the transfer table (the one owner of transfers), their records |
//! | [`dispatch`] | the dispatcher, the retry loop, one attempt, progress reports |
//! | [`queue`] | the priority order (Critical > High > Normal > Low, FIFO within) |
//! | [`claims`] | claim ordering: the newest claim per publisher and name, replays of older ones refused |
//! | [`download`] | resolving a name, seeding from local blobs, multi-source striped fetch |
//! | [`peers`] | the peer book and its retention policy, dialing, live connections, health and peer exchange |
//! | [`uploads`] | importing and publishing, and the imports running now |
//! | [`cache`] | downloads' last use, LRU eviction over `max_cache_size`, periodic GC |
//! | [`bandwidth`] | the node's token buckets and the serve meter |
//! | [`config`] | [`NodeOptions`] and [`P2pConfig`]: defaults, TOML, validation |
//! | [`events`] | [`P2pEvent`] and the types it carries |
//! | [`stats`] | [`Stats`], node-wide figures |
//! | [`metrics`] | Prometheus metrics |
//! | [`control`] | the control API (loopback HTTP + JSON, token-guarded) |
//! | [`client`] | the typed client of the control API, shared by the CLI and the TUI |
//! | [`codec`] | the node's persisted records: a version byte over the store's record codec |
//! | [`join`] | awaiting many futures in one task, in order |
//! | [`error`] | the crate's one error type |
//!
//! Private modules are linked for readers of the source
//! (`cargo doc --document-private-items`).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use blixard_node::{Node, NodeOptions, P2pConfig, TransferPriority, TransferState};
//! use blixard_store::ResourceKind;
//!
//! let dir = tempfile::tempdir()?;
//! let start = |id: u64| Node::spawn(NodeOptions {
//!     id,
//!     data_dir: dir.path().join(format!("node-{id}")),
//!     bind: "127.0.0.1:0".parse().unwrap(),
//!     config: P2pConfig::default(),
//! });
//! let (seeder, leecher) = (start(1).await?, start(2).await?);
//!
//! // Upload an image on one node...
//! let image = dir.path().join("image.img");
//! std::fs::write(&image, vec![7u8; 100_000])?;
//! seeder.upload_resource(ResourceKind::VmImage, "ubuntu-server", "22.04", &image).await?;
//!
//! // ...and download it, verified, on the other.
//! leecher.connect_peer(&format!("{}@{}", seeder.node_id(), seeder.addr())).await?;
//! let id = leecher.request_download(ResourceKind::VmImage, "ubuntu-server", "22.04", TransferPriority::High)?;
//! let done = leecher.wait(id).await?;
//! assert_eq!(done.state, TransferState::Completed);
//! # seeder.shutdown().await;
//! # leecher.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![allow(rustdoc::private_intra_doc_links)]

mod bandwidth;
mod builder;
pub mod cache;
mod claims;
pub mod client;
mod codec;
pub mod config;
pub mod control;
mod dispatch;
mod download;
pub mod error;
pub mod events;
mod join;
pub mod metrics;
mod node;
mod peers;
pub mod queue;
mod shared;
mod stats;
pub mod transfers;
mod uploads;

/// The store and protocol crates, for what is not re-exported by name.
pub use blixard_protocol as protocol;
pub use blixard_protocol::{Error as ProtocolError, NodeAddr, NodeId, SecretKey};
pub use blixard_store as store;
pub use blixard_store::{
    Bytes, Error as StoreError, ExportOptions, Hash, ImportMode, ResourceKind, Store, VerifyReport,
};
pub use builder::{NodeBuilder, DEFAULT_BIND};
pub use config::{NodeOptions, P2pConfig};
pub use error::{Error, Result};
pub use events::{
    P2pEvent, PeerInfo, PeerPath, ProviderShare, RemoteResource, ResourceInfo, TransferProgress, UploadProgress,
    EVENTS_CAPACITY,
};
pub use node::Node;
pub use queue::TransferPriority;
pub use stats::Stats;
pub use transfers::{DownloadRequest, FailureReason, TransferFailure, TransferId, TransferInfo, TransferState};
