//! A guest filesystem mounted through the host kernel: one partition of an
//! image attached as its own loop device (offset and size limit: `losetup
//! -P` makes no partition nodes on some hosts), mounted nosuid,nodev,noexec,
//! read-only without journal replay for inspection. Guest paths are resolved
//! inside the guest root (openat2 RESOLVE_IN_ROOT), so no guest symlink can
//! reach a host file. Unmounted and detached on drop, panics included.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use super::guest::GuestFs;
use super::probe::FsKind;
use super::Error;

/// Times a guest path lookup is retried when the kernel reports a race (EAGAIN).
const OPEN_RETRIES: u32 = 500;

/// Largest guest file read whole (initramfs images included).
pub const MAX_READ: u64 = 512 << 20;

/// Checks that this host can mount guests: root and loop devices.
pub fn check_host() -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Host(
            "inspecting or fixing up a guest mounts its filesystems, which needs root: run it with sudo".into(),
        ));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(Error::Host(
            "this host has no loop devices (/dev/loop-control); run on a host that has them (modprobe loop)"
                .into(),
        ));
    }
    Ok(())
}

/// A failed file operation on the mounted guest filesystem.
fn guest_io(action: &'static str, path: &str, source: std::io::Error) -> Error {
    Error::GuestIo {
        action,
        path: path.to_owned(),
        place: super::IN_GUEST,
        source,
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, Error> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        tool: what.to_owned(),
        source,
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: Vec<&str> = err.split_whitespace().collect();
        return Err(Error::Mount(format!("{what} failed: {}", err.join(" "))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits (up to ten seconds) until no ntfs-3g process serves `dev`: a FUSE
/// unmount returns before the daemon has written its last metadata and
/// closed the device.
fn wait_for_fuse(dev: &str) {
    let serving = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("ntfs-3g") && c.split('\0').any(|a| a == dev)
                })
            })
    };
    for _ in 0..200 {
        if !serving() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// True when `tool` is an executable on PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// True when the filesystem mounted at `dir` is read-only.
fn is_read_only(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return true;
    };
    // SAFETY: a valid C string and a zeroed out-struct of the right type.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) != 0 || st.f_flag & libc::ST_RDONLY != 0
    }
}

/// A guest filesystem mounted read-only.
pub struct Mounted {
    fstype: FsKind,
    loop_dev: String,
    /// What the kernel says backs our loop device (file and offset), so
    /// that a detach retried later never hits a device another process
    /// has attached since.
    attached: Option<(String, String)>,
    dir: Option<tempfile::TempDir>,
    mounted: bool,
    root: Option<OwnedFd>,
    /// Guest paths a read found to be something other than a regular file
    /// (a FIFO, socket or device), with what they are: read as absent.
    odd: std::sync::Mutex<Vec<(String, &'static str)>>,
}

/// What a file type is called in findings.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// The backing file and offset the kernel reports for loop device `dev`.
fn backing_of(dev: &str) -> Option<(String, String)> {
    let name = dev.rsplit('/').next().unwrap_or_default();
    let sys = Path::new("/sys/block").join(name).join("loop");
    let file = std::fs::read_to_string(sys.join("backing_file")).ok()?;
    let offset = std::fs::read_to_string(sys.join("offset")).unwrap_or_default();
    Some((file.trim().to_owned(), offset.trim().to_owned()))
}

impl Mounted {
    /// Attaches `size` bytes at `offset` of `image` and mounts them as
    /// `fstype`, read-only and without replaying a journal.
    pub fn read_only(
        image: &Path,
        offset: u64,
        size: u64,
        fstype: FsKind,
    ) -> Result<Mounted, Error> {
        Mounted::mount(image, offset, size, fstype, false)
    }

    /// The same, read-write: the journal replays, as at boot.
    pub fn read_write(
        image: &Path,
        offset: u64,
        size: u64,
        fstype: FsKind,
    ) -> Result<Mounted, Error> {
        Mounted::mount(image, offset, size, fstype, true)
    }

