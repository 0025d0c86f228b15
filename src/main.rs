//! The `ebs2azure` command: parses arguments, calls the library, prints.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ebs2azure::convert::{Conversion, Input, Options, Report};
use ebs2azure::diskformats::{Format, OpenOptions};
use ebs2azure::info::{Info, SnapshotInfo};
use ebs2azure::pipeline;
use ebs2azure::sink::vhd_file::FileOptions;
use ebs2azure::source::ebs;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Move whole disks from AWS to Azure, offline: read EBS snapshots or disk
/// images and write the fixed VHDs Azure takes, skipping holes and zeros.
#[derive(Parser)]
#[command(name = "ebs2azure", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an EBS snapshot, raw image, block device or VHD to a fixed VHD (default), dynamic VHD or raw image.
    ///
    /// The output is written sparse under OUTPUT.partial and renamed to OUTPUT
    /// when complete; it is readable by its owner only. A fixed VHD's size is
    /// rounded up to a whole MiB, as Azure requires, and a GPT's backup table
    /// is moved to the new end of the disk. A snapshot is read through the EBS
    /// direct APIs with the default AWS credential chain; only its written
    /// blocks are fetched.
    #[command(
        after_help = "Examples:\n  ebs2azure convert snap-0123456789abcdef0 --out disk.vhd --region eu-west-1\n  ebs2azure convert disk.raw --out disk.vhd\n  ebs2azure convert /dev/nvme1n1 --out data.vhd --json\n  ebs2azure convert old.vhd --out disk.img --output-format raw"
    )]
    Convert {
        /// What to read: an EBS snapshot id (snap-...), a raw file, a block device, or a VHD (fixed or dynamic, detected from its footer).
        input: String,
        /// Path of the image to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Format to write.
        #[arg(long, value_enum, default_value_t = OutputFormat::VhdFixed)]
        output_format: OutputFormat,
        /// Read INPUT as raw even if it ends with a VHD footer.
        #[arg(long)]
        input_raw: bool,
        /// Open a VHD whose footer checksum is wrong (recovery only).
        #[arg(long)]
        accept_bad_checksum: bool,
        /// Blocks copied at once [default: for images one per CPU core, 4 to 16; for snapshots 96 requests in flight, lowered while throttled].
        #[arg(long)]
        concurrency: Option<NonZeroUsize>,
        #[command(flatten)]
        aws: AwsArgs,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
        /// Do not flush OUTPUT to stable storage before renaming it into place
        /// (faster; after a power loss OUTPUT may be incomplete).
        #[arg(long)]
        no_sync: bool,
        /// Print the summary as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Show an image's format, VHD footer, geometry, sizes and partitions, or a snapshot's size and written blocks.
    #[command(
        after_help = "Examples:\n  ebs2azure info disk.vhd\n  ebs2azure info /dev/nvme1n1 --json\n  ebs2azure info snap-0123456789abcdef0 --region eu-west-1"
    )]
    Info {
        /// What to inspect: an EBS snapshot id, a raw file, a block device or a VHD.
        file: String,
        /// Read FILE as raw even if it ends with a VHD footer.
        #[arg(long)]
        input_raw: bool,
        /// Open a VHD whose footer checksum is wrong.
        #[arg(long)]
        accept_bad_checksum: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

/// Where and how to reach AWS, for snapshot inputs.
#[derive(clap::Args)]
#[command(next_help_heading = "AWS (snapshot inputs)")]
struct AwsArgs {
    /// Region of the snapshot [default: AWS_REGION, or the profile's].
    #[arg(long)]
    region: Option<String>,
    /// Named profile from ~/.aws/config [default: AWS_PROFILE, or `default`].
    #[arg(long)]
    profile: Option<String>,
    /// EBS endpoint, such as a local emulator (AWS_ENDPOINT_URL_EBS and AWS_ENDPOINT_URL work too).
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Limit on one request, in seconds; a stalled request is retried.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Retries allowed for the whole run, all requests together.
    #[arg(long, default_value_t = 1000)]
    retry_budget: u64,
}

impl AwsArgs {
    fn settings(&self, concurrency: Option<NonZeroUsize>) -> ebs::Settings {
        let defaults = ebs::Settings::default();
        ebs::Settings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            retry_budget: self.retry_budget,
            max_in_flight: concurrency.map_or(defaults.max_in_flight, NonZeroUsize::get),
            ..defaults
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// Fixed VHD, the format Azure managed disks take.
    VhdFixed,
    /// Dynamic (sparse) VHD, at most 2040 GiB.
    VhdDynamic,
    /// Raw disk image.
    Raw,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::VhdFixed => Format::VhdFixed,
            OutputFormat::VhdDynamic => Format::VhdDynamic,
            OutputFormat::Raw => Format::Raw,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert {
            input,
            out,
            output_format,
            input_raw,
            accept_bad_checksum,
            concurrency,
            force,
            no_sync,
            json,
            aws,
        } => {
            let input = Input::parse(&input);
            // For a snapshot it bounds the requests in flight; a few copy workers suffice.
            let workers = match input {
                Input::Image(_) => concurrency,
                Input::Snapshot(_) => None,
            };
            let opts = Options {
                output_format: output_format.into(),
                open: OpenOptions {
                    accept_bad_checksum,
                    force_raw: input_raw,
                },
                pipeline: pipeline::Options {
                    concurrency: workers,
                    ..Default::default()
                },
                file: FileOptions {
                    overwrite: force,
                    sync: !no_sync,
                },
                ebs: aws.settings(concurrency),
                ..Default::default()
            };
            run_convert(&input, out, &opts, json)
        }
        Command::Info {
            file,
            input_raw,
            accept_bad_checksum,
            json,
            aws,
        } => match Input::parse(&file) {
            Input::Snapshot(id) => ebs2azure::info::snapshot_info(&id, &aws.settings(None))
                .map_err(|e| e.to_string())
                .and_then(|info| print_snapshot_info(&info, json)),
            Input::Image(path) => {
                let opts = OpenOptions {
                    accept_bad_checksum,
                    force_raw: input_raw,
                };
                ebs2azure::info::info(&path, &opts)
                    .map_err(|e| e.to_string())
                    .and_then(|info| print_info(&info, json))
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_convert(input: &Input, out: PathBuf, opts: &Options, json: bool) -> Result<(), String> {
    let conversion = Conversion::prepare(input, &out, opts).map_err(|e| e.to_string())?;
    let bar = if std::io::stderr().is_terminal() {
        let (bar, template) = match conversion.bytes_to_read().map_err(|e| e.to_string())? {
            Some(total) => (
                ProgressBar::new(total),
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            ),
            // A snapshot's listing is read as the copy goes: no total to show.
            None => (
                ProgressBar::no_length(),
                "{spinner} [{elapsed_precise}] {bytes} read ({bytes_per_sec})",
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = conversion.run(&|n| bar.inc(n));
    bar.finish_and_clear();
    let report = report.map_err(|e| e.to_string())?;
    if json {
        println!("{}", to_json(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &Report) {
    if r.rounded_up {
        println!(
            "note: virtual size rounded up from {} to {} bytes (a whole MiB, as Azure requires){}",
            r.source_size,
            r.virtual_size,
            if r.gpt_backup_moved {
                "; the backup GPT was moved to the new end of the disk"
            } else {
                ""
            }
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if let Some(e) = r
        .ebs
        .as_ref()
        .filter(|e| e.retries + e.tokens_refreshed > 0)
    {
        println!(
            "note: {} retries ({} throttled), {} block tokens refreshed, {} checksum mismatches fetched again",
            e.retries, e.throttled, e.tokens_refreshed, e.checksum_mismatches
        );
    }
    println!(
        "{} -> {} ({}, {}): read {}, wrote {}, skipped {} of zeros, in {:.2} s ({:.0} MiB/s)",
        r.input,
        r.output,
        r.output_format,
        HumanBytes(r.virtual_size),
        HumanBytes(r.stats.bytes_read),
        HumanBytes(r.stats.bytes_written),
        HumanBytes(r.stats.bytes_zero),
        r.seconds,
        r.throughput_mib_s
    );
}

fn print_info(i: &Info, json: bool) -> Result<(), String> {
    if json {
        println!("{}", to_json(i)?);
        return Ok(());
    }
    println!("file:            {}", i.path);
    println!("format:          {}", i.format);
    println!(
        "virtual size:    {} ({} bytes)",
        HumanBytes(i.virtual_size),
        i.virtual_size
    );
    println!("file size:       {} bytes", i.file_size);
    println!(
        "allocated:       {} ({} bytes)",
        HumanBytes(i.allocated_bytes),
        i.allocated_bytes
    );
    if let Some(f) = &i.footer {
        println!("VHD footer:");
        println!("  disk type:     {}", f.disk_type);
        println!("  current size:  {}", f.current_size);
        println!("  original size: {}", f.original_size);
        println!(
            "  geometry:      {}/{}/{} (C/H/S, {} bytes)",
            f.cylinders, f.heads, f.sectors_per_track, f.geometry_size
        );
        println!(
            "  creator:       {:?} {} on {:?}",
            f.creator_application, f.creator_version, f.creator_host_os
        );
        println!("  timestamp:     {}", f.timestamp);
        println!("  unique id:     {}", f.unique_id);
        println!(
            "  checksum:      {} ({})",
            f.checksum,
            if f.checksum_valid { "valid" } else { "INVALID" }
        );
        println!(
            "  features:      {:#010x}, version {}, data offset {:#x}, saved state {}",
            f.features, f.format_version, f.data_offset, f.saved_state
        );
    }
    if let Some(d) = &i.dynamic {
        println!(
            "dynamic header:  block size {}, {} BAT entries at {:#x}, {} allocated",
            HumanBytes(u64::from(d.block_size)),
            d.max_table_entries,
            d.table_offset,
            d.allocated_blocks
        );
    }
    println!("partition table: {}", i.partition_table);
    for p in &i.partitions {
        println!(
            "  {:>3}  start {:>14}  size {:>12}  {}{}{}",
            p.number,
            p.start,
            HumanBytes(p.size).to_string(),
            p.kind,
            if p.name.is_empty() {
                String::new()
            } else {
                format!("  \"{}\"", p.name)
            },
            p.guid
                .as_deref()
                .map(|g| format!("  {g}"))
                .unwrap_or_default()
        );
    }
    for p in &i.problems {
        println!("problem: {p}");
    }
    if i.azure_upload_problems.is_empty() {
        println!("azure:           ready to upload as a managed disk");
    } else {
        for p in &i.azure_upload_problems {
            println!("azure:           {p}");
        }
    }
    Ok(())
}

fn print_snapshot_info(i: &SnapshotInfo, json: bool) -> Result<(), String> {
    if json {
        println!("{}", to_json(i)?);
        return Ok(());
    }
    println!("snapshot:        {} ({})", i.snapshot, i.region);
    println!(
        "volume size:     {} ({} bytes)",
        HumanBytes(i.volume_size),
        i.volume_size
    );
    println!("block size:      {} bytes", i.block_size);
    println!(
        "written blocks:  {} ({}, {:.1}% of the volume)",
        i.blocks,
        HumanBytes(i.allocated_bytes),
        100.0 * i.allocated_bytes as f64 / i.volume_size.max(1) as f64
    );
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string_pretty(v).map_err(|e| format!("cannot print JSON: {e}"))
}
