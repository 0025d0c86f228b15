//! A local raw image, block device or VHD as a block source: only the blocks
//! that overlap the image's data ranges are listed.

use std::ops::Range;
use std::path::{Path, PathBuf};

use diskformats::{data_ranges, DataRanges, Disk, Image, OpenOptions};

use super::{BlockSource, Error, BLOCK_SIZE};

/// How a local image is read: with plain reads (the default), or memory-
/// mapped so that the pipeline borrows its bytes without a copy. Mapping is
/// only for callers that can vouch the file will not change while it is
/// read, so it is made by an `unsafe fn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputMapping(bool);

impl InputMapping {
    /// Plain positional reads: safe whatever happens to the file.
    pub const READS: InputMapping = InputMapping(false);

    /// Memory-mapped reads.
    ///
    /// # Safety
    ///
    /// No process may write or truncate the input while it is read (see
    /// [`diskformats::Image::open_mapped`]).
    pub unsafe fn mapped() -> InputMapping {
        InputMapping(true)
    }

    /// True when the input is memory-mapped.
    pub fn is_mapped(self) -> bool {
        self.0
    }
}

/// A local image read block by block.
#[derive(Debug)]
pub struct ImageSource {
    image: Image,
    path: PathBuf,
    block_size: u32,
}

impl ImageSource {
    /// Opens `path`, detecting raw, fixed VHD or dynamic VHD (plain reads).
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<ImageSource, Error> {
        ImageSource::open_with(path, opts, InputMapping::READS)
    }

    /// The same, read as `mapping` says.
    pub fn open_with(
        path: &Path,
        opts: &OpenOptions,
        mapping: InputMapping,
    ) -> Result<ImageSource, Error> {
        let image = if mapping.is_mapped() {
            // SAFETY: an `InputMapping` that maps is only made by the unsafe
            // `InputMapping::mapped`, whose caller vouched for the file.
            unsafe { Image::open_mapped(path, opts) }
        } else {
            Image::open(path, opts)
        };
        let image = image.map_err(|source| Error::Image {
            path: path.display().to_string(),
            source,
        })?;
        Ok(ImageSource {
            image,
            path: path.to_owned(),
            block_size: BLOCK_SIZE,
        })
    }

    /// The same source read in blocks of `size` bytes (a power of two, 4 KiB
    /// to 64 MiB), for sinks that gain from larger writes, such as page blobs.
    pub fn with_block_size(mut self, size: u32) -> ImageSource {
        if size.is_power_of_two() && (4096..=(64 << 20)).contains(&size) {
            self.block_size = size;
        }
        self
    }

    /// The opened image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Bytes of the blocks that [`BlockSource::blocks`] lists.
    pub fn listed_bytes(&self) -> Result<u64, Error> {
        let mut total = 0u64;
        for index in self.blocks() {
            let bs = u64::from(self.block_size);
            let start = index? * bs;
            total += bs.min(self.size() - start);
        }
        Ok(total)
    }

    fn error(&self, source: diskformats::Error) -> Error {
        Error::Image {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl BlockSource for ImageSource {
    fn bytes_to_read(&self) -> Option<u64> {
        self.listed_bytes().ok()
    }

    fn size(&self) -> u64 {
        self.image.size()
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, Error>> + Send + '_> {
        Box::new(ListedBlocks {
            source: self,
            ranges: data_ranges(&self.image),
            current: 0..0,
            next_unlisted: 0,
        })
    }

    fn read_block<'a>(&'a self, index: u64, buf: &'a mut [u8]) -> Result<&'a [u8], Error> {
        let bs = u64::from(self.block_size);
        let start = index.saturating_mul(bs);
        let len = bs.min(self.size().saturating_sub(start)) as usize;
        if let Some(mapped) = self.image.slice_at(start, len) {
            return Ok(mapped);
        }
        let buf = &mut buf[..len];
        self.image.read_at(buf, start).map_err(|e| self.error(e))?;
        Ok(buf)
    }

    fn release_block(&self, index: u64) {
        let bs = u64::from(self.block_size);
        let start = index.saturating_mul(bs);
        let len = bs.min(self.size().saturating_sub(start)) as usize;
        self.image.release(start, len);
    }
}

/// The blocks overlapping an image's data ranges, each once.
struct ListedBlocks<'a> {
    source: &'a ImageSource,
    ranges: DataRanges<'a, Image>,
    current: Range<u64>,
    next_unlisted: u64,
}

impl Iterator for ListedBlocks<'_> {
    type Item = Result<u64, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let bs = u64::from(self.source.block_size);
        loop {
            if let Some(index) = self.current.next() {
                return Some(Ok(index));
            }
            match self.ranges.next()? {
                Err(e) => return Some(Err(self.source.error(e))),
                Ok(r) => {
                    // A block shared with the previous range is listed once.
                    let first = (r.start / bs).max(self.next_unlisted);
                    let last = r.end.div_ceil(bs);
                    self.next_unlisted = self.next_unlisted.max(last);
                    self.current = first..last;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn lists_each_block_overlapping_data_once() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let f = tmp.as_file();
        f.set_len(10 * u64::from(BLOCK_SIZE) + 1000).unwrap();
        f.write_all_at(&[1; 10], 3 * u64::from(BLOCK_SIZE) - 5)
            .unwrap(); // spans blocks 2 and 3
        f.write_all_at(&[2; 10], 10 * u64::from(BLOCK_SIZE) + 10)
            .unwrap(); // the short last block
        let src = ImageSource::open(tmp.path(), &OpenOptions::default()).unwrap();
        let blocks: Vec<u64> = src.blocks().collect::<Result<_, _>>().unwrap();
        // File systems report data at their own grain (4 KiB or more), never finer.
        assert!(
            blocks.contains(&2) && blocks.contains(&3) && blocks.contains(&10),
            "{blocks:?}"
        );
        assert!(!blocks.contains(&6), "{blocks:?}");
        let mut sorted = blocks.clone();
        sorted.dedup();
        assert_eq!(sorted, blocks, "no repeats");
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let last = src.read_block(10, &mut buf).unwrap();
        assert_eq!(last.len(), 1000);
        assert_eq!(&last[10..20], &[2; 10]);
    }
}
