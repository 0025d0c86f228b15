//! The copy engine: moves a source's listed blocks to a sink with bounded
//! concurrency and bounded memory (one buffer of a run of blocks per
//! worker), skipping zeros at a fine grain so that outputs stay sparse, and
//! joining adjacent blocks into one write where the sink takes large ones.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;

use crate::sink::{self, BlockSink};
use crate::source::{self, BlockSource};

mod adjacent;
mod buffers;

use adjacent::Adjacent;

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
    /// Most bytes one write may carry: runs of adjacent blocks up to this
    /// size are read and written together (a Put Page takes 4 MiB). Up to
    /// a block (the default, 0): one block at a time, as local sinks want.
    pub max_write: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: None,
            zero_granularity: ZERO_GRANULARITY,
            overwrite: false,
            max_write: 0,
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
///
/// Each worker takes the lowest run of adjacent blocks the source has
/// handed over (up to [`Options::max_write`] bytes; see the `adjacent` module),
/// pulling from the source itself when none is ready, reads the run into
/// one buffer and writes its non-zero runs, which then span block boundaries.
pub fn copy_with(
    source: &dyn BlockSource,
    sink: &dyn BlockSink,
    opts: &Options,
    hooks: Hooks<'_>,
) -> Result<Stats, Error> {
    let threads = opts.concurrency.unwrap_or_else(default_concurrency).get();
    let bs = source.block_size() as usize;
    let run = (opts.max_write / bs.max(1)).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("copy-{i}"))
        .build()
        .map_err(|e| Error::Pool {
            threads,
            detail: e.to_string(),
        })?;
    // Short runs stop waiting for neighbours once two whole runs' worth
    // wait: a network source holds what waits here in its bounded memory.
    let queue = Adjacent::new(source.blocks(), run, 2 * run, adjacent::LINGER);
    let buffers = buffers::Pool::new(run * bs, threads);
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
        // Blocks handed over and never to be read are let go, so that a
        // source holding them in memory frees it and its iterator ends.
        for index in queue.stop() {
            source.release_block(index);
        }
    };
    pool.scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|_| {
                let mut ctx = Worker {
                    source,
                    sink,
                    opts,
                    counters: &counters,
                    hooks: &hooks,
                    scratch: Vec::new(),
                };
                while !failed.load(Ordering::Relaxed) {
                    if hooks.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                        fail(Error::Interrupted);
                        break;
                    }
                    let blocks = match queue.take() {
                        Ok(Some(blocks)) => blocks,
                        Ok(None) => break,
                        Err(e) => {
                            fail(e.into());
                            break;
                        }
                    };
                    if let Err(e) = ctx.copy_run(&blocks, buffers.take()) {
                        fail(e);
                        break;
                    }
                }
            });
        }
    });
    // What a worker pulled as the copy stopped.
    for index in queue.stop() {
        source.release_block(index);
    }
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

/// What a worker needs to copy a run of blocks.
struct Worker<'a> {
    source: &'a dyn BlockSource,
    sink: &'a dyn BlockSink,
    opts: &'a Options,
    counters: &'a Counters,
    hooks: &'a Hooks<'a>,
    /// Where a block lent by the source is asked for again, so that it can
    /// be copied into a run's buffer (allocated on first need).
    scratch: Vec<u8>,
}