    fn mount(
        image: &Path,
        offset: u64,
        size: u64,
        fstype: FsKind,
        writable: bool,
    ) -> Result<Mounted, Error> {
        let opts = match (fstype, writable) {
            (FsKind::Ext4, false) => "ro,noload,nosuid,nodev,noexec",
            (FsKind::Xfs, false) => "ro,norecovery,nosuid,nodev,noexec",
            (FsKind::Btrfs, false) => "ro,rescue=nologreplay,nosuid,nodev,noexec",
            (FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs, true) => "rw,nosuid,nodev,noexec",
            // ntfs-3g (FUSE): read-only never writes the volume; read-write
            // is only asked for once inspection found no hibernation, and
            // checked below, since ntfs-3g falls back to read-only by itself.
            (FsKind::Ntfs, false) => "ro,nosuid,nodev,noexec",
            (FsKind::Ntfs, true) => "rw,nosuid,nodev,noexec",
            (other, _) => {
                return Err(Error::Mount(format!(
                    "{other} filesystems are not mounted here"
                )))
            }
        };
        if fstype == FsKind::Ntfs && !on_path("ntfs-3g") {
            return Err(Error::Host(
                "NTFS volumes are mounted with ntfs-3g, which is not installed: apt-get install ntfs-3g".into(),
            ));
        }
        let (offset, size) = (offset.to_string(), size.to_string());
        let mut args = vec![
            "--find",
            "--show",
            "--offset",
            &offset,
            "--sizelimit",
            &size,
        ];
        if !writable {
            args.push("--read-only");
        }
        let loop_dev = run(Command::new("losetup").args(&args).arg(image), "losetup")?;
        let mut m = Mounted {
            fstype,
            attached: backing_of(&loop_dev),
            loop_dev,
            dir: None,
            mounted: false,
            root: None,
            odd: std::sync::Mutex::new(Vec::new()),
        };
        let dir = tempfile::Builder::new()
            .prefix("ebs2azure-guest-")
            .tempdir()
            .map_err(|source| Error::HostIo {
                action: "make a mount point".into(),
                source,
            })?;
        // NTFS goes through ntfs-3g's own mount helper.
        let driver = match fstype {
            FsKind::Ntfs => "ntfs-3g",
            other => other.name(),
        };
        run(
            Command::new("mount")
                .args(["-t", driver, "-o", opts, &m.loop_dev])
                .arg(dir.path()),
            "mount",
        )?;
        m.mounted = true;
        let cpath = CString::new(dir.path().as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Host("mount point path has a NUL".into()))?;
        let read_only = writable && is_read_only(dir.path());
        // Set before any early return: dropping `m` unmounts and detaches.
        m.dir = Some(dir);
        if read_only {
            return Err(Error::Mount(format!(
                "the {fstype} filesystem was mounted read-only although read-write was asked for (hibernated or unclean); nothing was changed"
            )));
        }
        // SAFETY: a valid C string and flags; the result is checked.
        let fd = unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::HostIo {
                action: "open the mount point".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        m.root = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(m)
    }

    /// Opens `path` inside the guest (absolute guest paths; `..` and
    /// symlinks cannot leave the guest root); `None` when it does not exist.
    fn open(&self, path: &str, flags: i32) -> Result<Option<OwnedFd>, Error> {
        // Every guest step starts here: an interrupt stops the work between two.
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| Error::Host("the guest is not mounted".into()))?;
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let c = CString::new(rel).map_err(|_| Error::Guest(format!("bad guest path {path:?}")))?;
        // SAFETY: open_how is plain data; all-zero is its "nothing asked" value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        // Never waits: a FIFO (or a device) in the guest opens at once and
        // is then refused for not being a regular file, instead of hanging
        // the run until a writer shows up. (O_PATH takes no other flags.)
        let nonblock = if flags & libc::O_PATH != 0 {
            0
        } else {
            libc::O_NONBLOCK
        };
        how.flags = (flags | nonblock | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
        // A ".." (a relative guest symlink such as /etc/os-release) gives
        // EAGAIN when any mount or rename on the host races the lookup:
        // the kernel asks for a retry. Bounded: a few hundred tries, 1 ms apart.
        let mut attempts = 0;
        let fd = loop {
            // SAFETY: openat2 with a valid dirfd, C string and open_how of the size passed.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            let again =
                fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
            if !again || attempts >= OPEN_RETRIES {
                break fd;
            }
            attempts += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
                _ => Err(guest_io("open", path, e)),
            };
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// The guest directory holding `path`, and the last component's name.
    fn parent(&self, path: &str) -> Result<(OwnedFd, CString), Error> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() || name == "." || name == ".." {
            return Err(Error::Guest(format!("bad guest path {path:?}")));
        }
        let fd = self
            .open(
                if dir.is_empty() { "/" } else { dir },
                libc::O_PATH | libc::O_DIRECTORY,
            )?
            .ok_or_else(|| {
                Error::Guest(format!(
                    "the directory of {path} does not exist in the guest"
                ))
            })?;
        let name =
            CString::new(name).map_err(|_| Error::Guest(format!("bad guest path {path:?}")))?;
        Ok((fd, name))
    }

    /// Unmounts, checks the filesystem (e2fsck -fn, xfs_repair -n or btrfs check --readonly), and detaches.
    pub fn finish(mut self) -> Result<(), Error> {
        self.root = None;
        if let Some(dir) = &self.dir {
            run(Command::new("umount").arg(dir.path()), "umount")?;
        }
        self.mounted = false;
        if self.fstype == FsKind::Ntfs {
            wait_for_fuse(&self.loop_dev);
        }
        let check = match self.fstype {
            FsKind::Ext4 => Some(("e2fsck", vec!["-f", "-n"])),
            FsKind::Xfs => Some(("xfs_repair", vec!["-n"])),
            FsKind::Btrfs => Some(("btrfs", vec!["check", "--readonly"])),
            FsKind::Ntfs => Some(("ntfsfix", vec!["--no-action"])),
            FsKind::Vfat | FsKind::Swap | FsKind::LvmMember | FsKind::Unknown => None,
        };
        if let Some((tool, args)) = check {
            run(Command::new(tool).args(&args).arg(&self.loop_dev), tool).map_err(|e| {
                Error::Mount(format!(
                    "the filesystem does not check clean after the changes: {e}"
                ))
            })?;
        }
        Ok(())
    }
}

impl Mounted {
    /// Remembers that `path` is `kind`, not a regular file (each path once,
    /// at most 64 of them: a bounded list).
    fn note_odd(&self, path: &str, kind: &'static str) {
        let mut odd = self
            .odd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if odd.len() < 64 && !odd.iter().any(|(p, _)| p == path) {
            odd.push((path.to_owned(), kind));
        }
    }

