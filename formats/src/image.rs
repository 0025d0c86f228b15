//! Opening an image of any supported format, detected from its contents.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::disk::Disk;
use crate::raw::{read_exact_at, RawImage};
use crate::vhd::footer::{COOKIE, FOOTER_SIZE};
use crate::vhd::{DiskType, DynamicVhd, FixedVhd, Footer};
use crate::{Error, Result};

/// The image formats this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A raw disk image or block device.
    Raw,
    /// A fixed VHD.
    VhdFixed,
    /// A dynamic VHD.
    VhdDynamic,
}

impl Format {
    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::VhdFixed => "vhd-fixed",
            Format::VhdDynamic => "vhd-dynamic",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How to open an image.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Open a VHD whose footer checksum is wrong (for recovery only).
    pub accept_bad_checksum: bool,
    /// Read the file as raw even when it ends with a VHD footer.
    pub force_raw: bool,
}

/// Refuses a file that is neither a regular file nor a block device.
fn check_kind(file: &File) -> Result<()> {
    let kind = file
        .metadata()
        .map_err(|e| Error::io("reading the image's metadata", e))?
        .file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(Error::invalid(
            "image",
            "it is not a regular file or a block device",
        ));
    }
    Ok(())
}

/// Opens the image or block device at `path` for reading, refusing
/// anything else (a FIFO, a socket, a character device, a directory)
/// *before* reading: the open itself does not block, so a FIFO given by
/// mistake is an error at once rather than a process waiting forever for a
/// writer. Reads on the file returned block as usual.
pub fn open_input(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::io("opening the image", e))?;
    check_kind(&file)?;
    // O_NONBLOCK was for the open only.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: fcntl on a descriptor this function owns, with flag arguments only.
    let cleared = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) >= 0
    };
    if !cleared {
        return Err(Error::io(
            "opening the image",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file)
}

/// An opened image of any supported format.
///
/// ```no_run
/// use diskformats::{Disk, Image, OpenOptions};
/// let img = Image::open("disk.vhd", &OpenOptions::default())?;
/// println!("{} of {} bytes", img.format(), img.size());
/// # Ok::<(), diskformats::Error>(())
/// ```
#[derive(Debug)]
pub enum Image {
    /// Raw image or block device.
    Raw(RawImage),
    /// Fixed VHD.
    Fixed(FixedVhd),
    /// Dynamic VHD.
    Dynamic(DynamicVhd),
}

impl Image {
    /// Opens the file at `path` and detects its format. It is read with
    /// plain positional reads.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Image> {
        let file = open_input(path.as_ref())?;
        Image::detect(file, opts, false)
    }

    /// The same, with a raw image's or fixed VHD's data memory-mapped, so
    /// that [`Disk::slice_at`] lends bytes without a copy.
    ///
    /// # Safety
    ///
    /// No process may write or truncate the file while the image is open
    /// (see [`RawImage::new_mapped`]).
    pub unsafe fn open_mapped(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Image> {
        let file = open_input(path.as_ref())?;
        Image::detect(file, opts, true)
    }

    /// Detects the format of an open file: a VHD when it ends with a footer
    /// cookie, raw otherwise.
    pub fn from_file(file: File, opts: &OpenOptions) -> Result<Image> {
        Image::detect(file, opts, false)
    }

    fn detect(file: File, opts: &OpenOptions, map: bool) -> Result<Image> {
        check_kind(&file)?;
        // Mapped only once the format is known: a VHD's footer is not data.
        let raw = RawImage::new(file)?;
        let len = raw.size();
        let as_raw = |raw: RawImage| RawImage::with_size(raw.into_file(), len, map);
        if opts.force_raw || len < FOOTER_SIZE as u64 {
            return Ok(Image::Raw(as_raw(raw)));
        }
        let mut fb = [0u8; FOOTER_SIZE];
        read_exact_at(raw.file(), &mut fb, len - FOOTER_SIZE as u64)?;
        if fb[..8] != COOKIE {
            // A dynamic VHD starts with a copy of its footer: one that lost its
            // end must not pass for a raw disk.
            let mut head = [0u8; FOOTER_SIZE];
            read_exact_at(raw.file(), &mut head, 0)?;
            if Footer::parse(&head).is_ok_and(|f| f.disk_type == DiskType::Dynamic) {
                return Err(Error::truncated(
                    "the file starts like a dynamic VHD but has no footer at its end (read it as raw only if you know it is one)",
                ));
            }
            return Ok(Image::Raw(as_raw(raw)));
        }
        let footer = if opts.accept_bad_checksum {
            Footer::parse_ignoring_checksum(&fb)?
        } else {
            Footer::parse(&fb)?
        };
        let file = raw.into_file();
        match footer.disk_type {
            DiskType::Fixed => Ok(Image::Fixed(FixedVhd::open(file, len, footer, map)?)),
            DiskType::Dynamic => Ok(Image::Dynamic(DynamicVhd::with_footer(file, len, footer)?)),
            other => Err(Error::UnsupportedDiskType(other.to_u32())),
        }
    }

    /// The detected format.
    pub fn format(&self) -> Format {
        match self {
            Image::Raw(_) => Format::Raw,
            Image::Fixed(_) => Format::VhdFixed,
            Image::Dynamic(_) => Format::VhdDynamic,
        }
    }

    /// The VHD footer, for VHD images.
    pub fn footer(&self) -> Option<&Footer> {
        match self {
            Image::Raw(_) => None,
            Image::Fixed(v) => Some(v.footer()),
            Image::Dynamic(v) => Some(v.footer()),
        }
    }

    fn disk(&self) -> &dyn Disk {
        match self {
            Image::Raw(d) => d,
            Image::Fixed(d) => d,
            Image::Dynamic(d) => d,
        }
    }
}

impl Disk for Image {
    fn size(&self) -> u64 {
        self.disk().size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.disk().read_at(buf, offset)
    }
    fn next_data(&self, offset: u64) -> Result<Option<Range<u64>>> {
        self.disk().next_data(offset)
    }
    fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.disk().slice_at(offset, len)
    }
    fn release(&self, offset: u64, len: usize) {
        self.disk().release(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn detects_raw_and_refuses_bad_checksums() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(1 << 20).unwrap();
        let img = Image::open(tmp.path(), &OpenOptions::default()).unwrap();
        assert_eq!(img.format(), Format::Raw);

        let mut footer = Footer::new(DiskType::Fixed, 1 << 20).to_bytes();
        footer[100] = 1; // reserved byte: the checksum no longer matches
        tmp.as_file().write_all_at(&footer, 1 << 20).unwrap();
        let err = Image::open(tmp.path(), &OpenOptions::default()).unwrap_err();
        assert!(matches!(err, Error::FooterChecksum { .. }), "{err}");
        let opts = OpenOptions {
            accept_bad_checksum: true,
            ..Default::default()
        };
        assert_eq!(
            Image::open(tmp.path(), &opts).unwrap().format(),
            Format::VhdFixed
        );
        let raw = OpenOptions {
            force_raw: true,
            ..Default::default()
        };
        assert_eq!(
            Image::open(tmp.path(), &raw).unwrap().size(),
            (1 << 20) + 512
        );
    }

    #[test]
    fn directories_and_headless_dynamic_vhds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Image::open(dir.path(), &OpenOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let tmp = tempfile::NamedTempFile::new().unwrap();
        let w = crate::vhd::DynamicVhdWriter::create(tmp.reopen().unwrap(), 8 << 20).unwrap();
        w.write_at(&[1; 512], 0).unwrap();
        w.finish().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let err = Image::open(tmp.path(), &OpenOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        let raw = OpenOptions {
            force_raw: true,
            ..Default::default()
        };
        assert_eq!(Image::open(tmp.path(), &raw).unwrap().format(), Format::Raw);
    }

    #[test]
    fn short_and_odd_sized_files_never_panic() {
        for len in [0u64, 1, 511, 512, 513, 1000] {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            tmp.as_file().set_len(len).unwrap();
            if len >= 512 {
                let mut f = Footer::new(DiskType::Fixed, 1 << 20).to_bytes();
                f[..8].copy_from_slice(b"conectix");
                tmp.as_file().write_all_at(&f, len - 512).unwrap();
            }
            // A footer that claims more data than the file holds is an error, not a panic.
            let r = Image::open(tmp.path(), &OpenOptions::default());
            if len >= 512 {
                assert!(matches!(r, Err(Error::Truncated { .. })), "{len}: {r:?}");
            } else {
                assert_eq!(r.unwrap().size(), len);
            }
        }
    }
}
