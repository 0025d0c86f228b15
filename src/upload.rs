//! Azure managed disks: `upload` sends a local fixed VHD, `migrate` streams
//! an EBS snapshot with no local copy, `verify` reads a disk back through a
//! read SAS and compares digests of the source's non-zero ranges.
//!
//! Only non-zero 4 KiB pages are sent, coalesced into Put Page requests of
//! up to 4 MiB. A failed upload leaves the disk in its upload state for
//! `--resume` (which skips the ranges already written), or deletes it with
//! `--cleanup`.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use diskformats::vhd::{DiskType, Footer};
use diskformats::{Disk, Format, Image, OpenOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::azure::arm::{Access, Arm, DiskRef, DiskSpec, DiskState, HyperVGeneration, OsType};
use crate::azure::page_blob::PageBlob;
use crate::azure::{self, token, RetryBudget, Secret};
use crate::convert::Input;
use crate::limits;
use crate::pipeline::{self, Stats};
use crate::sink::managed_disk::{ManagedDiskSink, UploadStats};
use crate::sink::{self, BlockSink};
use crate::source::ebs::{self, EbsSource, Quotas};
use crate::source::{self, BlockSource, ImageSource};

/// Block size for reading local VHDs to upload: one Put Page can carry 4 MiB.
const UPLOAD_BLOCK: u32 = 4 << 20;
/// Copy workers (each with one request in flight) when the caller does not say.
const UPLOAD_CONCURRENCY: usize = 16;

/// Which disk to create and how.
#[derive(Clone, Debug)]
pub struct Target {
    /// Subscription, resource group and name.
    pub disk: DiskRef,
    /// Azure region (needed to create the disk).
    pub location: Option<String>,
    /// Disk SKU.
    pub sku: String,
    /// Set for OS disks.
    pub os_type: Option<OsType>,
    /// Hyper-V generation (OS disks).
    pub hyper_v_generation: Option<HyperVGeneration>,
    /// Availability zone.
    pub zone: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// How to run an upload, migration or verification.
#[derive(Clone, Debug)]
pub struct Options {
    /// Azure endpoints, timeouts and retries.
    pub azure: azure::Settings,
    /// A pre-obtained ARM token (otherwise the environment variable, then azure_identity).
    pub token_file: Option<PathBuf>,
    /// Continue an interrupted upload into the existing disk.
    pub resume: bool,
    /// Delete the disk when the upload fails.
    pub cleanup: bool,
    /// Put Page requests in flight.
    pub concurrency: Option<NonZeroUsize>,
    /// How to read snapshots.
    pub ebs: ebs::Settings,
    /// Service quotas shared by the snapshots of a run.
    pub quotas: Arc<Quotas>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            azure: azure::Settings::default(),
            token_file: None,
            resume: false,
            cleanup: false,
            concurrency: None,
            ebs: ebs::Settings::default(),
            quotas: Quotas::published(),
        }
    }
}

/// What an upload did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The disk's resource id.
    pub disk: String,
    /// The source: a file path or a snapshot id.
    pub source: String,
    /// The credential used (never the token).
    pub credential: String,
    /// The disk's virtual size in bytes.
    pub virtual_size: u64,
    /// uploadSizeBytes: the virtual size plus the footer.
    pub upload_size_bytes: u64,
    /// True when an interrupted upload was continued.
    pub resumed: bool,
    /// What the copy read and skipped.
    pub copy: Stats,
    /// What was sent.
    pub upload: UploadStats,
    /// Retries used.
    pub retries: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Bytes sent per second, in MiB/s.
    pub throughput_mib_s: f64,
    /// Final disk state.
    pub state: DiskState,
}

/// One compared range of `verify`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RangeCheck {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// True when the disk holds the source's bytes there.
    pub matches: bool,
}

/// What `verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The disk's resource id.
    pub disk: String,
    /// The source compared with.
    pub source: String,
    /// Every compared range, in offset order.
    pub ranges: Vec<RangeCheck>,
    /// Ranges that differ.
    pub mismatches: u64,
    /// Bytes compared.
    pub bytes_compared: u64,
    /// True when the disk's VHD footer is valid for its size.
    pub footer_ok: bool,
}

