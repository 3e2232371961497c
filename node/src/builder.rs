//! [`NodeBuilder`]: how an embedder starts a [`Node`] — from a data dir,
//! or from parts it already holds (a [`Store`], a [`SecretKey`], a UDP
//! socket), with [`P2pConfig`] defaults for everything else — and the
//! assembly of a node from those parts: its database, endpoint, relay,
//! peers, transfer table and tasks.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_protocol::{server, Endpoint, EndpointOptions, NodeId, SecretKey};
use blixard_store::Store;
use tokio::{
    sync::{broadcast, Semaphore},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{
    bandwidth, config::NodeOptions, dispatch, events::EVENTS_CAPACITY, metrics::Metrics, peers::Peers, shared::Inner,
    transfers::table::TransferTable, Error, Node, P2pConfig, Result,
};

/// The address a node binds when given neither [`NodeBuilder::bind`] nor
/// [`NodeBuilder::socket`]: every IPv4 interface, a free port.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Builds a [`Node`] (see [`Node::builder`]).
///
/// Each part falls back on the data dir, then on a default:
///
/// | part | given | else, with [`data_dir`](Self::data_dir) | else |
/// |---|---|---|---|
/// | store | [`store`](Self::store) | `DIR/store` | — (an error) |
/// | identity | [`secret_key`](Self::secret_key) | `DIR/node.key`, made once | a new key each start |
/// | peer book, queued transfers | — | `DIR/node.db` | in memory |
/// | UDP socket | [`socket`](Self::socket) or [`bind`](Self::bind) | [`DEFAULT_BIND`] | [`DEFAULT_BIND`] |
///
/// ```
/// use blixard_node::{Node, P2pConfig};
/// use blixard_store::Store;
///
/// # #[tokio::main] async fn main() -> blixard_node::Result<()> {
/// // A node over a store the program already uses, on a socket it bound.
/// let store = Store::temporary()?;
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let config = P2pConfig { max_concurrent_transfers: 8, ..P2pConfig::default() };
/// let node = Node::builder().store(store.clone()).socket(socket).config(config).spawn().await?;
/// assert_eq!(node.store().dir(), store.dir());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until spawn() is awaited"]
pub struct NodeBuilder {
    label: u64,
    data_dir: Option<PathBuf>,
    store: Option<Store>,
    key: Option<SecretKey>,
    bind: Option<SocketAddr>,
    socket: Option<UdpSocket>,
    config: P2pConfig,
}

/// What [`Node`]'s start needs, every default applied.
pub(crate) struct Parts {
    pub label: u64,
    pub data_dir: Option<PathBuf>,
    pub store: Store,
    pub key: SecretKey,
    pub endpoint_socket: EndpointSocket,
    pub config: P2pConfig,
}

/// Where the endpoint's UDP comes from.
pub(crate) enum EndpointSocket {
    Bind(SocketAddr),
    Socket(UdpSocket),
}

impl NodeBuilder {
    /// The data directory: identity key, store and node database, each
    /// unless given on its own. Created if missing.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Use this store (the node shares it: the embedder may keep using its
    /// clone) instead of `DIR/store`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Use this identity instead of the data dir's key file.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Bind a new UDP socket here (port 0 picks a free one).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Serve on this already bound UDP socket (it wins over [`bind`](Self::bind)).
    pub fn socket(mut self, socket: UdpSocket) -> Self {
        self.socket = Some(socket);
        self
    }

    /// Settings ([`P2pConfig::default`] if not given). Checked at spawn.
    pub fn config(mut self, config: P2pConfig) -> Self {
        self.config = config;
        self
    }

    /// A number for this node in logs (the CLI's `--id`). Default 0.
    pub fn label(mut self, label: u64) -> Self {
        self.label = label;
        self
    }

    /// Opens what was not given and starts the node: serving, health
    /// checks, discovery, the transfer queue and garbage collection. Errors
    /// name the part that failed ("Failed to create node: ...").
    pub async fn spawn(self) -> Result<Node> {
        self.config.validate()?;
        if let Some(dir) = &self.data_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::start(format!("data dir {} is not writable", dir.display()), e))?;
        }
        let key = match (self.key, &self.data_dir) {
            (Some(key), _) => key,
            (None, Some(dir)) => SecretKey::load_or_create(dir).map_err(|e| Error::start("identity", e))?,
            (None, None) => SecretKey::generate(),
        };
        let store = match (self.store, &self.data_dir) {
            (Some(store), _) => store,
            (None, Some(dir)) => {
                let store_dir = dir.join("store");
                let opened = tokio::task::spawn_blocking(move || {
                    Store::open(&store_dir).map_err(|e| Error::start(format!("store in {}", store_dir.display()), e))
                });
                opened.await.map_err(|e| Error::start("store", e))??
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "a node needs a data dir or a store (NodeBuilder::data_dir or ::store)".into(),
                ))
            }
        };
        let endpoint_socket = match self.socket {
            Some(socket) => EndpointSocket::Socket(socket),
            None => EndpointSocket::Bind(self.bind.unwrap_or(DEFAULT_BIND)),
        };
        Parts { label: self.label, data_dir: self.data_dir, store, key, endpoint_socket, config: self.config }
            .start()
            .await
    }
}

