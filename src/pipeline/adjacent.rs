//! The blocks a source has handed over and no worker has taken yet, given
//! out as runs of adjacent blocks: a sink whose writes can be large (Put
//! Page takes up to 4 MiB) then gets one write where blocks touch, whatever
//! order the source delivers them in (EBS delivers in arrival order).
//!
//! There is no feeder thread: a worker with nothing to take pulls the next
//! block from the source itself (one at a time), and takes it when it may
//! go, so a block goes from the thread that received it to its write with
//! no hand-over (a hand-over per block cost 6% more CPU on EBS reads).
//!
//! A run shorter than the most is held back for [`LINGER`] after its first
//! block arrived, in case its neighbours follow (a network source delivers
//! listed blocks in about their order, a few milliseconds apart), unless
//! the source has ended or blocks pile up here: then it goes at once. The
//! lowest run that may go is given first.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use crate::source;

/// How long a wait lasts before the state is looked at again (a wake-up
/// that was missed costs this much, never a hang).
const RECHECK: Duration = Duration::from_millis(100);

/// How long a run shorter than the most waits for its neighbours: about
/// ten EBS blocks at the published 1,000 per second, and a fraction of the
/// round trip of the write it saves.
pub(super) const LINGER: Duration = Duration::from_millis(10);

/// A source's blocks, as [`source::BlockSource::blocks`] gives them.
pub(super) type Blocks<'a> = Box<dyn Iterator<Item = Result<u64, source::Error>> + Send + 'a>;

/// Blocks handed over and not taken, and the source they come from.
pub(super) struct Adjacent<'a> {
    state: Mutex<State>,
    changed: Condvar,
    /// Held by the worker pulling from the source; `None` once it ended.
    blocks: Mutex<Option<Blocks<'a>>>,
    /// Most blocks in one run.
    max_run: usize,
    /// Blocks waiting here past which short runs go at once.
    hurry_at: usize,
    /// How long a short run waits for its neighbours.
    linger: Duration,
}

#[derive(Default)]
struct State {
    /// Blocks waiting, with when each arrived.
    parked: BTreeMap<u64, Instant>,
    /// The source has listed its last block.
    ended: bool,
    /// The copy stops: nobody takes or pulls more.
    stopped: bool,
}

/// What the parked blocks allow now.
enum Next {
    /// This run may go.
    Run(u64, usize),
    /// None may go before this moment (`None`: nothing is parked).
    Wait(Option<Instant>),
}

