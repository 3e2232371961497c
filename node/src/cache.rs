//! The download cache: which resources came from peers, when each was last
//! used, and eviction of the least recently used ones when the cache is
//! over `max_cache_size`; plus the collection of unreachable blobs.
//!
//! Only blobs reachable from nothing but downloaded resources are cache:
//! a blob also named by an upload, a tag or a live lease (a transfer, an
//! export, a running VM holding it) is never evicted. Evicting removes the
//! downloaded resource records of the blob; GC then removes its files.
//! Records live in `node.db`, tree `cache.v1`: resource key → (hash, last
//! use in unix milliseconds).
//!
//! A download just completed is held (a lease) until it is first used (an
//! export, e.g. `vm download --output`) or for [`HOLD`], so a small cache
//! cannot evict it between the download and its export; blobs being served
//! are leased by the server. An export of a resource the cache evicted says
//! so ([`crate::Error::Evicted`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use blixard_store::{Hash, Lease, Resource, ResourceKind, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::{codec, events::P2pEvent, metrics::Metrics, Result};

/// The sled tree of the cache records.
pub(crate) const CACHE_TREE: &str = "cache.v1";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CacheRecord {
    hash: Hash,
    last_used: u64,
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Downloaded resources evicted to keep the cache under its limit.
    pub evicted: Vec<Resource>,
    /// Blobs removed (unreachable, or evicted).
    pub blobs_removed: u64,
    /// Stray files removed.
    pub files_removed: u64,
    /// Bytes the cache holds afterwards.
    pub cache_bytes: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn key(kind: &ResourceKind, name: &str, version: &str) -> Vec<u8> {
    format!("{kind}\0{name}\0{version}").into_bytes()
}

/// How long a completed download is held for its first use at most.
pub const HOLD: Duration = Duration::from_secs(10 * 60);
/// Evictions remembered, to explain a later "not found".
const REMEMBERED_EVICTIONS: usize = 1024;

/// One cached blob: its size, its last use, the downloads naming it.
type Cached = (u64, u64, Vec<Resource>);

/// The cache records of one node.
pub(crate) struct Cache {
    tree: sled::Tree,
    max_bytes: Option<u64>,
    store: Store,
    events: broadcast::Sender<P2pEvent>,
    metrics: Arc<Metrics>,
    /// One collection at a time.
    running: Mutex<()>,
    /// Completed downloads not yet used, held until used or [`HOLD`] passes.
    held: Mutex<HashMap<Vec<u8>, (Lease, Instant)>>,
    /// Resource keys evicted lately, oldest first.
    evicted: Mutex<VecDeque<Vec<u8>>>,
}

impl Cache {
    pub(crate) fn open(
        db: &sled::Db,
        max_bytes: Option<u64>,
        store: Store,
        events: broadcast::Sender<P2pEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let tree = db.open_tree(CACHE_TREE)?;
        Ok(Cache {
            tree,
            max_bytes,
            store,
            events,
            metrics,
            running: Mutex::new(()),
            held: Mutex::new(HashMap::new()),
            evicted: Mutex::new(VecDeque::new()),
        })
    }

    /// `r` was downloaded (and so used) now; `hold` keeps it until its first
    /// use or [`HOLD`].
    pub(crate) fn downloaded(&self, r: &Resource, hold: Lease) {
        let k = key(&r.kind, &r.name, &r.version);
        self.put(&k, CacheRecord { hash: r.hash, last_used: now_ms() });
        self.evicted.lock().unwrap().retain(|e| *e != k);
        self.held.lock().unwrap().insert(k, (hold, Instant::now()));
    }

    /// True if the cache evicted `(kind, name, version)` lately.
    pub(crate) fn was_evicted(&self, kind: &ResourceKind, name: &str, version: &str) -> bool {
        self.evicted.lock().unwrap().contains(&key(kind, name, version))
    }

    /// `(kind, name, version)` was used (exported) now, if it is cache: its
    /// hold ends.
    pub(crate) fn used(&self, kind: &ResourceKind, name: &str, version: &str) {
        let k = key(kind, name, version);
        self.held.lock().unwrap().remove(&k);
        if let Some(mut rec) = self.get(&k) {
            rec.last_used = now_ms();
            self.put(&k, rec);
        }
    }

    /// `(kind, name, version)` was uploaded here: no longer cache.
    pub(crate) fn uploaded(&self, kind: &ResourceKind, name: &str, version: &str) {
        let _ = self.tree.remove(key(kind, name, version));
    }

    fn get(&self, k: &[u8]) -> Option<CacheRecord> {
        let v = self.tree.get(k).ok()??;
        codec::decode("cache record", &v).ok()
    }

    fn put(&self, k: &[u8], rec: CacheRecord) {
        match codec::encode("cache record", &rec) {
            Ok(v) => drop(self.tree.insert(k, v)),
            Err(e) => warn!("cannot record a cache entry: {e}"),
        }
    }

    /// Evicts least recently used cache blobs while the cache is over its
    /// limit, then collects every unreachable blob. Blocking.
    pub(crate) fn collect(&self) -> Result<GcReport> {
        let _one = self.running.lock().unwrap();
        self.held.lock().unwrap().retain(|_, (_, since)| since.elapsed() < HOLD);
        let mut report = GcReport::default();
        let resources = self.store.resources(None)?;
        // Downloaded resources still naming the hash they were downloaded as.
        let mut cached: HashMap<Hash, Cached> = HashMap::new();
        let mut protected: std::collections::HashSet<Hash> = self.store.tags()?.into_iter().map(|(_, h)| h).collect();
        for r in resources {
            match self.get(&key(&r.kind, &r.name, &r.version)) {
                Some(rec) if rec.hash == r.hash => {
                    let e = cached.entry(r.hash).or_insert((r.size, 0, Vec::new()));
                    e.1 = e.1.max(rec.last_used);
                    e.2.push(r);
                }
                _ => {
                    protected.insert(r.hash);
                }
            }
        }
        cached.retain(|h, _| !protected.contains(h) && !self.store.is_leased(h));
        let mut bytes: u64 = cached.values().map(|(size, _, _)| size).sum();
        if let Some(max) = self.max_bytes {
            let mut order: Vec<(Hash, Cached)> = cached.into_iter().collect();
            order.sort_by_key(|(_, (_, last_used, _))| *last_used);
            // The most recent download stays even if it alone is over the
            // limit: evicting what was just fetched would help nobody.
            if let Some((hash, (size, _, _))) = order.pop() {
                if size > max {
                    warn!(%hash, size, max, "a downloaded blob is larger than max_cache_size on its own");
                }
            }
            for (hash, (size, _, named)) in order {
                if bytes <= max {
                    break;
                }
                for r in named {
                    self.store.delete_resource(&r.kind, &r.name, &r.version)?;
                    let k = key(&r.kind, &r.name, &r.version);
                    let _ = self.tree.remove(&k);
                    let mut evicted = self.evicted.lock().unwrap();
                    if evicted.len() == REMEMBERED_EVICTIONS {
                        evicted.pop_front();
                    }
                    evicted.push_back(k);
                    drop(evicted);
                    info!(kind = %r.kind, name = %r.name, version = %r.version, %hash, size, "evicted from the cache (least recently used)");
                    self.metrics.cache_evictions.inc();
                    let _ = self.events.send(P2pEvent::ResourceEvicted(r.clone()));
                    report.evicted.push(r);
                }
                bytes -= size;
            }
        }
        let stats = self.store.gc()?;
        report.blobs_removed = stats.blobs_removed;
        report.files_removed = stats.files_removed;
        report.cache_bytes = bytes;
        self.metrics.cache_bytes.set(bytes as i64);
        Ok(report)
    }
}
