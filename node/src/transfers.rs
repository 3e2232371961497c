//! The transfer table: every transfer of this run, the queue of those
//! waiting, and the records of unfinished ones in `node.db`, so a restarted
//! node resumes them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_protocol::NodeId;
use blixard_store::ResourceKind;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};
use tracing::{info, warn};

pub use crate::transfer_id::TransferId;
use crate::{
    codec,
    error::{Error, Result},
    events::{P2pEvent, TransferProgress},
    metrics::Metrics,
    queue::{Queue, TransferPriority},
};

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

/// Why a transfer failed, to match on (the message says the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureReason {
    /// No connected peer had the resource.
    NotFound,
    /// No peers were connected.
    NoPeers,
    /// Only untrusted publishers claim the name.
    Untrusted,
    /// Trusted publishers disagree on what the name is.
    Conflict,
    /// Peers refused this node (caps, allowlists) and no other had it.
    Refused,
    /// It did not finish within the transfer timeout.
    Timeout,
    /// The providers went away before the blob was complete.
    Incomplete,
    /// The caller cancelled it.
    Cancelled,
    /// This node's store, database or disk failed.
    Local,
    /// Anything else (a protocol failure the retries did not get past).
    Other,
}

/// How a transfer failed: a reason to match on and the full message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct TransferFailure {
    /// What kind of failure.
    pub reason: FailureReason,
    /// The error, as text.
    pub message: String,
}

impl From<&Error> for TransferFailure {
    fn from(e: &Error) -> Self {
        let reason = match e {
            Error::NotFound { .. } => FailureReason::NotFound,
            Error::NoPeers => FailureReason::NoPeers,
            Error::Untrusted { .. } => FailureReason::Untrusted,
            Error::Conflict { .. } => FailureReason::Conflict,
            Error::Refused { .. } | Error::NotAllowed(_) => FailureReason::Refused,
            Error::Timeout(_) => FailureReason::Timeout,
            Error::Incomplete(_) => FailureReason::Incomplete,
            Error::Store(_) | Error::Database(_) | Error::CorruptRecord { .. } | Error::Io { .. } => {
                FailureReason::Local
            }
            _ => FailureReason::Other,
        };
        TransferFailure { reason, message: e.to_string() }
    }
}

impl TransferFailure {
    pub(crate) fn cancelled() -> Self {
        TransferFailure { reason: FailureReason::Cancelled, message: "cancelled".into() }
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
    /// The blob, once resolved (or as chosen, if `pinned`).
    pub hash: Option<blixard_store::Hash>,
    /// The hash was chosen by the requester (`--hash`): the claim for it is
    /// used whoever made it.
    #[serde(default)]
    pub pinned: bool,
    /// The only peers it may use, if the requester chose them.
    #[serde(default)]
    pub providers: Vec<NodeId>,
    /// Its own download limit, megabits per second, under the node's.
    #[serde(default)]
    pub limit_mbps: Option<f64>,
    /// Local blobs the requester named to seed it from, besides other
    /// versions of the same name (not kept across a restart).
    #[serde(default)]
    pub bases: Vec<blixard_store::Hash>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed (or that it was cancelled).
    pub error: Option<TransferFailure>,
    /// Seconds it ran, once finished.
    pub duration_secs: Option<f64>,
}

/// What a download request chose besides its key and priority.
#[derive(Debug, Default)]
pub(crate) struct RequestOptions {
    /// The content, whoever claims it.
    pub pinned: Option<blixard_store::Hash>,
    /// The only peers to ask (empty: any).
    pub providers: Vec<NodeId>,
    /// Its own limit, megabits per second.
    pub limit_mbps: Option<f64>,
    /// Local blobs to seed it from.
    pub bases: Vec<blixard_store::Hash>,
}

/// A resource as the table keys it: kind, name, version.
pub(crate) type Key = (ResourceKind, String, String);

/// A transfer that has not finished, as kept in `node.db`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    pub id: TransferId,
    pub kind: ResourceKind,
    pub name: String,
    pub version: String,
    pub priority: TransferPriority,
    /// The content the requester chose, if any.
    pub hash: Option<blixard_store::Hash>,
    /// The only peers to use (empty: any).
    pub providers: Vec<NodeId>,
    /// Its own download limit, megabits per second.
    pub limit_mbps: Option<f64>,
}