    /// Advice for each guest file a read found to be a FIFO, socket or
    /// device: it was read as absent, never opened for data (which could
    /// wait for ever), and never edited.
    pub fn odd_files(&self) -> Vec<super::Finding> {
        let odd = self.odd.lock().map(|o| o.clone()).unwrap_or_default();
        odd.into_iter()
            .map(|(path, kind)| super::Finding {
                class: super::Class::Advice,
                subject: path.clone(),
                message: format!(
                    "{path} is {kind}, not a regular file; it was read as absent and is left alone: make it a regular file if the guest needs its settings"
                ),
            })
            .collect()
    }
}

impl GuestFs for Mounted {
    /// The contents of a guest file, or `None` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(fd) = self.open(path, libc::O_RDONLY)? else {
            return Ok(None);
        };
        let f = File::from(fd);
        let meta = f.metadata().map_err(|e| guest_io("stat", path, e))?;
        if !meta.is_file() {
            // A directory read as a file is just absent; anything else is said.
            if !meta.is_dir() {
                self.note_odd(path, kind_of(meta.file_type()));
            }
            return Ok(None);
        }
        let mut buf = Vec::new();
        f.take(MAX_READ)
            .read_to_end(&mut buf)
            .map_err(|e| guest_io("read", path, e))?;
        Ok(Some(buf))
    }