/// Why an upload, migration or verification stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The VHD cannot be uploaded as it is (found before any cloud call).
    #[error("{0}")]
    Invalid(String),
    /// Reading the source failed.
    #[error("{0}")]
    Source(#[from] source::Error),
    /// An Azure call failed.
    #[error("{0}")]
    Azure(#[from] azure::Error),
    /// The copy failed.
    #[error("{0}")]
    Copy(#[from] pipeline::Error),
    /// The upload could not finish.
    #[error("{0}")]
    Sink(#[from] sink::Error),
    /// A disk of that name exists already.
    #[error("disk {0} already exists; pass --resume to continue an interrupted upload into it, or choose another --disk-name")]
    Exists(String),
    /// `--resume` found nothing to resume.
    #[error("disk {disk} {why}; run without --resume to create it")]
    NothingToResume {
        /// Disk name.
        disk: String,
        /// What was found.
        why: String,
    },
    /// The upload failed and the disk is left for `--resume`.
    #[error("{cause}; disk {disk} is left in its upload state: run the same command with --resume to continue, or with --cleanup to delete it")]
    Left {
        /// Disk name.
        disk: String,
        /// Why it failed.
        cause: Box<Error>,
    },
    /// The upload failed and the disk was deleted (`--cleanup`).
    #[error("{cause}; disk {disk} was deleted (--cleanup)")]
    CleanedUp {
        /// Disk name.
        disk: String,
        /// Why it failed.
        cause: Box<Error>,
    },
    /// `verify` found differences.
    #[error("disk {disk} differs from {source_name} in {mismatches} of {ranges} ranges")]
    Mismatch {
        /// Disk name.
        disk: String,
        /// The source.
        source_name: String,
        /// Ranges that differ.
        mismatches: u64,
        /// Ranges compared.
        ranges: u64,
    },
    /// The I/O runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(String),
}

/// Copy workers for page-blob traffic: each keeps one request in flight.
fn copy_options(opts: &Options) -> pipeline::Options {
    let workers = opts
        .concurrency
        .unwrap_or(NonZeroUsize::new(UPLOAD_CONCURRENCY).unwrap_or(NonZeroUsize::MIN));
    pipeline::Options {
        concurrency: Some(workers),
        ..Default::default()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("azure-io")
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))
}

/// Opens a VHD for upload after checking what Azure will check: a fixed VHD
/// with a valid footer, a whole number of MiB, within Azure's size limits.
/// Returns the source and its footer.
pub fn check_vhd(path: &Path) -> Result<(ImageSource, [u8; 512]), Error> {
    let shown = path.display();
    let image = Image::open(path, &OpenOptions::default())
        .map_err(|e| Error::Invalid(format!("{shown} cannot be uploaded: {e}")))?;
    match image.format() {
        Format::VhdFixed => {}
        other => {
            return Err(Error::Invalid(format!(
                "{shown} is a {} image, not a fixed VHD; make one first with `ebs2azure convert {shown} --out disk.vhd`",
                other.name()
            )))
        }
    }
    let size = image.size();
    if size % (1 << 20) != 0 {
        return Err(Error::Invalid(format!(
            "{shown} has a virtual size of {size} bytes, not a whole number of MiB as Azure requires; `ebs2azure convert` rounds it up"
        )));
    }
    if let Some(problem) = limits::azure_size_problems(size).into_iter().next() {
        return Err(Error::Invalid(format!("{shown}: {problem}")));
    }
    let mut footer = [0u8; 512];
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Invalid(format!("cannot read {shown}: {e}")))?;
    file.read_exact_at(&mut footer, size)
        .map_err(|e| Error::Invalid(format!("cannot read the footer of {shown}: {e}")))?;
    drop(image);
    let source = ImageSource::open(path, &OpenOptions::default())?.with_block_size(UPLOAD_BLOCK);
    Ok((source, footer))
}

/// A fixed VHD footer for a disk of `size` bytes (for streamed sources).
pub fn footer_for(size: u64) -> [u8; 512] {
    Footer::new(DiskType::Fixed, size).to_bytes()
}

/// Uploads the fixed VHD at `path` to a new managed disk (or resumes one).
pub fn upload(
    path: &Path,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, Error> {
    let (source, footer) = check_vhd(path)?;
    let rt = runtime()?;
    transfer(
        &rt,
        &source,
        &footer,
        &path.display().to_string(),
        target,
        opts,
        progress,
    )
}

/// Streams an EBS snapshot to a new managed disk, with no local copy.
pub fn migrate(
    snapshot: &str,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, Error> {
    let source = EbsSource::open(snapshot, &opts.ebs, opts.quotas.clone())?;
    let size = source.size();
    if let Some(problem) = limits::azure_size_problems(size).into_iter().next() {
        return Err(Error::Invalid(format!("snapshot {snapshot}: {problem}")));
    }
    let rt = runtime()?;
    transfer(
        &rt,
        &source,
        &footer_for(size),
        snapshot,
        target,
        opts,
        progress,
    )
}

fn transfer(
    rt: &tokio::runtime::Runtime,
    source: &dyn BlockSource,
    footer: &[u8; 512],
    source_name: &str,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, Error> {
    let started = Instant::now();
    let size = source.size();
    let upload_size = size + 512;
    let name = target.disk.name.clone();
    if target.location.is_none() && !opts.resume {
        return Err(Error::Invalid(
            "--location is needed to create the disk (e.g. --location westeurope)".into(),
        ));
    }
    let tokens = token::from_args(opts.token_file.as_deref())?;
    let budget = Arc::new(RetryBudget::new(opts.azure.retry_budget));
    let arm = Arc::new(Arm::new(&opts.azure, tokens, budget.clone())?);
    let existing = rt.block_on(arm.get(&target.disk))?;
    match (&existing, opts.resume) {
        (Some(_), false) => return Err(Error::Exists(name)),
        (None, true) => {
            return Err(Error::NothingToResume {
                disk: name,
                why: "does not exist".into(),
            })
        }
        (Some(d), true) => {
            if !d.state.is_upload() {
                return Err(Error::NothingToResume {
                    disk: name,
                    why: format!("is {}, not in an upload state", d.state),
                });
            }
            if d.upload_size_bytes != Some(upload_size) {
                return Err(Error::NothingToResume {
                    disk: name,
                    why: format!(
                        "was created for {} bytes, not this source's {upload_size}",
                        d.upload_size_bytes.unwrap_or(0)
                    ),
                });
            }
        }
        (None, false) => {
            let spec = DiskSpec {
                location: target.location.clone().unwrap_or_default(),
                sku: target.sku.clone(),
                os_type: target.os_type,
                hyper_v_generation: target.hyper_v_generation,
                zone: target.zone.clone(),
                tags: target.tags.clone(),
                upload_size_bytes: upload_size,
            };
            rt.block_on(arm.create_for_upload(&target.disk, &spec))?;
        }
    }
    // From here on the disk exists: a failure leaves it for --resume or deletes it.
    let result = (|| -> Result<(Stats, UploadStats), Error> {
        let sas = rt.block_on(arm.begin_access(&target.disk, Access::Write))?;
        let written = if opts.resume {
            let blob = PageBlob::new(&opts.azure)?;
            rt.block_on(blob.page_ranges(&sas))?
        } else {
            Vec::new()
        };
        let sink = ManagedDiskSink::new(
            rt.handle().clone(),
            arm.clone(),
            target.disk.clone(),
            sas,
            written,
            &opts.azure,
            budget.clone(),
        )?;
        let copy = pipeline::copy(source, &sink, &copy_options(opts), progress)?;
        let up = sink.finish(size, footer)?;
        Ok((copy, up))
    })();
    let (copy, up) = match result {
        Ok(r) => r,
        Err(cause) if opts.cleanup => {
            return match rt.block_on(arm.delete(&target.disk)) {
                Ok(()) => Err(Error::CleanedUp {
                    disk: name,
                    cause: Box::new(cause),
                }),
                Err(e) => Err(Error::Left {
                    disk: name,
                    cause: Box::new(Error::Invalid(format!(
                        "{cause}; deleting it failed too: {e}"
                    ))),
                }),
            }
        }
        Err(cause) => {
            return Err(Error::Left {
                disk: name,
                cause: Box::new(cause),
            })
        }
    };
    let info = rt.block_on(arm.get(&target.disk))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        disk: info.as_ref().map(|d| d.id.clone()).unwrap_or_default(),
        source: source_name.to_owned(),
        credential: arm.credential(),
        virtual_size: size,
        upload_size_bytes: upload_size,
        resumed: opts.resume,
        copy,
        upload: up,
        retries: budget.used(),
        seconds,
        throughput_mib_s: up.bytes_sent as f64 / (1 << 20) as f64 / seconds.max(1e-9),
        state: info.map_or(DiskState::Other("gone".into()), |d| d.state),
    })
}

/// Compares each written range with the same range of the disk.
struct VerifySink {
    rt: tokio::runtime::Handle,
    blob: PageBlob,
    sas: Secret,
    disk: String,
    results: Mutex<Vec<RangeCheck>>,
}

impl BlockSink for VerifySink {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), sink::Error> {
        let theirs = self
            .rt
            .block_on(self.blob.read(&self.sas, offset, data.len() as u64))
            .map_err(|source| sink::Error::Azure {
                disk: self.disk.clone(),
                source,
            })?;
        let matches = Sha256::digest(&theirs) == Sha256::digest(data);
        if let Ok(mut r) = self.results.lock() {
            r.push(RangeCheck {
                offset,
                len: data.len() as u64,
                matches,
            });
        }
        Ok(())
    }
}

/// Reads the disk back through a read SAS and compares it with `input`.
pub fn verify(input: &Input, target: &Target, opts: &Options) -> Result<VerifyReport, Error> {
    let (source, source_name, footer): (Box<dyn BlockSource>, String, Option<[u8; 512]>) =
        match input {
            Input::Image(path) => {
                let (s, f) = check_vhd(path)?;
                (Box::new(s), path.display().to_string(), Some(f))
            }
            Input::Snapshot(id) => (
                Box::new(EbsSource::open(id, &opts.ebs, opts.quotas.clone())?),
                id.clone(),
                None,
            ),
        };
    let rt = runtime()?;
    let tokens = token::from_args(opts.token_file.as_deref())?;
    let budget = Arc::new(RetryBudget::new(opts.azure.retry_budget));
    let arm = Arm::new(&opts.azure, tokens, budget)?;
    let info = rt
        .block_on(arm.get(&target.disk))?
        .ok_or_else(|| Error::NothingToResume {
            disk: target.disk.name.clone(),
            why: "does not exist".into(),
        })?;
    let size = source.size();
    if info.upload_size_bytes.is_some_and(|u| u != size + 512) {
        return Err(Error::Invalid(format!(
            "disk {} holds {} bytes, but {source_name} makes {}",
            target.disk.name,
            info.upload_size_bytes.unwrap_or(0),
            size + 512
        )));
    }
    let sas = rt.block_on(arm.begin_access(&target.disk, Access::Read))?;
    let blob = PageBlob::new(&opts.azure)?;
    let check = (|| -> Result<(Vec<RangeCheck>, bool), Error> {
        let sink = VerifySink {
            rt: rt.handle().clone(),
            blob: blob.clone(),
            sas: sas.clone(),
            disk: target.disk.name.clone(),
            results: Mutex::new(Vec::new()),
        };
        pipeline::copy(source.as_ref(), &sink, &copy_options(opts), &|_| {})?;
        let theirs = rt.block_on(blob.read(&sas, size, 512))?;
        let footer_ok = match footer {
            Some(ours) => theirs == ours,
            None => {
                let mut f = [0u8; 512];
                f.copy_from_slice(&theirs);
                Footer::parse(&f)
                    .is_ok_and(|f| f.disk_type == DiskType::Fixed && f.current_size == size)
            }
        };
        let mut ranges = sink.results.into_inner().unwrap_or_default();
        ranges.sort_by_key(|r| r.offset);
        Ok((ranges, footer_ok))
    })();
    // Access ends whatever the comparison found.
    let ended = rt.block_on(arm.end_access(&target.disk));
    let (ranges, footer_ok) = check?;
    ended?;
    let mismatches = ranges.iter().filter(|r| !r.matches).count() as u64;
    Ok(VerifyReport {
        disk: info.id,
        source: source_name,
        bytes_compared: ranges.iter().map(|r| r.len).sum(),
        mismatches,
        ranges,
        footer_ok,
    })
}

/// Merges adjacent ranges of the same outcome, for a shorter listing.
pub fn coalesce(ranges: &[RangeCheck]) -> Vec<RangeCheck> {
    let mut out: Vec<RangeCheck> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.matches == r.matches && l.offset + l.len == r.offset => l.len += r.len,
            _ => out.push(r.clone()),
        }
    }
    out
}

/// Half-open byte ranges of a verify listing (for tests and callers).
pub fn spans(ranges: &[RangeCheck]) -> Vec<Range<u64>> {
    ranges.iter().map(|r| r.offset..r.offset + r.len).collect()
}
