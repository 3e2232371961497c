//! `Node`, the P2P manager: the facade that owns one store, one QUIC
//! endpoint, the peers, the transfer table and its dispatcher, events and
//! metrics. Transfers are `transfers` and `dispatch`; bandwidth is
//! `bandwidth`.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use blixard_protocol::{client, NodeAddr, NodeId};
use blixard_store::{ExportOptions, ResourceKind, Store, VerifyReport};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::{
    events::{P2pEvent, PeerInfo, RemoteResource, ResourceInfo},
    metrics::Metrics,
    queue::TransferPriority,
    shared::Inner,
    transfers::{DownloadRequest, TransferId, TransferInfo},
    Error, Result,
};

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

impl Node {
    /// The handle over a just assembled node (see `builder`).
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Node {
        Node { _stop_on_drop: Arc::new(StopOnDrop(Arc::downgrade(&inner))), inner }
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
    /// [`EVENTS_CAPACITY`](crate::EVENTS_CAPACITY) events; a receiver that falls further behind
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

    /// Queues a download of `(kind, name, version)` as trusted publishers
    /// name it, from any peer; returns its id. A request for a resource
    /// already queued or running is merged into it (its priority raised if
    /// this one is higher, its bases added) and gets the same id; one that
    /// asks for another hash, other providers or another limit is an
    /// [`Error::InvalidArgument`] naming the transfer. It does not block (the
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
    pub fn download(&self, mut request: DownloadRequest) -> Result<TransferId> {
        let store = &self.inner.store;
        blixard_store::validate_resource_key(&request.kind, &request.name, &request.version)?;
        if let Some(m) = request.limit_mbps.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "a transfer's limit must be positive megabits per second, not {m}"
            )));
        }
        if let Some(v) = request.base_version.take() {
            let Some(r) = store.resource(&request.kind, &request.name, &v)? else {
                return Err(Error::InvalidArgument(format!(
                    "no local version {v} of {} {} to seed from",
                    request.kind, request.name
                )));
            };
            request.bases.push(r.hash);
        }
        for b in &request.bases {
            if !matches!(store.status(b)?, blixard_store::BlobStatus::Complete { .. }) {
                return Err(Error::InvalidArgument(format!(
                    "base {b} is not held complete here: nothing to seed from"
                )));
            }
        }
        self.inner.transfers.request(request)
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
        for conn in self.inner.peers.connect_all().await {
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
        let Some(r) = self.inner.store.resource(kind, name, version)? else {
            if self.inner.cache.was_evicted(kind, name, version) {
                return Err(Error::Evicted { what: format!("{kind} {name} {version}") });
            }
            return Err(Error::NotFound {
                kind: kind.to_string(),
                name: name.into(),
                version: version.into(),
                peers: 0,
            });
        };
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
