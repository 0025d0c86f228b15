//! The `ebs2azure` command: parses arguments, calls the library, prints.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ebs2azure::azure::arm::{DiskRef, HyperVGeneration, OsType};
use ebs2azure::convert::{Conversion, Input, Options, Report};
use ebs2azure::diskformats::{Format, OpenOptions};
use ebs2azure::info::{Info, SnapshotInfo};
use ebs2azure::os_disk;
use ebs2azure::pipeline;
use ebs2azure::sink::vhd_file::FileOptions;
use ebs2azure::source::ebs;
use ebs2azure::upload;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Prints a line to standard output; a reader that went away (`| head`)
/// ends the program quietly, as for any Unix filter, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

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
        after_help = "Examples:\n  ebs2azure convert snap-0123456789abcdef0 --out disk.vhd --region eu-west-1\n  ebs2azure convert disk.raw --out disk.vhd\n  ebs2azure convert /dev/nvme1n1 --out data.vhd --json\n  ebs2azure convert old.vhd --out disk.img --output-format raw\n  sudo ebs2azure convert snap-0123456789abcdef0 --out os.vhd --fixup"
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
        #[command(flatten)]
        limits: LimitArgs,
        /// Replace OUTPUT if it exists.
        #[arg(long, help_heading = "Output")]
        force: bool,
        /// Do not flush OUTPUT to stable storage before renaming it into place
        /// (faster; after a power loss OUTPUT may be incomplete).
        #[arg(long, help_heading = "Output")]
        no_sync: bool,
        /// Fix the guest up for Azure before OUTPUT is renamed into place
        /// (OS disks; needs root and loop devices; see `ebs2azure fixup --help`).
        #[arg(long, help_heading = "Fix-ups")]
        fixup: bool,
        #[command(flatten)]
        disks: DataDiskArgs,
        /// Print the summary as JSON on standard output.
        #[arg(long, help_heading = "Output")]
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
        #[arg(long, help_heading = "Output")]
        json: bool,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Inspect a Linux guest disk for what it needs to boot on Azure (read-only; needs root and loop devices).
    ///
    /// Reads the partition table and every filesystem's superblock, mounts
    /// the Linux filesystems read-only without replaying their journals, and
    /// reports the distribution, boot mode and Hyper-V generation, kernels
    /// and their Hyper-V drivers, fstab, cloud-init, network pinning and the
    /// Azure agent. Each finding is a blocker (will not boot), a fix-up, or advice.
    #[command(
        after_help = "Examples:\n  sudo ebs2azure inspect disk.vhd\n  sudo ebs2azure inspect disk.raw --json"
    )]
    Inspect {
        /// A raw image or fixed VHD of the OS disk.
        image: PathBuf,
        /// Print as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Make the fix-ups `inspect` lists, in the guest (needs root and loop devices).
    ///
    /// Mounts the root filesystem read-write (its journal replays, as at boot)
    /// and edits /etc/fstab (UUID= for device paths, volumes that do not move
    /// commented out, nofail on data disks), /etc/default/grub (serial console,
    /// no Xen console), cloud-init's datasource_list (Azure first), the
    /// initramfs-tools or dracut driver lists (Hyper-V), and removes
    /// persistent-net rules. Each original is kept as FILE.ebs2azure-orig; a
    /// second run changes nothing; the filesystem must check clean afterwards.
    #[command(
        after_help = "Examples:\n  sudo ebs2azure fixup disk.vhd --dry-run\n  sudo ebs2azure fixup disk.vhd --json"
    )]
    Fixup {
        /// A raw image or fixed VHD of the OS disk.
        image: PathBuf,
        /// Say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        disks: DataDiskArgs,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print the report as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Upload a fixed VHD to a new Azure managed disk (direct upload).
    ///
    /// Checks the VHD first (fixed, valid footer, whole MiB, within Azure's
    /// limits), creates the disk for upload, sends only the non-zero pages in
    /// Put Page requests of up to 4 MiB, writes the footer and ends the
    /// upload. If it fails, the disk is left for `--resume`, which skips what
    /// is already written; `--cleanup` deletes it instead.
    #[command(
        after_help = "Examples:\n  ebs2azure upload disk.vhd --subscription $SUB --resource-group rg --disk-name web01-os --location westeurope --os-type linux --hyper-v-generation V2\n  ebs2azure upload data.vhd --subscription $SUB -g rg --disk-name web01-data --location westeurope --resume\n\nAzure rights needed: create disks and call beginGetAccess/endGetAccess on them (e.g. the Disk Contributor-level\nMicrosoft.Compute/disks/write, beginGetAccess/action and endGetAccess/action, as in \"Data Operator for Managed Disks\")."
    )]
    Upload {
        /// The fixed VHD to upload (`ebs2azure convert` makes one).
        vhd: PathBuf,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Put Page requests in flight [default: 16].
        #[arg(long)]
        concurrency: Option<NonZeroUsize>,
        /// Print the summary as JSON on standard output.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Move an EBS snapshot into a new Azure managed disk: data disks stream with no local copy, OS disks are fixed up first.
    ///
    /// Reads the snapshot's written blocks through the EBS direct APIs and
    /// sends their non-zero pages to the disk; the VHD footer is made here.
    /// An OS disk (--os-type linux) is staged to a local sparse VHD under
    /// --staging-dir, fixed up so it boots on Azure (as `ebs2azure fixup`
    /// does; needs root and loop devices), then uploaded with the Hyper-V
    /// generation its boot mode needs; the fix-up report is in the summary.
    /// The staged copy is removed after the upload, or kept for --resume if
    /// the upload fails. --no-fixup streams an OS disk unchanged.
    #[command(
        after_help = "Examples:\n  ebs2azure migrate snap-0123456789abcdef0 --region eu-west-1 --subscription $SUB -g rg --disk-name db01-data --location westeurope\n  sudo ebs2azure migrate snap-0fedcba9876543210 --region eu-west-1 -g rg --disk-name web01-os --location westeurope --os-type linux"
    )]
    Migrate {
        /// The EBS snapshot id (snap-...).
        snapshot: String,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// GetSnapshotBlock requests in flight [default: 96, lowered while throttled].
        #[arg(long)]
        concurrency: Option<NonZeroUsize>,
        /// Upload an OS disk as it is, streamed, without fix-ups.
        #[arg(long, help_heading = "Fix-ups")]
        no_fixup: bool,
        /// Where an OS disk is staged; it needs room for the snapshot's written data.
        #[arg(
            long,
            env = "EBS2AZURE_STAGING_DIR",
            default_value = "/var/tmp",
            help_heading = "Fix-ups"
        )]
        staging_dir: PathBuf,
        /// Keep the staged VHD of an OS disk after the upload.
        #[arg(long, help_heading = "Fix-ups")]
        keep_staged: bool,
        /// Upload an OS disk even when inspection finds it will not boot on Azure.
        #[arg(long, help_heading = "Fix-ups")]
        allow_blockers: bool,
        #[command(flatten)]
        disks: DataDiskArgs,
        /// Print the summary as JSON on standard output.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Read a managed disk back and compare it with its source, range by range.
    ///
    /// Takes a read SAS, compares SHA-256 digests of every non-zero range of
    /// the source (a fixed VHD or a snapshot) with the disk's bytes there, and
    /// checks the VHD footer. Exits non-zero on any difference.
    #[command(
        after_help = "Example:\n  ebs2azure verify disk.vhd --subscription $SUB -g rg --disk-name web01-os"
    )]
    Verify {
        /// The source: a fixed VHD or an EBS snapshot id.
        source: String,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print every range, not only the differing ones.
        #[arg(long, short, help_heading = "Output")]
        verbose: bool,
        /// Print the result as JSON on standard output.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
}

