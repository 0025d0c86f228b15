//! Raw images and block devices: the disk is the file, and the file system's
//! holes (SEEK_DATA / SEEK_HOLE) say where the data is.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use crate::disk::{check_range, Disk};
use crate::{Error, Result};

/// A raw disk image or block device.
///
/// Read with plain positional reads, unless opened with
/// [`RawImage::new_mapped`], which memory-maps it so that copies can borrow
/// its bytes ([`Disk::slice_at`]) instead of reading them into a buffer.
#[derive(Debug)]
pub struct RawImage {
    file: File,
    size: u64,
    map: Option<memmap2::Mmap>,
}

impl RawImage {
    /// Opens a raw image; its size is the file's length (or the device's size).
    pub fn new(file: File) -> Result<RawImage> {
        RawImage::open(file, false)
    }

    /// Opens a raw image memory-mapped where the system allows it.
    ///
    /// # Safety
    ///
    /// No process may write or truncate the file while the image is open:
    /// a mapped byte that changes breaks Rust's aliasing rules, and a read
    /// past a truncation raises SIGBUS.
    pub unsafe fn new_mapped(file: File) -> Result<RawImage> {
        RawImage::open(file, true)
    }

    fn open(mut file: File, map: bool) -> Result<RawImage> {
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("finding the size of the raw image", e))?;
        Ok(RawImage::with_size(file, size, map))
    }

    /// A raw view of the first `size` bytes of `file` (the data of a fixed
    /// VHD), mapped when `map` is set (the caller has vouched as
    /// [`RawImage::new_mapped`] asks).
    pub(crate) fn with_size(file: File, size: u64, map: bool) -> RawImage {
        let map = if map {
            map_read_only(&file, size)
        } else {
            None
        };
        RawImage { file, size, map }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the file back.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl Disk for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        read_exact_at(&self.file, buf, offset)
    }

    fn next_data(&self, offset: u64) -> Result<Option<Range<u64>>> {
        next_data_in_file(&self.file, offset, self.size)
    }

    fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        check_range(offset, len, self.size).ok()?;
        let start = usize::try_from(offset).ok()?;
        self.map.as_ref()?.get(start..start.checked_add(len)?)
    }

    fn release(&self, offset: u64, len: usize) {
        let (Some(map), Ok(start)) = (&self.map, usize::try_from(offset)) else {
            return;
        };
        if start.checked_add(len).is_some_and(|end| end <= map.len()) {
            // SAFETY: the mapping is read-only and file-backed, so dropping its
            // pages loses nothing: a later access reads them from the file again.
            // It is only advice; failure changes nothing but memory use.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
        }
    }
}

/// Maps the first `size` bytes of `file` read-only; `None` where that is not
/// possible (empty files, pipes, 32-bit address spaces too small).
fn map_read_only(file: &File, size: u64) -> Option<memmap2::Mmap> {
    let len = usize::try_from(size).ok().filter(|&l| l > 0)?;
    // SAFETY: the mapping is read-only and private to this process; its
    // contents change only if another process writes or truncates the file,
    // which the caller of `new_mapped` / `open_mapped` has ruled out.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }.ok()
}

/// Reads exactly `buf.len()` bytes at `offset`; a short file is a truncation error.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::truncated(format!(
                "{} bytes at offset {offset} are past the end of the file",
                buf.len()
            ))
        } else {
            Error::io(format!("reading {} bytes at offset {offset}", buf.len()), e)
        }
    })
}

/// The next data range of `file` at or after `offset`, clipped to `limit`.
///
/// Uses SEEK_DATA / SEEK_HOLE; where the file system or device does not support
/// them, everything up to `limit` counts as data.
pub(crate) fn next_data_in_file(
    file: &File,
    offset: u64,
    limit: u64,
) -> Result<Option<Range<u64>>> {
    if offset >= limit {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let start = match lseek(fd, offset, libc::SEEK_DATA) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) if unsupported(&e) => return Ok(Some(offset..limit)),
        Err(e) => return Err(Error::io("looking for data (SEEK_DATA)", e)),
    };
    if start >= limit {
        return Ok(None);
    }
    let end = match lseek(fd, start, libc::SEEK_HOLE) {
        Ok(Some(e)) => e,
        Ok(None) => limit,
        Err(e) if unsupported(&e) => limit,
        Err(e) => return Err(Error::io("looking for a hole (SEEK_HOLE)", e)),
    };
    let end = end.min(limit);
    if end <= start {
        // A file that changed under us; treat the rest as data rather than loop.
        return Ok(Some(start..limit));
    }
    Ok(Some(start..end))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// `lseek` with a whence the standard library lacks; `Ok(None)` for ENXIO
/// (no data past the offset).
fn lseek(fd: libc::c_int, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek only reads its integer arguments; an invalid fd is reported as EBADF.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::data_ranges;
    use std::io::Write;

    #[test]
    fn holes_are_skipped_and_read_as_zero() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[0xab; 4096], 3 << 20).unwrap();
        f.flush().unwrap();
        // Plain reads lend nothing; a mapped image lends its bytes.
        let plain = RawImage::new(f.try_clone().unwrap()).unwrap();
        assert!(plain.slice_at(0, 2).is_none());
        // SAFETY: an unnamed temporary file of this test; nothing else writes it.
        let img = unsafe { RawImage::new_mapped(f) }.unwrap();
        assert_eq!(img.size(), 8 << 20);
        let view = img.slice_at((3 << 20) - 1, 2).unwrap();
        assert_eq!(view, &[0, 0xab]);
        assert!(img.slice_at((8 << 20) - 1, 2).is_none());
        let ranges: Vec<_> = data_ranges(&img).collect::<Result<_>>().unwrap();
        // The file system may report data at a coarser grain, never finer.
        assert!(!ranges.is_empty());
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert!(total < 8 << 20, "holes were reported: {ranges:?}");
        assert!(ranges.iter().any(|r| r.contains(&(3 << 20))));
        let mut buf = vec![1u8; 8192];
        img.read_at(&mut buf, (3 << 20) - 4096).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..].iter().all(|&b| b == 0xab));
        assert!(matches!(
            img.read_at(&mut buf, (8 << 20) - 100),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn data_is_clipped_to_the_limit() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&[1u8; 10_000], 0).unwrap();
        let r = next_data_in_file(&f, 0, 5000).unwrap().unwrap();
        assert_eq!(r, 0..5000);
        assert_eq!(next_data_in_file(&f, 5000, 5000).unwrap(), None);
    }
}
