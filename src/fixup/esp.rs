//! The EFI system partition, read and edited through a pure-Rust FAT
//! library: the host kernel may lack vfat, and FAT has no journal to
//! replay. Guest paths are the partition's own (`/EFI/debian/grub.cfg`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::guest::GuestFs;
use super::mount::MAX_READ;
use super::Error;

/// One partition of an image file, as a stream of its own.
struct Slice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Slice {
    /// Bytes from `pos` to the end of the partition, at most `want`.
    fn room(&self, want: usize) -> usize {
        self.len.saturating_sub(self.pos).min(want as u64) as usize
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Slice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::other("write past the end of the partition"));
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.file.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// An EFI system partition opened for reading or editing.
pub struct Esp {
    fs: fatfs::FileSystem<Slice>,
}

impl std::fmt::Debug for Esp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Esp").finish_non_exhaustive()
    }
}

fn guest_err(action: &'static str, path: &str, source: io::Error) -> Error {
    Error::GuestIo {
        action,
        path: path.to_owned(),
        place: super::ON_ESP,
        source,
    }
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl Esp {
    /// Opens the FAT filesystem in `size` bytes at `start` of `image`.
    pub fn open(image: &Path, start: u64, size: u64, writable: bool) -> Result<Esp, Error> {
        let shown = image.display();
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(image)
            .map_err(|source| Error::HostIo {
                action: format!("open {shown}"),
                source,
            })?;
        let slice = Slice {
            file,
            start,
            len: size,
            pos: 0,
        };
        let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new()).map_err(|source| {
            Error::NotFat {
                image: shown.to_string(),
                source,
            }
        })?;
        Ok(Esp { fs })
    }

    /// Writes the filesystem's bookkeeping back and flushes it to the image.
    pub fn finish(self) -> Result<(), Error> {
        self.fs
            .unmount()
            .map_err(|e| guest_err("finish", "the filesystem", e))
    }

    fn dir_of<'a>(&'a self, path: &'a str) -> Result<(fatfs::Dir<'a, Slice>, &'a str), Error> {
        let (dir, name) = rel(path).rsplit_once('/').unwrap_or(("", rel(path)));
        let root = self.fs.root_dir();
        let d = if dir.is_empty() {
            root
        } else {
            root.open_dir(dir).map_err(|e| guest_err("open", path, e))?
        };
        Ok((d, name))
    }
}

impl GuestFs for Esp {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut f = match self.fs.root_dir().open_file(rel(path)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // A directory of that name is not a file.
            Err(e) if e.kind() == io::ErrorKind::Other => return Ok(None),
            Err(e) => return Err(guest_err("read", path, e)),
        };
        let mut buf = Vec::new();
        (&mut f)
            .take(MAX_READ)
            .read_to_end(&mut buf)
            .map_err(|e| guest_err("read", path, e))?;
        Ok(Some(buf))
    }

    fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let root = self.fs.root_dir();
        let dir = if rel(path).is_empty() {
            root
        } else {
            match root.open_dir(rel(path)) {
                Ok(d) => d,
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut names = Vec::new();
        for e in dir.iter() {
            let name = e.map_err(|e| guest_err("list", path, e))?.file_name();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &str) -> Result<bool, Error> {
        let root = self.fs.root_dir();
        Ok(rel(path).is_empty()
            || root.open_file(rel(path)).is_ok()
            || root.open_dir(rel(path)).is_ok())
    }

    fn write(&self, path: &str, data: &[u8], _mode: u32) -> Result<(), Error> {
        let (dir, name) = self.dir_of(path)?;
        let mut f = dir
            .create_file(name)
            .map_err(|e| guest_err("write", path, e))?;
        f.truncate()
            .and_then(|()| f.write_all(data))
            .and_then(|()| f.flush())
            .map_err(|e| guest_err("write", path, e))
    }

    fn rename(&self, from: &str, to_name: &str) -> Result<(), Error> {
        let (dir, name) = self.dir_of(from)?;
        dir.rename(name, &dir, to_name)
            .map_err(|e| guest_err("rename", from, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 MiB head, then a 34 MiB FAT partition, formatted by the library.
    fn image_with_esp() -> (tempfile::NamedTempFile, u64, u64) {
        let (start, size) = (1u64 << 20, 34u64 << 20);
        let img = tempfile::NamedTempFile::new().unwrap();
        img.as_file().set_len(start + size + (1 << 20)).unwrap();
        let file = img.reopen().unwrap();
        let slice = Slice {
            file,
            start,
            len: size,
            pos: 0,
        };
        fatfs::format_volume(slice, fatfs::FormatVolumeOptions::new()).unwrap();
        (img, start, size)
    }

    #[test]
    fn files_are_written_read_listed_and_renamed_inside_the_partition() {
        let (img, start, size) = image_with_esp();
        let outside = {
            let mut head = vec![0u8; start as usize];
            File::open(img.path())
                .unwrap()
                .read_exact(&mut head)
                .unwrap();
            head
        };
        let esp = Esp::open(img.path(), start, size, true).unwrap();
        esp.fs.root_dir().create_dir("EFI").unwrap();
        esp.fs.root_dir().create_dir("EFI/debian").unwrap();
        let cfg = "/EFI/debian/grub.cfg";
        assert_eq!(esp.read(cfg).unwrap(), None);
        esp.write(cfg, b"linux /vmlinuz root=UUID=r ro\n", 0o644)
            .unwrap();
        esp.write(cfg, b"short\n", 0o644).unwrap();
        assert_eq!(esp.read(cfg).unwrap().as_deref(), Some(&b"short\n"[..]));
        esp.rename(cfg, "grub.cfg.ebs2azure-orig").unwrap();
        assert!(!esp.exists(cfg).unwrap());
        assert_eq!(
            esp.list("/EFI/debian").unwrap(),
            vec!["grub.cfg.ebs2azure-orig".to_owned()]
        );
        assert_eq!(esp.list("/EFI/none").unwrap(), Vec::<String>::new());
        assert_eq!(esp.read("/EFI").unwrap(), None, "a directory is not a file");
        esp.finish().unwrap();

        // Read back through a fresh, read-only open; nothing outside the partition moved.
        let esp = Esp::open(img.path(), start, size, false).unwrap();
        assert_eq!(
            esp.read_text("/EFI/debian/grub.cfg.ebs2azure-orig")
                .unwrap()
                .as_deref(),
            Some("short\n")
        );
        drop(esp);
        let mut head = vec![0u8; start as usize];
        File::open(img.path())
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(head, outside);
    }

    #[test]
    fn a_partition_without_fat_is_refused_in_one_sentence() {
        let img = tempfile::NamedTempFile::new().unwrap();
        img.as_file().set_len(4 << 20).unwrap();
        let e = Esp::open(img.path(), 1 << 20, 2 << 20, false).unwrap_err();
        assert!(
            e.to_string().contains("not a readable FAT filesystem"),
            "{e}"
        );
    }
}
