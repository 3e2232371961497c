//! The transfer table: every transfer of this run, the queue of those
//! waiting, and their records in `node.db`. It alone changes a transfer's
//! state, and with each change it updates the metrics, sends the event and
//! keeps the record, so the three never disagree. The dispatcher
//! (`crate::dispatch`) only drives attempts through it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_store::Hash;
use tokio::{
    sync::{broadcast, Notify},
    task::AbortHandle,
};
use tracing::info;

use super::{
    id::TransferId,
    info::{FailureReason, TransferFailure, TransferInfo, TransferProgress, TransferState},
    record::{PendingRecord, PendingRecords},
    request::{DownloadRequest, Key},
};
use crate::{
    error::{Error, Result},
    events::{P2pEvent, ResourceInfo},
    metrics::Metrics,
    queue::{Queue, TransferPriority},
};

/// Bytes a finished transfer moved, by where they came from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moved {
    /// Read from the network.
    pub fetched: u64,
    /// Copied from blobs already held.
    pub reused: u64,
    /// Zero groups, never fetched.
    pub zeros: u64,
}

/// The in-memory table, behind the [`TransferTable`]'s lock.
#[derive(Default)]
struct Table {
    queue: Queue<TransferId>,
    all: HashMap<TransferId, TransferInfo>,
    by_key: HashMap<Key, TransferId>,
    running: HashMap<TransferId, AbortHandle>,
    next: u64,
}

impl Table {
    /// Puts a transfer into the queue and the tables.
    fn enqueue(&mut self, r: PendingRecord) {
        let PendingRecord { id, request } = r;
        let (key, priority) = (request.key(), request.priority);
        self.all.insert(id, TransferInfo::queued(id, request));
        self.by_key.insert(key, id);
        self.queue.push(id, priority);
    }

    /// The record a queued transfer is kept as, from its info.
    fn record(&self, id: TransferId) -> Option<PendingRecord> {
        let i = self.all.get(&id)?;
        let request = DownloadRequest {
            priority: i.priority,
            hash: i.hash.filter(|_| i.pinned),
            providers: i.providers.clone(),
            limit_mbps: i.limit_mbps,
            bases: i.bases.clone(),
            ..DownloadRequest::new(i.kind.clone(), i.name.clone(), i.version.clone())
        };
        Some(PendingRecord { id, request })
    }
}

impl TransferInfo {
    /// A transfer just queued for `request`.
    fn queued(id: TransferId, request: DownloadRequest) -> Self {
        let DownloadRequest { kind, name, version, priority, hash, providers, limit_mbps, base_version: _, bases } =
            request;
        TransferInfo {
            id,
            kind,
            name,
            version,
            priority,
            state: TransferState::Queued,
            progress: None,
            hash,
            pinned: hash.is_some(),
            providers,
            limit_mbps,
            bases,
            attempts: 0,
            error: None,
            duration_secs: None,
        }
    }
}

/// The table with what it needs to keep its records and announce changes:
/// the persisted records, the dispatcher's wake-up, metrics and events.
pub(crate) struct TransferTable {
    table: Mutex<Table>,
    pending: PendingRecords,
    /// Woken when a transfer is queued.
    queued: Arc<Notify>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<P2pEvent>,
}

impl TransferTable {
    /// The table over `db`, with the transfers an earlier run left
    /// unfinished queued again in their original order (records of earlier
    /// formats are migrated on the way).
    pub(crate) fn open(db: &sled::Db, metrics: Arc<Metrics>, events: broadcast::Sender<P2pEvent>) -> Result<Self> {
        let pending = PendingRecords::open(db)?;
        let records = pending.load(db)?;
        let mut t = Table::default();
        for r in records {
            t.next = t.next.max(r.id.0);
            info!(id = %r.id, name = %r.request.name, version = %r.request.version, "resuming an unfinished download");
            t.enqueue(r);
        }
        metrics.transfers_queued.set(t.queue.len() as i64);
        Ok(TransferTable { table: Mutex::new(t), pending, queued: Arc::new(Notify::new()), metrics, events })
    }

    /// Queues a download (checked and resolved by the caller); returns its
    /// id. A request for a resource already queued or running is merged
    /// into it and gets the same id: its priority is raised if this one is
    /// higher and its bases are added; one that asks for another hash,
    /// other providers or another limit is an error naming the transfer
    /// (cancel it first), never silently dropped.
    pub(crate) fn request(&self, request: DownloadRequest) -> Result<TransferId> {
        let mut t = self.table.lock().unwrap();
        if let Some(id) = t.by_key.get(&request.key()).copied() {
            if let Some(i) = t.all.get_mut(&id).filter(|i| i.state.is_active()) {
                let differs = [
                    (request.hash.is_some() && request.hash != i.hash.filter(|_| i.pinned), "hash"),
                    (!request.providers.is_empty() && request.providers != i.providers, "providers"),
                    (request.limit_mbps.is_some() && request.limit_mbps != i.limit_mbps, "limit"),
                ];
                if let Some((_, what)) = differs.iter().find(|(d, _)| *d) {
                    return Err(Error::InvalidArgument(format!(
                        "transfer {id} already downloads {} {} {} with another {what}: cancel it first",
                        i.kind, i.name, i.version
                    )));
                }
                i.priority = i.priority.max(request.priority);
                for b in request.bases {
                    if !i.bases.contains(&b) {
                        i.bases.push(b);
                    }
                }
                t.queue.raise(&id, request.priority);
                return Ok(id);
            }
        }
        t.next += 1;
        let id = TransferId(t.next);
        let record = PendingRecord { id, request };
        self.pending.put(&record)?;
        let r = &record.request;
        info!(%id, kind = %r.kind, name = %r.name, version = %r.version, priority = %r.priority, pinned = ?r.hash, "download queued");
        t.enqueue(record);
        self.metrics.transfers_queued.set(t.queue.len() as i64);
        drop(t);
        self.queued.notify_one();
        Ok(id)
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
        t.queue.set(&id, priority);
        let record = t.record(id);
        drop(t);
        if let Some(record) = record {
            self.pending.put(&record)?;
        }
        info!(%id, %priority, "priority changed");
        self.queued.notify_one();
        Ok(())
    }

