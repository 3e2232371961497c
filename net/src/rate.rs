//! Rate limits: the [`RateLimiter`] trait that both the server's sends and
//! the client's reads ask before moving bytes, and a [`TokenBucket`] that
//! implements it.

use std::time::Duration;

/// Paces bytes in either direction: asked before bytes are sent or taken,
/// answers how long to wait first. Implementations are token buckets (per
/// node, per transfer...) or meters that also count.
pub trait RateLimiter: Send + Sync {
    /// Reserves `bytes` and returns the delay before they may move.
    fn reserve(&self, bytes: u64) -> Duration;
}

/// A token bucket: `rate` bytes per second with a burst of `burst` bytes.
/// Shared by reference, it paces every transfer that uses it together.
///
/// ```
/// // 10 MB/s, bursts of 1 MiB; share it (Arc) among what it limits.
/// let bucket = std::sync::Arc::new(blixard_net::rate::TokenBucket::new(10_000_000, 1 << 20));
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl TokenBucket {
    /// A bucket of `rate` bytes/s, starting full with `burst` bytes.
    pub fn new(rate_bytes_per_sec: u64, burst: u64) -> Self {
        let rate = rate_bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate,
            burst: burst as f64,
            state: std::sync::Mutex::new((burst as f64, std::time::Instant::now())),
        }
    }
}

impl RateLimiter for TokenBucket {
    fn reserve(&self, bytes: u64) -> Duration {
        let mut s = self.state.lock().unwrap();
        let now = std::time::Instant::now();
        let tokens = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst) - bytes as f64;
        *s = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

/// Several limiters at once (a transfer's own under the node-wide one):
/// bytes are reserved in each and move when the slowest allows.
pub struct AllOf(pub Vec<std::sync::Arc<dyn RateLimiter>>);

impl RateLimiter for AllOf {
    fn reserve(&self, bytes: u64) -> Duration {
        self.0.iter().map(|l| l.reserve(bytes)).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_paces_to_its_rate() {
        let b = TokenBucket::new(1_000_000, 100_000);
        assert_eq!(b.reserve(100_000), Duration::ZERO);
        let d = b.reserve(500_000);
        assert!(d >= Duration::from_millis(490) && d <= Duration::from_millis(510), "{d:?}");
    }

    #[test]
    fn all_of_waits_for_the_slowest() {
        let fast: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(TokenBucket::new(10_000_000, 0));
        let slow: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(TokenBucket::new(1_000_000, 0));
        let d = AllOf(vec![fast, slow]).reserve(1_000_000);
        assert!(d >= Duration::from_millis(990) && d <= Duration::from_millis(1010), "{d:?}");
    }
}
