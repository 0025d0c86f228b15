//! `assess`: each machine's readiness for Azure before anything moves. The
//! OS disk is inspected straight from its snapshot, as `inspect` inspects a
//! copied image: the snapshot is exposed as a file ([`snapshot_file`]) whose
//! blocks are fetched on demand, so only what the inspection touches is
//! read (partition tables, superblocks, the files it opens). Each machine
//! gets a readiness (ready, ready with fix-ups, blocked with the blockers
//! and their fixes), its generation, its VM size checked against it, and
//! the bytes the assessment read against the snapshot's written data.

pub mod snapshot_file;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::fixup::inspect::{self, Report};
use crate::fixup::Class;
use crate::kinds::HyperVGeneration;
use crate::machines::sizes;
use crate::plan::{DiskRole, Plan};
use crate::source::ebs::{EbsSource, Quotas, Settings};
use crate::source::snapshot_disk::SnapshotDisk;
use snapshot_file::SnapshotFile;

/// How to reach the snapshots and where to mount them.
#[derive(Clone, Debug)]
pub struct Options {
    /// How to read snapshots (the plan's region applies per disk).
    pub ebs: Settings,
    /// Service quotas shared by the run.
    pub quotas: Arc<Quotas>,
    /// Blocks kept in memory per snapshot (512 KiB each).
    pub cache_blocks: usize,
    /// Where the snapshot files are mounted (a directory made per disk).
    pub mount_under: PathBuf,
}

/// Blocks cached per snapshot by default: 64 MiB of 512 KiB blocks.
pub const DEFAULT_CACHE_BLOCKS: usize = 128;

/// Whether a machine can go as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Boots on Azure as it is.
    Ready,
    /// Boots once `fixup` (which `migrate` runs) has made its changes.
    ReadyWithFixups,
    /// Will not boot until the blockers are dealt with.
    Blocked,
    /// Could not be assessed (the snapshot could not be read).
    NotAssessed,
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Readiness::Ready => "ready",
            Readiness::ReadyWithFixups => "ready with fix-ups",
            Readiness::Blocked => "blocked",
            Readiness::NotAssessed => "not assessed",
        })
    }
}

/// What an assessment read of one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Reads {
    /// The snapshot.
    pub snapshot: String,
    /// Its block size.
    pub block_size: u32,
    /// Blocks the snapshot holds.
    pub written_blocks: u64,
    /// Blocks fetched (again after leaving the cache: counted again).
    pub blocks_read: u64,
    /// Bytes fetched.
    pub bytes_read: u64,
}

impl Reads {
    /// Bytes the snapshot holds.
    pub fn written_bytes(&self) -> u64 {
        self.written_blocks * u64::from(self.block_size)
    }
}

/// One machine's assessment.
#[derive(Clone, Debug, Serialize)]
pub struct Assessment {
    /// The machine (or the lone OS disk's name).
    pub machine: String,
    /// Its OS disk.
    pub os_disk: String,
    /// The verdict.
    pub readiness: Readiness,
    /// Blockers, each with what to do.
    pub blockers: Vec<String>,
    /// The changes `fixup` will make.
    pub fixups: Vec<String>,
    /// Worth knowing.
    pub advice: Vec<String>,
    /// The guest found (distribution or Windows product).
    pub os: Option<String>,
    /// The Hyper-V generation the disk boots as.
    pub generation: Option<HyperVGeneration>,
    /// The VM size (the plan's or proposed), and whether it is a proposal.
    pub vm_size: Option<String>,
    /// True when `vm_size` is a proposal from the instance type.
    pub vm_size_proposed: bool,
    /// Why the size does not suit the machine, if it does not.
    pub size_problems: Vec<String>,
    /// What the assessment read.
    pub reads: Option<Reads>,
    /// Why it could not be assessed.
    pub error: Option<String>,
    /// The whole inspection, as `inspect --json` prints it.
    #[serde(skip)]
    pub report: Option<Report>,
}

