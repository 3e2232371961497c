//! The Blixard P2P blob protocol: verified, incremental range transfers of
//! BLAKE3/bao blobs from a [`blixard_store::Store`], over the QUIC
//! endpoint of [`blixard_net`] (nodes are their Ed25519 keys). The net
//! crate's common types are re-exported here ([`Endpoint`], [`NodeId`],
//! [`NodeAddr`], ...).
//!
//! - [`wire`]: framing, messages, error codes; socket-free, fuzzed.
//! - [`server`]: answering requests from a store, within [`limits`]
//!   (the request loop; `server::respond` sends blobs, trees, indexes).
//! - [`client`]: get (verified into a store, resuming), observe, lookup,
//!   list, ping, peers; [`response`] is a blob response's state machine,
//!   without sockets.
//! - [`frame`], [`watched`]: framing, response deadlines and chunk sends
//!   over QUIC streams.
//! - [`admission`]: connection and stream caps per peer, address and node.
//! - [`claim`]: signed resource claims; [`plan`]: the server's plan for a
//!   blob request (which blobs and ranges), before the first byte is sent.
//! - [`limits`]: every length and count the protocol caps; [`codes`]:
//!   the error codes (from [`blixard_net`]).
//! - [`error`]: the crate's one [`Error`].
//! - [`conformance`]: checks any peer against the specification.
//!
//! `docs/PROTOCOL.md` specifies every byte.
//!
//! # Example
//!
//! Two nodes on loopback: one serves a blob, the other fetches it.
//!
//! ```
//! use blixard_protocol::{client, server, Endpoint, EndpointOptions, SecretKey};
//! use blixard_store::Store;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let provider = Store::open(a_dir.path())?;
//! let blob = provider.import_bytes(vec![7u8; 100_000]).await?;
//!
//! let server = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, EndpointOptions::default())?;
//! let ctx = server::ServerContext::new(provider.clone(), Default::default());
//! tokio::spawn(server::accept_loop(server.clone(), ctx));
//!
//! let client_ep = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, EndpointOptions::default())?;
//! let conn = client_ep.connect(server.local_addr(), Some(server.node_id())).await?;
//! let store = Store::open(b_dir.path())?;
//! let got = client::get(&conn, &store, blob.hash, &client::GetOptions::default()).await?;
//! assert!(got.complete);
//! assert_eq!(store.read_to_vec(&blob.hash)?, vec![7u8; 100_000]);
//! # Ok(()) }
//! ```

#![allow(rustdoc::private_intra_doc_links)]

pub mod admission;
pub mod claim;
pub mod client;
pub mod conformance;
pub mod error;
pub mod frame;
pub mod limits;
pub mod plan;
pub mod response;
pub mod server;
pub mod watched;
pub mod wire;

pub use blixard_net::{
    codes, Connection, Endpoint, EndpointOptions, ErrorCode, NodeAddr, NodeId, RelayAddr, SecretKey, Tuning,
};
pub use error::{Error, Result};
