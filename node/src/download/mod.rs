//! Downloads: resolve `(kind, name, version)` through peers, learn which
//! ranges each provider holds, and fetch the missing ranges from all of them
//! at once.
//!
//! The missing ranges are cut into stripes (4 MiB, whole chunk groups), in
//! a random order. One worker per peer watches which ranges that peer holds
//! (observe with updates: a peer downloading the same blob becomes a
//! provider as it goes, which makes a swarm), takes the next stripe the
//! peer holds, fetches it verified into the store, and comes back for more.
//! So faster providers take more stripes (weighting by measured throughput
//! without a plan), and a provider that stalls or fails hands its stripe
//! back to the others (work stealing). A provider whose data fails
//! verification is cut off and reported.
//!
//! Before fetching: [`resolve`](mod@resolve) names the blob, [`seed`](mod@seed) copies what local
//! blobs already hold. This module is the fetch.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use blixard_net::rate::RateLimiter;
use blixard_protocol::{
    client::{self, GetOptions},
    watched::Deadlines,
    Connection, NodeId,
};
use blixard_store::{ranges, ChunkNum, ChunkRanges, Hash, Store};
use tokio::sync::{broadcast, Notify};
use tracing::{debug, info, warn};

use crate::{events::P2pEvent, metrics::Metrics, peers::Peers, Error, Result};

mod resolve;
mod seed;

pub(crate) use resolve::resolve;
pub(crate) use seed::seed;

/// Chunks per stripe: 4 MiB, a multiple of the 16-chunk group.
const STRIPE_CHUNKS: u64 = 4096;
/// Runs in one stripe at most (a request allows 1,024).
const MAX_STRIPE_RUNS: usize = 256;
/// A provider that makes no progress for this long loses its stripe.
const STALL: Duration = Duration::from_secs(20);
/// Failures (other than bad data) after which a provider is dropped.
const MAX_PROVIDER_FAILURES: u32 = 2;
/// A peer that has held nothing still wanted for this long stops waiting.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// What a download needs from the node.
pub(crate) struct Context {
    pub store: Store,
    /// Where each provider's current connection comes from.
    pub peers: Arc<Peers>,
    pub events: broadcast::Sender<P2pEvent>,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<dyn RateLimiter>>,
}

/// Live figures of one download, read by the progress reporter.
#[derive(Default)]
pub(crate) struct Live {
    pub total: AtomicU64,
    /// Verified bytes held (starts at what was held before).
    pub held: AtomicU64,
    /// Response bytes arriving, for speed.
    pub wire: Arc<AtomicU64>,
    pub providers: AtomicUsize,
    /// Verified bytes from each provider.
    pub shares: Mutex<HashMap<NodeId, u64>>,
    /// Bytes copied from local blobs by seeding.
    pub reused: AtomicU64,
    /// Zero bytes kept as holes by seeding.
    pub zeros: AtomicU64,
}

/// Fetches whatever the store lacks of `hash` (claimed `size`) from every
/// peer in `peers` that holds some of it, in parallel, until the blob is
/// complete. Peers that are downloading it too (a swarm) count: their
/// holdings are watched as they grow. Providers are node ids; each takes
/// its current connection from the peer table, so a reconnect mid-download
/// is not a failure.
pub(crate) async fn fetch(ctx: &Context, hash: Hash, size: u64, peers: Vec<NodeId>, live: &Live) -> Result<()> {
    let Some(missing) = ctx.store.missing(&hash)? else { return Ok(()) };
    // The empty blob has one hash and no chunks to fetch: it is made here.
    if hash == Hash::of(b"") {
        let outcome = ctx.store.import_bytes(Vec::new()).await?;
        debug_assert_eq!(outcome.hash, hash);
        return Ok(());
    }
    if size == 0 {
        return Err(Error::Incomplete(format!(
            "{hash} was claimed to be 0 bytes, which is the empty blob's hash only"
        )));
    }
    let missing = if missing == ChunkRanges::all() { ranges::all(size) } else { missing };
    live.total.store(size, Ordering::Relaxed);
    live.held.store(size - ranges::byte_count(&missing, size), Ordering::Relaxed);
    // Stripes are cut as they are taken, never listed up front: a claimed
    // size costs nothing until verified (a lying 1 TiB claim is 262,144
    // stripes, u64::MAX is more than memory).
    let work = Arc::new(Work::new(ranges::clamp(&missing, size), ranges::chunk_count(size)));
    info!(%hash, size, peers = peers.len(), "downloading");
    let workers = peers.into_iter().map(|peer| provider(ctx, hash, peer, work.clone(), live));
    let reasons = crate::join::join_all(workers).await;
    match ctx.store.missing(&hash)? {
        None => Ok(()),
        Some(_) => {
            let why: Vec<String> = reasons.into_iter().flatten().collect();
            Err(Error::Incomplete(if why.is_empty() { "no provider held the rest".into() } else { why.join("; ") }))
        }
    }
}