/// A pending transfer as the second format kept it (no providers).
#[derive(Deserialize)]
struct PendingV2 {
    id: TransferId,
    kind: ResourceKind,
    name: String,
    version: String,
    priority: TransferPriority,
    hash: Option<blixard_store::Hash>,
}

/// The tree of [`PendingRecord`]s, keyed by id (u64, big endian, so sled
/// iterates them in order).
pub(crate) const PENDING_TREE: &str = "transfers.v3";

/// The in-memory table.
#[derive(Default)]
pub(crate) struct Table {
    pub queue: Queue<TransferId>,
    pub all: HashMap<TransferId, TransferInfo>,
    pub by_key: HashMap<Key, TransferId>,
    pub running: HashMap<TransferId, tokio::task::AbortHandle>,
    pub next: u64,
}

impl Table {
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
            hash: r.hash,
            pinned: r.hash.is_some(),
            providers: r.providers,
            limit_mbps: r.limit_mbps,
            bases: Vec::new(),
            attempts: 0,
            error: None,
            duration_secs: None,
        };
        self.all.insert(r.id, info);
        self.by_key.insert(key, r.id);
        self.queue.push(r.id, r.priority);
    }
}

/// A pending transfer as the first format kept it: text id `NODE-N`, kind
/// as text.
#[derive(Deserialize)]
struct PendingV1 {
    id: String,
    kind: String,
    name: String,
    version: String,
    priority: TransferPriority,
}

/// Reads a pending transfer of the first format (version byte 1).
fn decode_v1_pending(bytes: &[u8]) -> Result<PendingRecord> {
    let old: PendingV1 = codec::decode_version("transfer", 1, bytes)?;
    let corrupt = |reason: String| Error::CorruptRecord { what: "transfer", reason };
    let number = old.id.rsplit('-').next().and_then(|n| n.parse().ok());
    let id = number.ok_or_else(|| corrupt(format!("id {:?}", old.id)))?;
    let kind = old.kind.parse().map_err(|e: blixard_store::Error| corrupt(e.to_string()))?;
    let (name, version, priority) = (old.name, old.version, old.priority);
    Ok(PendingRecord {
        id: TransferId(id),
        kind,
        name,
        version,
        priority,
        hash: None,
        providers: Vec::new(),
        limit_mbps: None,
    })
}

/// Reads a pending transfer of the second format (`transfers.v2`).
fn decode_v2_pending(bytes: &[u8]) -> Result<PendingRecord> {
    let PendingV2 { id, kind, name, version, priority, hash } = codec::decode("transfer", bytes)?;
    Ok(PendingRecord { id, kind, name, version, priority, hash, providers: Vec::new(), limit_mbps: None })
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
    // Earlier formats: moved over once, then their trees dropped.
    type Decode = fn(&[u8]) -> Result<PendingRecord>;
    let earlier: [(&str, Decode); 2] = [("transfers", decode_v1_pending), ("transfers.v2", decode_v2_pending)];
    for (name, decode) in earlier {
        if !db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        let old = db.open_tree(name)?;
        for kv in old.iter() {
            let (_, v) = kv?;
            match decode(&v) {
                Ok(r) => {
                    tree.insert(r.id.0.to_be_bytes(), codec::encode("transfer", &r)?)?;
                    records.push(r);
                }
                Err(e) => warn!("dropping a pending transfer of an earlier format ({name}): {e}"),
            }
        }
        tree.flush()?;
        db.drop_tree(name)?;
    }
    records.sort_by_key(|r| r.id);
    Ok(records)
}

/// The table with what it needs to keep its records and announce changes:
/// the persisted records, the dispatcher's wake-up, metrics and events.
pub(crate) struct TransferTable {
    pub(crate) table: Mutex<Table>,
    pending: sled::Tree,
    /// Woken when a transfer is queued.
    pub(crate) queued: Arc<Notify>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<P2pEvent>,
}