/// Which managed disk, and how to reach Azure.
#[derive(clap::Args)]
#[command(next_help_heading = "Azure")]
struct AzureArgs {
    /// Subscription id.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    subscription: String,
    /// Resource group.
    #[arg(long, short = 'g')]
    resource_group: String,
    /// Name of the managed disk.
    #[arg(long)]
    disk_name: String,
    /// Azure region of a new disk, e.g. westeurope.
    #[arg(long)]
    location: Option<String>,
    /// Disk SKU.
    #[arg(long, default_value = "Premium_LRS")]
    sku: String,
    /// OS of an OS disk (leave out for data disks).
    #[arg(long, value_enum)]
    os_type: Option<OsTypeArg>,
    /// Hyper-V generation of an OS disk: V1 boots BIOS guests, V2 UEFI ones.
    #[arg(long, value_enum)]
    hyper_v_generation: Option<GenerationArg>,
    /// Availability zone.
    #[arg(long)]
    zone: Option<String>,
    /// A tag KEY=VALUE (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Continue an interrupted upload into the existing disk.
    #[arg(long, conflicts_with = "cleanup")]
    resume: bool,
    /// Delete the disk if the upload fails.
    #[arg(long)]
    cleanup: bool,
    /// Resource Manager endpoint, e.g. an emulator's.
    #[arg(long, env = "EBS2AZURE_ARM_ENDPOINT", default_value = ebs2azure::azure::ARM_ENDPOINT)]
    arm_endpoint: String,
    /// A file with an ARM bearer token, bare or as `az account get-access-token` prints it
    /// [otherwise EBS2AZURE_ARM_TOKEN, then: client secret from AZURE_* variables,
    /// workload identity, managed identity, Azure CLI].
    #[arg(long, env = "EBS2AZURE_ARM_TOKEN_FILE")]
    arm_token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OsTypeArg {
    Linux,
    Windows,
}

#[derive(Clone, Copy, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
enum GenerationArg {
    #[value(name = "V1", alias = "v1")]
    V1,
    #[value(name = "V2", alias = "v2")]
    V2,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("tag {s:?} is not KEY=VALUE")),
    }
}

