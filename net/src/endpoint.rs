//! A QUIC endpoint with a node identity: binding, dialling with identity
//! checks, accepting, and the transport tuning.
//!
//! The endpoint is built over any `quinn::AsyncUdpSocket`: [`Endpoint::bind`]
//! uses a plain UDP socket with large buffers, [`Endpoint::with_relays`] a
//! [`PathSocket`] (UDP and relays under one endpoint: a peer is dialed at
//! its direct addresses and through its relay at once), and
//! [`Endpoint::with_socket`] any other.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quinn::{crypto::rustls::QuicClientConfig, crypto::rustls::QuicServerConfig, VarInt};

pub use crate::connection::Connection;
pub use crate::relay::{Path, PathSocket};
use crate::{
    codes::ErrorCode,
    tls::{self, ClientFilter, ServerVerifier},
    Error, NodeAddr, NodeId, Result, SecretKey,
};

/// Most bidirectional streams a peer may have open on one connection at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// Transport tuning. The defaults are measured on loopback and sized for
/// LAN/WAN links (a 16 MiB stream window covers 1 Gbit/s at 130 ms RTT).
///
/// ```
/// use blixard_net::{EndpointOptions, Tuning};
///
/// let tuning = Tuning { server_send_window: 16 * 1024 * 1024, ..Tuning::default() };
/// let options = EndpointOptions { tuning, ..Default::default() };
/// ```
#[derive(Debug, Clone)]
pub struct Tuning {
    /// UDP socket send and receive buffers (4 MiB removed loss on loopback).
    pub socket_buffer_bytes: usize,
    /// Per-stream receive window for responses we download.
    pub stream_window: u32,
    /// Per-connection receive window for responses we download.
    pub connection_window: u32,
    /// Bytes in flight we send per connection we dialled (requests only).
    pub send_window: u64,
    /// Bytes in flight we send per connection we accepted: what we serve.
    /// Also the most memory one peer can make us buffer, so it is moderate
    /// (8 MiB carries 80 MB/s at 100 ms RTT per connection).
    pub server_send_window: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval (holds NAT mappings, detects dead peers).
    pub keep_alive: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            socket_buffer_bytes: 4 * 1024 * 1024,
            stream_window: 16 * 1024 * 1024,
            connection_window: 32 * 1024 * 1024,
            send_window: 1024 * 1024,
            server_send_window: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
        }
    }
}

impl Tuning {
    fn common(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(self.idle_timeout.try_into().expect("idle timeout fits a varint")));
        t
    }

    /// Transport for connections we dial: we download on them, so the
    /// receive windows are large; the peer may open no streams to us.
    pub fn client_transport(&self) -> quinn::TransportConfig {
        let mut t = self.common();
        t.send_window(self.send_window)
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u32(self.connection_window))
            .max_concurrent_bidi_streams(VarInt::from_u32(0));
        t
    }

    /// Transport for connections we accept: peers send only small requests,
    /// so receive windows are small (bounding memory per connection), and a
    /// peer may open [`MAX_STREAMS_PER_CONNECTION`] streams at once.
    pub fn server_transport(&self) -> quinn::TransportConfig {
        let mut t = self.common();
        t.send_window(self.server_send_window)
            .stream_receive_window(VarInt::from_u32(128 * 1024))
            .receive_window(VarInt::from_u32(1024 * 1024))
            .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
        t
    }
}

/// Options for an endpoint.
///
/// ```
/// use blixard_net::{Endpoint, EndpointOptions, SecretKey};
///
/// # #[tokio::main] async fn main() -> blixard_net::Result<()> {
/// let endpoint = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), EndpointOptions::default())?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct EndpointOptions {
    /// Transport tuning.
    pub tuning: Tuning,
    /// Accept only clients this returns true for (allowlists); all if `None`.
    pub client_filter: Option<ClientFilter>,
    /// quinn's endpoint-wide settings (connection-id generation, reset
    /// keys, the QUIC bit). [`Endpoint::with_relays`] turns greasing the
    /// QUIC bit off so that probe datagrams can be told apart from QUIC.
    pub quinn: quinn::EndpointConfig,
}