impl<'a> Adjacent<'a> {
    /// The runs of `blocks`, at most `max_run` long, where a short run
    /// waits `linger` for its neighbours while fewer than `hurry_at` wait.
    pub(super) fn new(
        blocks: Blocks<'a>,
        max_run: usize,
        hurry_at: usize,
        linger: Duration,
    ) -> Adjacent<'a> {
        Adjacent {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            blocks: Mutex::new(Some(blocks)),
            max_run: max_run.max(1),
            hurry_at: hurry_at.max(1),
            linger,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a map and two flags, whole after any panic: keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the copy: waits end, no block is pulled any more, and the
    /// blocks still here are returned so that the caller lets them go.
    /// Called again once the workers are gone, it returns what a worker
    /// pulled while it stopped.
    pub(super) fn stop(&self) -> Vec<u64> {
        let left = {
            let mut st = self.lock();
            st.stopped = true;
            std::mem::take(&mut st.parked)
        };
        self.changed.notify_all();
        left.into_keys().collect()
    }

    /// The lowest run that may go now, or when the next may.
    fn next(&self, st: &State, now: Instant) -> Next {
        // Nothing more to wait for, or no more room to: short runs go too.
        let hurry = st.ended || st.parked.len() >= self.hurry_at;
        let mut due: Option<Instant> = None;
        let mut blocks = st.parked.iter().peekable();
        while let Some((&first, &arrived)) = blocks.next() {
            let (mut len, mut oldest) = (1usize, arrived);
            while len < self.max_run {
                match blocks.peek() {
                    Some((&i, &at)) if i == first + len as u64 => {
                        oldest = oldest.min(at);
                        len += 1;
                        blocks.next();
                    }
                    _ => break,
                }
            }
            let goes_at = oldest + self.linger;
            if hurry || len == self.max_run || goes_at <= now {
                return Next::Run(first, len);
            }
            due = Some(due.map_or(goes_at, |d| d.min(goes_at)));
        }
        Next::Wait(due)
    }

    /// The next run of adjacent blocks, lowest first (see [`LINGER`]);
    /// pulls from the source while none may go and nobody else is pulling,
    /// waits otherwise. `None` once every block was taken or the copy stopped.
    pub(super) fn take(&self) -> Result<Option<Vec<u64>>, source::Error> {
        let mut st = self.lock();
        loop {
            if st.stopped {
                return Ok(None);
            }
            let due = match self.next(&st, Instant::now()) {
                Next::Run(first, len) => {
                    let run: Vec<u64> = (first..first + len as u64).collect();
                    for i in &run {
                        st.parked.remove(i);
                    }
                    return Ok(Some(run));
                }
                Next::Wait(due) => due,
            };
            if st.ended && st.parked.is_empty() {
                return Ok(None);
            }
            // The puller pulls on past a lingering run; a worker waiting here
            // takes it when it is due. With none waiting, it goes when the
            // pull returns: the source's next block or its end, which its
            // own timeouts bound.
            if !st.ended {
                let pulling = match self.blocks.try_lock() {
                    Ok(b) => Some(b),
                    Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) => None,
                };
                if let Some(mut blocks) = pulling {
                    drop(st);
                    let pulled = blocks.as_mut().and_then(|b| b.next());
                    if pulled.is_none() {
                        *blocks = None;
                    }
                    drop(blocks);
                    st = self.lock();
                    match pulled {
                        Some(Ok(index)) => {
                            // Kept even when the copy stopped meanwhile:
                            // the last `stop` hands it back to be let go.
                            st.parked.insert(index, Instant::now());
                            // Were it to linger, a waiting worker is told
                            // when it may go, while this one pulls on.
                            self.changed.notify_one();
                        }
                        Some(Err(e)) => return Err(e),
                        None => {
                            st.ended = true;
                            self.changed.notify_all();
                        }
                    }
                    continue;
                }
            }
            let now = Instant::now();
            let wait = due.map_or(RECHECK, |d| d.saturating_duration_since(now).min(RECHECK));
            st = self
                .changed
                .wait_timeout(st, wait.max(Duration::from_micros(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A source fed by the test through a channel, one block at a time.
    fn fed() -> (mpsc::Sender<u64>, Blocks<'static>) {
        let (tx, rx) = mpsc::channel::<u64>();
        let rx = Mutex::new(rx);
        let blocks = std::iter::from_fn(move || rx.lock().unwrap().recv().ok().map(Ok));
        (tx, Box::new(blocks))
    }

    #[test]
    fn runs_are_the_lowest_adjacent_blocks_up_to_the_most() {
        let blocks = [9, 2, 3, 4, 5, 7, 11, 10].map(Ok);
        let q = Adjacent::new(
            Box::new(blocks.into_iter()),
            3,
            100,
            Duration::from_secs(60),
        );
        // A long linger: runs that are not whole go only once the source ended.
        let runs: Vec<Vec<u64>> = std::iter::from_fn(|| q.take().unwrap()).collect();
        assert_eq!(runs, [vec![2, 3, 4], vec![9, 10, 11], vec![5], vec![7]]);
    }

    #[test]
    fn a_short_run_waits_for_its_neighbours_then_goes_alone() {
        let linger = Duration::from_millis(300);
        let (tx, blocks) = fed();
        let q = Adjacent::new(blocks, 4, 100, linger);
        let first_done = |a: &std::thread::ScopedJoinHandle<'_, _>,
                          b: &std::thread::ScopedJoinHandle<'_, _>| {
            for _ in 0..2000 {
                if a.is_finished() || b.is_finished() {
                    return a.is_finished();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("no worker took a run in 10 s");
        };
        std::thread::scope(|s| {
            // Two workers: one pulls on while the other waits to take what lingers.
            let a = s.spawn(|| q.take().unwrap());
            let b = s.spawn(|| q.take().unwrap());
            for i in [10, 11, 12, 13] {
                tx.send(i).unwrap();
            }
            let (done, other) = if first_done(&a, &b) { (a, b) } else { (b, a) };
            // The neighbours arrived within the linger: one run of the most.
            assert_eq!(done.join().unwrap(), Some(vec![10, 11, 12, 13]));
            // No neighbour follows block 20: it goes alone once the linger
            // is over, taken by the worker that waits while the other pulls on.
            let c = s.spawn(|| q.take().unwrap());
            let sent = Instant::now();
            tx.send(20).unwrap();
            let (done, last) = if first_done(&other, &c) {
                (other, c)
            } else {
                (c, other)
            };
            assert_eq!(done.join().unwrap(), Some(vec![20]));
            assert!(sent.elapsed() >= linger / 2, "{:?}", sent.elapsed());
            drop(tx);
            assert_eq!(last.join().unwrap(), None, "the source ended");
        });
    }

    #[test]
    fn many_waiting_blocks_go_at_once_and_a_stop_hands_back_the_rest() {
        let (tx, blocks) = fed();
        let q = Adjacent::new(blocks, 8, 3, Duration::from_secs(60));
        for i in [1, 5, 9] {
            tx.send(i).unwrap();
        }
        // Three blocks wait (the most before hurrying): the lowest goes.
        assert_eq!(q.take().unwrap(), Some(vec![1]));
        let mut left = q.stop();
        left.sort();
        assert_eq!(left, [5, 9]);
        assert_eq!(q.take().unwrap(), None);
    }

    #[test]
    fn an_error_from_the_source_reaches_the_worker() {
        let blocks = [
            Ok(1),
            Err(source::Error::Image {
                path: "mem".into(),
                source: diskformats::Error::Truncated {
                    detail: "test".into(),
                },
            }),
        ];
        let q = Adjacent::new(Box::new(blocks.into_iter()), 1, 10, LINGER);
        assert_eq!(q.take().unwrap(), Some(vec![1]));
        assert!(q.take().is_err());
    }
}
