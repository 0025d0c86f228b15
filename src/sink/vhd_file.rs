//! A local image file as a sink: a fixed VHD (Azure's format), a dynamic VHD
//! or a raw image, written sparse under a temporary name and renamed into
//! place only when complete.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use diskformats::vhd::{DynamicVhdWriter, FixedVhdWriter};
use diskformats::Format;

use super::{BlockSink, Error};

/// Suffix of the file being written; it is renamed to the final name on success.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Where the image for `path` is written until it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(PARTIAL_SUFFIX);
    PathBuf::from(p)
}

/// Alignment of offset, length and memory that direct I/O needs (the largest
/// logical block size in use); the pipeline's buffers are aligned to it.
pub const DIRECT_IO_ALIGN: usize = super::BUFFER_ALIGN;

/// How to create the output file.
#[derive(Clone, Copy, Debug)]
pub struct FileOptions {
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Flush the data to stable storage before the rename (on by default).
    /// Data then goes to the device with direct I/O where it can: it has to
    /// reach the disk anyway, and this skips filling the page cache with it.
    pub sync: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            overwrite: false,
            sync: true,
        }
    }
}

enum Writer {
    Raw { file: File, size: u64 },
    Fixed(FixedVhdWriter),
    Dynamic(DynamicVhdWriter),
}

/// An image file being written.
///
/// Created owner-readable only (a disk holds the guest's secrets). Dropped
/// without [`VhdFileSink::commit`], it removes its partial file.
pub struct VhdFileSink {
    path: PathBuf,
    partial: PathBuf,
    writer: Option<Writer>,
    /// A second, O_DIRECT descriptor for aligned data writes of images whose
    /// data sits at its virtual offsets (raw and fixed VHD).
    direct: Option<File>,
    size: u64,
    sync: bool,
    committed: bool,
}

impl std::fmt::Debug for VhdFileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdFileSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl VhdFileSink {
    /// Starts writing an image of `size` bytes in `format`, to be found at `path` once committed.
    pub fn create(
        path: &Path,
        format: Format,
        size: u64,
        opts: FileOptions,
    ) -> Result<VhdFileSink, Error> {
        let shown = path.display().to_string();
        match fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_file() && !m.file_type().is_symlink() => {
                return Err(Error::NotAFile(shown));
            }
            Ok(_) if !opts.overwrite => return Err(Error::Exists(shown)),
            _ => {}
        }
        let partial = partial_path(path);
        let io = |action, source| Error::Io {
            action,
            path: partial.display().to_string(),
            source,
        };
        // A partial file left by a killed run is replaced, never trusted.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| io("create", e))?;
        let mut sink = VhdFileSink {
            path: path.to_owned(),
            partial,
            writer: None,
            direct: None,
            size,
            sync: opts.sync,
            committed: false,
        };
        let format_err = |source| Error::Format {
            path: sink.partial.display().to_string(),
            source,
        };
        let writer = match format {
            Format::Raw => {
                file.set_len(size).map_err(|e| Error::Io {
                    action: "size",
                    path: sink.partial.display().to_string(),
                    source: e,
                })?;
                Writer::Raw { file, size }
            }
            Format::VhdFixed => {
                Writer::Fixed(FixedVhdWriter::create(file, size).map_err(format_err)?)
            }
            Format::VhdDynamic => {
                Writer::Dynamic(DynamicVhdWriter::create(file, size).map_err(format_err)?)
            }
        };
        sink.writer = Some(writer);
        if opts.sync && matches!(format, Format::Raw | Format::VhdFixed) {
            // File systems without direct I/O (tmpfs) refuse it: write through the cache there.
            sink.direct = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&sink.partial)
                .ok();
        }
        Ok(sink)
    }

    /// Writes `data` with direct I/O when it is aligned for it; false when the
    /// caller must write it through the page cache instead.
    fn write_direct(&self, offset: u64, data: &[u8]) -> Result<bool, Error> {
        let Some(direct) = &self.direct else {
            return Ok(false);
        };
        let align = DIRECT_IO_ALIGN as u64;
        let aligned = offset.is_multiple_of(align)
            && data.len().is_multiple_of(DIRECT_IO_ALIGN)
            && (data.as_ptr() as usize).is_multiple_of(DIRECT_IO_ALIGN);
        let inside = offset
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= self.size);
        if !aligned || !inside || data.is_empty() {
            return Ok(false);
        }
        match direct.write_all_at(data, offset) {
            Ok(()) => Ok(true),
            // An alignment this file system does not take: use the cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(Error::Io {
                action: "write",
                path: self.partial.display().to_string(),
                source: e,
            }),
        }
    }

    /// The path the image will have once committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes the image (footer, tables), flushes it and renames it into place.
    pub fn commit(mut self) -> Result<PathBuf, Error> {
        let shown = self.partial.display().to_string();
        let format_err = |source| Error::Format {
            path: shown.clone(),
            source,
        };
        let io = |action, source| Error::Io {
            action,
            path: shown.clone(),
            source,
        };
        self.direct = None;
        let file = match self.writer.take() {
            Some(Writer::Raw { file, .. }) => file,
            Some(Writer::Fixed(w)) => w.finish().map_err(format_err)?,
            Some(Writer::Dynamic(w)) => w.finish().map_err(format_err)?,
            None => return Err(io("finish", std::io::Error::other("already finished"))),
        };
        if self.sync {
            file.sync_all().map_err(|e| io("flush", e))?;
        }
        drop(file);
        fs::rename(&self.partial, &self.path).map_err(|e| io("rename", e))?;
        self.committed = true;
        if self.sync {
            let dir = match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            // Make the rename itself durable.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("flush the directory of", e))?;
        }
        Ok(self.path.clone())
    }
}

