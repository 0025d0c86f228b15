//! What every cloud client of a run shares about retrying: one budget of
//! retries for the whole run, exponential backoff with equal jitter, and
//! the stall rule that ends a run no request of which gets through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Retries allowed for a whole run, all calls together, and the run's
/// stall rule for the service they go to.
#[derive(Debug)]
pub struct Budget {
    left: AtomicU64,
    total: u64,
    stall: Stall,
}

impl Budget {
    /// A budget of `total` retries, stopping once the service has been
    /// stalled for `stall`.
    pub fn new(total: u64, stall: Duration) -> Budget {
        Budget {
            left: AtomicU64::new(total),
            total,
            stall: Stall::new(stall),
        }
    }

    /// The stall rule of the service this budget retries.
    pub fn stall(&self) -> &Stall {
        &self.stall
    }

    /// Takes one retry; false when the budget is spent.
    pub fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The budget's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Retries used so far.
    pub fn used(&self) -> u64 {
        self.total - self.left.load(Ordering::Relaxed)
    }
}

/// A service's stall rule: once every attempt to reach it has failed for
/// `limit`, with no success in between, the run stops instead of retrying
/// on. Counted from the start of the first failed attempt, so a request
/// that hangs until its timeout counts from when it was sent; any success
/// (a byte of progress) clears it.
#[derive(Debug)]
pub struct Stall {
    limit: Duration,
    /// When the failing began; `None`: no failure since the last success.
    failing_since: Mutex<Option<Instant>>,
}

/// The default of the stall rule: a few minutes without a byte of progress.
pub const DEFAULT_STALL: Duration = Duration::from_secs(180);

impl Stall {
    /// A stall rule of `limit` (at least a second).
    pub fn new(limit: Duration) -> Stall {
        Stall {
            limit: limit.max(Duration::from_secs(1)),
            failing_since: Mutex::new(None),
        }
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// An attempt succeeded: the service is moving.
    pub fn succeeded(&self) {
        *self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// An attempt sent at `started` failed; returns how long every attempt
    /// has failed once that is the limit or more (the run must stop).
    pub fn failed(&self, started: Instant) -> Option<Duration> {
        {
            let mut since = self
                .failing_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if since.is_none_or(|s| started < s) {
                *since = Some(started);
            }
        }
        self.stalled()
    }

    /// How long every attempt has failed, once that is the limit or more.
    pub fn stalled(&self) -> Option<Duration> {
        let since = *self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        since
            .map(|s| s.elapsed())
            .filter(|&failing| failing >= self.limit)
    }
}

/// The wait before retry `attempt` (0-based): `base` doubled per attempt, at
/// most `max`, half of it fixed and half random, so retries spread out but
/// still back off.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    cap / 2 + cap.mul_f64(jitter() / 2.0)
}

/// A number in [0, 1) from the standard library's randomly keyed hasher.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let cap = (base * 2u32.pow(attempt.min(16))).min(max);
            let d = backoff(base, max, attempt);
            assert!(d >= cap / 2 && d <= cap, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn a_stall_is_failing_without_a_success_for_the_limit() {
        let s = Stall::new(Duration::from_secs(1));
        assert_eq!(s.limit(), Duration::from_secs(1));
        assert!(s.stalled().is_none());
        let Some(long_ago) = Instant::now().checked_sub(Duration::from_secs(5)) else {
            return;
        };
        assert!(s.failed(Instant::now()).is_none());
        assert!(s.stalled().is_none(), "a fresh failure is no stall");
        assert!(s.failed(long_ago).is_some());
        assert!(s.stalled().is_some_and(|d| d >= Duration::from_secs(4)));
        s.succeeded();
        assert!(s.stalled().is_none(), "a success clears it");
    }

    #[test]
    fn the_budget_runs_out() {
        let b = Budget::new(2, DEFAULT_STALL);
        assert!(b.take() && b.take());
        assert!(!b.take());
        assert_eq!((b.used(), b.total()), (2, 2));
    }
}