impl Node {
    /// A builder: data dir or store, key, socket or bind address, settings.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> blixard_node::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let node = blixard_node::Node::builder()
    ///     .data_dir(dir.path())
    ///     .bind("127.0.0.1:0".parse().unwrap())
    ///     .spawn()
    ///     .await?;
    /// println!("{} listening on {}", node.node_id(), node.addr());
    /// # Ok(()) }
    /// ```
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Starts a node from [`NodeOptions`] (the same as the builder with a
    /// data dir, a bind address, settings and a label).
    pub async fn spawn(options: NodeOptions) -> Result<Node> {
        Node::builder()
            .label(options.id)
            .data_dir(options.data_dir)
            .bind(options.bind)
            .config(options.config)
            .spawn()
            .await
    }
}

impl Parts {
    /// Opens the node database, binds the endpoint (and the relay this node
    /// runs, if any), assembles the node and starts its tasks.
    async fn start(self) -> Result<Node> {
        let Parts { label, data_dir, store, key, endpoint_socket, config } = self;
        let db = match &data_dir {
            Some(dir) => open_node_db(&dir.join("node.db"))?,
            None => sled::Config::new().temporary(true).open().map_err(|e| Error::start("node database", e))?,
        };
        let metrics = Arc::new(Metrics::new());
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        // Turns away, at the handshake, peers not on the allowlist and
        // every peer while P2P is off.
        let p2p_on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let client_filter: blixard_net::tls::ClientFilter = {
            let (allowed, on) = (config.allowlist.clone(), p2p_on.clone());
            Arc::new(move |id: &NodeId| {
                if !on.load(std::sync::atomic::Ordering::SeqCst) {
                    debug!(peer = %id, "turned a peer away: P2P is off");
                    return false;
                }
                let ok = allowed.as_ref().is_none_or(|a| a.contains(id));
                if !ok {
                    warn!(peer = %id, "refused a peer not on the allowlist");
                }
                ok
            })
        };
        let endpoint_options = EndpointOptions { client_filter: Some(client_filter), ..Default::default() };
        let relay_key = match config.relay_server {
            Some(_) => Some(
                blixard_protocol::SecretKey::from_pkcs8(key.pkcs8_der())
                    .map_err(|e| Error::start("the relay's key", e))?,
            ),
            None => None,
        };
        let socket = match endpoint_socket {
            EndpointSocket::Bind(addr) => {
                blixard_net::endpoint::bind_udp(addr, endpoint_options.tuning.socket_buffer_bytes)
                    .map_err(|e| Error::start(format!("cannot listen on UDP {addr} (port in use?)"), e))?
            }
            EndpointSocket::Socket(socket) => socket,
        };
        let endpoint = Endpoint::with_relays(key, socket, config.relays.clone(), endpoint_options)
            .map_err(|e| Error::start("the QUIC endpoint", e))?;
        let relay_server = match (config.relay_server, relay_key) {
            (Some(addr), Some(key)) => {
                let server =
                    blixard_net::relay::RelayServer::bind(key, addr, Default::default()).await.map_err(|e| {
                        Error::start(format!("cannot run the relay on TCP and UDP {addr} (port in use?)"), e)
                    })?;
                info!(relay = %server.node_id(), addr = %server.addr(), "relay server running");
                Some(server)
            }
            _ => None,
        };
        if let Some(paths) = endpoint.path_socket() {
            metrics.watch_paths(paths.stats().clone());
        }
        let peers = Arc::new(Peers::open(endpoint.clone(), &db, events.clone(), metrics.clone(), &config, p2p_on)?);
        let limits = bandwidth::Limits::new(config.bandwidth_limit_bytes(), metrics.clone());
        let exchange = peers.clone();
        let privileged = {
            let (peers, config) = (peers.clone(), config.clone());
            move |id: &NodeId| {
                config.trust.contains(id)
                    || config.allowlist.as_ref().is_some_and(|a| a.contains(id))
                    || peers.is_trusted(id)
            }
        };
        let ctx = server::ServerContext::builder(store.clone(), Default::default())
            .peers(Arc::new(move || exchange.exchange_list()))
            .upload_limiter(limits.serve)
            .privileged(Arc::new(privileged))
            .on_first_request({
                let peers = peers.clone();
                Arc::new(move |id| peers.asked(id))
            })
            .build();
        let cache =
            crate::cache::Cache::open(&db, config.max_cache_size, store.clone(), events.clone(), metrics.clone())?;
        let claims = crate::claims::ClaimMarks::open(&db)?;
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.max_concurrent_transfers)),
            label,
            data_dir,
            config,
            store,
            endpoint: endpoint.clone(),
            transfers: TransferTable::open(&db, metrics.clone(), events.clone())?,
            cache,
            uploads: Default::default(),
            _db: db,
            peers: peers.clone(),
            events,
            metrics,
            download_limiter: limits.download,
            tasks: Mutex::new(Vec::new()),
            p2p_on: tokio::sync::watch::Sender::new(true),
            relay_server: Mutex::new(relay_server),
            indexing: Arc::new(tokio::sync::Semaphore::new(1)),
            claims,
        });
        let node = Node::from_inner(inner);
        start_tasks(&node.inner, ctx);
        for (saved, trusted) in peers.dial_at_start() {
            let p = peers.clone();
            tokio::spawn(async move {
                let _ = p.connect(saved, trusted).await;
            });
        }
        info!(node = node.inner.label, id = %node.node_id(), addr = %node.addr(), "node started");
        Ok(node)
    }
}

