//! `Node`, the P2P manager: the facade that owns one store, one QUIC
//! endpoint, the peers, the transfer table and its dispatcher, events and
//! metrics. Transfers are `transfers` and `dispatch`; bandwidth is
//! `bandwidth`.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_protocol::{client, server, Endpoint, EndpointOptions, NodeAddr, NodeId};
use blixard_store::{ExportOptions, ImportMode, ImportOutcome, ResourceKind, Store, VerifyReport};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, Semaphore},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{
    bandwidth,
    builder::{EndpointSocket, NodeBuilder, Parts},
    config::NodeOptions,
    dispatch,
    events::{P2pEvent, PeerInfo, RemoteResource, ResourceInfo},
    metrics::Metrics,
    peers::Peers,
    queue::TransferPriority,
    shared::Inner,
    transfers::{self, TransferId, TransferInfo, TransferTable},
    Error, Result,
};

/// What to download, from whom, how urgently: see [`Node::download`].
///
/// ```
/// use blixard_node::{DownloadRequest, ResourceKind, TransferPriority};
///
/// let request = DownloadRequest::new(ResourceKind::VmImage, "ubuntu-server", "22.04").priority(TransferPriority::High);
/// // then: let id = node.download(request)?;
/// ```
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until passed to Node::download"]
pub struct DownloadRequest {
    kind: ResourceKind,
    name: String,
    version: String,
    hash: Option<blixard_store::Hash>,
    providers: Vec<NodeId>,
    priority: TransferPriority,
    limit_mbps: Option<f64>,
    bases: Vec<blixard_store::Hash>,
}

impl DownloadRequest {
    /// `(kind, name, version)` as trusted publishers name it, from any
    /// connected peer, at `Normal` priority.
    pub fn new(kind: ResourceKind, name: impl Into<String>, version: impl Into<String>) -> Self {
        DownloadRequest {
            kind,
            name: name.into(),
            version: version.into(),
            hash: None,
            providers: Vec::new(),
            priority: TransferPriority::Normal,
            limit_mbps: None,
            bases: Vec::new(),
        }
    }

    /// Seed the download from this local blob too: groups it shares with
    /// the new one are copied from it (each verified against the new tree)
    /// instead of fetched. Other local versions of the same name are used
    /// anyway (see `docs/INCREMENTAL.md`); this adds any blob, e.g. a
    /// similar image of another name.
    pub fn base(mut self, hash: blixard_store::Hash) -> Self {
        self.bases.push(hash);
        self
    }

    /// This transfer's own download limit in megabits per second, under
    /// the node-wide `bandwidth_limit_mbps` (both hold).
    pub fn limit_mbps(mut self, mbps: f64) -> Self {
        self.limit_mbps = Some(mbps);
        self
    }

    /// The content is this blob, whoever claims it under the name (the
    /// hash verifies it; the name is how it is recorded here).
    pub fn hash(mut self, hash: blixard_store::Hash) -> Self {
        self.hash = Some(hash);
        self
    }

    /// Ask and download from these peers only (connect them first, e.g.
    /// with [`Node::connect`]).
    pub fn providers(mut self, providers: impl IntoIterator<Item = NodeId>) -> Self {
        self.providers = providers.into_iter().collect();
        self
    }

    /// Its place in the queue.
    pub fn priority(mut self, priority: TransferPriority) -> Self {
        self.priority = priority;
        self
    }
}

/// Events a receiver of [`Node::events`] may fall behind by before it
/// misses some.
pub const EVENTS_CAPACITY: usize = 1024;

/// Node-wide figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// This node's id.
    pub node_id: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Connected peers.
    pub peers_connected: usize,
    /// Known peers.
    pub peers_known: usize,
    /// Transfers running.
    pub transfers_active: usize,
    /// Transfers waiting.
    pub transfers_queued: usize,
    /// Blob bytes served.
    pub bytes_sent: u64,
    /// Verified blob bytes received.
    pub bytes_received: u64,
    /// Local resources.
    pub resources: usize,
    /// P2P is on (serving, dialing, downloading).
    #[serde(default = "yes")]
    pub p2p_enabled: bool,
    /// The relay this node keeps a connection to (peers that cannot reach
    /// it over UDP come through it).
    #[serde(default)]
    pub home_relay: Option<blixard_protocol::RelayAddr>,
    /// Datagram bytes sent through relays.
    #[serde(default)]
    pub relay_bytes_sent: u64,
    /// Datagram bytes received through relays.
    #[serde(default)]
    pub relay_bytes_received: u64,
    /// Download bytes copied from blobs already held instead of fetched
    /// (since the node started).
    #[serde(default)]
    pub reused_bytes: u64,
    /// Download bytes that were zero groups, never fetched (since start).
    #[serde(default)]
    pub zero_bytes_skipped: u64,
    /// The store's blobs: their logical size and the disk their data takes
    /// (zero pages are holes).
    #[serde(default)]
    pub store: blixard_store::StoreUsage,
}

