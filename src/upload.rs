//! Uploads to Azure managed disks: [`upload`] sends a local fixed VHD,
//! [`stream`] an EBS snapshot with no local copy. Both go through one
//! [`Session`] of the run.
//!
//! Only non-zero 4 KiB pages are sent, coalesced into Put Page requests of
//! up to 4 MiB. A failed upload leaves the disk in its upload state to be
//! resumed (which skips the ranges already written), or deletes it when
//! asked to clean up.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskformats::vhd::{DiskType, Footer};
use diskformats::{Disk, Format, Image, OpenOptions};
use serde::Serialize;

use crate::azure::arm::{Access, DiskRef, DiskSpec, DiskState, HyperVGeneration, OsType};
use crate::azure::page_blob::MAX_PUT_PAGE;
use crate::azure::{self, Session};
use crate::limits;
use crate::pipeline::{self, DoneBlock, Stats};
use crate::sink;
use crate::sink::managed_disk::{ManagedDiskSink, UploadStats};
use crate::source::ebs::{self, EbsSource, Quotas};
use crate::source::{self, BlockSource, ImageSource};

/// Block size for reading local VHDs to upload: one Put Page can carry 4 MiB.
const UPLOAD_BLOCK: u32 = 4 << 20;
/// Copy workers (each with one request in flight) when the caller does not say.
const UPLOAD_CONCURRENCY: usize = 16;
/// The most Put Page requests sized from a round trip keep in flight, for a
/// run: each holds a run of up to 4 MiB, so buffers stay under 256 MiB.
pub const MAX_WRITES: usize = 64;

/// What a progress callback is told.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// A new step starts (creating the disk, granting access, copying,
    /// ending the upload; staging and fixing up for OS disks), in a few
    /// words, with the bytes it will read when they are known.
    Step(&'a str, Option<u64>),
    /// Bytes done in the current step.
    Bytes(u64),
}

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
    /// Customer-managed keys.
    pub encryption: Option<crate::azure::arm::DiskEncryption>,
    /// Whether the disk's upload URL also wants an Entra token.
    pub data_access: crate::azure::arm::DataAccessAuthMode,
}

