//! Local conversion: any supported image (raw file, block device, fixed or
//! dynamic VHD) to a fixed VHD ready for Azure, a dynamic VHD, or raw.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use diskformats::{Disk, Format, PartitionTable};
use serde::Serialize;

use crate::fixup;
use crate::limits;
use crate::pipeline::{self, Stats};
use crate::sink::{self, vhd_file::FileOptions, BlockSink, VhdFileSink};
use crate::source::ebs::{self, EbsSource, Quotas};
use crate::source::{self, BlockSource, ImageSource, InputMapping};

/// What to convert: a local image or device, or an EBS snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A raw image, block device or VHD.
    Image(PathBuf),
    /// An EBS snapshot id.
    Snapshot(String),
}

impl Input {
    /// A snapshot id ([`ebs::is_snapshot_id`]) names a snapshot; anything
    /// else is a path (a file named like a snapshot id is `./snap-...`).
    pub fn parse(s: &str) -> Input {
        if ebs::is_snapshot_id(s) {
            Input::Snapshot(s.to_owned())
        } else {
            Input::Image(PathBuf::from(s))
        }
    }

    /// [`Input::parse`], refusing what looks meant as a snapshot id but is
    /// not one (and is no file either), with the rule in the sentence.
    pub fn parse_checked(s: &str) -> Result<Input, crate::source::Error> {
        if ebs::is_near_snapshot_id(s) && !Path::new(s).exists() {
            return Err(crate::source::Error::BadSnapshotId(s.to_owned()));
        }
        Ok(Input::parse(s))
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Image(p) => write!(f, "{}", p.display()),
            Input::Snapshot(s) => f.pad(s),
        }
    }
}

/// The opened input.
#[derive(Debug)]
enum Source {
    Image(ImageSource),
    Ebs(EbsSource),
}

impl Source {
    fn blocks(&self) -> &dyn BlockSource {
        match self {
            Source::Image(s) => s,
            Source::Ebs(s) => s,
        }
    }
}

/// How to convert.
#[derive(Clone, Debug)]
pub struct Options {
    /// Output format; a fixed VHD is what Azure takes.
    pub output_format: Format,
    /// How to open the input.
    pub open: diskformats::OpenOptions,
    /// How to read a local input: plain reads unless the caller vouches
    /// that it will not change (then it is mapped, saving a copy per block).
    pub input_mapping: InputMapping,
    /// Copy engine settings.
    pub pipeline: pipeline::Options,
    /// Output file settings.
    pub file: FileOptions,
    /// How to reach EBS, for snapshot inputs.
    pub ebs: ebs::Settings,
    /// Request quotas shared by every snapshot of the run.
    pub quotas: Arc<Quotas>,
    /// Fix the guest up for Azure before the output is renamed into place
    /// (OS disks; needs root and loop devices).
    pub fixup: Option<fixup::apply::FixOptions>,
    /// Set from elsewhere (an interrupt) to stop the copy; the output is
    /// then not renamed into place.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            output_format: Format::VhdFixed,
            open: diskformats::OpenOptions::default(),
            input_mapping: InputMapping::READS,
            pipeline: pipeline::Options::default(),
            file: FileOptions::default(),
            ebs: ebs::Settings::default(),
            quotas: Quotas::published(),
            fixup: None,
            stop: None,
        }
    }
}

/// What a conversion did, for people (`Display`-free: the CLI formats it) and machines (JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Input path.
    pub input: String,
    /// Detected input format.
    #[serde(serialize_with = "crate::kinds::as_text::serialize")]
    pub input_format: InputFormat,
    /// Output path.
    pub output: String,
    /// Output format.
    #[serde(serialize_with = "crate::kinds::as_text::serialize")]
    pub output_format: Format,
    /// Size of the input disk in bytes.
    pub source_size: u64,
    /// Virtual size of the output disk in bytes.
    pub virtual_size: u64,
    /// True when the size was rounded up to a whole MiB for Azure.
    pub rounded_up: bool,
    /// True when the backup GPT was moved to the new end of the disk.
    pub gpt_backup_moved: bool,
    /// Bytes and blocks moved.
    #[serde(flatten)]
    pub stats: Stats,
    /// Wall time from start to the renamed output, in seconds.
    pub seconds: f64,
    /// Bytes read per second, in MiB/s.
    pub throughput_mib_s: f64,
    /// Things the user should know about the output.
    pub warnings: Vec<String>,
    /// What reading a snapshot took, for snapshot inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebs: Option<EbsReport>,
    /// What the guest fix-up changed, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixup: Option<fixup::apply::Report>,
}

/// What a conversion read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// A local image of this format.
    Image(Format),
    /// An EBS snapshot, through the EBS direct APIs.
    EbsSnapshot,
}

impl std::fmt::Display for InputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputFormat::Image(format) => f.pad(format.name()),
            InputFormat::EbsSnapshot => f.pad("ebs-snapshot"),
        }
    }
}