impl TransferTable {
    /// A table over the pending-transfer tree of `db`.
    pub(crate) fn new(db: &sled::Db, metrics: Arc<Metrics>, events: broadcast::Sender<P2pEvent>) -> Result<Self> {
        Ok(TransferTable {
            table: Mutex::new(Table::default()),
            pending: db.open_tree(PENDING_TREE)?,
            queued: Arc::new(Notify::new()),
            metrics,
            events,
        })
    }

    /// Queues a download of `key` (kind, name, version); returns its id. A
    /// request for a resource already queued or running is merged into it
    /// (its priority raised if this one is higher) and gets the same id.
    /// With `pinned`, the blob is that hash, whoever claims it; with
    /// `providers`, only they are asked.
    pub(crate) fn request(&self, key: Key, priority: TransferPriority, options: RequestOptions) -> Result<TransferId> {
        let RequestOptions { pinned, providers, limit_mbps, bases } = options;
        let mut t = self.table.lock().unwrap();
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
        let (kind, name, version) = key;
        let record = PendingRecord { id, kind, name, version, priority, hash: pinned, providers, limit_mbps };
        self.pending.insert(id.0.to_be_bytes(), codec::encode("transfer", &record)?)?;
        info!(%id, kind = %record.kind, name = %record.name, version = %record.version, %priority, ?pinned, "download queued");
        t.enqueue(record);
        if let Some(info) = t.all.get_mut(&id) {
            info.bases = bases;
        }
        self.metrics.transfers_queued.set(t.queue.len() as i64);
        drop(t);
        self.queued.notify_one();
        Ok(id)
    }

    /// Re-queues the transfers a previous run left unfinished, in their
    /// original order.
    pub(crate) fn resume_pending(&self, records: Vec<PendingRecord>) {
        let mut t = self.table.lock().unwrap();
        for r in records {
            t.next = t.next.max(r.id.0);
            info!(id = %r.id, name = %r.name, version = %r.version, "resuming an unfinished download");
            t.enqueue(r);
        }
        self.metrics.transfers_queued.set(t.queue.len() as i64);
    }

    /// Changes a transfer's priority: a queued one takes its new place in
    /// the queue at once; a running one keeps running (its priority is
    /// recorded, and kept if it is resumed after a restart).
    pub(crate) fn set_priority(&self, id: TransferId, priority: TransferPriority) -> Result<()> {
        let mut t = self.table.lock().unwrap();
        let Some(info) = t.all.get_mut(&id) else { return Err(Error::UnknownTransfer(id.0)) };
        if !info.state.is_active() {
            return Err(Error::InvalidArgument(format!("transfer {id} has ended ({:?})", info.state)));
        }
        info.priority = priority;
        let info = info.clone();
        t.queue.set(&id, priority);
        drop(t);
        let record = PendingRecord {
            id,
            kind: info.kind,
            name: info.name,
            version: info.version,
            priority,
            hash: info.hash.filter(|_| info.pinned),
            providers: info.providers,
            limit_mbps: info.limit_mbps,
        };
        self.pending.insert(id.0.to_be_bytes(), codec::encode("transfer", &record)?)?;
        info!(%id, %priority, "priority changed");
        self.queued.notify_one();
        Ok(())
    }

    /// Cancels a queued or running transfer.
    pub(crate) fn cancel(&self, id: TransferId) -> Result<()> {
        let mut t = self.table.lock().unwrap();
        let Some(info) = t.all.get(&id) else { return Err(Error::UnknownTransfer(id.0)) };
        if !info.state.is_active() {
            return Ok(());
        }
        t.queue.remove(&id);
        let _ = self.pending.remove(id.0.to_be_bytes());
        if let Some(task) = t.running.remove(&id) {
            task.abort();
            self.metrics.transfers_active.dec();
        }
        if let Some(info) = t.all.get_mut(&id) {
            info.state = TransferState::Cancelled;
            info.error = Some(TransferFailure::cancelled());
        }
        self.metrics.transfers_finished.with_label_values(&["cancelled"]).inc();
        self.metrics.transfers_queued.set(t.queue.len() as i64);
        let _ = self.events.send(P2pEvent::TransferFailed(id, TransferFailure::cancelled()));
        Ok(())
    }