impl AzureArgs {
    fn target(&self) -> upload::Target {
        upload::Target {
            disk: DiskRef {
                subscription: self.subscription.clone(),
                resource_group: self.resource_group.clone(),
                name: self.disk_name.clone(),
            },
            location: self.location.clone(),
            sku: self.sku.clone(),
            os_type: self.os_type.map(|o| match o {
                OsTypeArg::Linux => OsType::Linux,
                OsTypeArg::Windows => OsType::Windows,
            }),
            hyper_v_generation: self.hyper_v_generation.map(|g| match g {
                GenerationArg::V1 => HyperVGeneration::V1,
                GenerationArg::V2 => HyperVGeneration::V2,
            }),
            zone: self.zone.clone(),
            tags: self.tags.clone(),
        }
    }

    fn options(&self, limits: &LimitArgs, concurrency: Option<NonZeroUsize>) -> upload::Options {
        upload::Options {
            azure: ebs2azure::azure::Settings {
                arm_endpoint: self.arm_endpoint.clone(),
                request_timeout: Duration::from_secs(limits.request_timeout.max(1)),
                retry_budget: limits.retry_budget,
                ..Default::default()
            },
            token_file: self.arm_token_file.clone(),
            resume: self.resume,
            cleanup: self.cleanup,
            concurrency,
            ..Default::default()
        }
    }
}

/// The machine's other disks, for the guest's fstab.
#[derive(clap::Args)]
#[command(next_help_heading = "Fix-ups")]
struct DataDiskArgs {
    /// Another disk of the machine as DEVICE=IMAGE (its EC2 device as fstab
    /// names it, and a raw image, VHD or EBS snapshot of it; a snapshot is
    /// read only where its partition table and superblocks are), so fstab
    /// entries on that device become UUIDs instead of being commented out
    /// (repeatable).
    #[arg(long = "data-disk", value_name = "DEVICE=IMAGE", value_parser = parse_data_disk)]
    data_disks: Vec<(String, String)>,
}

fn parse_data_disk(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((d, p)) if d.starts_with("/dev/") && !p.is_empty() => Ok((d.to_owned(), p.to_owned())),
        _ => Err(format!(
            "{s:?} is not DEVICE=IMAGE, e.g. /dev/xvdf=data.vhd"
        )),
    }
}