/// Retries and throttling seen while reading a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct EbsReport {
    /// The region read from.
    pub region: String,
    /// Requests retried.
    pub retries: u64,
    /// Throttling answers.
    pub throttled: u64,
    /// Block tokens refreshed after expiring.
    pub tokens_refreshed: u64,
    /// Blocks that failed their checksum and were fetched again.
    pub checksum_mismatches: u64,
    /// The GetSnapshotBlock round trip measured at the end (moving average), ms.
    pub round_trip_ms: f64,
    /// The limit on requests in flight at the end (quota x round trip, with headroom).
    pub in_flight_limit: usize,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input could not be opened or read.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The output could not be created or finished.
    #[error(transparent)]
    Sink(#[from] sink::Error),
    /// The copy failed.
    #[error(transparent)]
    Copy(#[from] pipeline::Error),
    /// The input holds no bytes.
    #[error("{0} is empty (0 bytes): there is no disk to convert; check the path")]
    EmptyInput(String),
    /// Input and output are the same file.
    #[error("the output {0} is the input itself; choose another output path")]
    SameFile(String),
    /// The guest could not be fixed up; the output was not kept.
    #[error("{0}; nothing was written to the output")]
    Fixup(#[from] fixup::Error),
    /// Fix-ups were asked for an output they cannot edit.
    #[error("fixing the guest up edits it in place, which a dynamic VHD does not allow; write a fixed VHD (the default) or a raw image")]
    FixupFormat,
    /// Reading the input's partition table failed.
    #[error("cannot read the partition table of {path}: {source}")]
    PartitionTable {
        /// The input.
        path: String,
        /// What the reader reported.
        source: diskformats::Error,
    },
}

/// A conversion ready to run: the input is open and checked, the output size
/// and the partition-table fix-ups are known.
#[derive(Debug)]
pub struct Conversion {
    source: Source,
    input: Input,
    output: PathBuf,
    opts: Options,
    virtual_size: u64,
    gpt_writes: Vec<(u64, Vec<u8>)>,
    warnings: Vec<String>,
}

impl Conversion {
    /// Opens and checks the input and plans the output; nothing is written yet.
    pub fn prepare(input: &Input, output: &Path, opts: &Options) -> Result<Conversion, Error> {
        if opts.fixup.is_some() {
            // Found now, not after a long copy.
            if opts.output_format == Format::VhdDynamic {
                return Err(Error::FixupFormat);
            }
            fixup::mount::check_host()?;
            if !opts.file.overwrite && fs::symlink_metadata(output).is_ok() {
                return Err(sink::Error::Exists(output.display().to_string()).into());
            }
        }
        let path = match input {
            Input::Image(path) => path,
            Input::Snapshot(id) => {
                // Snapshot sizes are whole GiB: no rounding, no table to move.
                let src = EbsSource::open(id, &opts.ebs, opts.quotas.clone())?;
                let virtual_size = src.size();
                let mut warnings = Vec::new();
                if opts.output_format == Format::VhdFixed {
                    warnings.extend(limits::azure_size_problems(virtual_size));
                }
                return Ok(Conversion {
                    source: Source::Ebs(src),
                    input: input.clone(),
                    output: output.to_owned(),
                    opts: opts.clone(),
                    virtual_size,
                    gpt_writes: Vec::new(),
                    warnings,
                });
            }
        };
        let source = ImageSource::open_with(path, &opts.open, opts.input_mapping)?;
        for candidate in [output.to_path_buf(), sink::vhd_file::partial_path(output)] {
            if same_file(path, &candidate) {
                return Err(Error::SameFile(candidate.display().to_string()));
            }
        }
        let size = source.image().size();
        if size == 0 {
            return Err(Error::EmptyInput(path.display().to_string()));
        }
        let virtual_size = match opts.output_format {
            Format::Raw => size,
            Format::VhdFixed | Format::VhdDynamic => diskformats::round_up_to_mib(size),
        };
        let mut warnings = Vec::new();
        let table = PartitionTable::read(source.image()).map_err(|e| Error::PartitionTable {
            path: path.display().to_string(),
            source: e,
        })?;
        warnings.extend(
            table
                .problems()
                .into_iter()
                .map(|p| format!("partition table: {p}")),
        );
        let mut gpt_writes = Vec::new();
        if let PartitionTable::Gpt { gpt, .. } = &table {
            let new_last = virtual_size / gpt.sector_size - 1;
            if virtual_size > size && gpt.header.alternate_lba < new_last {
                if gpt.primary_ok {
                    let mut sector0 = [0u8; 512];
                    source
                        .image()
                        .read_at(&mut sector0, 0)
                        .and_then(|()| gpt.grow_writes(&sector0, virtual_size))
                        .map(|w| gpt_writes = w)
                        .map_err(|e| Error::PartitionTable {
                            path: path.display().to_string(),
                            source: e,
                        })?;
                } else {
                    warnings.push(
                        "the backup GPT was left where it was because the primary table is damaged; repair the table (for example `sgdisk -e`) before booting".into(),
                    );
                }
            }
        }
        if opts.output_format == Format::VhdFixed {
            warnings.extend(limits::azure_size_problems(virtual_size));
        }
        Ok(Conversion {
            source: Source::Image(source),
            input: input.clone(),
            output: output.to_owned(),
            opts: opts.clone(),
            virtual_size,
            gpt_writes,
            warnings,
        })
    }

    /// Bytes the copy will read (the input's allocated blocks), for progress;
    /// `None` for snapshots, whose listing is read as the copy goes.
    pub fn bytes_to_read(&self) -> Result<Option<u64>, Error> {
        match &self.source {
            Source::Image(s) => Ok(Some(s.listed_bytes()?)),
            Source::Ebs(_) => Ok(None),
        }
    }

    /// How far a snapshot's listing has got while the copy runs (`None`
    /// for images, whose bytes to read are known up front).
    pub fn listing(&self) -> Option<std::sync::Arc<crate::source::Listing>> {
        self.source.blocks().listing()
    }

    /// Virtual size of the output.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Runs the conversion; `progress` gets the bytes of each block done.
    pub fn run(self, progress: &(dyn Fn(u64) + Sync)) -> Result<Report, Error> {
        let started = Instant::now();
        let fmt = self.opts.output_format;
        // A guest to fix up is finished under the partial name, fixed up
        // there, and renamed only then: OUTPUT never holds an unfixed guest.
        let (written, file_opts) = if self.opts.fixup.is_some() {
            let opts = FileOptions {
                overwrite: true,
                ..self.opts.file
            };
            (sink::vhd_file::partial_path(&self.output), opts)
        } else {
            (self.output.clone(), self.opts.file)
        };
        let sink = VhdFileSink::create(&written, fmt, self.virtual_size, file_opts)?;
        let stats = pipeline::copy_with(
            self.source.blocks(),
            &sink,
            &self.opts.pipeline,
            pipeline::Hooks {
                progress,
                block_done: None,
                stop: self.opts.stop.as_deref(),
            },
        )?;
        for (offset, bytes) in &self.gpt_writes {
            sink.write_at(*offset, bytes)?;
        }
        sink.commit()?;
        let fixup = match &self.opts.fixup {
            Some(fix) => Some(fix_up_and_rename(
                &written,
                &self.output,
                fix,
                self.opts.file.sync,
            )?),
            None => None,
        };
        let seconds = started.elapsed().as_secs_f64();
        let size = self.source.blocks().size();
        let (input_format, ebs) = match &self.source {
            Source::Image(s) => (InputFormat::Image(s.image().format()), None),
            Source::Ebs(s) => {
                let c = s.counters();
                let (rtt, limit) = s.flight();
                let report = EbsReport {
                    round_trip_ms: (rtt.as_secs_f64() * 1e4).round() / 10.0,
                    in_flight_limit: limit,
                    region: s.region().to_owned(),
                    retries: c.retries.load(Ordering::Relaxed),
                    throttled: c.throttled.load(Ordering::Relaxed),
                    tokens_refreshed: c.tokens_refreshed.load(Ordering::Relaxed),
                    checksum_mismatches: c.checksum_mismatches.load(Ordering::Relaxed),
                };
                (InputFormat::EbsSnapshot, Some(report))
            }
        };
        Ok(Report {
            input: self.input.to_string(),
            input_format,
            output: self.output.display().to_string(),
            output_format: fmt,
            source_size: size,
            virtual_size: self.virtual_size,
            rounded_up: self.virtual_size > size,
            gpt_backup_moved: !self.gpt_writes.is_empty(),
            stats,
            seconds,
            throughput_mib_s: stats.bytes_read as f64 / (1 << 20) as f64 / seconds.max(1e-9),
            warnings: self.warnings,
            ebs,
            fixup,
        })
    }
}

/// Fixes up the guest in `staged` and renames it to `output`; on failure
/// `staged` is removed, so no unfixed or half-edited image stays behind.
fn fix_up_and_rename(
    staged: &Path,
    output: &Path,
    fix: &fixup::apply::FixOptions,
    sync: bool,
) -> Result<fixup::apply::Report, Error> {
    let io = |action: &'static str, source| {
        Error::Sink(sink::Error::Io {
            action,
            path: staged.display().to_string(),
            source,
        })
    };
    let result = fixup::apply::fixup(staged, fix)
        .map_err(Error::from)
        .and_then(|report| {
            if sync {
                // The loop device wrote through the page cache.
                fs::File::open(staged)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io("flush", e))?;
            }
            fs::rename(staged, output).map_err(|e| io("rename", e))?;
            if sync {
                // And the rename itself.
                let dir = match output.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io("flush the directory of", e))?;
            }
            Ok(report)
        });
    if result.is_err() {
        let _ = fs::remove_file(staged);
    }
    result
}

/// Converts `input` to `output` in one call.
///
/// ```no_run
/// use ebs2azure::convert::{convert, Options};
/// use ebs2azure::convert::Input;
/// let report = convert(&Input::parse("disk.raw"), "disk.vhd".as_ref(), &Options::default())?;
/// println!("wrote {} bytes", report.stats.bytes_written);
/// # Ok::<(), ebs2azure::convert::Error>(())
/// ```
pub fn convert(input: &Input, output: &Path, opts: &Options) -> Result<Report, Error> {
    Conversion::prepare(input, output, opts)?.run(&|_| {})
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