    /// Stops every running transfer and queues it again at its priority
    /// (what it verified is kept; its attempts start over). Returns how many.
    pub(crate) fn requeue_running(&self) -> usize {
        let mut t = self.table.lock().unwrap();
        let running: Vec<_> = t.running.drain().collect();
        for (id, task) in &running {
            task.abort();
            self.metrics.transfers_active.dec();
            let Some(info) = t.all.get_mut(id) else { continue };
            info.state = TransferState::Queued;
            let priority = info.priority;
            t.queue.push(*id, priority);
        }
        self.metrics.transfers_queued.set(t.queue.len() as i64);
        running.len()
    }

    /// One transfer.
    pub(crate) fn transfer(&self, id: TransferId) -> Option<TransferInfo> {
        self.table.lock().unwrap().all.get(&id).cloned()
    }

    /// Every transfer this run, oldest first.
    pub(crate) fn transfers(&self) -> Vec<TransferInfo> {
        let t = self.table.lock().unwrap();
        let mut all: Vec<TransferInfo> = t.all.values().cloned().collect();
        all.sort_by_key(|i| i.id);
        all
    }

    /// Waits until a transfer ends: its record if it completed, else
    /// [`Error::Transfer`] with why.
    pub(crate) async fn wait(&self, id: TransferId) -> Result<TransferInfo> {
        let mut events = self.events.subscribe();
        loop {
            let info = self.transfer(id).ok_or(Error::UnknownTransfer(id.0))?;
            if info.state == TransferState::Completed {
                return Ok(info);
            }
            if !info.state.is_active() {
                let failure = info.error.unwrap_or(TransferFailure {
                    reason: FailureReason::Other,
                    message: format!("ended {:?}", info.state),
                });
                return Err(Error::Transfer { id, failure });
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        }
    }

    /// Forgets the persisted record of a transfer that ended.
    pub(crate) fn ended(&self, id: TransferId) {
        let _ = self.pending.remove(id.0.to_be_bytes());
    }

    /// Changes a transfer's record in the table.
    pub(crate) fn update(&self, id: TransferId, f: impl FnOnce(&mut TransferInfo)) {
        if let Some(i) = self.table.lock().unwrap().all.get_mut(&id) {
            f(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record written by the first format (kept here as its bytes'
    /// recipe) is read and moved into today's form.
    #[test]
    fn a_first_format_pending_transfer_migrates() {
        #[derive(serde::Serialize)]
        struct Old<'a>(&'a str, &'a str, &'a str, &'a str, TransferPriority);
        let mut bytes = vec![1u8];
        let old = Old("7-42", "vm-image", "ubuntu-server", "22.04", TransferPriority::High);
        bytes.extend(blixard_store::encode_record("test", &old).unwrap());
        let r = decode_v1_pending(&bytes).unwrap();
        assert_eq!(r.id, TransferId(42));
        assert_eq!(r.kind, blixard_store::ResourceKind::VmImage);
        assert_eq!((r.name.as_str(), r.version.as_str()), ("ubuntu-server", "22.04"));
        assert!(codec::decode::<PendingRecord>("transfer", &bytes).is_err(), "not readable as today's");
    }

    /// A second-format record (no providers) is moved to today's tree.
    #[test]
    fn a_second_format_pending_transfer_migrates() {
        #[derive(serde::Serialize)]
        struct V2(TransferId, ResourceKind, String, String, TransferPriority, Option<blixard_store::Hash>);
        let db = sled::Config::new().temporary(true).open().unwrap();
        let hash = Some(blixard_store::Hash([7; 32]));
        let old = V2(TransferId(9), ResourceKind::VmImage, "img".into(), "1".into(), TransferPriority::Low, hash);
        db.open_tree("transfers.v2")
            .unwrap()
            .insert(9u64.to_be_bytes(), codec::encode("transfer", &old).unwrap())
            .unwrap();
        let records = load_pending(&db).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].id, records[0].hash, records[0].providers.len()), (TransferId(9), hash, 0));
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"transfers.v2"), "the old tree is gone");
        assert_eq!(load_pending(&db).unwrap().len(), 1, "kept in today's tree");
    }
}