/// How to run an upload, migration or verification.
#[derive(Clone, Debug)]
pub struct Options {
    /// Azure endpoints, timeouts and retries.
    pub azure: azure::Settings,
    /// A pre-obtained ARM token (otherwise the environment variable, then azure_identity).
    pub token_file: Option<PathBuf>,
    /// A pre-obtained token for disks that want one beside their SAS
    /// (otherwise the environment variable, then azure_identity).
    pub disk_token_file: Option<PathBuf>,
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
    /// Set from elsewhere (an interrupt) to stop: blocks in flight finish,
    /// and the disk is left in its upload state to resume.
    pub stop: Option<Arc<AtomicBool>>,
    /// Write everything, footer included, but do not end the upload: the
    /// disk stays in its upload state, open for a later delta sync (a
    /// pre-seed). [`finalize`] ends it.
    pub leave_open: bool,
    /// The most Put Page requests in flight that sizing from a round trip
    /// may choose (a run of many disks at once gives each a share).
    pub max_writes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            azure: azure::Settings::default(),
            token_file: None,
            disk_token_file: None,
            resume: false,
            cleanup: false,
            concurrency: None,
            ebs: ebs::Settings::default(),
            quotas: Quotas::published(),
            stop: None,
            leave_open: false,
            max_writes: MAX_WRITES,
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
    /// Retries of the run's Azure calls so far (the budget is the run's).
    pub retries: u64,
    /// Retries of this disk's snapshot reads (EBS throttling, 5xx, timeouts).
    #[serde(default)]
    pub source_retries: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Seconds of the copy alone (without creating the disk, granting
    /// access and ending the upload).
    #[serde(default)]
    pub copy_seconds: f64,
    /// Put Page requests in flight (copy workers) the copy used.
    #[serde(default)]
    pub writes_in_flight: usize,
    /// The blob endpoint's round trip measured before the copy, in ms.
    #[serde(default)]
    pub blob_round_trip_ms: f64,
    /// Bytes sent per second of the copy, in MiB/s.
    pub throughput_mib_s: f64,
    /// Final disk state.
    pub state: DiskState,
}

/// Why an upload stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The VHD cannot be uploaded as it is (found before any cloud call).
    #[error("{0}")]
    Invalid(String),
    /// The file is no VHD this can read.
    #[error("{path} cannot be uploaded: {source}")]
    Vhd {
        /// The file.
        path: String,
        /// What the format reader said.
        source: diskformats::Error,
    },
    /// A part of the file could not be read.
    #[error("cannot read {what} of {path}: {source}")]
    Read {
        /// Which part.
        what: &'static str,
        /// The file.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// An Azure call failed.
    #[error(transparent)]
    Azure(#[from] azure::Error),
    /// The copy failed.
    #[error(transparent)]
    Copy(#[from] pipeline::Error),
    /// The upload could not finish.
    #[error(transparent)]
    Sink(#[from] sink::Error),
    /// The caller's record of the upload could not be kept.
    #[error("cannot record the upload's progress: {0}")]
    Checkpoint(#[source] BoxError),
    /// A disk of that name exists already (and resuming was not asked for).
    #[error("disk {0} already exists")]
    Exists(String),
    /// A new disk needs a location.
    #[error("a location (Azure region) is needed to create the disk")]
    NoLocation,
    /// Resuming found nothing to resume.
    #[error("disk {disk} {why}, so there is no upload to resume")]
    NothingToResume {
        /// Disk name.
        disk: String,
        /// What was found.
        why: String,
    },
    /// The upload failed and the disk is left in its upload state, to resume.
    #[error("{cause}; disk {disk} is left in its upload state")]
    Left {
        /// Disk name.
        disk: String,
        /// Why it failed.
        #[source]
        cause: Box<Error>,
    },
    /// The upload failed, and deleting the disk afterwards failed too.
    #[error("{cause}; deleting it failed too: {delete}")]
    DeleteFailed {
        /// Why the upload failed.
        #[source]
        cause: Box<Error>,
        /// Why the deletion failed.
        delete: azure::Error,
    },
    /// The upload failed and the disk was deleted, as asked.
    #[error("{cause}; disk {disk} was deleted")]
    CleanedUp {
        /// Disk name.
        disk: String,
        /// Why it failed.
        #[source]
        cause: Box<Error>,
    },
}

/// Put Page requests in flight for one copy, and why.
#[derive(Clone, Copy, Debug)]
struct Writes {
    count: NonZeroUsize,
    /// The blob endpoint's round trip it was sized to.
    round_trip: Duration,
}

impl Writes {
    /// The caller's count when given; otherwise, for a source held to a
    /// pace (an EBS quota, in blocks per second), what that pace needs at
    /// the measured round trip (Little's law, one Put Page per block at
    /// worst), from the default up to [`Options::max_writes`]; else the default.
    fn sized(opts: &Options, pace: Option<f64>, round_trip: Duration) -> Writes {
        let count = opts.concurrency.unwrap_or_else(|| {
            let n = pace.map_or(UPLOAD_CONCURRENCY, |rate| {
                crate::littles_law::in_flight(
                    rate,
                    round_trip.as_secs_f64(),
                    UPLOAD_CONCURRENCY,
                    opts.max_writes,
                )
            });
            NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
        });
        Writes { count, round_trip }
    }
}

/// Copy workers for page-blob traffic: each keeps one request in flight.
pub(crate) fn copy_options(opts: &Options) -> pipeline::Options {
    let workers = opts
        .concurrency
        .unwrap_or(NonZeroUsize::new(UPLOAD_CONCURRENCY).unwrap_or(NonZeroUsize::MIN));
    pipeline::Options {
        concurrency: Some(workers),
        // Adjacent blocks go out together, as large as a Put Page may be:
        // an eighth of the requests for the same bytes.
        max_write: MAX_PUT_PAGE,
        ..Default::default()
    }
}

/// Opens a VHD for upload after checking what Azure will check: a fixed VHD
/// with a valid footer, a whole number of MiB, within Azure's size limits.
/// Returns the source and its footer.
pub fn check_vhd(path: &Path) -> Result<(ImageSource, [u8; 512]), Error> {
    let shown = path.display();
    let image = Image::open(path, &OpenOptions::default()).map_err(|source| Error::Vhd {
        path: shown.to_string(),
        source,
    })?;
    match image.format() {
        Format::VhdFixed => {}
        other => {
            return Err(Error::Invalid(format!(
            "{shown} is a {} image, not a fixed VHD; convert it to one first (ebs2azure convert)",
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
    let read_err = |source| Error::Read {
        what: "the footer",
        path: shown.to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    file.read_exact_at(&mut footer, size).map_err(read_err)?;
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
    session: &Session,
    path: &Path,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, Error> {
    upload_with(session, path, target, opts, progress, None)
}

/// [`upload`], telling `checkpoints` of every block it reads (each is read,
/// even on a resume: a content digest sees the whole disk).
pub fn upload_with(
    session: &Session,
    path: &Path,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(Progress) + Sync),
    checkpoints: Option<&dyn Checkpoints>,
) -> Result<Report, Error> {
    let (source, footer) = check_vhd(path)?;
    transfer(
        session,
        &source,
        &footer,
        &path.display().to_string(),
        target,
        opts,
        Hooks {
            progress,
            checkpoints,
            stop: None,
        },
    )
}

/// A boxed error from a caller's hook.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a resumable run keeps of a streamed upload (a plan's journal): the
/// blocks an earlier run made durable, and each block made durable now.
pub trait Checkpoints: Sync {
    /// Blocks durable at the target already: they are not read again.
    fn done(&self) -> HashSet<u64>;
    /// `block` is durable at the target (its bytes, unless all zero, and
    /// its SHA-256 when the source checked it).
    fn block_done(&self, block: &DoneBlock<'_>) -> Result<(), BoxError>;
    /// Every block is durable; the footer and the end of the upload follow.
    fn copied(&self) -> Result<(), BoxError>;
}

/// Streams an EBS snapshot to a new managed disk, with no local copy.
pub fn stream(
    session: &Session,
    snapshot: &str,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, Error> {
    stream_with(session, snapshot, target, opts, progress, None, None)
}

/// [`stream`], keeping `checkpoints` and stopping when `stop` is set (the
/// disk is then left in its upload state, to resume).
pub fn stream_with(
    session: &Session,
    snapshot: &str,
    target: &Target,
    opts: &Options,
    progress: &(dyn Fn(Progress) + Sync),
    checkpoints: Option<&dyn Checkpoints>,
    stop: Option<&AtomicBool>,
) -> Result<Report, Error> {
    let mut source = EbsSource::open(snapshot, &opts.ebs, opts.quotas.clone())?;
    if let (Some(c), true) = (checkpoints, opts.resume) {
        source = source.skipping(c.done());
    }
    let size = source.size();
    if let Some(problem) = limits::azure_size_problems(size).into_iter().next() {
        return Err(Error::Invalid(format!("snapshot {snapshot}: {problem}")));
    }
    let mut report = transfer(
        session,
        &source,
        &footer_for(size),
        snapshot,
        target,
        opts,
        Hooks {
            progress,
            checkpoints,
            stop,
        },
    )?;
    report.source_retries = source.counters().retries.load(Ordering::Relaxed);
    Ok(report)
}

/// Ends the upload of a disk left open ([`Options::leave_open`]): its
/// write access is revoked and it becomes an ordinary Unattached disk.
pub fn finalize(session: &Session, disk: &DiskRef) -> Result<(), Error> {
    let arm = session.arm();
    session.block_on(arm.end_access(disk))?;
    let state = session
        .block_on(arm.get(disk))?
        .map_or(DiskState::Other("gone".into()), |d| d.state);
    if state != DiskState::Unattached {
        return Err(Error::Azure(azure::Error::State {
            disk: disk.name.clone(),
            state,
            advice: "its upload ended but it is not Unattached; look at it in the portal".into(),
        }));
    }
    Ok(())
}

/// What [`transfer`] reports to and takes from its caller.
struct Hooks<'a> {
    progress: &'a (dyn Fn(Progress) + Sync),
    checkpoints: Option<&'a dyn Checkpoints>,
    stop: Option<&'a AtomicBool>,
}

fn transfer(
    session: &Session,
    source: &dyn BlockSource,
    footer: &[u8; 512],
    source_name: &str,
    target: &Target,
    opts: &Options,
    hooks: Hooks<'_>,
) -> Result<Report, Error> {
    let started = Instant::now();
    let size = source.size();
    let upload_size = size + 512;
    let name = target.disk.name.clone();
    if target.location.is_none() && !opts.resume {
        return Err(Error::NoLocation);
    }
    let arm = session.arm();
    let existing = session.block_on(arm.get(&target.disk))?;
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
                encryption: target.encryption.clone(),
                data_access: target.data_access,
            };
            tracing::info!(disk = %name, "creating the disk for upload ({upload_size} bytes)");
            (hooks.progress)(Progress::Step("creating the disk", None));
            session.block_on(arm.create_for_upload(&target.disk, &spec))?;
        }
    }
    // From here on the disk exists: a failure leaves it to resume, or deletes it.
    let result = (|| -> Result<(Stats, UploadStats, f64, Writes), Error> {
        tracing::info!(disk = %name, "granting write access");
        (hooks.progress)(Progress::Step("granting write access", None));
        let sas = session.block_on(arm.begin_access(&target.disk, Access::Write))?;
        // The pages written so far (none on a new disk): what a resume skips,
        // and the blob endpoint's round trip, which sizes the writes in flight.
        let asked = Instant::now();
        let listed = session.block_on(session.page_ranges(&sas, &name, upload_size))?;
        let writes = Writes::sized(opts, source.pace(), asked.elapsed());
        let written = if opts.resume { listed } else { Vec::new() };
        let sink = ManagedDiskSink::new(session, target.disk.clone(), sas, written);
        let block_done = |b: &DoneBlock<'_>| match hooks.checkpoints {
            Some(c) => c.block_done(b),
            None => Ok(()),
        };
        tracing::info!(disk = %name, resume = opts.resume, "copying {source_name}");
        (hooks.progress)(Progress::Step("copying", source.bytes_to_read()));
        let copy_started = Instant::now();
        let bytes = |n| (hooks.progress)(Progress::Bytes(n));
        let copy = pipeline::copy_with(
            source,
            &sink,
            &pipeline::Options {
                concurrency: Some(writes.count),
                ..copy_options(opts)
            },
            pipeline::Hooks {
                progress: &bytes,
                block_done: hooks.checkpoints.is_some().then_some(&block_done as _),
                stop: hooks.stop.or(opts.stop.as_deref()),
            },
        )?;
        let copy_seconds = copy_started.elapsed().as_secs_f64();
        if let Some(c) = hooks.checkpoints {
            c.copied().map_err(Error::Checkpoint)?;
        }
        let up = if opts.leave_open {
            tracing::info!(disk = %name, "writing the footer; the disk stays open for delta syncs");
            sink.write_footer(size, footer)?
        } else {
            tracing::info!(disk = %name, "writing the footer and ending the upload");
            (hooks.progress)(Progress::Step("ending the upload", None));
            sink.finish(size, footer)?
        };
        Ok((copy, up, copy_seconds, writes))
    })();
    let (copy, up, copy_seconds, writes) = match result {
        Ok(r) => r,
        Err(cause) if opts.cleanup => {
            return match session.block_on(arm.delete(&target.disk)) {
                Ok(()) => Err(Error::CleanedUp {
                    disk: name,
                    cause: Box::new(cause),
                }),
                Err(e) => Err(Error::Left {
                    disk: name,
                    cause: Box::new(Error::DeleteFailed {
                        cause: Box::new(cause),
                        delete: e,
                    }),
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
    let info = session.block_on(arm.get(&target.disk))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        disk: info.as_ref().map(|d| d.id.clone()).unwrap_or_default(),
        source: source_name.to_owned(),
        credential: session.credential(),
        virtual_size: size,
        upload_size_bytes: upload_size,
        resumed: opts.resume,
        copy,
        upload: up,
        retries: session.budget().used(),
        source_retries: 0,
        seconds,
        copy_seconds,
        writes_in_flight: writes.count.get(),
        blob_round_trip_ms: writes.round_trip.as_secs_f64() * 1000.0,
        throughput_mib_s: up.bytes_sent as f64 / (1 << 20) as f64 / copy_seconds.max(1e-9),
        state: info.map_or(DiskState::Other("gone".into()), |d| d.state),
    })
}
