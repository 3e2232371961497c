//! The transfer table: every transfer of this run, the queue of those
//! waiting, and the records of unfinished ones in `node.db`, so a restarted
//! node resumes them. The public transfer API of [`Node`] lives here.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use blixard_store::ResourceKind;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    codec,
    events::{P2pEvent, TransferProgress},
    queue::{Queue, TransferPriority},
    Error, Node, Result,
};

/// A transfer's id: a number unique within one node's database (it keeps
/// counting across restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub u64);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TransferId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse().map(TransferId).map_err(|_| Error::InvalidArgument(format!("transfer id {s:?}: expected a number")))
    }
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

impl TransferState {
    /// True while queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, TransferState::Queued | TransferState::Running)
    }
}

/// A transfer as the API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Its id.
    pub id: TransferId,
    /// Resource kind.
    pub kind: ResourceKind,
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
    pub hash: Option<blixard_store::Hash>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds it ran, once finished.
    pub duration_secs: Option<f64>,
}

type Key = (ResourceKind, String, String);

/// A transfer that has not finished, as kept in `node.db`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    pub id: TransferId,
    pub kind: ResourceKind,
    pub name: String,
    pub version: String,
    pub priority: TransferPriority,
}

/// The tree of [`PendingRecord`]s, keyed by id (u64, big endian, so sled
/// iterates them in order).
pub(crate) const PENDING_TREE: &str = "transfers.v2";

/// The in-memory table.
#[derive(Default)]
pub(crate) struct Transfers {
    pub queue: Queue<TransferId>,
    pub all: HashMap<TransferId, TransferInfo>,
    pub by_key: HashMap<Key, TransferId>,
    pub running: HashMap<TransferId, tokio::task::AbortHandle>,
    pub next: u64,
}

impl Transfers {
    /// Puts a transfer into the queue and the tables.
    fn enqueue(&mut self, r: PendingRecord) {
        let key: Key = (r.kind.clone(), r.name.clone(), r.version.clone());
        let info = TransferInfo {
            id: r.id,
            kind: r.kind,
            name: r.name,
            version: r.version,
            priority: r.priority,
            state: TransferState::Queued,
            progress: None,
            hash: None,
            attempts: 0,
            error: None,
            duration_secs: None,
        };
        self.all.insert(r.id, info);
        self.by_key.insert(key, r.id);
        self.queue.push(r.id, r.priority);
    }
}

/// Reads the unfinished transfers of an earlier run: today's records, and
/// those of the first format (text ids `NODE-N`, kinds as text), which are
/// moved over. Damaged records are dropped with a warning.
pub(crate) fn load_pending(db: &sled::Db) -> Result<Vec<PendingRecord>> {
    let tree = db.open_tree(PENDING_TREE)?;
    let mut records = Vec::new();
    for kv in tree.iter() {
        let (_, v) = kv?;
        match codec::decode::<PendingRecord>("transfer", &v) {
            Ok(r) => records.push(r),
            Err(e) => warn!("dropping a pending transfer: {e}"),
        }
    }
    if db.tree_names().iter().any(|n| n.as_ref() == b"transfers") {
        let old = db.open_tree("transfers")?;
        for kv in old.iter() {
            let (_, v) = kv?;
            match codec::decode_v1_pending(&v) {
                Ok(r) => {
                    tree.insert(r.id.0.to_be_bytes(), codec::encode("transfer", &r)?)?;
                    records.push(r);
                }
                Err(e) => warn!("dropping a pending transfer of the first format: {e}"),
            }
        }
        tree.flush()?;
        db.drop_tree("transfers")?;
    }
    records.sort_by_key(|r| r.id);
    Ok(records)
}

impl Node {
    /// Queues a download of `(kind, name, version)`; returns its id. A
    /// request for a resource already queued or running is merged into it
    /// (its priority raised if this one is higher) and gets the same id.
    pub fn request_download(
        &self,
        kind: ResourceKind,
        name: &str,
        version: &str,
        priority: TransferPriority,
    ) -> Result<TransferId> {
        let key: Key = (kind.clone(), name.to_string(), version.to_string());
        let mut t = self.inner.transfers.lock().unwrap();
        if let Some(id) = t.by_key.get(&key).copied() {
            if t.all.get(&id).is_some_and(|i| i.state.is_active()) {
                t.queue.raise(&id, priority);
                if let Some(i) = t.all.get_mut(&id) {
                    i.priority = i.priority.max(priority);
                }
                return Ok(id);
            }
        }
        t.next += 1;
        let id = TransferId(t.next);
        let record = PendingRecord { id, kind: kind.clone(), name: name.into(), version: version.into(), priority };
        self.inner.pending.insert(id.0.to_be_bytes(), codec::encode("transfer", &record)?)?;
        t.enqueue(record);
        self.inner.metrics.transfers_queued.set(t.queue.len() as i64);
        drop(t);
        self.inner.queued.notify_one();
        info!(%id, %kind, name, version, %priority, "download queued");
        Ok(id)
    }

    /// Re-queues the transfers a previous run left unfinished, in their
    /// original order.
    pub(crate) fn resume_pending(&self, records: Vec<PendingRecord>) {
        let mut t = self.inner.transfers.lock().unwrap();
        for r in records {
            t.next = t.next.max(r.id.0);
            info!(id = %r.id, name = %r.name, version = %r.version, "resuming an unfinished download");
            t.enqueue(r);
        }
        self.inner.metrics.transfers_queued.set(t.queue.len() as i64);
    }

    /// Cancels a queued or running transfer.
    pub fn cancel(&self, id: TransferId) -> Result<()> {
        let mut t = self.inner.transfers.lock().unwrap();
        let Some(info) = t.all.get(&id) else { return Err(Error::UnknownTransfer(id)) };
        if !info.state.is_active() {
            return Ok(());
        }
        t.queue.remove(&id);
        let _ = self.inner.pending.remove(id.0.to_be_bytes());
        if let Some(task) = t.running.remove(&id) {
            task.abort();
            self.inner.metrics.transfers_active.dec();
        }
        if let Some(info) = t.all.get_mut(&id) {
            info.state = TransferState::Cancelled;
            info.error = Some("cancelled".into());
        }
        self.inner.metrics.transfers_finished.with_label_values(&["cancelled"]).inc();
        self.inner.metrics.transfers_queued.set(t.queue.len() as i64);
        let _ = self.inner.events.send(P2pEvent::TransferFailed(id, "cancelled".into()));
        Ok(())
    }

    /// One transfer.
    pub fn transfer(&self, id: TransferId) -> Option<TransferInfo> {
        self.inner.transfers.lock().unwrap().all.get(&id).cloned()
    }

    /// Every transfer this run, oldest first.
    pub fn transfers(&self) -> Vec<TransferInfo> {
        let t = self.inner.transfers.lock().unwrap();
        let mut all: Vec<TransferInfo> = t.all.values().cloned().collect();
        all.sort_by_key(|i| i.id);
        all
    }

    /// Waits until a transfer completes, fails or is cancelled.
    pub async fn wait(&self, id: TransferId) -> Result<TransferInfo> {
        let mut events = self.events();
        loop {
            let info = self.transfer(id).ok_or(Error::UnknownTransfer(id))?;
            if !info.state.is_active() {
                return Ok(info);
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        }
    }

    /// Changes a transfer's record in the table.
    pub(crate) fn update(&self, id: TransferId, f: impl FnOnce(&mut TransferInfo)) {
        if let Some(i) = self.inner.transfers.lock().unwrap().all.get_mut(&id) {
            f(i);
        }
    }
}
