//! Blixard P2P networking: who a node is and how its datagrams get to a
//! peer. The blob protocol (`blixard-protocol`) and the node build on it;
//! it knows nothing of blobs or stores, so `blixard relay` builds without
//! them.
//!
//! - [`identity`]: node keys and [`NodeId`]; [`addr`]: [`NodeAddr`] and
//!   [`RelayAddr`], how to reach a node.
//! - [`tls`]: certificates from node keys, the verifiers on both sides,
//!   ALPNs.
//! - [`endpoint`]: the QUIC [`Endpoint`]: binding, dialling with identity
//!   checks, accepting, transport tuning; [`connection`]: a
//!   [`Connection`] to a proven peer.
//! - [`relay`]: the relay server and client, its frames
//!   ([`relay::frame`], socket-free and fuzzed), the links a node keeps to
//!   relays, the UDP echo probe, and the [`relay::PathSocket`] that carries
//!   one endpoint over UDP and relays at once.
//! - [`backoff`]: the one retry policy of every reconnect and retry loop.
//! - [`rate`]: token buckets shared by the relay and the blob server.
//! - [`codes`]: the [`ErrorCode`]s of stream resets and connection closes.
//! - [`error`]: the crate's one [`Error`].
//!
//! # Example
//!
//! Two endpoints on loopback: a dial checks the peer's key.
//!
//! ```
//! use blixard_net::{Endpoint, EndpointOptions, SecretKey};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, EndpointOptions::default())?;
//! let client = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, EndpointOptions::default())?;
//! let accept = tokio::spawn({
//!     let server = server.clone();
//!     async move { server.accept().await }
//! });
//! let conn = client.connect(server.local_addr(), Some(server.node_id())).await?;
//! assert_eq!(conn.remote_id(), server.node_id());
//! let _ = accept.await;
//! # Ok(()) }
//! ```

#![allow(rustdoc::private_intra_doc_links)]

pub mod addr;
pub mod backoff;
pub mod codes;
pub mod connection;
pub mod endpoint;
pub mod error;
pub mod identity;
pub mod rate;
pub mod relay;
pub mod tls;

pub use addr::{NodeAddr, RelayAddr};
pub use codes::ErrorCode;
pub use connection::Connection;
pub use endpoint::{Endpoint, EndpointOptions, Tuning};
pub use error::{Error, Result};
pub use identity::{NodeId, SecretKey};
