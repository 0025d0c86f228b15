//! An EBS snapshot seen as a [`Disk`], for reading its partition tables,
//! superblocks and a few files without copying it: to learn a data disk's
//! filesystem UUIDs for the OS disk's fstab, and to assess a guest before
//! any copy. Blocks are fetched on demand and kept in a cache bounded in
//! blocks (least recently used out first); blocks never written read as
//! zeros; every fetch is counted.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use diskformats::Disk;

use super::ebs::EbsSource;
use super::BlockSource;

/// A snapshot read a few blocks at a time.
#[derive(Debug)]
pub struct SnapshotDisk {
    source: EbsSource,
    /// The written blocks, when the whole listing was read up front; else
    /// each block not cached is looked up by a listing from its index.
    written: Option<BTreeSet<u64>>,
    cache: Mutex<Cache>,
    max_blocks: usize,
    fetched_blocks: AtomicU64,
    fetched_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    blocks: HashMap<u64, Option<Vec<u8>>>,
    /// Least recently used first.
    order: VecDeque<u64>,
}

/// Blocks kept by default: probing reads a handful.
const MAX_BLOCKS: usize = 64;

impl SnapshotDisk {
    /// Wraps an opened snapshot, for a few reads (each block not cached
    /// costs a listing and a fetch).
    pub fn new(source: EbsSource) -> SnapshotDisk {
        SnapshotDisk {
            source,
            written: None,
            cache: Mutex::new(Cache::default()),
            max_blocks: MAX_BLOCKS,
            fetched_blocks: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
        }
    }

    /// Wraps an opened snapshot for many reads: the whole listing is read
    /// once (so a block costs one fetch, and unwritten blocks none), and up
    /// to `max_blocks` blocks are kept.
    pub fn indexed(source: EbsSource, max_blocks: usize) -> Result<SnapshotDisk, super::Error> {
        let written = source.index_blocks()?;
        Ok(SnapshotDisk {
            written: Some(written),
            max_blocks: max_blocks.max(1),
            ..SnapshotDisk::new(source)
        })
    }

    /// The snapshot.
    pub fn snapshot(&self) -> &str {
        self.source.snapshot()
    }

    /// The snapshot's block size.
    pub fn block_size(&self) -> u32 {
        self.source.block_size()
    }

    /// Blocks the snapshot holds, when the listing was read up front.
    pub fn written_blocks(&self) -> Option<u64> {
        self.written.as_ref().map(|w| w.len() as u64)
    }

    /// Blocks and bytes fetched so far (a block fetched again after it
    /// left the cache counts again).
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.fetched_blocks.load(Ordering::Relaxed),
            self.fetched_bytes.load(Ordering::Relaxed),
        )
    }

    fn block(&self, index: u64) -> diskformats::Result<Option<Vec<u8>>> {
        {
            let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(b) = c.blocks.get(&index).cloned() {
                c.order.retain(|&i| i != index);
                c.order.push_back(index);
                return Ok(b);
            }
        }
        let io = |e: super::Error| diskformats::Error::Io {
            context: format!("reading block {index} of {}", self.source.snapshot()),
            source: std::io::Error::other(e.to_string()),
        };
        let b = match &self.written {
            Some(w) if !w.contains(&index) => None,
            Some(_) => Some(self.source.read_written_block(index).map_err(io)?),
            None => self.source.read_listed_block(index).map_err(io)?,
        };
        if let Some(data) = &b {
            self.fetched_blocks.fetch_add(1, Ordering::Relaxed);
            self.fetched_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        while c.blocks.len() >= self.max_blocks {
            match c.order.pop_front() {
                Some(old) => {
                    c.blocks.remove(&old);
                }
                None => break,
            }
        }
        if c.blocks.insert(index, b.clone()).is_none() {
            c.order.push_back(index);
        }
        Ok(b)
    }
}

impl Disk for SnapshotDisk {
    fn size(&self) -> u64 {
        self.source.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> diskformats::Result<()> {
        let bs = u64::from(self.source.block_size()).max(1);
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size())
        {
            return Err(diskformats::Error::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: self.size(),
            });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let (index, within) = (at / bs, (at % bs) as usize);
            let n = (bs as usize - within).min(buf.len() - done);
            match self.block(index)? {
                Some(b) => buf[done..done + n].copy_from_slice(&b[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn next_data(&self, offset: u64) -> diskformats::Result<Option<Range<u64>>> {
        Ok((offset < self.size()).then(|| offset..self.size()))
    }
}
