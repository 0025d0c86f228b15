//! An EBS snapshot seen as a [`Disk`], for reading its partition table and
//! superblocks without copying it (to learn a data disk's filesystem UUIDs
//! for the OS disk's fstab). Blocks are fetched on demand and kept; blocks
//! never written read as zeros.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use diskformats::Disk;

use super::ebs::EbsSource;
use super::BlockSource;

/// A snapshot read a few blocks at a time.
#[derive(Debug)]
pub struct SnapshotDisk {
    source: EbsSource,
    blocks: Mutex<HashMap<u64, Option<Vec<u8>>>>,
}

/// Blocks kept at most: probing reads a handful.
const MAX_BLOCKS: usize = 64;

impl SnapshotDisk {
    /// Wraps an opened snapshot.
    pub fn new(source: EbsSource) -> SnapshotDisk {
        SnapshotDisk {
            source,
            blocks: Mutex::new(HashMap::new()),
        }
    }

    fn block(&self, index: u64) -> diskformats::Result<Option<Vec<u8>>> {
        if let Some(b) = self
            .blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&index)
            .cloned()
        {
            return Ok(b);
        }
        let b = self
            .source
            .read_listed_block(index)
            .map_err(|e| diskformats::Error::Io {
                context: format!("reading block {index} of {}", self.source.snapshot()),
                source: std::io::Error::other(e.to_string()),
            })?;
        {
            let mut m = self.blocks.lock().unwrap_or_else(PoisonError::into_inner);
            if m.len() >= MAX_BLOCKS {
                m.clear();
            }
            m.insert(index, b.clone());
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
