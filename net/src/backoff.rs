//! [`Backoff`]: how long to wait before the next try, for every retry loop
//! of the node and the relay links (dials, relay reconnections, transfer
//! attempts), so each is one line of policy, not a hand-written formula.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `base`, doubling per failure, capped at `max`, plus
/// up to `jitter` of it (a fraction, 0.5 = up to 50% more) at random, so
/// many nodes that failed together do not retry together.
///
/// ```
/// use std::time::Duration;
/// use blixard_net::backoff::Backoff;
///
/// let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
/// assert_eq!(b.delay(0), Duration::from_millis(250));
/// assert_eq!(b.delay(2), Duration::from_secs(1));
/// assert_eq!(b.delay(10), Duration::from_secs(5));
/// let j = b.with_jitter(0.5);
/// assert!(j.delay(1) >= Duration::from_millis(500) && j.delay(1) < Duration::from_millis(750));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait.
    pub base: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
    /// Up to this fraction of the wait is added at random (0: none).
    pub jitter: f64,
}

impl Backoff {
    /// `base` doubling up to `max`, no jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, jitter: 0.0 }
    }

    /// The same with up to `fraction` of each wait added at random.
    pub const fn with_jitter(self, fraction: f64) -> Self {
        Backoff { jitter: fraction, ..self }
    }

    /// The wait after `failures` failures in a row (0: the first retry).
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_at(failures, rand::thread_rng().gen_range(0.0..1.0))
    }

    /// [`Backoff::delay`] with the random draw given (`unit` in `0..1`),
    /// for tests and callers with their own randomness.
    pub fn delay_at(&self, failures: u32, unit: f64) -> Duration {
        // 2^31 overflows nothing we could wait for; the cap applies anyway.
        let doubled = self.base.saturating_mul(1u32 << failures.min(31));
        let wait = doubled.min(self.max);
        wait + wait.mul_f64(self.jitter * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_within_its_fraction() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.5);
        let waits: Vec<_> = (0..6).map(|n| b.delay_at(n, 0.0).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay_at(0, 1.0), Duration::from_millis(150));
        assert_eq!(b.delay_at(u32::MAX, 0.0), Duration::from_secs(1), "no overflow");
        for n in 0..40 {
            let d = b.delay(n);
            assert!(d >= b.delay_at(n, 0.0) && d <= b.delay_at(n, 1.0));
        }
    }
}