    /// Cancels a queued or running transfer.
    pub(crate) fn cancel(&self, id: TransferId) -> Result<()> {
        let mut t = self.table.lock().unwrap();
        let Some(info) = t.all.get(&id) else { return Err(Error::UnknownTransfer(id.0)) };
        if !info.state.is_active() {
            let state = format!("{:?}", info.state).to_lowercase();
            return Err(Error::InvalidArgument(format!(
                "transfer {id} has already ended ({state}): nothing to cancel"
            )));
        }
        t.queue.remove(&id);
        self.pending.remove(id);
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

    /// Aborts every running transfer (the node stops; their records stay,
    /// so the next run resumes them).
    pub(crate) fn abort_all(&self) {
        for (_, t) in self.table.lock().unwrap().running.drain() {
            t.abort();
        }
    }

    /// Starts the best waiting transfer, if `allowed()` (asked under the
    /// table's lock, so whoever changes what it reads and then takes the
    /// lock, e.g. [`TransferTable::requeue_running`], sees every start):
    /// `spawn` runs it and returns its handle. Returns whether one started.
    pub(crate) fn start_next(
        &self,
        allowed: impl FnOnce() -> bool,
        spawn: impl FnOnce(TransferId) -> AbortHandle,
    ) -> bool {
        let mut t = self.table.lock().unwrap();
        if !allowed() {
            return false;
        }
        let Some(id) = t.queue.pop() else { return false };
        let task = spawn(id);
        t.running.insert(id, task);
        self.metrics.transfers_queued.set(t.queue.len() as i64);
        true
    }

    /// Notified when a transfer is queued or its priority changes.
    pub(crate) fn wake(&self) -> Arc<Notify> {
        self.queued.clone()
    }

    /// A started transfer begins running; its info as queued.
    pub(crate) fn running(&self, id: TransferId) -> Option<TransferInfo> {
        let info = {
            let mut t = self.table.lock().unwrap();
            let i = t.all.get_mut(&id)?;
            i.state = TransferState::Running;
            i.clone()
        };
        self.metrics.transfers_active.inc();
        let _ = self.events.send(P2pEvent::TransferStarted(id));
        Some(info)
    }

    /// A transfer's attempt `n` (from 1) begins.
    pub(crate) fn attempt(&self, id: TransferId, n: u32) {
        self.update(id, |i| i.attempts = n);
    }

    /// A transfer's blob is known.
    pub(crate) fn resolved(&self, id: TransferId, hash: Hash) {
        self.update(id, |i| i.hash = Some(hash));
    }

    /// A running transfer's progress.
    pub(crate) fn progress(&self, id: TransferId, p: TransferProgress) {
        self.update(id, |i| i.progress = Some(p.clone()));
        let _ = self.events.send(P2pEvent::TransferProgress(id, p));
    }

    /// A transfer completed: `res` is recorded here; it took `took`.
    pub(crate) fn complete(&self, id: TransferId, res: ResourceInfo, took: Duration, moved: Moved) {
        self.finished(id, took, |info| {
            info.state = TransferState::Completed;
            info.hash = Some(res.hash);
            let shares = info.progress.take().map(|p| p.shares).unwrap_or_default();
            info.progress = Some(TransferProgress {
                bytes: res.size,
                total: res.size,
                speed_bps: 0.0,
                eta_secs: Some(0.0),
                providers: 0,
                shares,
                fetched_bytes: moved.fetched,
                reused_bytes: moved.reused,
                zero_bytes: moved.zeros,
            });
        });
        self.metrics.transfer_duration.observe(took.as_secs_f64());
        self.metrics.transfers_finished.with_label_values(&["completed"]).inc();
        info!(%id, hash = %res.hash, size = res.size, secs = took.as_secs_f64(), "download complete");
        let _ = self.events.send(P2pEvent::ResourceAvailable(res));
        let _ = self.events.send(P2pEvent::TransferCompleted(id));
    }

    /// A transfer failed for good after `took`.
    pub(crate) fn fail(&self, id: TransferId, e: &Error, took: Duration) {
        let failure = TransferFailure::from(e);
        self.finished(id, took, |info| {
            info.state = TransferState::Failed;
            info.error = Some(failure.clone());
        });
        self.metrics.transfers_finished.with_label_values(&["failed"]).inc();
        tracing::warn!(%id, "download failed: {e}");
        let _ = self.events.send(P2pEvent::TransferFailed(id, failure));
    }

    /// Ends a running transfer: its record forgotten, no longer running,
    /// its duration and outcome set by `outcome`.
    fn finished(&self, id: TransferId, took: Duration, outcome: impl FnOnce(&mut TransferInfo)) {
        self.pending.remove(id);
        let mut t = self.table.lock().unwrap();
        if t.running.remove(&id).is_some() {
            self.metrics.transfers_active.dec();
        }
        if let Some(info) = t.all.get_mut(&id) {
            info.duration_secs = Some(took.as_secs_f64());
            outcome(info);
        }
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

    /// Transfers running and queued now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let t = self.table.lock().unwrap();
        (t.running.len(), t.queue.len())
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

    fn update(&self, id: TransferId, f: impl FnOnce(&mut TransferInfo)) {
        if let Some(i) = self.table.lock().unwrap().all.get_mut(&id) {
            f(i);
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