/// A QUIC endpoint speaking the Blixard protocol as one node.
///
/// ```
/// use blixard_net::{Endpoint, EndpointOptions, SecretKey};
///
/// # #[tokio::main] async fn main() -> blixard_net::Result<()> {
/// let a = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), EndpointOptions::default())?;
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let b = Endpoint::from_std_socket(SecretKey::generate(), socket, EndpointOptions::default())?;
/// let server = tokio::spawn({
///     let b = b.clone();
///     async move { b.accept().await }
/// });
/// let conn = a.connect(b.local_addr(), Some(b.node_id())).await?;
/// assert_eq!(conn.remote_id(), b.node_id());
/// assert_eq!(server.await.unwrap().unwrap()?.remote_id(), a.node_id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    key: Arc<SecretKey>,
    tuning: Tuning,
    paths: Option<Arc<PathSocket>>,
}

impl Endpoint {
    /// Binds a UDP socket at `addr` (port 0 picks a free one).
    pub fn bind(key: SecretKey, addr: SocketAddr, options: EndpointOptions) -> Result<Self> {
        let socket = bind_udp(addr, options.tuning.socket_buffer_bytes)?;
        let runtime = quinn::default_runtime().ok_or(Error::NoRuntime)?;
        let socket = runtime.wrap_udp_socket(socket).map_err(|source| Error::Bind { addr, source })?;
        Self::with_socket(key, socket, options)
    }

    /// Builds an endpoint over a UDP socket the caller bound (its buffers
    /// are raised as [`Endpoint::bind`] does; it is made non-blocking).
    pub fn from_std_socket(key: SecretKey, socket: std::net::UdpSocket, options: EndpointOptions) -> Result<Self> {
        let addr = socket.local_addr().map_err(Error::LocalAddr)?;
        let s = socket2::SockRef::from(&socket);
        // Best effort, as in `udp_socket`.
        let _ = s.set_recv_buffer_size(options.tuning.socket_buffer_bytes);
        let _ = s.set_send_buffer_size(options.tuning.socket_buffer_bytes);
        let runtime = quinn::default_runtime().ok_or(Error::NoRuntime)?;
        let socket = runtime.wrap_udp_socket(socket).map_err(|source| Error::Bind { addr, source })?;
        Self::with_socket(key, socket, options)
    }

    /// Builds an endpoint over `socket` (bound by the caller, e.g. with
    /// [`bind_udp`]) and relays: `relays` are the candidates for this
    /// node's home relay (the nearest is kept connected); with none, peers'
    /// relays are still used to reach them. Needs a tokio runtime.
    pub fn with_relays(
        key: SecretKey,
        socket: std::net::UdpSocket,
        relays: Vec<crate::RelayAddr>,
        mut options: EndpointOptions,
    ) -> Result<Self> {
        let addr = socket.local_addr().map_err(Error::LocalAddr)?;
        let runtime = quinn::default_runtime().ok_or(Error::NoRuntime)?;
        let udp = runtime.wrap_udp_socket(socket).map_err(|source| Error::Bind { addr, source })?;
        let key = Arc::new(key);
        let paths = PathSocket::new(key.clone(), udp, relays).map_err(Error::LocalAddr)?;
        options.quinn.grease_quic_bit(false);
        Self::build(key, paths.clone(), Some(paths), options)
    }

    /// Builds an endpoint over a custom socket.
    pub fn with_socket(
        key: SecretKey,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        options: EndpointOptions,
    ) -> Result<Self> {
        Self::build(Arc::new(key), socket, None, options)
    }

