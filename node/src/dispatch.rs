//! Running transfers: the dispatcher that takes a concurrency permit and
//! then the best waiting transfer, the retry loop around each attempt, one
//! attempt (resolve, fetch, record), and the progress reporter.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use blixard_net::{
    backoff::Backoff,
    rate::{AllOf, RateLimiter, TokenBucket},
};
use blixard_store::{BlobStatus, Hash};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::{
    download::{self, Live},
    error::{Error, Result},
    events::ResourceInfo,
    shared::Inner,
    transfers::{table::Moved, ProviderShare, TransferId, TransferInfo, TransferProgress},
};

/// Waits between attempts of one transfer: 0.5 s, doubling (no jitter:
/// one node's own retries do not stampede anyone).
const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(3600));

/// The dispatcher: takes a permit first, then the best waiting transfer, so
/// the order is decided when capacity frees up.
pub(crate) fn dispatcher(inner: &Arc<Inner>) -> JoinHandle<()> {
    let weak = Arc::downgrade(inner);
    let permits = inner.permits.clone();
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            // Moved into the transfer that starts; held until it ends.
            let mut permit = Some(permit);
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let mut on = inner.p2p_on.subscribe();
                let wake = inner.transfers.wake();
                let wake = wake.notified();
                // Whether P2P is on is read under the table's lock, so
                // turning it off (which then takes the lock) sees every start.
                let started = inner.transfers.start_next(
                    || *on.borrow_and_update(),
                    |id| {
                        let (inner, permit) = (inner.clone(), permit.take());
                        tokio::spawn(async move {
                            run_transfer(&inner, id).await;
                            drop(permit);
                        })
                        .abort_handle()
                    },
                );
                if started {
                    break;
                }
                drop(inner);
                tokio::select! {
                    _ = wake => {}
                    _ = on.changed() => {}
                }
            }
        }
    })
}

/// Runs one transfer to its end: attempts under the transfer timeout,
/// retried with backoff, then the outcome recorded and announced.
async fn run_transfer(inner: &Arc<Inner>, id: TransferId) {
    let table = &inner.transfers;
    let Some(info) = table.running(id) else { return };
    let started = Instant::now();
    let live = Arc::new(Live::default());
    // Aborted when this task ends, however it ends (a cancel aborts it).
    let reporter = AbortOnDrop(tokio::spawn({
        let (every, inner, live) = (inner.config.progress_interval, Arc::downgrade(inner), live.clone());
        async move { report_progress(inner, id, every, &live).await }
    }));
    let config = &inner.config;
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        table.attempt(id, attempt);
        let r = match tokio::time::timeout(config.transfer_timeout, attempt_once(inner, id, &info, &live)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(config.transfer_timeout)),
        };
        match r {
            Ok(res) => break Ok(res),
            Err(e) if attempt <= config.max_retry_attempts => {
                let wait = RETRY.delay(attempt - 1);
                warn!(%id, attempt, "download failed, retrying in {wait:?}: {e}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => break Err(e),
        }
    };
    drop(reporter);
    let took = started.elapsed();
    match result {
        Ok(res) => {
            let moved = Moved {
                fetched: live.wire.load(Ordering::Relaxed),
                reused: live.reused.load(Ordering::Relaxed),
                zeros: live.zeros.load(Ordering::Relaxed),
            };
            table.complete(id, res, took, moved);
            if inner.config.max_cache_size.is_some() {
                // Keep the cache under its limit now, not at the next round.
                let inner = inner.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = inner.cache.collect() {
                        warn!("cache eviction failed: {e}");
                    }
                });
            }
        }
        Err(e) => table.fail(id, &e, took),
    }
}

