//! An existing image file updated in place: a staged OS disk (fixed VHD,
//! its data at its virtual offsets) receiving a delta sync. Writes go to
//! their offsets; cleared ranges become holes (`FALLOC_FL_PUNCH_HOLE`), so
//! the file stays sparse and reads zeros there. The footer past `size` is
//! never touched.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{BlockSink, Error};

/// A file of `size` data bytes, written in place.
#[derive(Debug)]
pub struct InPlaceSink {
    file: File,
    path: PathBuf,
    size: u64,
}

impl InPlaceSink {
    /// Opens `path` for writing its first `size` bytes (a fixed VHD's data).
    pub fn open(path: &Path, size: u64) -> Result<InPlaceSink, Error> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                action: "open",
                path: path.display().to_string(),
                source,
            })?;
        Ok(InPlaceSink {
            file,
            path: path.to_owned(),
            size,
        })
    }

    /// Makes what was written durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(|e| self.io("flush", e))
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: self.path.display().to_string(),
            source,
        }
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), Error> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::Format {
                path: self.path.display().to_string(),
                source: diskformats::Error::OutOfRange {
                    offset,
                    len,
                    size: self.size,
                },
            });
        }
        Ok(())
    }
}

impl BlockSink for InPlaceSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check(offset, data.len() as u64)?;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| self.io("write", e))
    }

    fn clear_at(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.check(offset, len)?;
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(self.io("clear a range of", std::io::ErrorKind::InvalidInput.into()));
        };
        // SAFETY: fallocate on a descriptor this sink owns; no memory is passed.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // A file system without hole punching: write the zeros.
        let zeros = vec![0u8; (len.min(1 << 20)) as usize];
        let mut at = offset;
        while at < offset + len {
            let n = zeros.len().min((offset + len - at) as usize);
            self.file
                .write_all_at(&zeros[..n], at)
                .map_err(|e| self.io("write", e))?;
            at += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn writes_land_in_place_and_clears_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.vhd");
        std::fs::write(&path, vec![7u8; 3 * 4096]).unwrap();
        let sink = InPlaceSink::open(&path, 2 * 4096).unwrap();
        sink.write_at(0, &[1u8; 512]).unwrap();
        sink.clear_at(4096, 4096).unwrap();
        assert!(
            sink.clear_at(4096, 8192).is_err(),
            "the footer is out of reach"
        );
        sink.sync().unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = vec![0u8; 3 * 4096];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 1));
        assert!(buf[512..4096].iter().all(|&b| b == 7));
        assert!(buf[4096..8192].iter().all(|&b| b == 0));
        assert!(buf[8192..].iter().all(|&b| b == 7));
    }
}
