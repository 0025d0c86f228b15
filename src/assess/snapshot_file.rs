//! A snapshot as a file the host kernel reads: a read-only FUSE filesystem
//! holding one file, `disk.raw`, whose bytes are the snapshot's, fetched on
//! demand through a [`SnapshotDisk`] (its block cache bounded in memory).
//! The inspection then loop-mounts the guest's partitions from that file as
//! it would from a copied image, and reads only what it touches.
//!
//! Interop decision: FUSE rather than a userspace block device (NBD, ublk):
//! a FUSE file needs `/dev/fuse` and nothing else (ntfs-3g already relies on
//! it here), where NBD needs a kernel module this machine family may lack
//! and a socket server; and loop devices over a FUSE file behave as over
//! any file. The file is read-only, served to its owner (root) only, and
//! unmounted when the [`SnapshotFile`] is dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use diskformats::Disk;
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, Request,
};

use crate::source::snapshot_disk::SnapshotDisk;

/// The file's name inside the mount.
pub const FILE_NAME: &str = "disk.raw";
/// The file's inode.
const FILE: INodeNo = INodeNo(2);
/// How long the kernel may keep attributes: they never change.
const TTL: Duration = Duration::from_secs(3600);
/// Largest read served at once (the kernel asks for at most 128 KiB).
const MAX_READ: u32 = 1 << 20;

/// A mounted snapshot file; unmounted on drop.
pub struct SnapshotFile {
    session: Option<BackgroundSession>,
    dir: tempfile::TempDir,
}

/// Why the file could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mount point could not be made.
    #[error("cannot make a mount point under {under}: {source}")]
    Dir {
        /// Where.
        under: String,
        /// Why.
        source: std::io::Error,
    },
    /// FUSE refused the mount.
    #[error("cannot mount snapshot {snapshot} as a file through FUSE (/dev/fuse, fusermount3 and root are needed): {source}")]
    Mount {
        /// The snapshot.
        snapshot: String,
        /// Why.
        source: std::io::Error,
    },
}

impl SnapshotFile {
    /// Mounts `disk` as `DIR/disk.raw` in a new directory under `under`.
    pub fn mount(disk: Arc<SnapshotDisk>, under: &Path) -> Result<SnapshotFile, Error> {
        let dir = tempfile::Builder::new()
            .prefix("ebs2azure-snapshot-")
            .tempdir_in(under)
            .map_err(|source| Error::Dir {
                under: under.display().to_string(),
                source,
            })?;
        let snapshot = disk.snapshot().to_owned();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
            MountOption::FSName(format!("ebs2azure:{snapshot}")),
            MountOption::Subtype("ebs2azure".into()),
        ];
        let session = fuser::spawn_mount(SnapshotFs { disk }, dir.path(), &config)
            .map_err(|source| Error::Mount { snapshot, source })?;
        Ok(SnapshotFile {
            session: Some(session),
            dir,
        })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(FILE_NAME)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                tracing::warn!(
                    "unmounting the snapshot file at {}: {e}",
                    self.dir.path().display()
                );
            }
        }
    }
}

/// The filesystem: a root directory with the one file.
struct SnapshotFs {
    disk: Arc<SnapshotDisk>,
}

impl SnapshotFs {
    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o500, 0, 2),
            FILE => (FileType::RegularFile, 0o400, self.disk.size(), 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent, name.to_str()) {
            (INodeNo::ROOT, Some(FILE_NAME)) => match self.attr(FILE) {
                Some(a) => reply.entry(&TTL, &a, fuser::Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            return reply.error(Errno::ENOENT);
        }
        let end = offset
            .saturating_add(u64::from(size.min(MAX_READ)))
            .min(self.disk.size());
        if offset >= end {
            return reply.data(&[]);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        match self.disk.read_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                tracing::warn!("reading {} at {offset}: {e}", self.disk.snapshot());
                reply.error(Errno::EIO)
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
