//! The `Disk` trait: what every image reader offers, so that a copy loop can
//! visit only the data and never the holes.

use std::ops::Range;

use crate::{Error, Result};

/// A virtual disk that can be read at any offset and that knows where its data is.
pub trait Disk: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset`; holes read as zero.
    /// The whole range must lie inside the disk.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The first range at or after `offset` that may hold data, or `None` when
    /// only zeros follow. Everything between `offset` and the range's start is
    /// zero. Ranges are clipped to the disk and never empty.
    fn next_data(&self, offset: u64) -> Result<Option<Range<u64>>>;

    /// The bytes at `offset` without copying, where the image is memory-mapped
    /// and the range is stored as it is (raw and fixed VHD); `None` otherwise,
    /// and then [`Disk::read_at`] is the way to read.
    fn slice_at(&self, _offset: u64, _len: usize) -> Option<&[u8]> {
        None
    }

    /// Says that the bytes of a range seen through [`Disk::slice_at`] are no
    /// longer needed, so a mapped image can drop them from the process's
    /// memory (they stay in the page cache). Without it a copy's resident
    /// memory grows with the data read.
    fn release(&self, _offset: u64, _len: usize) {}
}

/// An image held in memory is a disk: all of it counts as data. Handy for
/// tables read or built in memory, tests and fuzzing.
///
/// ```
/// use diskformats::{Disk, PartitionTable};
/// let blank = vec![0u8; 1 << 20];
/// assert_eq!(blank[..].size(), 1 << 20);
/// assert!(matches!(PartitionTable::read(&blank[..])?, PartitionTable::None));
/// # Ok::<(), diskformats::Error>(())
/// ```
impl Disk for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len(), self.size())?;
        // In range, so the offset fits in usize.
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }

    fn next_data(&self, offset: u64) -> Result<Option<Range<u64>>> {
        Ok((offset < self.size()).then(|| offset..self.size()))
    }

    fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        check_range(offset, len, self.size()).ok()?;
        self.get(offset as usize..offset as usize + len)
    }
}

/// Iterates over the ranges of a disk that may hold data, in order.
///
/// ```no_run
/// use diskformats::{data_ranges, Image, OpenOptions};
/// let img = Image::open("disk.vhd", &OpenOptions::default())?;
/// let allocated: u64 = data_ranges(&img).map(|r| r.map(|r| r.end - r.start)).sum::<Result<u64, _>>()?;
/// println!("{allocated} bytes allocated");
/// # Ok::<(), diskformats::Error>(())
/// ```
pub fn data_ranges<D: Disk + ?Sized>(disk: &D) -> DataRanges<'_, D> {
    DataRanges {
        disk,
        pos: 0,
        done: false,
    }
}

/// Iterator returned by [`data_ranges`].
#[derive(Debug)]
pub struct DataRanges<'a, D: ?Sized> {
    disk: &'a D,
    pos: u64,
    done: bool,
}

impl<D: Disk + ?Sized> Iterator for DataRanges<'_, D> {
    type Item = Result<Range<u64>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.disk.next_data(self.pos) {
            Ok(Some(r)) if r.start >= self.pos && r.end > r.start => {
                self.pos = r.end;
                Some(Ok(r))
            }
            Ok(Some(r)) => {
                // A reader that goes backwards would loop forever: stop with an error.
                self.done = true;
                Some(Err(Error::invalid(
                    "data map",
                    format!("range {r:?} does not advance past offset {}", self.pos),
                )))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Checks that `len` bytes at `offset` lie inside a disk of `size` bytes.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> Result<()> {
    let len64 = len as u64;
    match offset.checked_add(len64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            offset,
            len: len64,
            size,
        }),
    }
}
