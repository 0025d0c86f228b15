//! The copy engine: moves a source's listed blocks to a sink with bounded
//! concurrency and bounded memory (one block buffer per worker), skipping
//! zeros at a fine grain so that outputs stay sparse.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::sink::{self, BlockSink, BUFFER_ALIGN};
use crate::source::{self, BlockSource};

/// Grain of zero detection inside a block: the file system's page size, so
/// every zero page becomes a hole.
pub const ZERO_GRANULARITY: usize = 4096;

/// How to run a copy.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Blocks in flight at once (and worker threads); `None`: [`default_concurrency`].
    pub concurrency: Option<NonZeroUsize>,
    /// Grain of zero detection inside a block, in bytes.
    pub zero_granularity: usize,
    /// The sink holds older data (a delta sync): the zero runs of each
    /// block read are cleared at the sink ([`BlockSink::clear_at`]) instead
    /// of skipped.
    pub overwrite: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: None,
            zero_granularity: ZERO_GRANULARITY,
            overwrite: false,
        }
    }
}

/// Workers for local copies: one per core and at least four, at most 16.
/// Measured by `scripts/bench-convert` on 2 cores: direct writes want about
/// four in flight; cached writes gain nothing past one per core.
pub fn default_concurrency() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    NonZeroUsize::new(cores.clamp(4, 16)).unwrap_or(NonZeroUsize::MIN)
}

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Blocks read from the source.
    pub blocks_read: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the sink.
    pub bytes_written: u64,
    /// Bytes read but not written because they were zero.
    pub bytes_zero: u64,
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The sink failed while block `block` was written.
    #[error("while writing block {block}: {source}")]
    Sink {
        /// Block index.
        block: u64,
        /// What the sink reported.
        source: sink::Error,
    },
    /// The source listed a block outside the disk.
    #[error("the source listed block {block}, past the end of the {size}-byte disk")]
    BlockOutOfRange {
        /// Block index.
        block: u64,
        /// Disk size.
        size: u64,
    },
    /// The caller's block hook failed (a journal could not be written).
    #[error("after block {block}: {source}")]
    Hook {
        /// Block index.
        block: u64,
        /// What the hook reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The copy was asked to stop (an interrupt) and stopped.
    #[error("the copy was interrupted")]
    Interrupted,
    /// The worker pool could not start.
    #[error("cannot start {threads} worker threads: {detail}")]
    Pool {
        /// Threads asked for.
        threads: usize,
        /// What went wrong.
        detail: String,
    },
}

#[derive(Default)]
struct Counters {
    blocks_read: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    bytes_zero: AtomicU64,
}

/// A block whose writes are done at the sink, as the block hook sees it.
#[derive(Clone, Copy, Debug)]
pub struct DoneBlock<'a> {
    /// Its index.
    pub index: u64,
    /// Its byte offset on the disk.
    pub offset: u64,
    /// Its bytes, unless they are all zero.
    pub data: Option<&'a [u8]>,
    /// The SHA-256 of its bytes when the source checked it on the way (an
    /// EBS block), so that nobody hashes it again.
    pub sha256: Option<[u8; 32]>,
}

/// Called once a block's writes are done at the sink; an error stops the copy.
pub type BlockDone<'a> =
    &'a (dyn Fn(&DoneBlock<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Sync);

/// What a copy tells its caller, and how it is stopped, as it goes.
#[derive(Clone, Copy)]
pub struct Hooks<'a> {
    /// Called from the workers with the bytes of each block done.
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Called for each block once its writes are done (a journal).
    pub block_done: Option<BlockDone<'a>>,
    /// Set from elsewhere to stop the copy: blocks in flight finish, no
    /// new one starts, and the copy ends with [`Error::Interrupted`].
    pub stop: Option<&'a AtomicBool>,
}

