//! OS disks from EBS to Azure: the snapshot is staged to a local sparse
//! fixed VHD, the guest is fixed up so it boots on Azure, and the VHD is
//! uploaded. Data disks need none of this and stream with no local copy
//! ([`crate::upload::stream`]); [`crate::migrate`] chooses by the disk's role.
//!
//! The staged copy is kept until the upload finishes, so a resume sends
//! the very bytes the disk already partly holds: staging and fixing up again
//! would give other bytes (a remount alone changes the superblock).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::azure::Session;
use crate::convert::{self, Conversion, Input};
use crate::fixup::{self, apply, Class};
use crate::kinds::OsType;
use crate::sink::vhd_file::FileOptions;
use crate::upload::{self, Target};

/// Where the staged copy goes and what to do with it.
#[derive(Clone, Debug)]
pub struct Staging {
    /// Directory for the staged VHD; it needs room for the snapshot's data.
    pub dir: PathBuf,
    /// Keep the staged VHD after a successful upload.
    pub keep: bool,
    /// Upload even when inspection finds the guest will not boot.
    pub allow_blockers: bool,
    /// The machine's other disks, so the guest's fstab mounts them by UUID.
    pub data_disks: Vec<fixup::layout::DataDisk>,
    /// Keep a copy of the staged snapshot as it was before the fix-ups
    /// ([`base_path`]): delta syncs apply their changes there, then fix a
    /// copy of it up again.
    pub base_copy: bool,
}

impl Default for Staging {
    fn default() -> Self {
        Staging {
            dir: PathBuf::from("/var/tmp"),
            keep: false,
            allow_blockers: false,
            data_disks: Vec::new(),
            base_copy: false,
        }
    }
}

/// What a progress callback is told (the upload's steps come through too).
pub use crate::upload::Progress;

/// What an OS-disk migration did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The staged VHD.
    pub staged: String,
    /// True when the staged VHD was kept.
    pub staged_kept: bool,
    /// What staging read, when this run staged (not when it resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staging: Option<convert::Report>,
    /// What the fix-up changed (when resuming: the report of the run that staged).
    pub fixup: apply::Report,
    /// What the upload sent.
    pub upload: upload::Report,
    /// The content digest of the disk as uploaded (see [`crate::digest`]).
    pub digest: String,
    /// The SHA-256 of each non-zero 512 KiB block uploaded, by index: what
    /// the disk holds, for later delta syncs.
    #[serde(skip)]
    pub blocks: std::collections::BTreeMap<u64, String>,
}