fn yes() -> bool {
    true
}

/// A running node. Cheap to clone. [`Node::shutdown`] stops it and waits
/// for its connections to close; dropping the last clone stops it too (it
/// stops serving, dialing and downloading at once, and its store and port
/// are free once the tasks still ending have ended, a few milliseconds).
///
/// ```
/// # #[tokio::main] async fn main() -> blixard_node::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let node = blixard_node::Node::builder().data_dir(dir.path()).bind("127.0.0.1:0".parse().unwrap()).spawn().await?;
/// let also = node.clone(); // the same node
/// println!("{} on {}", also.node_id(), also.addr());
/// node.shutdown().await; // or drop every clone
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
    _stop_on_drop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.node_id()).field("addr", &self.addr()).finish()
    }
}

/// Stops the node when the last user-held [`Node`] goes (tasks hold the
/// `Inner`, not this).
struct StopOnDrop(std::sync::Weak<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.stop();
        }
    }
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

    pub(crate) async fn start(parts: Parts) -> Result<Node> {
        let Parts { label, data_dir, store, key, endpoint_socket, config } = parts;
        let db = match &data_dir {
            Some(dir) => open_node_db(&dir.join("node.db"))?,
            None => sled::Config::new().temporary(true).open().map_err(|e| Error::start("node database", e))?,
        };
        let pending_records = transfers::load_pending(&db)?;
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
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.max_concurrent_transfers)),
            label,
            data_dir,
            config,
            store,
            endpoint: endpoint.clone(),
            transfers: TransferTable::new(&db, metrics.clone(), events.clone())?,
            cache,
            uploads: Mutex::new(Vec::new()),
            _db: db,
            peers: peers.clone(),
            events,
            metrics,
            download_limiter: limits.download,
            tasks: Mutex::new(Vec::new()),
            p2p_on: tokio::sync::watch::Sender::new(true),
            relay_server: Mutex::new(relay_server),
            indexing: Arc::new(tokio::sync::Semaphore::new(1)),
        });
        inner.transfers.resume_pending(pending_records);
        let node = Node { _stop_on_drop: Arc::new(StopOnDrop(Arc::downgrade(&inner))), inner };
        node.start_tasks(ctx);
        for (saved, trusted) in peers.dial_at_start() {
            let p = peers.clone();
            tokio::spawn(async move {
                let _ = p.connect(saved, trusted).await;
            });
        }
        info!(node = node.inner.label, id = %node.node_id(), addr = %node.addr(), "node started");
        Ok(node)
    }

    fn start_tasks(&self, ctx: Arc<server::ServerContext>) {
        let mut tasks = self.inner.tasks.lock().unwrap();
        // Serving, noting who connects.
        let peers = self.inner.peers.clone();
        tasks.push(tokio::spawn(server::accept_loop_with(self.inner.endpoint.clone(), ctx, move |conn| {
            peers.note_incoming(conn)
        })));
        // Health checks and discovery, each on its own interval.
        let config = &self.inner.config;
        tasks.push(periodic(self.inner.peers.clone(), config.health_check_interval, |p| async move {
            p.health_round().await
        }));
        tasks.push(periodic(self.inner.peers.clone(), config.peer_discovery_interval, |p| async move {
            p.discovery_round().await
        }));
        tasks.push(dispatch::dispatcher(&self.inner));
        // Garbage collection and the cache limit.
        let inner = Arc::downgrade(&self.inner);
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

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.endpoint.node_id()
    }

    /// Its QUIC address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.endpoint.local_addr()
    }

    /// The address of the relay this node runs (`relay_server`), if any.
    pub fn relay_server_addr(&self) -> Option<SocketAddr> {
        self.inner.relay_server.lock().unwrap().as_ref().map(|s| s.addr())
    }

    /// Its store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Its data directory (`None` for a node built over a store without
    /// one: its peer book and transfer records then live in memory).
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    /// Its address for others to dial: its id, local address (a node
    /// bound to an unspecified address, 0.0.0.0 or ::, lists it as is; give
    /// peers a reachable one) and home relay, once connected to one.
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr { relay: self.inner.endpoint.home_relay(), ..NodeAddr::direct(Some(self.node_id()), self.addr()) }
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A receiver of every event from now on. The channel holds the last
    /// [`EVENTS_CAPACITY`] events; a receiver that falls further behind
    /// gets `RecvError::Lagged(n)` once (the `n` oldest are gone) and then
    /// the newest, so read it promptly, or re-read state ([`Node::transfers`],
    /// [`Node::peers`]) after a lag.
    pub fn events(&self) -> broadcast::Receiver<P2pEvent> {
        self.inner.events.subscribe()
    }

    /// Connects to a peer given in text (`HOST:PORT`, `NODE_ID@HOST:PORT`:
    /// see [`NodeAddr`]), retrying with backoff.
    pub async fn connect_peer(&self, peer: &str) -> Result<NodeId> {
        self.connect(peer.parse()?).await
    }

    /// Connects to a peer (retrying with backoff); returns its node id. A
    /// peer connected on request is configured: a trusted publisher of
    /// names (see [`Node::is_trusted`]).
    pub async fn connect(&self, peer: NodeAddr) -> Result<NodeId> {
        self.inner.peers.connect(peer, true).await
    }

    /// True if `id` may name things for this node: itself, its configured
    /// peers, its allowlist and its `trust` list. Content is trusted by its
    /// hash from anyone.
    pub fn is_trusted(&self, id: &NodeId) -> bool {
        self.inner.is_trusted(id)
    }

    /// Known peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.peers.list()
    }

    /// Imports the file at `path` into the store (copy mode) and publishes
    /// it as `(kind, name, version)`. Its progress is listed by
    /// [`Node::uploads`] while it runs.
    pub async fn upload_resource(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        path: &Path,
    ) -> Result<ResourceInfo> {
        self.upload_path(kind, name, version, path, ImportMode::Copy).await
    }

    /// [`Node::upload_resource`] in either mode: `Copy` (the store owns a
    /// copy) or `Reference` (the store keeps the path and serves from the
    /// file, re-verifying what it reads; the file must not change).
    pub async fn upload_path(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        path: &Path,
        mode: ImportMode,
    ) -> Result<ResourceInfo> {
        blixard_store::validate_resource_key(&kind, name, version)?;
        if !path.is_file() {
            return Err(Error::Io {
                op: "upload",
                path: path.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a readable file"),
            });
        }
        let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.inner.uploads.lock().unwrap().push((path.to_path_buf(), total, done.clone()));
        // Listed while it runs, even if this future is dropped (a client
        // that hung up on the control API).
        struct Listed<'a>(&'a Inner, Arc<std::sync::atomic::AtomicU64>);
        impl Drop for Listed<'_> {
            fn drop(&mut self) {
                self.0.uploads.lock().unwrap().retain(|(_, _, d)| !Arc::ptr_eq(d, &self.1));
            }
        }
        let listed = Listed(&self.inner, done.clone());
        let imported = self.inner.store.import_path_with_progress(path, mode, done).await;
        drop(listed);
        self.publish(kind, name, version, imported?)
    }

    /// Imports `data` and publishes it as `(kind, name, version)`.
    pub async fn upload_bytes(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        data: impl Into<blixard_store::Bytes>,
    ) -> Result<ResourceInfo> {
        blixard_store::validate_resource_key(&kind, name, version)?;
        let imported = self.inner.store.import_bytes(data).await?;
        self.publish(kind, name, version, imported)
    }

    /// Imports everything `reader` yields and publishes it as `(kind, name,
    /// version)`.
    pub async fn upload_reader(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<ResourceInfo> {
        blixard_store::validate_resource_key(&kind, name, version)?;
        let imported = self.inner.store.import_reader(reader).await?;
        self.publish(kind, name, version, imported)
    }

    /// Names an imported blob, signs it as this node's claim and tells
    /// listeners.
    fn publish(&self, kind: ResourceKind, name: &str, version: &str, imported: ImportOutcome) -> Result<ResourceInfo> {
        let r = self.inner.store.put_resource_and_release(&kind, name, version, imported.lease)?;
        self.inner.cache.uploaded(&kind, name, version);
        self.inner.index_in_background(r.hash);
        let info = r.clone();
        info!(kind = %kind, name, version, hash = %r.hash, size = r.size, "uploaded");
        let _ = self.inner.events.send(P2pEvent::ResourceAvailable(info.clone()));
        Ok(info)
    }

    /// Uploads (imports) running now, with their progress.
    pub fn uploads(&self) -> Vec<crate::UploadProgress> {
        let uploads = self.inner.uploads.lock().unwrap();
        uploads
            .iter()
            .map(|(path, total, done)| crate::UploadProgress {
                path: path.clone(),
                bytes: done.load(std::sync::atomic::Ordering::Relaxed).min(*total),
                total: *total,
            })
            .collect()
    }

    /// Queues a download of `(kind, name, version)` as trusted publishers
    /// name it, from any peer; returns its id. A request for a resource
    /// already queued or running is merged into it (its priority raised if
    /// this one is higher) and gets the same id. It does not block (the
    /// download runs in the background); [`Node::wait`] for its end.
    pub fn request_download(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        priority: TransferPriority,
    ) -> Result<TransferId> {
        self.download(DownloadRequest::new(kind, name, version).priority(priority))
    }

    /// Queues a download of `(kind, name, version)` as the blob `hash`: the
    /// claim for that hash is used whoever made it (the requester chose the
    /// content; the hash verifies it).
    pub fn request_download_hash(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        hash: blixard_store::Hash,
        priority: TransferPriority,
    ) -> Result<TransferId> {
        self.download(DownloadRequest::new(kind, name, version).hash(hash).priority(priority))
    }

    /// Queues a download as `request` describes it (by name or by hash,
    /// from any peer or from chosen ones); returns its id. Merging and
    /// blocking as for [`Node::request_download`].
    ///
    /// ```no_run
    /// # async fn f(node: blixard_node::Node, seeder: blixard_node::NodeAddr, hash: blixard_node::Hash) -> blixard_node::Result<()> {
    /// use blixard_node::{DownloadRequest, ResourceKind, TransferPriority};
    ///
    /// let provider = node.connect(seeder).await?;
    /// let id = node.download(
    ///     DownloadRequest::new(ResourceKind::VmImage, "ubuntu-server", "24.04")
    ///         .hash(hash)
    ///         .providers([provider])
    ///         .priority(TransferPriority::High),
    /// )?;
    /// let done = node.wait(id).await?;
    /// # Ok(()) }
    /// ```
    pub fn download(&self, request: DownloadRequest) -> Result<TransferId> {
        let DownloadRequest { kind, name, version, hash, providers, priority, limit_mbps, bases } = request;
        blixard_store::validate_resource_key(&kind, &name, &version)?;
        if let Some(m) = limit_mbps.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "a transfer's limit must be positive megabits per second, not {m}"
            )));
        }
        for b in &bases {
            if !matches!(self.inner.store.status(b)?, blixard_store::BlobStatus::Complete { .. }) {
                return Err(Error::InvalidArgument(format!(
                    "base {b} is not held complete here: nothing to seed from"
                )));
            }
        }
        let options = crate::transfers::RequestOptions { pinned: hash, providers, limit_mbps, bases };
        self.inner.transfers.request((kind, name, version), priority, options)
    }

    /// Changes a queued or running transfer's priority; a queued one takes
    /// its new place in the queue at once (raise it to have it start next).
    pub fn set_priority(&self, id: TransferId, priority: TransferPriority) -> Result<()> {
        self.inner.transfers.set_priority(id, priority)
    }

    /// Cancels a queued or running transfer.
    pub fn cancel(&self, id: TransferId) -> Result<()> {
        self.inner.transfers.cancel(id)
    }

    /// One transfer.
    pub fn transfer(&self, id: TransferId) -> Option<TransferInfo> {
        self.inner.transfers.transfer(id)
    }

    /// Every transfer this run, oldest first.
    pub fn transfers(&self) -> Vec<TransferInfo> {
        self.inner.transfers.transfers()
    }

    /// Waits until a transfer ends. Its record if it completed; if it
    /// failed or was cancelled, [`Error::Transfer`] carrying a
    /// [`TransferFailure`](crate::TransferFailure) whose `reason` says why
    /// (`NotFound`, `Timeout`, `Cancelled`...).
    pub async fn wait(&self, id: TransferId) -> Result<TransferInfo> {
        self.inner.transfers.wait(id).await
    }

    /// Resources in this node's store.
    pub fn local_resources(&self) -> Result<Vec<ResourceInfo>> {
        Ok(self.inner.store.resources(None)?)
    }

    /// Resources the connected peers list: each claim (signature checked)
    /// with the peer that listed it, its publisher, and whether that
    /// publisher is trusted to name things here.
    pub async fn remote_resources(&self) -> Vec<RemoteResource> {
        let mut out = Vec::new();
        for conn in self.inner.peers.connections().await {
            if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(15), client::list(&conn, None)).await {
                for claim in list.items {
                    let (publisher, trusted) = (claim.publisher, self.is_trusted(&claim.publisher));
                    match ResourceInfo::try_from(claim) {
                        Ok(resource) => {
                            out.push(RemoteResource { peer: conn.remote_id(), publisher, trusted, resource })
                        }
                        Err(e) => warn!(peer = %conn.remote_id(), "skipping a listed resource: {e}"),
                    }
                }
            }
        }
        out
    }

    /// Copies a complete local resource out to `path`, every byte checked
    /// against its tree (see [`Store::export`]: damaged bytes fail the
    /// export and are fetched again by the next download).
    pub async fn export_resource(
        &self,
        kind: &ResourceKind,
        name: &str,
        version: &str,
        path: &Path,
        options: ExportOptions,
    ) -> Result<()> {
        let r = self.inner.store.resource(kind, name, version)?.ok_or_else(|| Error::NotFound {
            kind: kind.to_string(),
            name: name.into(),
            version: version.into(),
            peers: 0,
        })?;
        let _in_use = self.inner.store.lease(r.hash);
        self.inner.store.export(r.hash, path, options).await?;
        self.inner.cache.used(kind, name, version);
        Ok(())
    }

    /// Collects unreachable blobs now, after evicting least recently used
    /// downloads if the cache is over `max_cache_size` (the node also does
    /// this every `gc_interval`, and after each download).
    pub async fn gc(&self) -> Result<crate::cache::GcReport> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.cache.collect())
            .await
            .map_err(|e| Error::InvalidArgument(format!("gc stopped: {e}")))?
    }

    /// Checks every blob at rest against its tree; with `repair`, damaged
    /// groups become missing, so the next download fetches them again.
    pub async fn verify(&self, repair: bool) -> Result<Vec<VerifyReport>> {
        let store = self.inner.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.verify_all(repair))
            .await
            .map_err(blixard_store::Error::from)??)
    }

    /// Node-wide figures.
    pub fn stats(&self) -> Stats {
        let t = self.inner.transfers.table.lock().unwrap();
        let m = &self.inner.metrics;
        m.sync();
        Stats {
            node_id: self.node_id(),
            addr: self.addr(),
            peers_connected: self.inner.peers.connected_count(),
            peers_known: self.inner.peers.known_count(),
            transfers_active: t.running.len(),
            transfers_queued: t.queue.len(),
            bytes_sent: m.bytes_sent.get(),
            bytes_received: m.bytes_received.get(),
            resources: self.inner.store.resources(None).map(|r| r.len()).unwrap_or(0),
            p2p_enabled: self.p2p_enabled(),
            home_relay: self.inner.endpoint.home_relay(),
            relay_bytes_sent: m.relay_bytes_sent.get(),
            relay_bytes_received: m.relay_bytes_received.get(),
            reused_bytes: m.reused_bytes.get(),
            zero_bytes_skipped: m.zero_bytes.get(),
            store: self.inner.store.usage().unwrap_or_default(),
        }
    }

    /// Turns the node's P2P activity off or on without stopping the node.
    ///
    /// Off: every connection is closed (peers are told "P2P is off"),
    /// peers that connect are turned away, nothing is dialed, running
    /// downloads stop and wait in the queue (what they verified is kept),
    /// and queued ones wait. The store, uploads, exports and the control
    /// API keep working. On: the peers worth dialing are dialed again and
    /// the queue runs. Not saved: a restarted node starts with P2P on.
    pub fn set_p2p_enabled(&self, on: bool) {
        let inner = &self.inner;
        if on {
            inner.peers.set_enabled(true);
            inner.p2p_on.send_replace(true);
        } else {
            inner.p2p_on.send_replace(false);
            inner.peers.set_enabled(false);
            let stopped = inner.transfers.requeue_running();
            if stopped > 0 {
                info!(stopped, "P2P off: running downloads wait in the queue");
            }
        }
    }

    /// True while P2P is on (see [`Node::set_p2p_enabled`]).
    pub fn p2p_enabled(&self) -> bool {
        *self.inner.p2p_on.borrow()
    }

    /// Stops everything: the queue, serving, peers. Running transfers stop
    /// where they are; what they verified is checkpointed.
    pub async fn shutdown(&self) {
        self.inner.stop();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.inner.endpoint.wait_idle()).await;
    }
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