/// Starts a node's tasks: serving, health checks and discovery, the
/// dispatcher, and garbage collection.
fn start_tasks(inner: &Arc<Inner>, ctx: Arc<server::ServerContext>) {
    let mut tasks = inner.tasks.lock().unwrap();
    // Serving, noting who connects.
    let peers = inner.peers.clone();
    tasks.push(tokio::spawn(server::accept_loop_with(inner.endpoint.clone(), ctx, move |conn| {
        peers.note_incoming(conn)
    })));
    // Health checks and discovery, each on its own interval.
    let config = &inner.config;
    tasks.push(periodic(inner.peers.clone(), config.health_check_interval, |p| async move { p.health_round().await }));
    tasks.push(periodic(
        inner.peers.clone(),
        config.peer_discovery_interval,
        |p| async move { p.discovery_round().await },
    ));
    tasks.push(dispatch::dispatcher(inner));
    // Garbage collection and the cache limit.
    let inner = Arc::downgrade(inner);
    let every = config.gc_interval;
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = inner.upgrade() else { return };
            let collected = tokio::task::spawn_blocking(move || inner.cache.collect()).await;
            match collected {
                Ok(Ok(r)) => tracing::debug!(evicted = r.evicted.len(), blobs = r.blobs_removed, "periodic gc"),
                Ok(Err(e)) => warn!("periodic gc failed: {e}"),
                Err(e) => warn!("periodic gc failed: {e}"),
            }
        }
    }));
}

/// Opens the node's own database (peer book, transfer records). A damaged
/// one is moved aside with a loud warning and a new one started: what it
/// held (known peers, queued transfers) is rebuilt from configuration and
/// use, and losing it must not keep the node down.
fn open_node_db(path: &std::path::Path) -> Result<sled::Db> {
    let (db, aside) = blixard_store::open_or_set_aside(path)
        .map_err(|e| Error::start(format!("node database in {}", path.display()), e))?;
    if let Some(aside) = aside {
        tracing::error!(
            path = %aside.display(),
            "the node database was damaged: moved aside; saved peers and queued transfers are lost"
        );
    }
    Ok(db)
}

/// Runs `round` every `every` (the first after one interval) until aborted.
fn periodic<F, Fut>(peers: Arc<Peers>, every: Duration, round: F) -> JoinHandle<()>
where
    F: Fn(Arc<Peers>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            round(peers.clone()).await;
        }
    })
}