impl Worker<'_> {
    /// The byte offset of block `index`, which must lie on the disk.
    fn offset(&self, index: u64) -> Result<u64, Error> {
        let (bs, size) = (u64::from(self.source.block_size()), self.source.size());
        index
            .checked_mul(bs)
            .filter(|&o| o < size)
            .ok_or(Error::BlockOutOfRange { block: index, size })
    }

    /// Copies one run of adjacent blocks: reads them into `buf` one after
    /// another, writes their non-zero runs (which span the blocks), then
    /// tells the hook of each block. Every block is let go at the source,
    /// whatever happens.
    fn copy_run(&mut self, blocks: &[u64], buf: buffers::Buf) -> Result<(), Error> {
        let result = self.copy_run_inner(blocks, buf);
        for &index in blocks {
            self.source.release_block(index);
        }
        result
    }

    fn copy_run_inner(&mut self, blocks: &[u64], mut buf: buffers::Buf) -> Result<(), Error> {
        let Some(&first) = blocks.first() else {
            return Ok(());
        };
        let offset = self.offset(first)?;
        for &index in &blocks[1..] {
            self.offset(index)?;
        }
        let bs = self.source.block_size() as usize;
        let mut len = 0;
        for (j, &index) in blocks.iter().enumerate() {
            let slot = &mut buf.as_mut()[j * bs..(j + 1) * bs];
            let at = slot.as_ptr();
            let data = self.source.read_block(index, slot)?;
            let mut got = data.len();
            if data.as_ptr() != at {
                if blocks.len() == 1 {
                    // Lent from the source's memory, alone: written from there, no copy.
                    let written = self.write(first, offset, data, None)?;
                    return self.done(blocks, offset, data, written);
                }
                // Asked again into scratch, so that the slot is free to take
                // the bytes (a source lends the same bytes again, or reads them).
                self.scratch.resize(bs, 0);
                let again = self.source.read_block(index, &mut self.scratch)?;
                got = again.len().min(bs);
                buf.as_mut()[j * bs..j * bs + got].copy_from_slice(&again[..got]);
            }
            len = j * bs + got;
            if got < bs {
                // A short block ends the disk: a block after it lies past the end.
                if let Some(&next) = blocks.get(j + 1) {
                    return Err(Error::BlockOutOfRange {
                        block: next,
                        size: self.source.size(),
                    });
                }
            }
        }
        let shared = buf.share(len);
        let written = self.write(first, offset, &shared, Some(&shared))?;
        self.done(blocks, offset, &shared, written)
    }

    /// After a run's writes: the hook and progress of each block, and the counters.
    fn done(&self, blocks: &[u64], offset: u64, data: &[u8], written: u64) -> Result<(), Error> {
        let bs = self.source.block_size() as usize;
        for (j, &index) in blocks.iter().enumerate() {
            let block = &data[(j * bs).min(data.len())..((j + 1) * bs).min(data.len())];
            if let Some(hook) = self.hooks.block_done {
                hook(&DoneBlock {
                    index,
                    offset: offset + (j * bs) as u64,
                    data: (!diskformats::is_zero(block)).then_some(block),
                    sha256: self.source.take_sha256(index),
                })
                .map_err(|source| Error::Hook {
                    block: index,
                    source,
                })?;
            }
            (self.hooks.progress)(block.len() as u64);
        }
        let len = data.len() as u64;
        let c = self.counters;
        c.blocks_read
            .fetch_add(blocks.len() as u64, Ordering::Relaxed);
        c.bytes_read.fetch_add(len, Ordering::Relaxed);
        c.bytes_written.fetch_add(written, Ordering::Relaxed);
        c.bytes_zero.fetch_add(len - written, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the non-zero runs of `data` (a run of blocks from `first`) at
    /// `offset`, as shared slices of `shared` when given; over older data,
    /// clears the gaps. Returns the bytes written.
    fn write(
        &self,
        first: u64,
        offset: u64,
        data: &[u8],
        shared: Option<&Bytes>,
    ) -> Result<u64, Error> {
        let bs = u64::from(self.source.block_size());
        let len = data.len();
        let sink_error = |at: usize, source| Error::Sink {
            block: first + at as u64 / bs,
            source,
        };
        let mut written = 0u64;
        let mut at = 0usize;
        let runs = (!diskformats::is_zero(data))
            .then(|| diskformats::nonzero_runs(data, self.opts.zero_granularity))
            .into_iter()
            .flatten();
        for run in runs.map(Some).chain([None]) {
            // Over older data, the gap before each run (and after the last) is cleared.
            let gap_end = run.as_ref().map_or(len, |r| r.start);
            if self.opts.overwrite && gap_end > at {
                self.sink
                    .clear_at(offset + at as u64, (gap_end - at) as u64)
                    .map_err(|e| sink_error(at, e))?;
            }
            let Some(run) = run else { break };
            let to = offset + run.start as u64;
            let sent = match shared {
                Some(b) => self.sink.write_bytes(to, b.slice(run.clone())),
                None => self.sink.write_at(to, &data[run.clone()]),
            };
            sent.map_err(|e| sink_error(run.start, e))?;
            written += run.len() as u64;
            at = run.end;
        }
        Ok(written)
    }
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

    /// A source whose listing says when it has handed over its last block.
    struct Listed {
        inner: MemSource,
        ended: AtomicBool,
    }
    impl BlockSource for Listed {
        fn size(&self) -> u64 {
            self.inner.size
        }
        fn block_size(&self) -> u32 {
            self.inner.block_size()
        }
        fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, source::Error>> + Send + '_> {
            let mut keys = self.inner.blocks.keys();
            Box::new(std::iter::from_fn(move || match keys.next() {
                Some(&k) => Some(Ok(k)),
                None => {
                    self.ended.store(true, Ordering::SeqCst);
                    None
                }
            }))
        }
        fn read_block<'a>(
            &'a self,
            index: u64,
            buf: &'a mut [u8],
        ) -> Result<&'a [u8], source::Error> {
            self.inner.read_block(index, buf)
        }
    }

    /// Records writes; the first waits until the source has listed all.
    struct WaitingSink<'a> {
        writes: Mutex<Vec<(u64, usize)>>,
        ended: &'a AtomicBool,
    }
    impl BlockSink for WaitingSink<'_> {
        fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), sink::Error> {
            for _ in 0..1000 {
                if self.ended.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            self.writes.lock().unwrap().push((offset, data.len()));
            Ok(())
        }
    }

    #[test]
    fn adjacent_blocks_go_out_as_one_write_up_to_the_most_and_each_block_is_done_once() {
        let b = 16384usize;
        let mut blocks = BTreeMap::new();
        for i in [0, 2, 3, 4, 7] {
            blocks.insert(i, vec![i as u8 + 1; b]);
        }
        blocks.insert(6, vec![0u8; b]);
        let src = Listed {
            inner: MemSource {
                size: 8 * b as u64,
                blocks,
                fail_at: None,
            },
            ended: AtomicBool::new(false),
        };
        let sink = WaitingSink {
            writes: Mutex::new(Vec::new()),
            ended: &src.ended,
        };
        let done = Mutex::new(Vec::new());
        let hook = |d: &DoneBlock<'_>| {
            let first = d.data.map(|x| x[0]);
            done.lock().unwrap().push((d.index, d.offset, first));
            Ok(())
        };
        let opts = Options {
            concurrency: NonZeroUsize::new(1),
            max_write: 4 * b,
            ..Options::default()
        };
        let hooks = Hooks {
            progress: &|_| {},
            block_done: Some(&hook),
            stop: None,
        };
        let stats = copy_with(&src, &sink, &opts, hooks).unwrap();
        // Block 0 alone (1 is not listed), then 2-4 together, then 6 (zero) and 7.
        let b64 = b as u64;
        assert_eq!(
            sink.writes.into_inner().unwrap(),
            [(0, b), (2 * b64, 3 * b), (7 * b64, b)]
        );
        let mut done = done.into_inner().unwrap();
        done.sort();
        let expect: Vec<_> = [0u64, 2, 3, 4, 6, 7]
            .iter()
            .map(|&i| (i, i * b64, (i != 6).then_some(i as u8 + 1)))
            .collect();
        assert_eq!(done, expect);
        assert_eq!(stats.blocks_read, 6);
        assert_eq!(stats.bytes_written, 5 * b64);
        assert_eq!(stats.bytes_zero, b64);
    }

    /// A source that lends its blocks from its own memory, as a mapped image does.
    struct Lending(MemSource);
    impl BlockSource for Lending {
        fn size(&self) -> u64 {
            self.0.size
        }
        fn block_size(&self) -> u32 {
            self.0.block_size()
        }
        fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, source::Error>> + Send + '_> {
            self.0.blocks()
        }
        fn read_block<'a>(
            &'a self,
            index: u64,
            _buf: &'a mut [u8],
        ) -> Result<&'a [u8], source::Error> {
            Ok(&self.0.blocks[&index])
        }
    }

    #[test]
    fn lent_blocks_are_written_from_where_they_lie_or_copied_into_a_run() {
        let src = Lending(source(None));
        for max_write in [0, 8 * 16384] {
            let sink = MemSink::default();
            let opts = Options {
                max_write,
                ..Options::default()
            };
            copy(&src, &sink, &opts, &|_| {}).unwrap();
            let mut writes = sink.0.into_inner().unwrap();
            writes.sort();
            // Blocks 0 and 1 are adjacent: one run when runs are allowed;
            // only block 1's page of data and block 7 are written either way.
            assert_eq!(writes.len(), 2, "{max_write}");
            assert_eq!(writes[0].0, 16384 + 4096);
            assert_eq!(writes[0].1.len(), 4096);
            assert_eq!(writes[0].1[5000 - 4096], 1);
            assert_eq!(writes[1], (7 * 16384, vec![9u8; 16384]));
        }
    }

    #[test]
    fn the_first_error_stops_the_copy() {
        let src = source(Some(7));
        let sink = MemSink::default();
        let err = copy(&src, &sink, &Options::default(), &|_| {}).unwrap_err();
        assert!(matches!(err, Error::Source(_)), "{err}");
    }
}