/// Why one snapshot could not be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The snapshot could not be opened or listed.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// It could not be mounted as a file.
    #[error(transparent)]
    File(#[from] snapshot_file::Error),
    /// The inspection failed.
    #[error(transparent)]
    Inspect(#[from] crate::fixup::Error),
}

/// Inspects snapshot `snapshot` in place: what `inspect` says of it, and
/// what was read to say it.
pub fn inspect_snapshot(
    snapshot: &str,
    settings: &Settings,
    opts: &Options,
) -> Result<(Report, Reads), Error> {
    let source = EbsSource::open(snapshot, settings, opts.quotas.clone())?;
    let disk = Arc::new(SnapshotDisk::indexed(source, opts.cache_blocks)?);
    let report = {
        let file = SnapshotFile::mount(disk.clone(), &opts.mount_under)?;
        let mut report = inspect::inspect(&file.path())?;
        report.image = snapshot.to_owned();
        report
    };
    let (blocks_read, bytes_read) = disk.fetched();
    Ok((
        report,
        Reads {
            snapshot: snapshot.to_owned(),
            block_size: disk.block_size(),
            written_blocks: disk.written_blocks().unwrap_or(0),
            blocks_read,
            bytes_read,
        },
    ))
}

/// Assesses every machine of `plan` (those named in `only`, when given)
/// that is not excluded, one OS disk at a time; `progress` hears of each.
pub fn assess(
    plan: &Plan,
    only: &[String],
    opts: &Options,
    progress: &dyn Fn(&str),
) -> Vec<Assessment> {
    let mut out = Vec::new();
    for disk in plan
        .disks
        .iter()
        .filter(|d| d.role == DiskRole::Os && !d.exclude)
    {
        let machine_name = disk.machine.clone().unwrap_or_else(|| disk.name.clone());
        if !only.is_empty() && !only.contains(&machine_name) {
            continue;
        }
        progress(&format!("assessing {machine_name} ({})", disk.snapshot));
        let machine = plan.machines.iter().find(|m| m.name == machine_name);
        let settings = Settings {
            region: disk.region.clone().or_else(|| opts.ebs.region.clone()),
            ..opts.ebs.clone()
        };
        let mut a = Assessment {
            machine: machine_name,
            os_disk: disk.name.clone(),
            readiness: Readiness::NotAssessed,
            blockers: Vec::new(),
            fixups: Vec::new(),
            advice: Vec::new(),
            os: None,
            generation: None,
            vm_size: machine.and_then(|m| m.vm.size.clone()),
            vm_size_proposed: machine.is_some_and(|m| m.vm.proposed),
            size_problems: Vec::new(),
            reads: None,
            error: None,
            report: None,
        };
        match inspect_snapshot(&disk.snapshot, &settings, opts) {
            Err(e) => a.error = Some(e.to_string()),
            Ok((report, reads)) => {
                let said = |c: Class| -> Vec<String> {
                    report
                        .of_class(c)
                        .map(|f| format!("{}: {}", f.subject, f.message))
                        .collect()
                };
                a.blockers = said(Class::Blocker);
                a.fixups = said(Class::Fixup);
                a.advice = said(Class::Advice);
                a.readiness = if !a.blockers.is_empty() {
                    Readiness::Blocked
                } else if !a.fixups.is_empty() {
                    Readiness::ReadyWithFixups
                } else {
                    Readiness::Ready
                };
                a.os = report
                    .os
                    .as_ref()
                    .map(|o| o.name.clone())
                    .or_else(|| report.windows.as_ref().map(|w| w.product.clone()));
                a.generation = Some(report.hyper_v_generation);
                if let (Some(m), Some(size)) = (machine, a.vm_size.as_deref().and_then(sizes::find))
                {
                    let data: Vec<_> = m.disks.iter().map(|&i| &plan.disks[i]).collect();
                    let data_disks = data
                        .iter()
                        .filter(|d| d.role == DiskRole::Data && !d.exclude)
                        .count();
                    let premium = data.iter().any(|d| d.sku.starts_with("Premium"));
                    a.size_problems =
                        sizes::problems(size, data_disks, premium, Some(report.hyper_v_generation));
                    if !a.size_problems.is_empty() && a.readiness != Readiness::Blocked {
                        a.readiness = Readiness::Blocked;
                    }
                }
                a.reads = Some(reads);
                a.report = Some(report);
            }
        }
        out.push(a);
    }
    out
}
