//! What a running node's parts share: its options, store, endpoint, peers,
//! transfer table, events, metrics and limits. The facade (`node`) and the
//! dispatcher (`dispatch`) both hold it.

use std::sync::{Arc, Mutex};

use blixard_net::{rate::RateLimiter, Endpoint};
use blixard_store::Store;
use tokio::{
    sync::{broadcast, Semaphore},
    task::JoinHandle,
};

use crate::{
    config::P2pConfig, events::P2pEvent, metrics::Metrics, peers::Peers, transfers::table::TransferTable,
    uploads::Uploads,
};

/// The state of one running node.
pub(crate) struct Inner {
    /// The operator's number for the node (logs only).
    pub(crate) label: u64,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    pub(crate) config: P2pConfig,
    pub(crate) store: Store,
    pub(crate) endpoint: Endpoint,
    pub(crate) _db: sled::Db,
    pub(crate) peers: Arc<Peers>,
    pub(crate) events: broadcast::Sender<P2pEvent>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) transfers: TransferTable,
    pub(crate) cache: crate::cache::Cache,
    /// Imports running now.
    pub(crate) uploads: Uploads,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) download_limiter: Option<Arc<dyn RateLimiter>>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// P2P on (true) or off: the dispatcher starts transfers only while on.
    pub(crate) p2p_on: tokio::sync::watch::Sender<bool>,
    /// The relay this node runs for others (`relay_server`), if any.
    pub(crate) relay_server: Mutex<Option<blixard_net::relay::RelayServer>>,
    /// The newest claim accepted per publisher and name.
    pub(crate) claims: crate::claims::ClaimMarks,
    /// One content index is built at a time (each reads a whole blob).
    pub(crate) indexing: Arc<Semaphore>,
}

/// How long after an upload or download its content index is started.
const INDEX_DELAY: std::time::Duration = std::time::Duration::from_secs(3);

impl Inner {
    /// Builds the content index of a complete blob in the background (see
    /// `blixard_store::content_index`): peers downloading a similar blob
    /// find moved bytes in it through the index, and this node's own later
    /// downloads find chunks of theirs in it. Off with `incremental`.
    pub(crate) fn index_in_background(&self, hash: blixard_store::Hash) {
        if !self.config.incremental {
            return;
        }
        let (store, permits) = (self.store.clone(), self.indexing.clone());
        // Aborted with the node's other tasks when it stops (before the build
        // starts; a build under way finishes on the blocking pool).
        let task = tokio::spawn(async move {
            // Not at once: what usually follows a download (writing it out,
            // starting the VM) should not share the disk and CPU with it.
            tokio::time::sleep(INDEX_DELAY).await;
            let Ok(_permit) = permits.acquire_owned().await else { return };
            let built = tokio::task::spawn_blocking(move || store.build_content_index(&hash)).await;
            match built {
                Ok(Ok(chunks)) => tracing::debug!(%hash, chunks, "content index built"),
                Ok(Err(e)) => tracing::debug!(%hash, "no content index: {e}"),
                Err(e) => tracing::warn!(%hash, "content index task failed: {e}"),
            }
        });
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// See [`crate::Node::is_trusted`].
    pub(crate) fn is_trusted(&self, id: &blixard_protocol::NodeId) -> bool {
        let config = &self.config;
        *id == self.endpoint.node_id()
            || config.trust.contains(id)
            || config.allowlist.as_ref().is_some_and(|a| a.contains(id))
            || self.peers.is_trusted(id)
    }

    /// Stops everything at once: the queue, running transfers (what they
    /// verified is checkpointed), serving, peers. Idempotent.
    pub(crate) fn stop(&self) {
        self.permits.close();
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.transfers.abort_all();
        self.peers.close_all(blixard_protocol::ErrorCode::Ok, "shutting down");
        self.endpoint.close(blixard_protocol::ErrorCode::Unavailable, "shutting down");
        self.relay_server.lock().unwrap().take();
        let _ = self.store.flush();
    }
}

impl Drop for Inner {
    /// The last holder is gone: the tasks it owns (serving, health,
    /// discovery, the dispatcher) would otherwise run on, detached, holding
    /// the store and the port.
    fn drop(&mut self) {
        self.stop();
    }
}
