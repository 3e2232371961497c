//! The table's policy without a node: queue order, merging, starts
//! gated by P2P, events and records per state change, requeueing.

use blixard_store::ResourceKind;

use super::*;

fn table() -> (TransferTable, broadcast::Receiver<P2pEvent>) {
    let (t, rx, _db) = table_in();
    (t, rx)
}

fn table_in() -> (TransferTable, broadcast::Receiver<P2pEvent>, sled::Db) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let (events, rx) = broadcast::channel(64);
    (TransferTable::open(&db, Arc::new(Metrics::new()), events).unwrap(), rx, db)
}

fn request(name: &str, priority: TransferPriority) -> DownloadRequest {
    DownloadRequest::new(ResourceKind::VmImage, name, "1").priority(priority)
}

fn start(t: &TransferTable) -> Option<TransferId> {
    let mut started = None;
    let handle = || tokio::spawn(std::future::pending::<()>()).abort_handle();
    t.start_next(
        || true,
        |id| {
            started = Some(id);
            handle()
        },
    );
    started
}

#[tokio::test(start_paused = true)]
async fn queue_order_is_priority_then_arrival_and_merges_on_the_key() {
    let (t, _rx) = table();
    let low = t.request(request("a", TransferPriority::Low)).unwrap();
    let normal = t.request(request("b", TransferPriority::Normal)).unwrap();
    let normal2 = t.request(request("c", TransferPriority::Normal)).unwrap();
    // The same key again merges, raising the priority.
    assert_eq!(t.request(request("a", TransferPriority::Critical)).unwrap(), low);
    // ... but one that asks for something else is refused, not dropped.
    let other = request("a", TransferPriority::Low).hash(blixard_store::Hash([9; 32]));
    assert!(t.request(other).unwrap_err().to_string().contains("another hash"), "a differing hash");
    let other = request("a", TransferPriority::Low).limit_mbps(3.0);
    assert!(t.request(other).unwrap_err().to_string().contains("another limit"), "a differing limit");
    assert_eq!(t.counts(), (0, 3));
    assert_eq!([start(&t), start(&t), start(&t), start(&t)], [Some(low), Some(normal), Some(normal2), None]);
    assert_eq!(t.counts(), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_while_not_allowed() {
    let (t, _rx) = table();
    t.request(request("a", TransferPriority::Normal)).unwrap();
    assert!(!t.start_next(|| false, |_| unreachable!("not allowed")));
    assert_eq!(t.counts(), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn each_state_change_sends_its_event_and_ends_the_record() {
    let (t, mut rx, db) = table_in();
    let id = t.request(request("a", TransferPriority::Normal)).unwrap();
    assert_eq!(t.pending.load(&db).unwrap().len(), 1, "recorded while queued");
    start(&t).unwrap();
    t.running(id).unwrap();
    assert!(matches!(rx.try_recv(), Ok(P2pEvent::TransferStarted(i)) if i == id));
    t.fail(id, &Error::NoPeers, Duration::from_secs(1));
    assert!(
        matches!(rx.try_recv(), Ok(P2pEvent::TransferFailed(i, f)) if i == id && f.reason == FailureReason::NoPeers)
    );
    let info = t.transfer(id).unwrap();
    assert_eq!((info.state, info.duration_secs), (TransferState::Failed, Some(1.0)));
    assert_eq!(t.counts(), (0, 0));
    assert!(t.pending.load(&db).unwrap().is_empty(), "forgotten once ended");
    // A cancel after the end changes nothing, and says so.
    assert!(t.cancel(id).unwrap_err().to_string().contains("already ended (failed)"));
    assert_eq!(t.transfer(id).unwrap().state, TransferState::Failed);
}

#[tokio::test(start_paused = true)]
async fn requeue_running_puts_them_back_at_their_priority() {
    let (t, _rx) = table();
    let a = t.request(request("a", TransferPriority::High)).unwrap();
    start(&t).unwrap();
    t.running(a).unwrap();
    assert_eq!(t.requeue_running(), 1);
    assert_eq!(t.transfer(a).unwrap().state, TransferState::Queued);
    assert_eq!(start(&t), Some(a));
}
