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
    /// Tokens now, and when they were counted (tokio's clock, so tests
    /// run the bucket on a paused, virtual one).
    state: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl TokenBucket {
    /// A bucket of `rate` bytes/s, starting full with `burst` bytes.
    pub fn new(rate_bytes_per_sec: u64, burst: u64) -> Self {
        let rate = rate_bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate,
            burst: burst as f64,
            state: std::sync::Mutex::new((burst as f64, tokio::time::Instant::now())),
        }
    }
}

impl RateLimiter for TokenBucket {
    fn reserve(&self, bytes: u64) -> Duration {
        let mut s = self.state.lock().unwrap();
        let now = tokio::time::Instant::now();
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

    /// Paces `total` bytes through `limiter` in `piece`-byte steps, as a
    /// sender does (reserve, then wait what it says); the time it took.
    async fn pace(limiter: &dyn RateLimiter, total: u64, piece: u64) -> Duration {
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        while sent < total {
            tokio::time::sleep(limiter.reserve(piece)).await;
            sent += piece;
        }
        started.elapsed()
    }

    /// On a virtual clock the rate is exact: after the burst, `rate` bytes
    /// a second, whatever the machine's load.
    #[tokio::test(start_paused = true)]
    async fn a_paced_sender_moves_exactly_the_rate_on_a_virtual_clock() {
        let bucket = TokenBucket::new(2_000_000, 200_000);
        let took = pace(&bucket, 20_000_000, 64 * 1024).await;
        // 20 MB less the 200 kB burst, at 2 MB/s (to within one piece).
        let want = Duration::from_secs_f64((20_000_000.0 - 200_000.0) / 2_000_000.0);
        assert!(took >= want && took <= want + Duration::from_millis(40), "{took:?} for {want:?}");
    }

    /// Two senders sharing one bucket split its rate; a transfer's own
    /// bucket under a node-wide one holds both (the slower rules).
    #[tokio::test(start_paused = true)]
    async fn shared_and_nested_buckets_hold_on_a_virtual_clock() {
        let node: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(TokenBucket::new(4_000_000, 0));
        let (a, b) = (node.clone(), node.clone());
        let each = 8_000_000;
        let (ta, tb) = tokio::join!(pace(a.as_ref(), each, 16_384), pace(b.as_ref(), each, 16_384));
        // 16 MB through one 4 MB/s bucket: 4 s, shared.
        for t in [ta, tb] {
            assert!(t >= Duration::from_millis(3990) && t <= Duration::from_millis(4010), "{t:?}");
        }
        let own: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(TokenBucket::new(1_000_000, 0));
        let nested = AllOf(vec![own, std::sync::Arc::new(TokenBucket::new(4_000_000, 0))]);
        // Pieces that take whole milliseconds: tokio's timer rounds a sleep
        // up to the next one, and a bucket without burst forgets the rest.
        let t = pace(&nested, 3_000_000, 16_000).await;
        assert!(t >= Duration::from_millis(2990) && t <= Duration::from_millis(3020), "{t:?}");
    }

    #[test]
    fn all_of_waits_for_the_slowest() {
        let fast: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(TokenBucket::new(10_000_000, 0));
        let slow: std::sync::Arc<dyn RateLimiter> = std::sync::Arc::new(TokenBucket::new(1_000_000, 0));
        let d = AllOf(vec![fast, slow]).reserve(1_000_000);
        assert!(d >= Duration::from_millis(990) && d <= Duration::from_millis(1010), "{d:?}");
    }
}
