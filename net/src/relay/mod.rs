//! The relay: a TLS-over-TCP server that forwards QUIC datagrams between
//! node ids for nodes that cannot reach each other over UDP, its client,
//! and the UDP echo probe it answers. Frames are in
//! [`crate::relay::frame`]; the whole protocol is in `docs/RELAY.md`.
//!
//! - [`server`]: the relay server ([`RelayServer`]): logins, forwarding,
//!   limits per client, the UDP echo probe ([`probe`]).
//! - [`client`]: one logged-in connection to a relay ([`RelayClient`]).
//! - [`links`]: the relays a node keeps ([`Relays`]): home by lowest
//!   login round trip, reconnection with backoff, peers' relays on demand.
//! - [`socket`]: [`PathSocket`], one `quinn` socket over UDP and relays.
//! - [`frame`]: the frames, socket-free and fuzzed; [`stream`]: writing
//!   them to a TLS stream.
//!
//! ```
//! # #[tokio::main] async fn main() -> blixard_net::Result<()> {
//! use blixard_net::{relay::{Incoming, RelayClient, RelayLimits, RelayServer}, RelayAddr, SecretKey};
//!
//! let server = RelayServer::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), RelayLimits::default()).await?;
//! let relay = RelayAddr { id: server.node_id(), addr: server.addr() };
//! let (a, b) = (SecretKey::generate(), SecretKey::generate());
//! let alice = RelayClient::connect(&a, relay).await?;
//! let mut bob = RelayClient::connect(&b, relay).await?;
//! alice.send(b.node_id(), 0, 0, "hello".into());
//! match bob.recv().await {
//!     Some(Incoming::Datagrams { src, datagrams }) => assert_eq!((src, &datagrams.payload[..]), (a.node_id(), &b"hello"[..])),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(()) }
//! ```

mod client;
pub mod frame;
mod links;
pub mod probe;
mod server;
mod socket;
mod stream;

pub use client::{Incoming, RelayClient, RelaySender, CONNECT_TIMEOUT, DEAD_AFTER, KEEPALIVE, SEND_QUEUE_FRAMES};
pub use links::{Relays, LINK_IDLE, MAX_LINKS, MAX_RECONNECT, RECONNECT};
pub use server::{code, RelayLimits, RelayServer, RelayStats};
pub use socket::{Path, PathSocket, PathStats, MAX_MAPPED_PEERS, MAX_RELAYED_DATAGRAM};

/// The relay's TLS ALPN.
pub use crate::tls::RELAY_ALPN as ALPN;
/// The relay's default port (TCP, and UDP for the probe).
pub const DEFAULT_PORT: u16 = 3340;

/// The TLS configuration of a relay client logged in as `key`'s node and
/// pinning `relay` (for other client implementations and tests; the
/// client here uses it).
pub fn client_tls_config(key: &crate::SecretKey, relay: crate::NodeId) -> crate::Result<rustls::ClientConfig> {
    crate::tls::relay_client_config(key, relay)
}
