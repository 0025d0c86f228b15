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