/// Why an OS-disk migration stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This host cannot fix guests up (found before anything is fetched).
    #[error("this host cannot fix the guest up: {0}")]
    Host(#[source] fixup::Error),
    /// Staging the snapshot failed.
    #[error("staging failed: {0}")]
    Stage(#[from] convert::Error),
    /// The guest could not be inspected or fixed up.
    #[error("{source}; the staged copy {staged} was removed")]
    Fixup {
        /// The staged VHD.
        staged: String,
        /// What failed.
        source: fixup::Error,
    },
    /// The guest will not boot on Azure.
    #[error("the guest will not boot on Azure: {first}{more}; nothing was uploaded. Fix it on the source and take a new snapshot")]
    Blockers {
        /// The first blocker, in one sentence.
        first: String,
        /// How many more there are, worded.
        more: String,
    },
    /// The upload failed; the staged copy is kept to resume from.
    #[error("{source}; the fixed-up copy stays at {staged} to resume from")]
    Upload {
        /// The staged VHD.
        staged: String,
        /// What failed.
        source: Box<upload::Error>,
    },
    /// The upload failed and `--cleanup` deleted the disk and the staged copy.
    #[error("{0}; the staged copy was removed too")]
    CleanedUp(Box<upload::Error>),
    /// Resuming needs the staged copy of the run that started the upload.
    #[error("resuming needs the fixed-up copy {staged} that the interrupted run left, and it is gone; delete disk {disk} (az disk delete) and start again")]
    NoStagedCopy {
        /// Where it was expected.
        staged: String,
        /// The disk left in its upload state.
        disk: String,
    },
    /// The staged copy is there but its fix-up report cannot be read: nothing
    /// is deleted, since the copy and the disk may still be good.
    #[error("the report {report} of the staged copy {staged} cannot be read ({why}); the staged copy and disk {disk} are kept as they are: restore the report, or delete both and start again")]
    StagedReportUnreadable {
        /// The report's path.
        report: String,
        /// The staged copy.
        staged: String,
        /// The disk left in its upload state.
        disk: String,
        /// What went wrong.
        why: String,
    },
    /// Writing the staged copy's report failed.
    #[error("cannot write the fix-up report in {dir}: {source}")]
    StagingIo {
        /// The staging directory.
        dir: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The staging directory cannot be used.
    #[error("cannot stage in {dir}: {why}")]
    StagingDir {
        /// The directory.
        dir: String,
        /// What is wrong.
        why: String,
    },
}

/// Why another disk of the machine could not be read for the guest's fstab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDiskError {
    /// Its image could not be read.
    #[error("{device}: {source}")]
    Image {
        /// Its EC2 device name.
        device: String,
        /// What failed.
        source: fixup::Error,
    },
    /// Its snapshot could not be read.
    #[error("{device}: {source}")]
    Snapshot {
        /// Its EC2 device name.
        device: String,
        /// What failed.
        source: crate::source::Error,
    },
}

/// Reads another disk of the machine, its EC2 `device` given as an image or
/// a snapshot, for the guest's fstab: its partitions and filesystem UUIDs.
/// A snapshot is read only where partition tables, LVM metadata and
/// superblocks are, under the run's shared `quotas`.
pub fn probe_data_disk(
    device: &str,
    input: &Input,
    ebs: &crate::source::ebs::Settings,
    quotas: std::sync::Arc<crate::source::ebs::Quotas>,
) -> Result<fixup::layout::DataDisk, DataDiskError> {
    use crate::source::{snapshot_disk::SnapshotDisk, EbsSource};
    use fixup::layout::DataDisk;
    match input {
        Input::Image(path) => {
            DataDisk::probe(device, path).map_err(|source| DataDiskError::Image {
                device: device.to_owned(),
                source,
            })
        }
        Input::Snapshot(id) => {
            let src =
                EbsSource::open(id, ebs, quotas).map_err(|source| DataDiskError::Snapshot {
                    device: device.to_owned(),
                    source,
                })?;
            DataDisk::probe_disk(device, &SnapshotDisk::new(src), id).map_err(|source| {
                DataDiskError::Image {
                    device: device.to_owned(),
                    source,
                }
            })
        }
    }
}

/// Where the staged VHD of `snapshot` on its way to disk `disk` lives in
/// `dir` (one per disk, so two migrations of one snapshot do not meet).
pub fn staged_path(dir: &Path, snapshot: &str, disk: &str) -> PathBuf {
    let disk: String = disk
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("ebs2azure-{snapshot}-{disk}.vhd"))
}

/// Where the copy of `staged` before its fix-ups is kept (see
/// [`Staging::base_copy`]).
pub fn base_path(staged: &Path) -> PathBuf {
    staged.with_extension("base.vhd")
}

