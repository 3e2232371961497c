//! Prometheus metrics, with the five names users were promised
//! (`blixard_p2p_peers_total`, `blixard_p2p_transfers_active`,
//! `blixard_p2p_bytes_sent`, `blixard_p2p_bytes_received`,
//! `blixard_p2p_transfer_duration`) and a few more. Served by the control
//! API at `/metrics` in the Prometheus text format.

use blixard_net::relay::PathStats;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Connected peers.
    pub peers: IntGauge,
    /// Transfers running now.
    pub transfers_active: IntGauge,
    /// Transfers waiting in the queue.
    pub transfers_queued: IntGauge,
    /// Blob bytes served to peers.
    pub bytes_sent: IntCounter,
    /// Verified blob bytes received from peers.
    pub bytes_received: IntCounter,
    /// Seconds from a transfer's start to its completion.
    pub transfer_duration: Histogram,
    /// Transfers that ended, by outcome (`completed`, `failed`, `cancelled`).
    pub transfers_finished: IntCounterVec,
    /// Ping round-trip times, seconds.
    pub peer_rtt: Histogram,
    /// Downloaded resources evicted from the cache.
    pub cache_evictions: IntCounter,
    /// Bytes of blobs held only for downloaded resources (the cache).
    pub cache_bytes: IntGauge,
    /// Datagram bytes sent through relays (synced from the socket's
    /// counters at each read).
    pub relay_bytes_sent: IntCounter,
    /// Datagram bytes received through relays.
    pub relay_bytes_received: IntCounter,
    /// Bytes of downloads copied from blobs already held (verified against
    /// the new tree), instead of fetched.
    pub reused_bytes: IntCounter,
    /// Bytes of downloads that were zero groups: never fetched, kept as holes.
    pub zero_bytes: IntCounter,
    /// Tree and content-index bytes fetched to compare new blobs with local ones.
    pub tree_bytes: IntCounter,
    paths: std::sync::Mutex<Option<std::sync::Arc<PathStats>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set, registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let finished = IntCounterVec::new(
            Opts::new("blixard_p2p_transfers_finished_total", "Transfers that ended, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(finished.clone())).expect("unique metric");
        Metrics {
            peers: gauge("blixard_p2p_peers_total", "Number of connected peers"),
            transfers_active: gauge("blixard_p2p_transfers_active", "Active transfer count"),
            transfers_queued: gauge("blixard_p2p_transfers_queued", "Transfers waiting in the queue"),
            bytes_sent: counter("blixard_p2p_bytes_sent", "Total blob bytes uploaded to peers"),
            bytes_received: counter("blixard_p2p_bytes_received", "Total verified blob bytes downloaded"),
            transfer_duration: histogram(
                "blixard_p2p_transfer_duration",
                "Transfer completion times, seconds",
                vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0],
            ),
            transfers_finished: finished,
            peer_rtt: histogram(
                "blixard_p2p_peer_rtt_seconds",
                "Ping round-trip times to peers",
                vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0],
            ),
            cache_evictions: counter(
                "blixard_p2p_cache_evictions_total",
                "Downloaded resources evicted to keep the cache under max_cache_size",
            ),
            cache_bytes: gauge("blixard_p2p_cache_bytes", "Bytes of blobs held only for downloaded resources"),
            relay_bytes_sent: counter("blixard_p2p_relay_bytes_sent_total", "QUIC datagram bytes sent through relays"),
            relay_bytes_received: counter(
                "blixard_p2p_relay_bytes_received_total",
                "QUIC datagram bytes received through relays",
            ),
            reused_bytes: counter(
                "blixard_p2p_reused_bytes_total",
                "Download bytes copied from blobs already held instead of fetched",
            ),
            zero_bytes: counter(
                "blixard_p2p_zero_bytes_skipped_total",
                "Download bytes that were zero groups, never fetched and kept as holes",
            ),
            tree_bytes: counter(
                "blixard_p2p_tree_bytes_total",
                "Tree and content-index bytes fetched to compare new blobs with local ones",
            ),
            paths: std::sync::Mutex::new(None),
            registry,
        }
    }

    /// Follows the relay counters of the node's socket.
    pub(crate) fn watch_paths(&self, stats: std::sync::Arc<PathStats>) {
        *self.paths.lock().unwrap() = Some(stats);
    }

    /// Brings the relay counters up to the socket's.
    pub(crate) fn sync(&self) {
        // Under the lock: two readers must not both add the same growth.
        if let Some(p) = self.paths.lock().unwrap().as_ref() {
            use std::sync::atomic::Ordering::Relaxed;
            for (counter, now) in [
                (&self.relay_bytes_sent, p.relay_bytes_sent.load(Relaxed)),
                (&self.relay_bytes_received, p.relay_bytes_received.load(Relaxed)),
            ] {
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.sync();
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