/// Ranges not yet handed out, and how many stripes are being fetched.
struct Work {
    state: Mutex<(ChunkRanges, usize)>,
    /// Chunks in the blob, for picking stripes at random.
    chunks: u64,
    changed: Notify,
}

impl Work {
    fn new(pending: ChunkRanges, chunks: u64) -> Self {
        Work { state: Mutex::new((pending, 0)), chunks, changed: Notify::new() }
    }

    /// The next stripe inside `held`, marked in flight. Stripes are taken
    /// in a random order: peers fetching the same blob then hold different
    /// stripes early, and have something to give each other.
    fn take(&self, held: &ChunkRanges) -> Option<ChunkRanges> {
        let from = rand::Rng::gen_range(&mut rand::thread_rng(), 0..self.chunks.max(1));
        let mut st = self.state.lock().unwrap();
        let stripe = stripe_at(&(&st.0 & held), from)?;
        st.0 = &st.0 - &stripe;
        st.1 += 1;
        Some(stripe)
    }

    /// A stripe is done (`None`) or handed back.
    fn finish(&self, back: Option<ChunkRanges>) {
        let mut st = self.state.lock().unwrap();
        st.1 -= 1;
        if let Some(s) = back {
            st.0 |= s;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    fn all_done(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.0.is_empty() && st.1 == 0
    }
}

/// The stripe at chunk `from` of `available` (wrapping round to the
/// start): the part of the first run at or after `from` inside its
/// stripe-aligned window, then the following runs, until it spans
/// [`STRIPE_CHUNKS`] chunks or [`MAX_STRIPE_RUNS`] runs. So a contiguous
/// blob is cut on stripe boundaries, and scattered groups (a new version
/// that changed here and there) go many to a request instead of one.
/// `available` must be bounded.
fn stripe_at(available: &ChunkRanges, from: u64) -> Option<ChunkRanges> {
    let runs = ranges::to_vec(available, u64::MAX);
    let first = runs.iter().position(|r| r.end > from).unwrap_or(0);
    let run = runs.get(first)?;
    let at = from.clamp(run.start, run.end - 1);
    let window = at / STRIPE_CHUNKS * STRIPE_CHUNKS;
    let (start, end) = (window.max(run.start), (window + STRIPE_CHUNKS).min(run.end));
    let mut stripe = ChunkRanges::from(ChunkNum(start)..ChunkNum(end));
    let mut budget = STRIPE_CHUNKS - (end - start);
    for run in runs[first + 1..].iter().take(MAX_STRIPE_RUNS - 1) {
        if budget == 0 {
            break;
        }
        let end = run.end.min(run.start + budget);
        stripe |= ChunkRanges::from(ChunkNum(run.start)..ChunkNum(end));
        budget -= end - run.start;
    }
    Some(stripe)
}

/// Watches what `conn`'s peer holds of `hash` into `held`, as it grows
/// (it may be downloading too); `None` if it cannot tell.
async fn watch_holdings(
    conn: &Connection,
    hash: Hash,
    held: Arc<Mutex<ChunkRanges>>,
    work: Arc<Work>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut observer = tokio::time::timeout(Duration::from_secs(15), client::watch(conn, hash)).await.ok()?.ok()?;
    let first = tokio::time::timeout(Duration::from_secs(15), observer.next()).await.ok()?.ok()??;
    *held.lock().unwrap() = first.ranges.to_ranges_within(usize::MAX).unwrap_or_default();
    work.changed.notify_waiters();
    Some(tokio::spawn(async move {
        while let Ok(Some(a)) = observer.next().await {
            if let Ok(r) = a.ranges.to_ranges_within(usize::MAX) {
                *held.lock().unwrap() = r;
                work.changed.notify_waiters();
            }
        }
    }))
}

/// One peer's loop: watch what it holds, fetch stripes it holds, come back
/// for more. Returns why it stopped early, if it did.
async fn provider(ctx: &Context, hash: Hash, peer: NodeId, work: Arc<Work>, live: &Live) -> Option<String> {
    let mut conn = ctx.peers.current_or_dial(&peer).await?;
    let held = Arc::new(Mutex::new(ChunkRanges::empty()));
    // Cannot tell what it holds: not a provider.
    let mut watcher = watch_holdings(&conn, hash, held.clone(), work.clone()).await?;
    let mut failures = 0;
    let mut active = false;
    let mut idle_since = Instant::now();
    let result = loop {
        let changed = work.changed.notified();
        let stripe = work.take(&held.lock().unwrap());
        let Some(stripe) = stripe else {
            if work.all_done() {
                break None;
            }
            if idle_since.elapsed() > IDLE_LIMIT {
                break None; // holds nothing that is still wanted
            }
            // Wait for a stripe to come back or this peer to hold more.
            let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
            continue;
        };
        if !active {
            active = true;
            live.providers.fetch_add(1, Ordering::Relaxed);
        }
        let options = GetOptions {
            deadlines: Deadlines { total: None, stall: STALL },
            progress: Some(live.wire.clone()),
            limiter: ctx.limiter.clone(),
        };
        match client::get_ranges(&conn, &ctx.store, hash, stripe.clone(), &options).await {
            Ok(out) => {
                ctx.peers.served(&peer);
                ctx.metrics.bytes_received.inc_by(out.data_bytes);
                live.held.fetch_add(out.data_bytes, Ordering::Relaxed);
                *live.shares.lock().unwrap().entry(peer).or_default() += out.data_bytes;
                work.finish(None);
                idle_since = Instant::now();
            }
            Err(e) if e.is_peer_misbehaving() => {
                warn!(%peer, "cut off: {e}");
                let _ = ctx.events.send(P2pEvent::PeerMisbehaved(peer, e.to_string()));
                work.finish(Some(stripe));
                conn.close(blixard_protocol::ErrorCode::ProtocolViolation, "sent unverifiable data");
                break Some(format!("{peer} sent bad data: {e}"));
            }
            Err(e) => {
                work.finish(Some(stripe));
                // The connection was closed (replaced, or lost): carry on
                // over the peer's current one, if it has a new one.
                if conn.is_closed() {
                    let next = ctx.peers.current_or_dial(&peer).await;
                    if let Some(next) = next.filter(|c| !c.same(&conn)) {
                        if let Some(w) = watch_holdings(&next, hash, held.clone(), work.clone()).await {
                            debug!(%peer, "continuing over a new connection: {e}");
                            watcher.abort();
                            (conn, watcher) = (next, w);
                            continue;
                        }
                    }
                }
                failures += 1;
                debug!(%peer, failures, "stripe failed: {e}");
                if failures > MAX_PROVIDER_FAILURES {
                    break Some(format!("{peer}: {e}"));
                }
            }
        }
    };
    watcher.abort();
    if active {
        live.providers.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_cover_the_missing_ranges_on_stripe_boundaries() {
        let size = 20 * 1024 * 1024 + 5;
        let missing = ChunkRanges::from(ChunkNum(100)..ChunkNum(9000)) | ChunkRanges::from(ChunkNum(12000)..);
        let pending = ranges::clamp(&missing, size);
        let work = Work::new(pending.clone(), ranges::chunk_count(size));
        let mut union = ChunkRanges::empty();
        while let Some(x) = work.take(&ChunkRanges::all()) {
            assert!((&x & &union).is_empty(), "stripes overlap");
            let first = ranges::to_vec(&x, size)[0].clone();
            assert_eq!(first.start / STRIPE_CHUNKS, (first.end - 1) / STRIPE_CHUNKS, "one window");
            union |= x;
        }
        assert_eq!(union, pending);
        // Handed back, a stripe is taken again; only held ranges are taken.
        work.finish(Some(ChunkRanges::from(ChunkNum(200)..ChunkNum(300))));
        assert!(work.take(&ChunkRanges::from(ChunkNum(0)..ChunkNum(100))).is_none());
        assert_eq!(work.take(&ChunkRanges::all()), Some(ChunkRanges::from(ChunkNum(200)..ChunkNum(300))));
    }

    /// A lying claim of u64::MAX bytes costs one range set, not a list of stripes.
    #[test]
    fn a_huge_claimed_size_costs_nothing_up_front() {
        let size = u64::MAX;
        let work = Work::new(ranges::all(size), ranges::chunk_count(size));
        let s = work.take(&ChunkRanges::all()).unwrap();
        assert!(ranges::byte_count(&s, size) <= STRIPE_CHUNKS * 1024);
    }
}
