//! `Node`, the P2P manager: one store, one QUIC endpoint, the peers, the
//! priority transfer queue and its workers, events and metrics.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use blixard_protocol::{
    client,
    rate::{RateLimiter, TokenBucket},
    server, Endpoint, EndpointOptions, NodeId, PeerAddr, SecretKey,
};
use blixard_store::{BlobStatus, Hash, ImportMode, ResourceKind, Store};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, Notify, Semaphore},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    config::P2pConfig,
    download::{self, Live},
    events::{P2pEvent, PeerInfo, ResourceInfo, TransferProgress},
    metrics::Metrics,
    peers::Peers,
    queue::{Queue, TransferPriority},
    Error, Result,
};

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The operator's number for this node (names the default data dir).
    pub id: u64,
    /// Data directory: identity key, store, node database, control file.
    pub data_dir: PathBuf,
    /// UDP address for QUIC.
    pub bind: SocketAddr,
    /// Settings.
    pub config: P2pConfig,
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Waiting for a permit.
    Queued,
    /// Fetching.
    Running,
    /// Done: the blob is complete and verified, the resource recorded.
    Completed,
    /// Gave up after the retries.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

/// A transfer as the API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Request id.
    pub id: String,
    /// Resource kind, text form.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Priority.
    pub priority: TransferPriority,
    /// State.
    pub state: TransferState,
    /// Progress, once running.
    pub progress: Option<TransferProgress>,
    /// The blob, once resolved.
    pub hash: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds it ran, once finished.
    pub duration_secs: Option<f64>,
}

/// Node-wide figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// This node's id.
    pub node_id: String,
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
}

type Key = (String, String, String);

/// A transfer that has not finished, as kept in `node.db` so it resumes
/// after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRecord {
    id: String,
    kind: String,
    name: String,
    version: String,
    priority: TransferPriority,
}

struct Transfers {
    queue: Queue,
    all: HashMap<String, TransferInfo>,
    by_key: HashMap<Key, String>,
    running: HashMap<String, tokio::task::AbortHandle>,
    next: u64,
}