/// Copies `from` to `to` (created or replaced) keeping its holes: only its
/// data extents are copied, with `copy_file_range` (which file systems
/// that can share extents, XFS and btrfs, do without copying).
pub fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let src = fs::File::open(from)?;
    let len = src.metadata()?.len();
    let _ = fs::remove_file(to);
    // Owner-only, as every staged copy: a disk holds the guest's secrets.
    let dst = std::os::unix::fs::OpenOptionsExt::mode(
        fs::OpenOptions::new().write(true).create_new(true),
        0o600,
    )
    .open(to)?;
    dst.set_len(len)?;
    let (fd_in, fd_out) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a descriptor owned by `src`.
        let start = unsafe { libc::lseek(fd_in, pos, libc::SEEK_DATA) };
        if start < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data past `pos`
            }
            return Err(e);
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd_in, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (start, start);
        while off_in < end {
            let want = (end - off_in).min(1 << 30) as usize;
            // SAFETY: both descriptors are owned here; the offsets are locals.
            let n =
                unsafe { libc::copy_file_range(fd_in, &mut off_in, fd_out, &mut off_out, want, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        pos = end;
    }
    dst.sync_all()
}

fn report_path(staged: &Path) -> PathBuf {
    let mut p = staged.as_os_str().to_owned();
    p.push(".fixup.json");
    PathBuf::from(p)
}

/// Stages `snapshot`, fixes its guest up and uploads it to `target` in `session`.
///
/// An OS disk created without a Hyper-V generation gets the one the guest's
/// boot mode needs.
pub fn stage_and_upload(
    session: &Session,
    snapshot: &str,
    target: &Target,
    opts: &upload::Options,
    staging: &Staging,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, Error> {
    let dir = &staging.dir;
    let dir_err = |why: String| Error::StagingDir {
        dir: dir.display().to_string(),
        why,
    };
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(dir_err("it is not a directory".into())),
        Err(e) => return Err(dir_err(e.to_string())),
    }
    let staged = staged_path(dir, snapshot, &target.disk.name);
    let shown = staged.display().to_string();
    let json = report_path(&staged);
    let (staging_report, fix) = if opts.resume {
        if !staged.is_file() {
            return Err(Error::NoStagedCopy {
                staged: shown,
                disk: target.disk.name.clone(),
            });
        }
        let unreadable = |why: String| Error::StagedReportUnreadable {
            report: json.display().to_string(),
            staged: shown.clone(),
            disk: target.disk.name.clone(),
            why,
        };
        let saved = fs::read(&json).map_err(|e| unreadable(e.to_string()))?;
        let fix: apply::Report =
            serde_json::from_slice(&saved).map_err(|e| unreadable(e.to_string()))?;
        (None, fix)
    } else {
        // Found now, not after the copy.
        fixup::mount::check_host().map_err(Error::Host)?;
        let _ = fs::remove_file(&json);
        tracing::info!(snapshot, "staging the snapshot to a local sparse VHD");
        progress(Progress::Step(
            "staging the snapshot to a local sparse VHD",
            None,
        ));
        let copy_opts = convert::Options {
            ebs: opts.ebs.clone(),
            quotas: opts.quotas.clone(),
            stop: opts.stop.clone(),
            file: FileOptions {
                overwrite: true,
                sync: true,
            },
            ..Default::default()
        };
        let conversion =
            Conversion::prepare(&Input::Snapshot(snapshot.into()), &staged, &copy_opts)?;
        let staged_report = conversion.run(&|n| progress(Progress::Bytes(n)))?;
        if staging.base_copy {
            // Before the fix-ups: where later delta syncs apply their changes.
            copy_sparse(&staged, &base_path(&staged)).map_err(|source| Error::StagingIo {
                dir: dir.display().to_string(),
                source,
            })?;
        }
        tracing::info!(snapshot, "fixing the guest up for Azure");
        progress(Progress::Step("fixing the guest up for Azure", None));
        let fix_opts = apply::FixOptions {
            dry_run: false,
            data_disks: staging.data_disks.clone(),
        };
        let fix = match apply::fixup(&staged, &fix_opts) {
            Ok(f) => f,
            Err(source) => {
                let _ = fs::remove_file(&staged);
                let _ = fs::remove_file(base_path(&staged));
                return Err(Error::Fixup {
                    staged: shown,
                    source,
                });
            }
        };
        let blockers: Vec<&fixup::Finding> = fix.inspection.of_class(Class::Blocker).collect();
        if let Some(first) = blockers.first() {
            if !staging.allow_blockers {
                if !staging.keep {
                    let _ = fs::remove_file(&staged);
                    let _ = fs::remove_file(base_path(&staged));
                }
                return Err(Error::Blockers {
                    first: format!("{}: {}", first.subject, first.message),
                    more: match blockers.len() - 1 {
                        0 => String::new(),
                        n => format!(" (and {n} more: `ebs2azure inspect` lists them)"),
                    },
                });
            }
        }
        let saved = serde_json::to_vec(&fix).map_err(|e| dir_err(e.to_string()))?;
        // Durable before the upload starts: a resume trusts this pair.
        let tmp = json.with_extension("json.partial");
        let io_err = |source| Error::StagingIo {
            dir: dir.display().to_string(),
            source,
        };
        fs::File::create(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &saved)?;
                f.sync_all()
            })
            .and_then(|()| fs::File::open(&staged).and_then(|f| f.sync_all()))
            .and_then(|()| fs::rename(&tmp, &json))
            .and_then(|()| fs::File::open(dir).and_then(|d| d.sync_all()))
            .map_err(io_err)?;
        (Some(staged_report), fix)
    };
    let mut target = target.clone();
    if target.hyper_v_generation.is_none() {
        target.hyper_v_generation = Some(fix.inspection.hyper_v_generation);
    }
    if target.os_type.is_none() {
        target.os_type = Some(if fix.inspection.windows.is_some() {
            OsType::Windows
        } else {
            OsType::Linux
        });
    }
    // The content digest is gathered as the upload reads: no second pass.
    let digest = crate::digest::Collector::default();
    let sent = upload::upload_with(session, &staged, &target, opts, progress, Some(&digest));
    let up = match sent {
        Ok(r) => r,
        Err(source @ upload::Error::CleanedUp { .. }) => {
            // The disk is gone, so nothing can resume from this copy.
            let _ = fs::remove_file(&staged);
            let _ = fs::remove_file(&json);
            return Err(Error::CleanedUp(Box::new(source)));
        }
        Err(source) => {
            return Err(Error::Upload {
                staged: shown,
                source: Box::new(source),
            })
        }
    };
    if !staging.keep {
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_file(&json);
    }
    let digest_hex = digest.digest();
    Ok(Report {
        digest: digest_hex,
        blocks: digest.into_blocks(),
        staged: shown,
        staged_kept: staging.keep,
        staging: staging_report,
        fixup: fix,
        upload: up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_copy_keeps_the_bytes_and_the_holes() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let f = fs::File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        f.write_all_at(&[9u8; 100], (64 << 20) - 100).unwrap();
        drop(f);
        fs::write(&b, b"old").unwrap();
        copy_sparse(&a, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&b).unwrap());
        assert!(blocks * 512 < 4 << 20, "{blocks} blocks: holes were filled");
    }
    use crate::azure::arm::DiskRef;

    fn resume(dir: &Path) -> Result<Report, Error> {
        let target = Target {
            disk: DiskRef {
                subscription: "sub".into(),
                resource_group: "rg".into(),
                name: "web01-os".into(),
            },
            location: None,
            sku: "Premium_LRS".into(),
            os_type: None,
            hyper_v_generation: None,
            zone: None,
            tags: vec![],
            encryption: None,
            data_access: Default::default(),
        };
        let opts = upload::Options {
            resume: true,
            ..Default::default()
        };
        let staging = Staging {
            dir: dir.to_owned(),
            ..Default::default()
        };
        let session = Session::with_tokens(
            &opts.azure,
            std::sync::Arc::new(crate::azure::token::StaticToken::new("t")),
            std::sync::Arc::new(crate::azure::token::StaticToken::new("d")),
        )
        .unwrap();
        stage_and_upload(&session, "snap-0000000a", &target, &opts, &staging, &|_| {})
    }

    #[test]
    fn an_unreadable_report_is_not_told_as_a_gone_copy() {
        let dir = tempfile::tempdir().unwrap();
        // No staged copy at all: it is gone, and the disk must start again.
        assert!(matches!(
            resume(dir.path()),
            Err(Error::NoStagedCopy { .. })
        ));
        // The copy is there, its report is corrupt: both are kept, nothing says delete the copy.
        let staged = staged_path(dir.path(), "snap-0000000a", "web01-os");
        fs::write(&staged, b"vhd").unwrap();
        fs::write(report_path(&staged), b"{ not json").unwrap();
        let e = resume(dir.path()).unwrap_err();
        assert!(matches!(e, Error::StagedReportUnreadable { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("kept") && !text.contains("is gone"), "{text}");
        assert!(staged.is_file() && report_path(&staged).is_file());
        // The report missing is the same case: the copy is kept.
        fs::remove_file(report_path(&staged)).unwrap();
        assert!(matches!(
            resume(dir.path()),
            Err(Error::StagedReportUnreadable { .. })
        ));
        assert!(staged.is_file());
    }

    #[test]
    fn each_disk_has_its_own_staged_copy() {
        let dir = Path::new("/var/tmp");
        let a = staged_path(dir, "snap-0000000a", "web01-os");
        assert_eq!(
            a,
            Path::new("/var/tmp/ebs2azure-snap-0000000a-web01-os.vhd")
        );
        assert_ne!(a, staged_path(dir, "snap-0000000a", "web02-os"));
        assert_eq!(
            report_path(&a),
            Path::new("/var/tmp/ebs2azure-snap-0000000a-web01-os.vhd.fixup.json")
        );
        // Nothing in a disk name can leave the staging directory.
        let odd = staged_path(dir, "snap-0000000a", "../../etc/x");
        assert_eq!(odd.parent(), Some(dir));
    }
}
