//! The Blixard P2P wire protocol: QUIC (quinn + rustls) between nodes that
//! are their Ed25519 keys, carrying verified, incremental range transfers of
//! BLAKE3/bao blobs from a [`blixard_store::Store`].
//!
//! - [`identity`]: node keys, [`NodeId`]; [`addr`]: [`NodeAddr`], how to reach one.
//! - [`tls`]: certificates from node keys and the verifiers on both sides.
//! - [`endpoint`]: binding, dialling with identity checks, transport tuning.
//! - [`wire`]: framing, messages, error codes; socket-free, fuzzed.
//! - [`server`]: answering requests from a store, within [`limits`].
//! - [`client`]: get (verified into a store, resuming), observe, lookup,
//!   list, ping, peers; [`response`] is a blob response's state machine,
//!   without sockets.
//! - [`frame`], [`watched`], [`rate`]: framing, response deadlines and
//!   chunk sends, rate limits over QUIC streams.
//! - [`relay_frame`]: the relay's frames (`docs/RELAY.md`), without sockets.
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

pub mod addr;
pub mod admission;
pub mod claim;
pub mod client;
pub mod codes;
pub mod conformance;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod identity;
pub mod limits;
pub mod plan;
pub mod rate;
pub mod relay;
pub mod relay_frame;
pub mod response;
pub mod server;
pub mod tls;
pub mod watched;
pub mod wire;

pub use addr::{NodeAddr, RelayAddr};
pub use endpoint::{Connection, Endpoint, EndpointOptions, Tuning};
pub use error::{Error, Result};
pub use identity::{NodeId, SecretKey};
pub use wire::ErrorCode;