pub(crate) struct Inner {
    options: NodeOptions,
    store: Store,
    endpoint: Endpoint,
    _db: sled::Db,
    pending: sled::Tree,
    peers: Arc<Peers>,
    events: broadcast::Sender<P2pEvent>,
    metrics: Arc<Metrics>,
    transfers: Mutex<Transfers>,
    queued: Arc<Notify>,
    permits: Arc<Semaphore>,
    download_limiter: Option<Arc<dyn RateLimiter>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running node. Cheap to clone; [`Node::shutdown`] stops it.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// Counts served bytes and paces them when a limit is set.
struct ServeMeter {
    bucket: Option<TokenBucket>,
    metrics: Arc<Metrics>,
}

impl RateLimiter for ServeMeter {
    fn reserve(&self, bytes: u64) -> Duration {
        self.metrics.bytes_sent.inc_by(bytes);
        self.bucket.as_ref().map_or(Duration::ZERO, |b| b.reserve(bytes))
    }
}

impl Node {
    /// Opens the data dir, binds the endpoint and starts serving, health
    /// checks, discovery and the transfer queue. Errors name what failed
    /// ("Failed to create node: ...").
    pub async fn spawn(options: NodeOptions) -> Result<Node> {
        options.config.validate()?;
        let dir = &options.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Start(format!("data dir {} is not writable: {e}", dir.display())))?;
        let key = SecretKey::load_or_create(dir).map_err(|e| Error::Start(format!("identity: {e}")))?;
        let store = Store::open(dir.join("store"))
            .map_err(|e| Error::Start(format!("store in {}: {e}", dir.join("store").display())))?;
        let db = sled::open(dir.join("node.db"))
            .map_err(|e| Error::Start(format!("node database in {}: {e}", dir.join("node.db").display())))?;
        let metrics = Arc::new(Metrics::new());
        let (events, _) = broadcast::channel(1024);
        let client_filter = options.config.allowlist.clone().map(|allowed| {
            let filter: blixard_protocol::tls::ClientFilter = Arc::new(move |id: &NodeId| {
                let ok = allowed.contains(id);
                if !ok {
                    warn!(peer = %id, "refused a peer not on the allowlist");
                }
                ok
            });
            filter
        });
        let endpoint = Endpoint::bind(key, options.bind, EndpointOptions { client_filter, ..Default::default() })
            .map_err(|e| Error::Start(format!("cannot listen on UDP {} (port in use?): {e}", options.bind)))?;
        let peers = Arc::new(Peers::new(
            endpoint.clone(),
            db.open_tree("peers").map_err(|e| Error::Start(format!("node database: {e}")))?,
            events.clone(),
            metrics.clone(),
            options.config.max_retry_attempts,
            options.config.health_check_interval,
        ));
        let limit = options.config.bandwidth_limit_bytes();
        let bucket = |rate: u64| TokenBucket::new(rate, (rate / 10).max(256 * 1024));
        let download_limiter = limit.map(|r| Arc::new(bucket(r)) as Arc<dyn RateLimiter>);
        let meter: Arc<dyn RateLimiter> = Arc::new(ServeMeter { bucket: limit.map(bucket), metrics: metrics.clone() });
        let exchange = peers.clone();
        let ctx = server::ServerContext::builder(
            store.clone(),
            Default::default(),
            Some(Arc::new(move || exchange.exchange_list())),
            Some(meter),
        );
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(options.config.max_concurrent_transfers)),
            options,
            store,
            endpoint: endpoint.clone(),
            pending: db.open_tree("transfers").map_err(|e| Error::Start(format!("node database: {e}")))?,
            _db: db,
            peers: peers.clone(),
            events,
            metrics,
            transfers: Mutex::new(Transfers {
                queue: Queue::default(),
                all: HashMap::new(),
                by_key: HashMap::new(),
                running: HashMap::new(),
                next: 0,
            }),
            queued: Arc::new(Notify::new()),
            download_limiter,
            tasks: Mutex::new(Vec::new()),
        });
        let node = Node { inner };
        node.resume_pending()?;
        node.start_tasks(ctx);
        for saved in peers.saved() {
            let p = peers.clone();
            tokio::spawn(async move {
                let _ = p.connect(saved).await;
            });
        }
        info!(node = node.inner.options.id, id = %node.node_id(), addr = %node.addr(), "node started");
        Ok(node)
    }

    fn start_tasks(&self, ctx: Arc<server::ServerContext>) {
        let mut tasks = self.inner.tasks.lock().unwrap();
        // Serving, noting who connects.
        let peers = self.inner.peers.clone();
        tasks.push(tokio::spawn(server::accept_loop_with(self.inner.endpoint.clone(), ctx, move |conn| {
            peers.note_incoming(conn.remote_id(), conn.remote_address())
        })));
        // Health checks and discovery, each on its own interval.
        let config = &self.inner.options.config;
        tasks.push(periodic(self.inner.peers.clone(), config.health_check_interval, |p| async move {
            p.health_round().await
        }));
        tasks.push(periodic(self.inner.peers.clone(), config.peer_discovery_interval, |p| async move {
            p.discovery_round().await
        }));
        // The queue: take a permit first, then the best waiting transfer, so
        // the order is decided when capacity frees up.
        let weak = Arc::downgrade(&self.inner);
        let permits = self.inner.permits.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let id = loop {
                    let Some(inner) = weak.upgrade() else { return };
                    if let Some(id) = inner.transfers.lock().unwrap().queue.pop() {
                        break id;
                    }
                    let queued = inner.queued.clone();
                    drop(inner);
                    queued.notified().await;
                };
                let Some(inner) = weak.upgrade() else { return };
                let node = Node { inner };
                let task = tokio::spawn({
                    let node = node.clone();
                    let id = id.clone();
                    async move {
                        node.run_transfer(&id).await;
                        drop(permit);
                    }
                });
                let mut t = node.inner.transfers.lock().unwrap();
                t.running.insert(id, task.abort_handle());
                node.inner.metrics.transfers_queued.set(t.queue.len() as i64);
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

    /// Its store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.options.data_dir
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A receiver of every event from now on.
    pub fn events(&self) -> broadcast::Receiver<P2pEvent> {
        self.inner.events.subscribe()
    }

    /// Connects to `ADDR` or `NODE_ID@ADDR` (retrying with backoff).
    pub async fn connect_peer(&self, peer: &str) -> Result<NodeId> {
        let target: PeerAddr = peer.parse()?;
        self.inner.peers.connect(target).await
    }

    /// Known peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.peers.list()
    }

    /// Imports `path` into the store (copy mode) and records it as
    /// `(kind, name, version)`.
    pub async fn upload_resource(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        path: &Path,
    ) -> Result<ResourceInfo> {
        if !path.is_file() {
            return Err(Error::Io {
                op: "upload",
                path: path.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a readable file"),
            });
        }
        let out = self.inner.store.import_path(path, ImportMode::Copy).await?;
        let r = self.inner.store.put_resource_and_release(&kind, name, version, out.lease)?;
        let info = resource_info(&r);
        info!(kind = %kind, name, version, hash = %r.hash, size = r.size, "uploaded");
        let _ = self.inner.events.send(P2pEvent::ResourceAvailable(info.clone()));
        Ok(info)
    }

    /// Queues a download of `(kind, name, version)`; returns its request id.
    /// A request for a resource already queued or running is merged into it
    /// (its priority raised if this one is higher) and gets the same id.
    pub fn request_download(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        priority: TransferPriority,
    ) -> Result<String> {
        let key: Key = (kind.to_string(), name.to_string(), version.to_string());
        let mut t = self.inner.transfers.lock().unwrap();
        if let Some(id) = t.by_key.get(&key).cloned() {
            let active =
                t.all.get(&id).is_some_and(|i| matches!(i.state, TransferState::Queued | TransferState::Running));
            if active {
                t.queue.raise(&id, priority);
                if let Some(i) = t.all.get_mut(&id) {
                    i.priority = i.priority.max(priority);
                }
                return Ok(id);
            }
        }
        t.next += 1;
        let id = format!("{}-{}", self.inner.options.id, t.next);
        let record = PendingRecord {
            id: id.clone(),
            kind: key.0.clone(),
            name: key.1.clone(),
            version: key.2.clone(),
            priority,
        };
        self.inner.pending.insert(id.as_bytes(), crate::codec::encode(&record)).map_err(blixard_store::Error::from)?;
        self.enqueue(&mut t, record);
        drop(t);
        self.inner.queued.notify_one();
        info!(%id, %kind, name, version, %priority, "download queued");
        Ok(id)
    }

    /// Puts a transfer into the queue and the tables.
    fn enqueue(&self, t: &mut Transfers, r: PendingRecord) {
        let (id, priority) = (r.id.clone(), r.priority);
        let key: Key = (r.kind.clone(), r.name.clone(), r.version.clone());
        t.all.insert(
            id.clone(),
            TransferInfo {
                id: id.clone(),
                kind: key.0.clone(),
                name: key.1.clone(),
                version: key.2.clone(),
                priority,
                state: TransferState::Queued,
                progress: None,
                hash: None,
                attempts: 0,
                error: None,
                duration_secs: None,
            },
        );
        t.by_key.insert(key, id.clone());
        t.queue.push(id, priority);
        self.inner.metrics.transfers_queued.set(t.queue.len() as i64);
    }

    /// Re-queues the transfers a previous run left unfinished, in their
    /// original order.
    fn resume_pending(&self) -> Result<()> {
        let mut records = Vec::new();
        for kv in self.inner.pending.iter() {
            let (_, v) = kv.map_err(blixard_store::Error::from)?;
            match crate::codec::decode::<PendingRecord>("transfer", &v) {
                Ok(r) => records.push(r),
                Err(e) => warn!("dropping a pending transfer: {e}"),
            }
        }
        let number = |id: &str| id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        records.sort_by_key(|r| number(&r.id));
        let mut t = self.inner.transfers.lock().unwrap();
        for r in records {
            t.next = t.next.max(number(&r.id));
            info!(id = %r.id, name = %r.name, version = %r.version, "resuming an unfinished download");
            self.enqueue(&mut t, r);
        }
        Ok(())
    }

    /// Cancels a queued or running transfer.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let mut t = self.inner.transfers.lock().unwrap();
        let Some(info) = t.all.get(id) else { return Err(Error::UnknownTransfer(id.into())) };
        if !matches!(info.state, TransferState::Queued | TransferState::Running) {
            return Ok(());
        }
        t.queue.remove(id);
        let _ = self.inner.pending.remove(id.as_bytes());
        if let Some(task) = t.running.remove(id) {
            task.abort();
            self.inner.metrics.transfers_active.dec();
        }
        if let Some(info) = t.all.get_mut(id) {
            info.state = TransferState::Cancelled;
            info.error = Some("cancelled".into());
        }
        self.inner.metrics.transfers_finished.with_label_values(&["cancelled"]).inc();
        self.inner.metrics.transfers_queued.set(t.queue.len() as i64);
        let _ = self.inner.events.send(P2pEvent::TransferFailed(id.into(), "cancelled".into()));
        Ok(())
    }

    /// One transfer.
    pub fn transfer(&self, id: &str) -> Option<TransferInfo> {
        self.inner.transfers.lock().unwrap().all.get(id).cloned()
    }

    /// Every transfer this run, oldest first.
    pub fn transfers(&self) -> Vec<TransferInfo> {
        let t = self.inner.transfers.lock().unwrap();
        let mut all: Vec<TransferInfo> = t.all.values().cloned().collect();
        all.sort_by_key(|i| i.id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()));
        all
    }

    /// Waits until a transfer completes, fails or is cancelled.
    pub async fn wait(&self, id: &str) -> Result<TransferInfo> {
        let mut events = self.events();
        loop {
            let info = self.transfer(id).ok_or_else(|| Error::UnknownTransfer(id.into()))?;
            if !matches!(info.state, TransferState::Queued | TransferState::Running) {
                return Ok(info);
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        }
    }

    /// Resources in this node's store.
    pub fn local_resources(&self) -> Result<Vec<ResourceInfo>> {
        Ok(self.inner.store.resources(None)?.iter().map(resource_info).collect())
    }

    /// Resources the connected peers list, with the peer that has each.
    pub async fn remote_resources(&self) -> Vec<(String, ResourceInfo)> {
        let mut out = Vec::new();
        for conn in self.inner.peers.connections().await {
            if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(15), client::list(&conn, None)).await {
                for r in list.items {
                    out.push((
                        conn.remote_id().to_string(),
                        ResourceInfo {
                            kind: r.kind,
                            name: r.name,
                            version: r.version,
                            hash: Hash(r.hash).to_string(),
                            size: r.size,
                        },
                    ));
                }
            }
        }
        out
    }

    /// Copies a complete local resource out to `path`.
    pub async fn export_resource(&self, kind: &ResourceKind, name: &str, version: &str, path: &Path) -> Result<()> {
        let r = self.inner.store.resource(kind, name, version)?.ok_or_else(|| Error::NotFound {
            kind: kind.to_string(),
            name: name.into(),
            version: version.into(),
            peers: 0,
        })?;
        self.inner.store.export(r.hash, path).await?;
        Ok(())
    }

    /// Node-wide figures.
    pub fn stats(&self) -> Stats {
        let t = self.inner.transfers.lock().unwrap();
        let m = &self.inner.metrics;
        Stats {
            node_id: self.node_id().to_string(),
            addr: self.addr(),
            peers_connected: self.inner.peers.connected_count(),
            peers_known: self.inner.peers.list().len(),
            transfers_active: t.running.len(),
            transfers_queued: t.queue.len(),
            bytes_sent: m.bytes_sent.get(),
            bytes_received: m.bytes_received.get(),
            resources: self.inner.store.resources(None).map(|r| r.len()).unwrap_or(0),
        }
    }

    /// Stops everything: the queue, serving, peers. Running transfers stop
    /// where they are; what they verified is checkpointed.
    pub async fn shutdown(&self) {
        self.inner.permits.close();
        for t in self.inner.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        for (_, t) in self.inner.transfers.lock().unwrap().running.drain() {
            t.abort();
        }
        self.inner.peers.close_all();
        self.inner.endpoint.close(blixard_protocol::ErrorCode::Unavailable, "shutting down");
        let _ = self.inner.store.flush();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.inner.endpoint.wait_idle()).await;
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut TransferInfo)) {
        if let Some(i) = self.inner.transfers.lock().unwrap().all.get_mut(id) {
            f(i);
        }
    }

    async fn run_transfer(&self, id: &str) {
        let Some(info) = self.transfer(id) else { return };
        let inner = &self.inner;
        let started = Instant::now();
        self.update(id, |i| i.state = TransferState::Running);
        inner.metrics.transfers_active.inc();
        let _ = inner.events.send(P2pEvent::TransferStarted(id.into()));
        let live = Arc::new(Live::default());
        let reporter = tokio::spawn({
            let (node, id, live) = (self.clone(), id.to_string(), live.clone());
            async move { node.report_progress(&id, &live).await }
        });
        let config = &inner.options.config;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            self.update(id, |i| i.attempts = attempt);
            let r = match tokio::time::timeout(config.transfer_timeout, self.attempt(id, &info, &live)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout(config.transfer_timeout)),
            };
            match r {
                Ok(res) => break Ok(res),
                Err(e) if attempt <= config.max_retry_attempts => {
                    let wait = Duration::from_millis(500) * 2u32.pow(attempt - 1);
                    warn!(%id, attempt, "download failed, retrying in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => break Err(e),
            }
        };
        reporter.abort();
        let took = started.elapsed();
        let _ = inner.pending.remove(id.as_bytes());
        let mut t = inner.transfers.lock().unwrap();
        t.running.remove(id);
        inner.metrics.transfers_active.dec();
        let info = t.all.get_mut(id).expect("transfers are never forgotten");
        info.duration_secs = Some(took.as_secs_f64());
        match result {
            Ok(res) => {
                info.state = TransferState::Completed;
                let size = res.size;
                info.progress = Some(TransferProgress {
                    bytes: size,
                    total: size,
                    speed_bps: 0.0,
                    eta_secs: Some(0.0),
                    providers: 0,
                });
                inner.metrics.transfer_duration.observe(took.as_secs_f64());
                inner.metrics.transfers_finished.with_label_values(&["completed"]).inc();
                drop(t);
                info!(%id, hash = %res.hash, size, secs = took.as_secs_f64(), "download complete");
                let _ = inner.events.send(P2pEvent::ResourceAvailable(res));
                let _ = inner.events.send(P2pEvent::TransferCompleted(id.into()));
            }
            Err(e) => {
                info.state = TransferState::Failed;
                info.error = Some(e.to_string());
                inner.metrics.transfers_finished.with_label_values(&["failed"]).inc();
                drop(t);
                warn!(%id, "download failed: {e}");
                let _ = inner.events.send(P2pEvent::TransferFailed(id.into(), e.to_string()));
            }
        }
    }

    async fn attempt(&self, id: &str, info: &TransferInfo, live: &Live) -> Result<ResourceInfo> {
        let inner = &self.inner;
        let kind: ResourceKind = info.kind.parse().map_err(|e: blixard_store::Error| Error::Config(e.to_string()))?;
        if let Some(r) = inner.store.resource(&kind, &info.name, &info.version)? {
            if matches!(inner.store.status(&r.hash)?, BlobStatus::Complete { .. }) {
                return Ok(resource_info(&r));
            }
        }
        let conns = inner.peers.connections().await;
        let found = download::resolve(&conns, &kind, &info.name, &info.version).await?;
        let hash = Hash(found.hash);
        self.update(id, |i| i.hash = Some(hash.to_string()));
        let lease = inner.store.lease(hash);
        let ctx = download::Context {
            store: inner.store.clone(),
            events: inner.events.clone(),
            metrics: inner.metrics.clone(),
            limiter: inner.download_limiter.clone(),
        };
        download::fetch(&ctx, hash, found.size, conns, live).await?;
        let r = inner.store.put_resource_and_release(&kind, &info.name, &info.version, lease)?;
        Ok(resource_info(&r))
    }

    async fn report_progress(&self, id: &str, live: &Live) {
        let mut last = (Instant::now(), live.wire.load(Ordering::Relaxed));
        let mut speed = 0.0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = (Instant::now(), live.wire.load(Ordering::Relaxed));
            let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64().max(1e-3);
            speed = if speed == 0.0 { rate } else { 0.7 * speed + 0.3 * rate };
            last = now;
            let (total, bytes) = (live.total.load(Ordering::Relaxed), live.held.load(Ordering::Relaxed));
            let p = TransferProgress {
                bytes,
                total,
                speed_bps: speed,
                eta_secs: (speed > 0.0).then(|| total.saturating_sub(bytes) as f64 / speed),
                providers: live.providers.load(Ordering::Relaxed),
            };
            self.update(id, |i| i.progress = Some(p.clone()));
            let _ = self.inner.events.send(P2pEvent::TransferProgress(id.into(), p));
        }
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

fn resource_info(r: &blixard_store::Resource) -> ResourceInfo {
    ResourceInfo {
        kind: r.kind.to_string(),
        name: r.name.clone(),
        version: r.version.clone(),
        hash: r.hash.to_string(),
        size: r.size,
    }
}
