//! Fixed VHDs: the raw disk followed by a 512-byte footer. Written sparse:
//! ranges never written stay holes in the file.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::footer::{DiskType, Footer, FOOTER_SIZE};
use crate::disk::{check_range, Disk};
use crate::raw::{read_exact_at, RawImage};
use crate::{Error, Result};

/// A fixed VHD opened for reading.
#[derive(Debug)]
pub struct FixedVhd {
    data: RawImage,
    footer: Footer,
}

impl FixedVhd {
    /// Opens a fixed VHD whose footer has been parsed already (see [`crate::Image::open`]).
    pub fn with_footer(file: File, file_len: u64, footer: Footer) -> Result<FixedVhd> {
        FixedVhd::open(file, file_len, footer, false)
    }

    /// The same, its data mapped when `map` is set (see [`crate::Image::open_mapped`]).
    pub(crate) fn open(file: File, file_len: u64, footer: Footer, map: bool) -> Result<FixedVhd> {
        if footer.disk_type != DiskType::Fixed {
            return Err(Error::invalid(
                "VHD footer",
                format!("disk type is {}, not fixed", footer.disk_type.name()),
            ));
        }
        if footer.current_size % 512 != 0 {
            return Err(Error::invalid(
                "VHD footer",
                format!(
                    "current size {} is not a multiple of 512",
                    footer.current_size
                ),
            ));
        }
        let data_len = file_len.checked_sub(FOOTER_SIZE as u64).ok_or_else(|| {
            Error::truncated(format!("a {file_len}-byte file cannot hold a VHD footer"))
        })?;
        if data_len != footer.current_size {
            return Err(if data_len < footer.current_size {
                Error::truncated(format!(
                    "the footer says {} bytes of data but the file holds {data_len}",
                    footer.current_size
                ))
            } else {
                Error::invalid(
                    "fixed VHD",
                    format!(
                        "the file holds {data_len} bytes of data but the footer says {}",
                        footer.current_size
                    ),
                )
            });
        }
        Ok(FixedVhd {
            data: RawImage::with_size(file, data_len, map),
            footer,
        })
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }
}

impl Disk for FixedVhd {
    fn size(&self) -> u64 {
        self.data.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.data.read_at(buf, offset)
    }
    fn next_data(&self, offset: u64) -> Result<Option<Range<u64>>> {
        self.data.next_data(offset)
    }
    fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.data.slice_at(offset, len)
    }
    fn release(&self, offset: u64, len: usize) {
        self.data.release(offset, len)
    }
}

/// Writes a fixed VHD: positional writes in any order, from many threads,
/// then the footer. Parts never written stay holes and read as zero.
///
/// ```
/// use diskformats::vhd::FixedVhdWriter;
/// let file = tempfile::tempfile()?;
/// let w = FixedVhdWriter::create(file, 2 << 20)?;
/// w.write_at(&[0xAA; 4096], 1 << 20)?;
/// let file = w.finish()?;
/// assert_eq!(file.metadata()?.len(), (2 << 20) + 512);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FixedVhdWriter {
    file: File,
    size: u64,
}

impl FixedVhdWriter {
    /// Prepares `file` (expected empty) for a fixed VHD of `size` bytes, a multiple of 512.
    pub fn create(file: File, size: u64) -> Result<FixedVhdWriter> {
        if size % 512 != 0 {
            return Err(Error::UnsupportedSize {
                size,
                reason: "a VHD's size must be a multiple of 512 bytes",
            });
        }
        let total = size
            .checked_add(FOOTER_SIZE as u64)
            .ok_or(Error::UnsupportedSize {
                size,
                reason: "too large",
            })?;
        file.set_len(total)
            .map_err(|e| Error::io("sizing the VHD file", e))?;
        Ok(FixedVhdWriter { file, size })
    }

    /// Virtual size of the disk being written.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes `data` at virtual offset `offset`.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        check_range(offset, data.len(), self.size)?;
        self.file.write_all_at(data, offset).map_err(|e| {
            Error::io(
                format!("writing {} bytes at offset {offset}", data.len()),
                e,
            )
        })
    }

    /// Reads back bytes already written (holes read as zero).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        read_exact_at(&self.file, buf, offset)
    }

    /// Writes a new fixed footer and returns the file (not yet synced).
    pub fn finish(self) -> Result<File> {
        let footer = Footer::new(DiskType::Fixed, self.size);
        self.finish_with(&footer)
    }

    /// Writes `footer` (its checksum recomputed) and returns the file.
    pub fn finish_with(self, footer: &Footer) -> Result<File> {
        self.file
            .write_all_at(&footer.to_bytes(), self.size)
            .map_err(|e| Error::io("writing the VHD footer", e))?;
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Image, OpenOptions};

    #[test]
    fn write_then_read_back() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let w = FixedVhdWriter::create(file.reopen().unwrap(), 4 << 20).unwrap();
        w.write_at(&[7u8; 1000], 12345).unwrap();
        assert!(w.write_at(&[1u8; 10], (4 << 20) - 5).is_err());
        w.finish().unwrap();
        let img = Image::open(file.path(), &OpenOptions::default()).unwrap();
        assert_eq!(img.size(), 4 << 20);
        assert_eq!(img.format(), crate::Format::VhdFixed);
        let mut buf = vec![0u8; 1002];
        img.read_at(&mut buf, 12344).unwrap();
        assert_eq!(buf[0], 0);
        assert!(buf[1..1001].iter().all(|&b| b == 7));
        assert_eq!(buf[1001], 0);
    }

    #[test]
    fn size_must_be_sector_multiple() {
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            FixedVhdWriter::create(f, 1000),
            Err(Error::UnsupportedSize { .. })
        ));
    }
}