/// One attempt: done at once if the resource is complete here; otherwise
/// resolve its hash through the peers, fetch what is missing, and record
/// the resource.
async fn attempt_once(inner: &Inner, id: TransferId, info: &TransferInfo, live: &Live) -> Result<ResourceInfo> {
    let kind = &info.kind;
    if let Some(r) = inner.store.resource(kind, &info.name, &info.version)? {
        let wanted = !info.pinned || info.hash == Some(r.hash);
        if wanted && matches!(inner.store.status(&r.hash)?, BlobStatus::Complete { .. }) {
            return Ok(r);
        }
    }
    let mut conns = inner.peers.connect_all().await;
    if !info.providers.is_empty() {
        conns.retain(|c| info.providers.contains(&c.remote_id()));
    }
    let pinned = info.hash.filter(|_| info.pinned);
    let trusted = |id: &blixard_protocol::NodeId| inner.is_trusted(id);
    let resolved = download::resolve(&inner.claims, &conns, kind, &info.name, &info.version, pinned, trusted).await;
    let found = match resolved {
        // Say so when peers refused us: "no peer has it" would mislead. A
        // connection refused during this attempt may not have reached the
        // peer book yet, so its own close reason counts too.
        Err(e @ (Error::NotFound { .. } | Error::NoPeers)) => {
            let mut refusals = inner.peers.recent_refusals();
            for c in &conns {
                if let Some(why) = c.refusal() {
                    let line = format!("{}: {why}", c.remote_id());
                    if !refusals.contains(&line) {
                        refusals.push(line);
                    }
                }
            }
            if refusals.is_empty() {
                return Err(e);
            }
            let what = format!("{kind} {} {}", info.name, info.version);
            return Err(Error::Refused { what, refusals: refusals.join("; ") });
        }
        other => other?,
    };
    let hash = Hash(found.hash);
    inner.transfers.resolved(id, hash);
    let lease = inner.store.lease(hash);
    let ctx = download::Context {
        store: inner.store.clone(),
        peers: inner.peers.clone(),
        events: inner.events.clone(),
        metrics: inner.metrics.clone(),
        limiter: transfer_limiter(inner, info.limit_mbps),
    };
    let providers: Vec<blixard_protocol::NodeId> = conns.iter().map(|c| c.remote_id()).collect();
    if inner.config.incremental {
        let bases = seed_bases(inner, info, hash);
        download::seed(&ctx, hash, found.size, &providers, &bases, live).await;
    }
    download::fetch(&ctx, hash, found.size, providers, live).await?;
    let r = inner.store.put_resource(kind, &info.name, &info.version, lease.hash())?;
    // The download's lease now holds it for its first use (see `cache`).
    inner.cache.downloaded(&r, lease);
    inner.index_in_background(r.hash);
    Ok(r)
}

/// Local blobs to seed a download from: those the request named, then the
/// other versions of the same name held complete, newest first (at most
/// `MAX_SEED_BASES` in all).
fn seed_bases(inner: &Inner, info: &TransferInfo, hash: Hash) -> Vec<Hash> {
    let mut bases = info.bases.clone();
    let mut versions = inner.store.resources(Some(&info.kind)).unwrap_or_default();
    versions.retain(|r| r.name == info.name && r.version != info.version && r.hash != hash);
    versions.sort_by_key(|r| std::cmp::Reverse(r.created_unix_ms));
    for r in versions {
        if !bases.contains(&r.hash) && matches!(inner.store.status(&r.hash), Ok(BlobStatus::Complete { .. })) {
            bases.push(r.hash);
        }
    }
    bases.truncate(blixard_store::MAX_SEED_BASES);
    bases
}

/// The limiter a transfer's reads ask: its own limit (a bucket of its
/// own, bursts of a tenth of a second as the node's) under the node-wide
/// one, or either alone.
fn transfer_limiter(inner: &Inner, limit_mbps: Option<f64>) -> Option<Arc<dyn RateLimiter>> {
    let own = limit_mbps.map(|m| {
        let rate = (m * 1e6 / 8.0) as u64;
        Arc::new(TokenBucket::new(rate, (rate / 10).max(64 * 1024))) as Arc<dyn RateLimiter>
    });
    match (own, inner.download_limiter.clone()) {
        (Some(own), Some(node)) => Some(Arc::new(AllOf(vec![own, node]))),
        (own, node) => own.or(node),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reports progress every `progress_interval` until aborted or the node is
/// gone: verified bytes, a smoothed rate of arriving bytes, and the ETA at
/// that rate.
async fn report_progress(inner: std::sync::Weak<Inner>, id: TransferId, every: Duration, live: &Live) {
    let mut last = (Instant::now(), live.wire.load(Ordering::Relaxed));
    let mut speed = 0.0;
    loop {
        tokio::time::sleep(every).await;
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
            shares: {
                let shares = live.shares.lock().unwrap();
                let mut v: Vec<_> =
                    shares.iter().map(|(peer, bytes)| ProviderShare { peer: *peer, bytes: *bytes }).collect();
                v.sort_by_key(|s| std::cmp::Reverse(s.bytes));
                v
            },
            fetched_bytes: now.1,
            reused_bytes: live.reused.load(Ordering::Relaxed),
            zero_bytes: live.zeros.load(Ordering::Relaxed),
        };
        let Some(inner) = inner.upgrade() else { return };
        inner.transfers.progress(id, p);
    }
}