    fn build(
        key: Arc<SecretKey>,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        paths: Option<Arc<PathSocket>>,
        options: EndpointOptions,
    ) -> Result<Self> {
        let crypto = QuicServerConfig::try_from(tls::server_config(&key, options.client_filter.clone())?)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(options.tuning.server_transport()));
        let runtime = quinn::default_runtime().ok_or(Error::NoRuntime)?;
        let addr = socket.local_addr().map_err(Error::LocalAddr)?;
        let inner = quinn::Endpoint::new_with_abstract_socket(options.quinn, Some(server), socket, runtime)
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Endpoint { inner, key, tuning: options.tuning, paths })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// This node's secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    /// This node's secret key, shared (for signing claims).
    pub fn key(&self) -> Arc<SecretKey> {
        self.key.clone()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        let addr = self.inner.local_addr().expect("a bound socket has an address");
        match (&self.paths, addr) {
            // quinn sees IPv4 in `::ffff:` form under a path socket.
            (Some(_), SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddr::new(ip.into(), a.port()),
                None => addr,
            },
            _ => addr,
        }
    }

    /// The socket with relays under this endpoint, if it has one.
    pub fn path_socket(&self) -> Option<&Arc<PathSocket>> {
        self.paths.as_ref()
    }

    /// The relay this node keeps a connection to, once chosen.
    pub fn home_relay(&self) -> Option<crate::RelayAddr> {
        self.paths.as_ref().and_then(|p| p.relays().home())
    }

    /// This node's address: its id, its bound address (if not a wildcard),
    /// and its home relay.
    pub fn node_addr(&self) -> NodeAddr {
        let local = self.local_addr();
        let direct_addrs = if local.ip().is_unspecified() { Vec::new() } else { vec![local] };
        NodeAddr { id: Some(self.node_id()), direct_addrs, relay: self.home_relay() }
    }

    /// The underlying quinn endpoint.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }

    /// Dials `addr`. With `expected`, the peer must be that node; without, the
    /// id seen is returned in the connection (trust on first use).
    pub async fn connect(&self, addr: SocketAddr, expected: Option<NodeId>) -> Result<Connection> {
        let verifier = ServerVerifier::new(expected);
        let crypto = QuicClientConfig::try_from(tls::client_config(&self.key, verifier.clone())?)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(self.tuning.client_transport()));
        let connecting = self
            .inner
            .connect_with(config, addr, "blixard")
            .map_err(|e| Error::Connect { addr, reason: e.to_string() })?;
        match connecting.await {
            Ok(c) => Connection::from_quinn(c, self.paths.clone()),
            Err(e) => match (expected, verifier.seen()) {
                (Some(expected), Some(actual)) if expected != actual => {
                    Err(Error::WrongIdentity { addr, expected, actual })
                }
                _ => Err(Error::Connect { addr, reason: e.to_string() }),
            },
        }
    }

    /// Dials a node at every direct address it has and through its relay
    /// (if it has one, its id is known and this endpoint has a path
    /// socket) at once; the first handshake to finish wins and the others
    /// are dropped. With an id, the peer must be that node. A wrong
    /// identity is reported before other failures, since retrying will not
    /// fix it.
    pub async fn connect_node(&self, node: &NodeAddr) -> Result<Connection> {
        let relayed = match (&self.paths, node.relay, node.id) {
            (Some(p), Some(relay), Some(id)) => Some(p.relay_addr(id, relay)),
            _ => None,
        };
        if node.direct_addrs.is_empty() && relayed.is_none() {
            return Err(Error::NoPath(node.to_string()));
        }
        let mut dials = tokio::task::JoinSet::new();
        for &addr in node.direct_addrs.iter().chain(relayed.as_ref()) {
            let (me, id) = (self.clone(), node.id);
            dials.spawn(async move { me.connect(addr, id).await });
        }
        let mut failure = None;
        while let Some(done) = dials.join_next().await {
            match done {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e @ Error::WrongIdentity { .. })) => failure = Some(e),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(join) => failure = failure.or(Some(Error::NoPath(format!("{node}: {join}")))),
            }
        }
        Err(failure.expect("at least one dial"))
    }

    /// Waits for the next incoming connection and completes its handshake.
    /// `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Result<Connection>> {
        let incoming = self.inner.accept().await?;
        let addr = incoming.remote_address();
        Some(match incoming.await {
            Ok(c) => Connection::from_quinn(c, self.paths.clone()),
            Err(e) => Err(Error::Connect { addr, reason: e.to_string() }),
        })
    }

    /// Closes every connection with `code` and stops accepting.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        self.inner.close(code.varint(), reason.as_bytes());
    }

    /// Waits until every connection is closed (after [`Endpoint::close`]).
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

/// Binds a UDP socket at `addr` with `buffer`-byte send and receive
/// buffers (as far as the kernel allows), for [`Endpoint::with_relays`].
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into()).map_err(bind)?;
    Ok(socket.into())
}
