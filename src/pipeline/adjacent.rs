//! The blocks a source has handed over and no worker has taken yet, given
//! out as runs of adjacent blocks: a sink whose writes can be large (Put
//! Page takes up to 4 MiB) then gets one write where blocks touch, whatever
//! order the source delivers them in (EBS delivers in arrival order).
//!
//! A worker never waits for a block to arrive next to the ones it has: it
//! takes the lowest run ready now. Runs grow long exactly when the sink is
//! the slower side, since blocks then wait here for a free worker.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a wait lasts before the state is looked at again (a wake-up
/// that was missed costs this much, never a hang).
const RECHECK: Duration = Duration::from_millis(100);

/// Blocks handed over and not taken, with the feeder's and workers' waits.
pub(super) struct Adjacent {
    state: Mutex<State>,
    changed: Condvar,
    /// Most blocks in one run.
    max_run: usize,
    /// Most blocks waiting here: the feeder waits beyond it.
    cap: usize,
}

#[derive(Default)]
struct State {
    parked: BTreeSet<u64>,
    /// The source has listed its last block.
    ended: bool,
    /// The copy stops: nobody takes or adds more.
    stopped: bool,
}

impl Adjacent {
    /// A queue of runs of at most `max_run` blocks, holding at most `cap`.
    pub(super) fn new(max_run: usize, cap: usize) -> Adjacent {
        Adjacent {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_run: max_run.max(1),
            cap: cap.max(max_run).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a set and two flags, whole after any panic: keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(st, RECHECK)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Adds a block the source handed over, once there is room; false when
    /// the copy stopped (the caller then lets the block go).
    pub(super) fn push(&self, index: u64) -> bool {
        let mut st = self.lock();
        while !st.stopped && st.parked.len() >= self.cap {
            st = self.wait(st);
        }
        if st.stopped {
            return false;
        }
        st.parked.insert(index);
        drop(st);
        self.changed.notify_all();
        true
    }

    /// The source has no more blocks.
    pub(super) fn end(&self) {
        self.lock().ended = true;
        self.changed.notify_all();
    }

    /// Stops the copy: waits end, and the blocks still here are returned
    /// so that the caller lets them go.
    pub(super) fn stop(&self) -> Vec<u64> {
        let left = {
            let mut st = self.lock();
            st.stopped = true;
            std::mem::take(&mut st.parked)
        };
        self.changed.notify_all();
        left.into_iter().collect()
    }

    /// The lowest run of adjacent blocks waiting, at most `max_run` long;
    /// waits while none is; `None` once every block was taken or the copy stopped.
    pub(super) fn take(&self) -> Option<Vec<u64>> {
        let mut st = self.lock();
        loop {
            if st.stopped {
                return None;
            }
            if let Some(first) = st.parked.pop_first() {
                let mut run = vec![first];
                while run.len() < self.max_run && st.parked.remove(&(first + run.len() as u64)) {
                    run.push(first + run.len() as u64);
                }
                drop(st);
                self.changed.notify_all();
                return Some(run);
            }
            if st.ended {
                return None;
            }
            st = self.wait(st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_the_lowest_adjacent_blocks_up_to_the_most() {
        let q = Adjacent::new(3, 100);
        for i in [9, 2, 3, 4, 5, 7, 11, 10] {
            assert!(q.push(i));
        }
        q.end();
        let runs: Vec<Vec<u64>> = std::iter::from_fn(|| q.take()).collect();
        assert_eq!(runs, [vec![2, 3, 4], vec![5], vec![7], vec![9, 10, 11]]);
    }

    #[test]
    fn the_feeder_waits_for_room_and_a_stop_frees_it_with_what_was_left() {
        let q = Adjacent::new(2, 2);
        assert!(q.push(1) && q.push(5));
        std::thread::scope(|s| {
            let feeder = s.spawn(|| q.push(6));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!feeder.is_finished(), "full: the feeder waits");
            assert_eq!(q.take(), Some(vec![1]));
            assert!(feeder.join().unwrap(), "room made: it goes on");
        });
        std::thread::scope(|s| {
            let feeder = s.spawn(|| q.push(9));
            std::thread::sleep(Duration::from_millis(50));
            let mut left = q.stop();
            left.sort();
            assert_eq!(left, [5, 6]);
            assert!(!feeder.join().unwrap(), "stopped: the block is let go");
        });
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_worker_waits_for_blocks_until_the_source_ends() {
        let q = Adjacent::new(8, 64);
        std::thread::scope(|s| {
            let worker = s.spawn(|| (q.take(), q.take()));
            std::thread::sleep(Duration::from_millis(50));
            assert!(q.push(4));
            q.end();
            assert_eq!(worker.join().unwrap(), (Some(vec![4]), None));
        });
    }
}