impl DataDiskArgs {
    /// Fix-up options with each data disk's filesystems probed (snapshots through `ebs`).
    fn fix_options(
        &self,
        dry_run: bool,
        ebs: &ebs::Settings,
    ) -> Result<ebs2azure::fixup::apply::FixOptions, String> {
        use ebs2azure::fixup::layout::DataDisk;
        let data_disks = self
            .data_disks
            .iter()
            .map(|(dev, what)| {
                let disk = match Input::parse(what) {
                    Input::Image(path) => DataDisk::probe(dev, &path).map_err(|e| e.to_string()),
                    Input::Snapshot(id) => {
                        ebs::EbsSource::open(&id, ebs, ebs2azure::source::ebs::Quotas::published())
                            .map_err(|e| e.to_string())
                            .and_then(|src| {
                                let disk = ebs2azure::source::snapshot_disk::SnapshotDisk::new(src);
                                DataDisk::probe_disk(dev, &disk, &id).map_err(|e| e.to_string())
                            })
                    }
                };
                disk.map_err(|e| format!("--data-disk {dev}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ebs2azure::fixup::apply::FixOptions {
            dry_run,
            data_disks,
        })
    }
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
}

/// Time limits and retries, for every cloud call of a run.
#[derive(clap::Args)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Limit on one request, in seconds; a stalled request is retried.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Retries allowed for the whole run, all requests together.
    #[arg(long, default_value_t = 1000)]
    retry_budget: u64,
}

impl AwsArgs {
    fn settings(&self, limits: &LimitArgs, concurrency: Option<NonZeroUsize>) -> ebs::Settings {
        let defaults = ebs::Settings::default();
        ebs::Settings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            request_timeout: Duration::from_secs(limits.request_timeout.max(1)),
            retry_budget: limits.retry_budget,
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
            fixup,
            disks,
            json,
            aws,
            limits,
        } => {
            let fixup = match fixup
                .then(|| disks.fix_options(false, &aws.settings(&limits, None)))
                .transpose()
            {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
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
                ebs: aws.settings(&limits, concurrency),
                fixup,
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
            limits,
        } => match Input::parse(&file) {
            Input::Snapshot(id) => {
                ebs2azure::info::snapshot_info(&id, &aws.settings(&limits, None))
                    .map_err(|e| e.to_string())
                    .and_then(|info| print_snapshot_info(&info, json))
            }
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
        Command::Inspect { image, json } => ebs2azure::fixup::inspect::inspect(&image)
            .map_err(|e| e.to_string())
            .and_then(|r| print_inspect(&r, json)),
        Command::Fixup {
            image,
            dry_run,
            disks,
            aws,
            limits,
            json,
        } => disks
            .fix_options(dry_run, &aws.settings(&limits, None))
            .and_then(|o| ebs2azure::fixup::apply::fixup(&image, &o).map_err(|e| e.to_string()))
            .and_then(|r| print_fixup(&r, json)),
        Command::Upload {
            vhd,
            azure,
            limits,
            concurrency,
            json,
        } => {
            let opts = azure.options(&limits, concurrency);
            // The bytes to read (the VHD's data), when it can be checked here.
            let total = upload::check_vhd(&vhd)
                .ok()
                .and_then(|(source, _)| source.listed_bytes().ok());
            with_progress(total, "read", |p| {
                upload::upload(&vhd, &azure.target(), &opts, p)
            })
            .and_then(|r| print_upload(&r, json))
        }
        Command::Migrate {
            snapshot,
            azure,
            aws,
            limits,
            concurrency,
            no_fixup,
            staging_dir,
            keep_staged,
            allow_blockers,
            disks,
            json,
        } => {
            let opts = upload::Options {
                ebs: aws.settings(&limits, concurrency),
                ..azure.options(&limits, None)
            };
            match azure.os_type {
                Some(OsTypeArg::Linux) if !no_fixup => disks
                    .fix_options(false, &opts.ebs)
                    .and_then(|fix| {
                        let staging = os_disk::Staging {
                            dir: staging_dir,
                            keep: keep_staged,
                            allow_blockers,
                            data_disks: fix.data_disks,
                        };
                        migrate_os_disk(&snapshot, &azure.target(), &opts, &staging)
                    })
                    .and_then(|r| print_os_disk(&r, json)),
                Some(OsTypeArg::Windows) if !no_fixup => Err(
                    "Windows guests cannot be fixed up yet; pass --no-fixup to upload the disk unchanged"
                        .into(),
                ),
                _ => with_progress(None, "read", |p| {
                    upload::migrate(&snapshot, &azure.target(), &opts, p)
                })
                .and_then(|r| print_upload(&r, json)),
            }
        }
        Command::Verify {
            source,
            azure,
            aws,
            limits,
            verbose,
            json,
        } => {
            let opts = upload::Options {
                ebs: aws.settings(&limits, None),
                ..azure.options(&limits, None)
            };
            upload::verify(&Input::parse(&source), &azure.target(), &opts)
                .map_err(|e| e.to_string())
                .and_then(|r| print_verify(&r, &azure.disk_name, verbose, json))
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
        out!("{}", to_json(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &Report) {
    if r.rounded_up {
        out!(
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
        out!("warning: {w}");
    }
    if let Some(e) = r
        .ebs
        .as_ref()
        .filter(|e| e.retries + e.tokens_refreshed > 0)
    {
        out!(
            "note: {} retries ({} throttled), {} block tokens refreshed, {} checksum mismatches fetched again",
            e.retries, e.throttled, e.tokens_refreshed, e.checksum_mismatches
        );
    }
    out!(
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
    if let Some(f) = &r.fixup {
        out!("fix-up report:");
        print_fixup_changes(f);
    }
}

fn print_info(i: &Info, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(i)?);
        return Ok(());
    }
    out!("file:            {}", i.path);
    out!("format:          {}", i.format);
    out!(
        "virtual size:    {} ({} bytes)",
        HumanBytes(i.virtual_size),
        i.virtual_size
    );
    out!("file size:       {} bytes", i.file_size);
    out!(
        "allocated:       {} ({} bytes)",
        HumanBytes(i.allocated_bytes),
        i.allocated_bytes
    );
    if let Some(f) = &i.footer {
        out!("VHD footer:");
        out!("  disk type:     {}", f.disk_type);
        out!("  current size:  {}", f.current_size);
        out!("  original size: {}", f.original_size);
        out!(
            "  geometry:      {}/{}/{} (C/H/S, {} bytes)",
            f.cylinders,
            f.heads,
            f.sectors_per_track,
            f.geometry_size
        );
        out!(
            "  creator:       {:?} {} on {:?}",
            f.creator_application,
            f.creator_version,
            f.creator_host_os
        );
        out!("  timestamp:     {}", f.timestamp);
        out!("  unique id:     {}", f.unique_id);
        out!(
            "  checksum:      {} ({})",
            f.checksum,
            if f.checksum_valid { "valid" } else { "INVALID" }
        );
        out!(
            "  features:      {:#010x}, version {}, data offset {:#x}, saved state {}",
            f.features,
            f.format_version,
            f.data_offset,
            f.saved_state
        );
    }
    if let Some(d) = &i.dynamic {
        out!(
            "dynamic header:  block size {}, {} BAT entries at {:#x}, {} allocated",
            HumanBytes(u64::from(d.block_size)),
            d.max_table_entries,
            d.table_offset,
            d.allocated_blocks
        );
    }
    out!("partition table: {}", i.partition_table);
    for p in &i.partitions {
        out!(
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
        out!("problem: {p}");
    }
    if i.azure_upload_problems.is_empty() {
        out!("azure:           ready to upload as a managed disk");
    } else {
        for p in &i.azure_upload_problems {
            out!("azure:           {p}");
        }
    }
    Ok(())
}

fn print_snapshot_info(i: &SnapshotInfo, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(i)?);
        return Ok(());
    }
    out!("snapshot:        {} ({})", i.snapshot, i.region);
    out!(
        "volume size:     {} ({} bytes)",
        HumanBytes(i.volume_size),
        i.volume_size
    );
    out!("block size:      {} bytes", i.block_size);
    out!(
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

/// Runs `work` with a progress bar on terminals (bytes, with a total when known).
fn with_progress<T, E: std::fmt::Display>(
    total: Option<u64>,
    verb: &str,
    work: impl FnOnce(&(dyn Fn(u64) + Sync)) -> Result<T, E>,
) -> Result<T, String> {
    let bar = if std::io::stderr().is_terminal() {
        let (bar, template) = match total {
            Some(t) => (
                ProgressBar::new(t),
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})".to_owned(),
            ),
            None => (
                ProgressBar::no_length(),
                format!("{{spinner}} [{{elapsed_precise}}] {{bytes}} {verb} ({{bytes_per_sec}})"),
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = work(&|n| bar.inc(n));
    bar.finish_and_clear();
    result.map_err(|e| e.to_string())
}

/// Runs an OS-disk migration with, on terminals, a line and a progress bar per step.
fn migrate_os_disk(
    snapshot: &str,
    target: &upload::Target,
    opts: &upload::Options,
    staging: &os_disk::Staging,
) -> Result<os_disk::Report, String> {
    let terminal = std::io::stderr().is_terminal();
    let bar = std::sync::Mutex::new(ProgressBar::hidden());
    let result = os_disk::migrate(snapshot, target, opts, staging, &|p| {
        let Ok(mut bar) = bar.lock() else { return };
        match p {
            os_disk::Progress::Step(step) => {
                bar.finish_and_clear();
                if terminal {
                    eprintln!("{snapshot}: {step}");
                    *bar = ProgressBar::no_length();
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bytes} ({bytes_per_sec})",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(200));
                }
            }
            os_disk::Progress::Bytes(n) => bar.inc(n),
        }
    });
    if let Ok(bar) = bar.lock() {
        bar.finish_and_clear();
    }
    result.map_err(|e| e.to_string())
}

fn print_os_disk(r: &os_disk::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    if let Some(staging) = &r.staging {
        print_report(staging);
    }
    out!(
        "fix-up report ({}):",
        r.fixup
            .inspection
            .os
            .as_ref()
            .map_or("unknown OS", |o| o.name.as_str())
    );
    print_fixup(&r.fixup, false)?;
    print_upload(&r.upload, false)?;
    out!(
        "staged copy {}: {}",
        r.staged,
        if r.staged_kept { "kept" } else { "removed" }
    );
    Ok(())
}

fn print_upload(r: &upload::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    out!(
        "{} -> {}: {} sent in {} requests ({} zero skipped{}), {:.1} s, {:.1} MiB/s; disk {} ({}); credential: {}",
        r.source,
        r.disk,
        HumanBytes(r.upload.bytes_sent),
        r.upload.put_requests,
        HumanBytes(r.copy.bytes_zero + (r.virtual_size - r.copy.bytes_read.min(r.virtual_size))),
        if r.resumed {
            format!(", {} already there", HumanBytes(r.upload.bytes_already_there))
        } else {
            String::new()
        },
        r.seconds,
        r.throughput_mib_s,
        r.state,
        HumanBytes(r.virtual_size),
        r.credential
    );
    Ok(())
}

fn print_verify(
    r: &upload::VerifyReport,
    name: &str,
    verbose: bool,
    json: bool,
) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        for c in upload::coalesce(&r.ranges) {
            if verbose || !c.matches {
                out!(
                    "{} {}..{} ({})",
                    if c.matches { "match   " } else { "MISMATCH" },
                    c.offset,
                    c.offset + c.len,
                    HumanBytes(c.len)
                );
            }
        }
        out!(
            "{}: {} ranges, {} compared, {} differ; footer {}",
            name,
            r.ranges.len(),
            HumanBytes(r.bytes_compared),
            r.mismatches,
            if r.footer_ok { "ok" } else { "WRONG" }
        );
    }
    if r.mismatches > 0 || !r.footer_ok {
        return Err(format!(
            "disk {name} differs from {} ({} ranges differ{})",
            r.source,
            r.mismatches,
            if r.footer_ok { "" } else { ", footer wrong" }
        ));
    }
    Ok(())
}

fn print_inspect(r: &ebs2azure::fixup::inspect::Report, json: bool) -> Result<(), String> {
    use ebs2azure::fixup::Class;
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    out!("image:           {}", r.image);
    out!("partition table: {}", r.table);
    for p in &r.partitions {
        out!(
            "  {:>2}  {:>10}  {:<18} {:<12} {}{}",
            p.number,
            HumanBytes(p.size).to_string(),
            p.kind,
            p.fs.kind,
            p.fs.uuid
                .as_deref()
                .map(|u| format!("UUID={u}"))
                .unwrap_or_default(),
            p.fs.label
                .as_deref()
                .map(|l| format!(" LABEL={l}"))
                .unwrap_or_default()
        );
    }
    if let Some(os) = &r.os {
        out!("os:              {} ({} {})", os.name, os.id, os.version);
    }
    if let Some(n) = r.root_partition {
        out!("root partition:  {n}");
    }
    out!(
        "boot mode:       {} (create the disk with --hyper-v-generation {})",
        r.boot_mode,
        r.hyper_v_generation
    );
    for k in &r.kernels {
        out!(
            "kernel:          {} (Hyper-V drivers built in: {}; as modules: {}; initramfs: {}{})",
            k.version,
            if k.built_in.is_empty() {
                "none".into()
            } else {
                k.built_in.join(" ")
            },
            if k.modules.is_empty() {
                "none".into()
            } else {
                k.modules.join(" ")
            },
            k.initramfs.as_deref().unwrap_or("none"),
            match &k.in_initramfs {
                Some(d) if d.is_empty() => " holding none of them".to_owned(),
                Some(d) => format!(" holding {}", d.join(" ")),
                None => String::new(),
            }
        );
    }
    out!("fstab entries:   {}", r.fstab.len());
    if let Some(ds) = &r.cloud_init_datasources {
        out!("cloud-init:      datasource_list {ds}");
    }
    out!(
        "azure agent:     {}",
        if r.azure_agent {
            "installed"
        } else {
            "not installed"
        }
    );
    out!("findings:");
    for f in &r.findings {
        let class = match f.class {
            Class::Blocker => "BLOCKER",
            Class::Fixup => "fix-up ",
            Class::Advice => "advice ",
        };
        out!("  {class}  {}: {}", f.subject, f.message);
    }
    if r.findings.iter().any(|f| f.class == Class::Fixup) {
        out!("(`ebs2azure fixup IMAGE` makes the fix-ups it can; --dry-run shows them first)");
    }
    Ok(())
}

fn print_fixup(r: &ebs2azure::fixup::apply::Report, json: bool) -> Result<(), String> {
    if json {
        out!("{}", to_json(r)?);
    } else {
        print_fixup_changes(r);
    }
    Ok(())
}

/// The changes of a fix-up, then the blockers it cannot fix, one line each.
fn print_fixup_changes(r: &ebs2azure::fixup::apply::Report) {
    use ebs2azure::fixup::Class;
    let verb = if r.dry_run { "would change" } else { "changed" };
    if r.changes.is_empty() {
        out!("  nothing to change");
    }
    for c in &r.changes {
        let state = match (&c.before, &c.after) {
            (None, _) => "created".to_owned(),
            (_, None) => format!("removed (kept as {})", c.original.as_deref().unwrap_or("-")),
            _ => format!(
                "edited (original kept as {})",
                c.original.as_deref().unwrap_or("-")
            ),
        };
        out!("  {verb} {}: {state}; {}", c.path, c.reason);
    }
    for f in &r.inspection.findings {
        match f.class {
            Class::Blocker => out!("  BLOCKER (not fixed here)  {}: {}", f.subject, f.message),
            Class::Advice => out!("  advice  {}: {}", f.subject, f.message),
            Class::Fixup => {}
        }
    }
}