impl BlockSink for VhdFileSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if self.write_direct(offset, data)? {
            return Ok(());
        }
        let format_err = |source| Error::Format {
            path: self.partial.display().to_string(),
            source,
        };
        match &self.writer {
            Some(Writer::Raw { file, size }) => {
                if offset
                    .checked_add(data.len() as u64)
                    .is_none_or(|end| end > *size)
                {
                    return Err(format_err(diskformats::Error::OutOfRange {
                        offset,
                        len: data.len() as u64,
                        size: *size,
                    }));
                }
                file.write_all_at(data, offset).map_err(|e| Error::Io {
                    action: "write",
                    path: self.partial.display().to_string(),
                    source: e,
                })
            }
            Some(Writer::Fixed(w)) => w.write_at(data, offset).map_err(format_err),
            Some(Writer::Dynamic(w)) => w.write_at(data, offset).map_err(format_err),
            None => Ok(()),
        }
    }
}

impl Drop for VhdFileSink {
    fn drop(&mut self) {
        if !self.committed {
            // Failed or abandoned: nothing that looks complete may stay behind.
            let _ = fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_renames_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("disk.vhd");
        let sink =
            VhdFileSink::create(&out, Format::VhdFixed, 2 << 20, FileOptions::default()).unwrap();
        sink.write_at(4096, &[1; 512]).unwrap();
        let partial = dir.path().join("disk.vhd.partial");
        assert!(partial.exists() && !out.exists());
        let mode = fs::metadata(&partial).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        sink.commit().unwrap();
        assert!(out.exists() && !partial.exists());
        assert_eq!(fs::metadata(&out).unwrap().len(), (2 << 20) + 512);

        // Refuses to replace without overwrite; cleans up when dropped.
        let again = VhdFileSink::create(&out, Format::VhdFixed, 2 << 20, FileOptions::default());
        assert!(matches!(again, Err(Error::Exists(_))));
        let opts = FileOptions {
            overwrite: true,
            ..Default::default()
        };
        let sink = VhdFileSink::create(&out, Format::Raw, 2 << 20, opts).unwrap();
        drop(sink);
        assert!(!partial.exists());
        assert_eq!(
            fs::metadata(&out).unwrap().len(),
            (2 << 20) + 512,
            "old output untouched"
        );
    }

    #[test]
    fn direct_and_cached_writes_land_in_the_same_image() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("disk.raw");
        let sink = VhdFileSink::create(&out, Format::Raw, (1 << 20) + 1000, FileOptions::default())
            .unwrap();
        // Aligned memory and offset: eligible for direct I/O.
        let mut backing = vec![0u8; 3 * DIRECT_IO_ALIGN];
        let start = backing.as_ptr().align_offset(DIRECT_IO_ALIGN);
        let aligned = &mut backing[start..start + DIRECT_IO_ALIGN];
        aligned.fill(0xaa);
        sink.write_at(8192, aligned).unwrap();
        // Unaligned pieces, the short tail, and an overwrite of direct data.
        sink.write_at(100, &[1; 10]).unwrap();
        sink.write_at(1 << 20, &[2; 1000]).unwrap();
        sink.write_at(8192 + 10, &[3; 5]).unwrap();
        assert!(
            sink.write_at((1 << 20) + 999, &[4; 2]).is_err(),
            "past the end"
        );
        sink.commit().unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len(), (1 << 20) + 1000);
        assert_eq!(&bytes[100..110], &[1; 10]);
        assert_eq!(&bytes[8192..8202], &[0xaa; 10]);
        assert_eq!(&bytes[8202..8207], &[3; 5]);
        assert_eq!(&bytes[8207..8192 + 4096], &[0xaa; 4096 - 15][..]);
        assert_eq!(&bytes[1 << 20..], &[2; 1000][..]);
    }

    #[test]
    fn a_refused_size_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("disk.vhd");
        let r = VhdFileSink::create(&out, Format::VhdDynamic, 4 << 40, FileOptions::default());
        assert!(matches!(r, Err(Error::Format { .. })), "{r:?}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_is_not_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let r = VhdFileSink::create(dir.path(), Format::Raw, 1 << 20, FileOptions::default());
        assert!(matches!(r, Err(Error::NotAFile(_))));
    }
}
