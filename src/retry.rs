//! What every cloud client of a run shares about retrying: one budget of
//! retries for the whole run, and exponential backoff with equal jitter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Retries allowed for a whole run, all calls together.
#[derive(Debug)]
pub struct Budget {
    left: AtomicU64,
    total: u64,
}

impl Budget {
    /// A budget of `total` retries.
    pub fn new(total: u64) -> Budget {
        Budget {
            left: AtomicU64::new(total),
            total,
        }
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
    fn the_budget_runs_out() {
        let b = Budget::new(2);
        assert!(b.take() && b.take());
        assert!(!b.take());
        assert_eq!((b.used(), b.total()), (2, 2));
    }
}
