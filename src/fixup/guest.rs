//! The few file operations that inspection and fix-ups need on a guest
//! filesystem, behind one small trait: the host kernel's mount
//! ([`super::mount::Mounted`]) and the EFI system partition through a FAT
//! library ([`super::esp::Esp`]) implement it; a userspace or libguestfs
//! backend for hosts without loop devices would too.
//!
//! Paths are absolute guest paths. Nothing is ever deleted: a file to
//! remove is renamed, so its original stays in the guest.

use super::Error;

/// A guest filesystem as fix-ups see it.
pub trait GuestFs {
    /// A regular file's contents; `None` when it does not exist or is not a regular file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error>;
    /// The names in a directory, sorted; empty when it does not exist.
    fn list(&self, path: &str) -> Result<Vec<String>, Error>;
    /// True when something exists at `path`.
    fn exists(&self, path: &str) -> Result<bool, Error>;
    /// Replaces a file's contents, keeping its mode, or creates it with `mode`.
    fn write(&self, path: &str, data: &[u8], mode: u32) -> Result<(), Error>;
    /// Renames a file within its directory.
    fn rename(&self, from: &str, to_name: &str) -> Result<(), Error>;

    /// A text file, lossily decoded; `None` when it does not exist.
    fn read_text(&self, path: &str) -> Result<Option<String>, Error> {
        Ok(self
            .read(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// A guest filesystem in memory, files by path and directories implied:
/// what the unit tests and the fuzz targets run inspection and fix-ups on.
#[derive(Default)]
pub struct MemGuest(pub std::cell::RefCell<std::collections::BTreeMap<String, Vec<u8>>>);

impl GuestFs for MemGuest {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.borrow().get(path).cloned())
    }

    fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let dir = format!("{}/", path.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .0
            .borrow()
            .keys()
            .filter_map(|k| k.strip_prefix(&dir))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &str) -> Result<bool, Error> {
        Ok(self.read(path)?.is_some() || !self.list(path)?.is_empty())
    }

    fn write(&self, path: &str, data: &[u8], _mode: u32) -> Result<(), Error> {
        self.0.borrow_mut().insert(path.to_owned(), data.to_vec());
        Ok(())
    }

    fn rename(&self, from: &str, to_name: &str) -> Result<(), Error> {
        let dir = from.rsplit_once('/').map_or("", |(d, _)| d);
        let mut files = self.0.borrow_mut();
        let data = files
            .remove(from)
            .ok_or_else(|| Error::Guest(format!("{from} does not exist in the guest")))?;
        files.insert(format!("{dir}/{to_name}"), data);
        Ok(())
    }
}