    /// The names in a guest directory, sorted; empty when it does not exist.
    fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let Some(fd) = self.open(path, libc::O_RDONLY | libc::O_DIRECTORY)? else {
            return Ok(Vec::new());
        };
        // Our own descriptor, already resolved inside the guest.
        let dir = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| guest_io("list", path, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Replaces (or creates) a guest file atomically: the new content is
    /// written beside it, synced, renamed over it and the directory synced,
    /// so a crash leaves the old file or the new one, never half of either.
    /// The old file's mode and owner are kept. A symlink is not followed
    /// (refused). A file with other hard links is replaced under this name
    /// only: its other names keep the old content, and the log says so.
    fn write(&self, path: &str, data: &[u8], mode: u32) -> Result<(), Error> {
        use std::io::Write;
        let (dir, name) = self.parent(path)?;
        let err = |e: std::io::Error| guest_io("write", path, e);
        // SAFETY: stat is plain data; fstatat fills it or fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid dirfd, C string and stat buffer.
        let found = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } == 0;
        let old = if found {
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(Error::Guest(format!(
                    "{path} is not a regular file in the guest; it is left alone"
                )));
            }
            if st.st_nlink > 1 {
                tracing::warn!(
                    "{path} has {} hard links; it is replaced under this name, and its other names keep the old content",
                    st.st_nlink
                );
            }
            Some((st.st_mode & 0o7777, st.st_uid, st.st_gid))
        } else {
            None
        };
        let tmp_name = format!(".{}.ebs2azure-new", name.to_string_lossy());
        let tmp = CString::new(tmp_name.clone())
            .map_err(|_| Error::Guest(format!("bad guest path {path:?}")))?;
        let open_tmp = || {
            // SAFETY: valid dirfd and C string; the result is checked.
            unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            }
        };
        let mut fd = open_tmp();
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            // Left by a run that crashed before its rename: never anyone's file.
            // SAFETY: valid dirfd and C string.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
            fd = open_tmp();
        }
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let mut f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let (want_mode, owner) = match old {
            Some((m, uid, gid)) => (m, Some((uid, gid))),
            None => (mode & 0o7777, None),
        };
        let written = (|| -> std::io::Result<()> {
            f.write_all(data)?;
            // ntfs-3g keeps no POSIX modes or owners: nothing to keep there.
            if self.fstype != FsKind::Ntfs {
                // SAFETY: fchmod/fchown on a descriptor we own.
                if unsafe { libc::fchmod(f.as_raw_fd(), want_mode as libc::mode_t) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some((uid, gid)) = owner {
                    // SAFETY: as above.
                    if unsafe { libc::fchown(f.as_raw_fd(), uid, gid) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            f.sync_all()
        })();
        let renamed = written.and_then(|()| {
            // SAFETY: valid dirfds and C strings; the result is checked.
            let rc = unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        if let Err(e) = renamed {
            // SAFETY: valid dirfd and C string.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
            return Err(err(e));
        }
        // The rename is durable once the directory is.
        let dot = CString::new(".").map_err(|_| Error::Guest("bad path".into()))?;
        // SAFETY: valid dirfd and C string; the result is checked.
        let dfd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                dot.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dfd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: dfd is a fresh descriptor we own.
        File::from(unsafe { OwnedFd::from_raw_fd(dfd) })
            .sync_all()
            .map_err(err)
    }

    /// Renames a guest file within its directory.
    fn rename(&self, from: &str, to_name: &str) -> Result<(), Error> {
        let (dir, name) = self.parent(from)?;
        let to =
            CString::new(to_name).map_err(|_| Error::Guest(format!("bad name {to_name:?}")))?;
        // SAFETY: valid dirfd and C strings; the result is checked.
        let rc =
            unsafe { libc::renameat(dir.as_raw_fd(), name.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
        if rc != 0 {
            return Err(guest_io("rename", from, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// True when a guest path exists (file, directory or other).
    fn exists(&self, path: &str) -> Result<bool, Error> {
        Ok(self.open(path, libc::O_PATH)?.is_some())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.root = None;
        if self.mounted {
            if let Some(dir) = &self.dir {
                let ok = Command::new("umount")
                    .arg(dir.path())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    // Busy: detach lazily rather than leave it behind.
                    let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
                }
                if self.fstype == FsKind::Ntfs {
                    wait_for_fuse(&self.loop_dev);
                }
            }
        }
        // Detaching may be refused while something (udev's probe, the lazy
        // unmount) still holds the device: try again for up to two seconds,
        // while the kernel still shows our backing file there (once it is
        // gone the device may be someone else's, and is left alone).
        for attempt in 0..100 {
            if self.attached.is_none() || backing_of(&self.loop_dev) != self.attached {
                break;
            }
            if attempt % 10 == 0 {
                let _ = Command::new("losetup")
                    .args(["-d", &self.loop_dev])
                    .status();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
