//! The `ebs2azure` command: parses arguments, calls the library, prints.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ebs2azure::convert::{Conversion, Options, Report};
use ebs2azure::diskformats::{Format, OpenOptions};
use ebs2azure::info::Info;
use ebs2azure::pipeline;
use ebs2azure::sink::vhd_file::FileOptions;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Move whole disks from AWS to Azure, offline: convert disk images to the
/// fixed VHDs Azure takes, skipping holes and zeros.
#[derive(Parser)]
#[command(name = "ebs2azure", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a raw image, block device or VHD to a fixed VHD (default), dynamic VHD or raw image.
    ///
    /// The output is written sparse under OUTPUT.partial and renamed to OUTPUT
    /// when complete; it is readable by its owner only. A fixed VHD's size is
    /// rounded up to a whole MiB, as Azure requires, and a GPT's backup table
    /// is moved to the new end of the disk.
    #[command(
        after_help = "Examples:\n  ebs2azure convert disk.raw --out disk.vhd\n  ebs2azure convert /dev/nvme1n1 --out data.vhd --json\n  ebs2azure convert old.vhd --out disk.img --output-format raw"
    )]
    Convert {
        /// Image to read: raw file, block device, or VHD (fixed or dynamic, detected from its footer).
        input: PathBuf,
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
        /// Blocks copied at once [default: one per CPU core, 4 to 16].
        #[arg(long)]
        concurrency: Option<NonZeroUsize>,
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
    /// Show an image's format, VHD footer, geometry, sizes and partitions.
    #[command(
        after_help = "Examples:\n  ebs2azure info disk.vhd\n  ebs2azure info /dev/nvme1n1 --json"
    )]
    Info {
        /// Image to inspect: raw file, block device or VHD.
        file: PathBuf,
        /// Read FILE as raw even if it ends with a VHD footer.
        #[arg(long)]
        input_raw: bool,
        /// Open a VHD whose footer checksum is wrong.
        #[arg(long)]
        accept_bad_checksum: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
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
        } => {
            let opts = Options {
                output_format: output_format.into(),
                open: OpenOptions {
                    accept_bad_checksum,
                    force_raw: input_raw,
                },
                pipeline: pipeline::Options {
                    concurrency: concurrency.unwrap_or_else(pipeline::default_concurrency),
                    ..Default::default()
                },
                file: FileOptions {
                    overwrite: force,
                    sync: !no_sync,
                },
            };
            run_convert(input, out, &opts, json)
        }
        Command::Info {
            file,
            input_raw,
            accept_bad_checksum,
            json,
        } => {
            let opts = OpenOptions {
                accept_bad_checksum,
                force_raw: input_raw,
            };
            ebs2azure::info::info(&file, &opts)
                .map_err(|e| e.to_string())
                .and_then(|info| print_info(&info, json))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_convert(input: PathBuf, out: PathBuf, opts: &Options, json: bool) -> Result<(), String> {
    let conversion = Conversion::prepare(&input, &out, opts).map_err(|e| e.to_string())?;
    let bar = if std::io::stderr().is_terminal() {
        let total = conversion.bytes_to_read().map_err(|e| e.to_string())?;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
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

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string_pretty(v).map_err(|e| format!("cannot print JSON: {e}"))
}
