//! The node's bandwidth limits: one token bucket for serving (behind a
//! meter that also counts served bytes) and one for downloading (pacing the
//! response reader, so QUIC flow control slows the sender).

use std::{sync::Arc, time::Duration};

use blixard_net::rate::{RateLimiter, TokenBucket};

use crate::metrics::Metrics;

/// Counts served bytes and paces them when a limit is set.
struct ServeMeter {
    bucket: Option<TokenBucket>,
    metrics: Arc<Metrics>,
}

impl RateLimiter for ServeMeter {
    fn reserve(&self, bytes: u64) -> Duration {
        self.metrics.bytes_sent.inc_by(bytes);
        self.bucket.as_ref().map_or(Duration::ZERO, |b| b.reserve(bytes))
    }
}

/// The limiters of one node.
pub(crate) struct Limits {
    /// For the protocol server: meters and paces every served byte.
    pub serve: Arc<dyn RateLimiter>,
    /// For downloads, if limited.
    pub download: Option<Arc<dyn RateLimiter>>,
}

impl Limits {
    /// Limits of `rate` bytes per second each way (unlimited if `None`),
    /// with a burst of a tenth of a second (at least 256 KiB).
    pub(crate) fn new(rate: Option<u64>, metrics: Arc<Metrics>) -> Self {
        let bucket = |rate: u64| TokenBucket::new(rate, (rate / 10).max(256 * 1024));
        Limits {
            serve: Arc::new(ServeMeter { bucket: rate.map(bucket), metrics }),
            download: rate.map(|r| Arc::new(bucket(r)) as Arc<dyn RateLimiter>),
        }
    }
}