/// Copies every listed block of `source` to `sink` at the same offset.
///
/// `progress` is called from the workers with the bytes of each block done.
/// The first error stops the copy; blocks in flight finish first.
pub fn copy(
    source: &dyn BlockSource,
    sink: &dyn BlockSink,
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Stats, Error> {
    copy_with(
        source,
        sink,
        opts,
        Hooks {
            progress,
            block_done: None,
            stop: None,
        },
    )
}

/// [`copy`], with a hook per finished block and a stop switch.
pub fn copy_with(
    source: &dyn BlockSource,
    sink: &dyn BlockSink,
    opts: &Options,
    hooks: Hooks<'_>,
) -> Result<Stats, Error> {
    let threads = opts.concurrency.unwrap_or_else(default_concurrency).get();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("copy-{i}"))
        .build()
        .map_err(|e| Error::Pool {
            threads,
            detail: e.to_string(),
        })?;
    let blocks = Mutex::new(source.blocks());
    let counters = Counters::default();
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, Ordering::SeqCst);
        // A worker that panicked holding the slot leaves it whole: keep using it.
        first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(e);
    };
    pool.scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|_| {
                // Aligned so that sinks can hand the bytes to direct I/O.
                let bs = source.block_size() as usize;
                let mut backing = vec![0u8; bs + BUFFER_ALIGN];
                let start = backing
                    .as_ptr()
                    .align_offset(BUFFER_ALIGN)
                    .min(BUFFER_ALIGN);
                let buf = &mut backing[start..start + bs];
                while !failed.load(Ordering::Relaxed) {
                    if hooks.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                        fail(Error::Interrupted);
                        break;
                    }
                    let next = blocks.lock().unwrap_or_else(PoisonError::into_inner).next();
                    let index = match next {
                        None => break,
                        Some(Err(e)) => {
                            fail(e.into());
                            break;
                        }
                        Some(Ok(index)) => index,
                    };
                    match copy_block(source, sink, index, buf, opts, &counters, hooks.block_done) {
                        Ok(len) => (hooks.progress)(len),
                        Err(e) => {
                            fail(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        return Err(e);
    }
    let stats = Stats {
        blocks_read: counters.blocks_read.into_inner(),
        bytes_read: counters.bytes_read.into_inner(),
        bytes_written: counters.bytes_written.into_inner(),
        bytes_zero: counters.bytes_zero.into_inner(),
    };
    Ok(stats)
}

/// Reads one block and writes its non-zero runs; returns the block's length.
fn copy_block(
    source: &dyn BlockSource,
    sink: &dyn BlockSink,
    index: u64,
    buf: &mut [u8],
    opts: &Options,
    counters: &Counters,
    block_done: Option<BlockDone<'_>>,
) -> Result<u64, Error> {
    let bs = u64::from(source.block_size());
    let offset =
        index
            .checked_mul(bs)
            .filter(|&o| o < source.size())
            .ok_or(Error::BlockOutOfRange {
                block: index,
                size: source.size(),
            })?;
    let data = source.read_block(index, buf)?;
    let len = data.len();
    let mut written = 0u64;
    let mut result = Ok(());
    let zero = diskformats::is_zero(data);
    let mut at = 0usize;
    let runs = (!zero)
        .then(|| diskformats::nonzero_runs(data, opts.zero_granularity))
        .into_iter()
        .flatten();
    for run in runs.map(Some).chain([None]) {
        // Over older data, the gap before each run (and after the last) is cleared.
        let gap_end = run.as_ref().map_or(len, |r| r.start);
        if opts.overwrite && gap_end > at {
            result = sink.clear_at(offset + at as u64, (gap_end - at) as u64);
            if result.is_err() {
                break;
            }
        }
        let Some(run) = run else { break };
        result = sink.write_at(offset + run.start as u64, &data[run.clone()]);
        if result.is_err() {
            break;
        }
        written += run.len() as u64;
        at = run.end;
    }
    let done = match (&result, block_done) {
        (Ok(()), Some(hook)) => hook(&DoneBlock {
            index,
            offset,
            data: (!zero).then_some(data),
            sha256: source.take_sha256(index),
        }),
        _ => Ok(()),
    };
    source.release_block(index);
    result.map_err(|source| Error::Sink {
        block: index,
        source,
    })?;
    done.map_err(|source| Error::Hook {
        block: index,
        source,
    })?;
    counters.blocks_read.fetch_add(1, Ordering::Relaxed);
    counters.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
    counters.bytes_written.fetch_add(written, Ordering::Relaxed);
    counters
        .bytes_zero
        .fetch_add(len as u64 - written, Ordering::Relaxed);
    Ok(len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A source with given block contents; unlisted blocks are zero.
    struct MemSource {
        size: u64,
        blocks: BTreeMap<u64, Vec<u8>>,
        fail_at: Option<u64>,
    }

    impl BlockSource for MemSource {
        fn size(&self) -> u64 {
            self.size
        }
        fn block_size(&self) -> u32 {
            16384
        }
        fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, source::Error>> + Send + '_> {
            Box::new(self.blocks.keys().map(|&k| Ok(k)))
        }
        fn read_block<'a>(
            &'a self,
            index: u64,
            buf: &'a mut [u8],
        ) -> Result<&'a [u8], source::Error> {
            if Some(index) == self.fail_at {
                return Err(source::Error::Image {
                    path: "mem".into(),
                    source: diskformats::Error::Truncated {
                        detail: "test".into(),
                    },
                });
            }
            let b = &self.blocks[&index];
            buf[..b.len()].copy_from_slice(b);
            Ok(&buf[..b.len()])
        }
    }

    #[derive(Default)]
    struct MemSink(Mutex<Vec<(u64, Vec<u8>)>>);
    impl BlockSink for MemSink {
        fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), sink::Error> {
            self.0.lock().unwrap().push((offset, data.to_vec()));
            Ok(())
        }
    }

    fn source(fail_at: Option<u64>) -> MemSource {
        let mut blocks = BTreeMap::new();
        blocks.insert(0, vec![0u8; 16384]); // listed but zero
        let mut b1 = vec![0u8; 16384];
        b1[5000] = 1; // one 4 KiB page of data
        blocks.insert(1, b1);
        blocks.insert(7, vec![9u8; 16384]);
        MemSource {
            size: 8 * 16384,
            blocks,
            fail_at,
        }
    }

    #[test]
    fn writes_only_non_zero_pages_at_their_offsets() {
        let src = source(None);
        let sink = MemSink::default();
        let done = AtomicU64::new(0);
        let stats = copy(&src, &sink, &Options::default(), &|n| {
            done.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(done.into_inner(), 3 * 16384);
        assert_eq!(stats.blocks_read, 3);
        assert_eq!(stats.bytes_written, 4096 + 16384);
        assert_eq!(stats.bytes_zero, 3 * 16384 - 4096 - 16384);
        let mut writes = sink.0.into_inner().unwrap();
        writes.sort();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].0, 16384 + 4096);
        assert_eq!(writes[0].1[5000 - 4096], 1);
        assert_eq!(writes[1], (7 * 16384, vec![9u8; 16384]));
    }

    #[derive(Default)]
    struct ClearingSink(Mutex<Vec<(u64, u64, bool)>>);
    impl BlockSink for ClearingSink {
        fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), sink::Error> {
            self.0
                .lock()
                .unwrap()
                .push((offset, data.len() as u64, true));
            Ok(())
        }
        fn clear_at(&self, offset: u64, len: u64) -> Result<(), sink::Error> {
            self.0.lock().unwrap().push((offset, len, false));
            Ok(())
        }
    }

    #[test]
    fn over_older_data_the_zero_runs_are_cleared_and_the_block_is_covered_once() {
        let src = source(None);
        let sink = ClearingSink::default();
        let opts = Options {
            overwrite: true,
            ..Options::default()
        };
        copy(&src, &sink, &opts, &|_| {}).unwrap();
        let mut ops = sink.0.into_inner().unwrap();
        ops.sort();
        let b = 16384u64;
        assert_eq!(
            ops,
            [
                (0, b, false),               // a zero block: cleared whole
                (b, 4096, false),            // before block 1's page of data
                (b + 4096, 4096, true),      // the data
                (b + 8192, b - 8192, false), // after it
                (7 * b, b, true),            // all data: nothing cleared
            ]
        );
        // Without `overwrite`, nothing is cleared.
        let sink = ClearingSink::default();
        copy(&src, &sink, &Options::default(), &|_| {}).unwrap();
        assert!(sink.0.into_inner().unwrap().iter().all(|op| op.2));
    }

    #[test]
    fn the_first_error_stops_the_copy() {
        let src = source(Some(7));
        let sink = MemSink::default();
        let err = copy(&src, &sink, &Options::default(), &|_| {}).unwrap_err();
        assert!(matches!(err, Error::Source(_)), "{err}");
    }
}
