//! `blixard-node`: the Blixard P2P node — peers, a priority transfer queue,
//! multi-source verified downloads, a localhost control API and Prometheus
//! metrics — over the `blixard-protocol` QUIC protocol and a
//! `blixard-store` chunk store. The `blixard` binary is a thin shell over
//! this library.
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

mod bandwidth;
mod builder;
pub mod cache;
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
