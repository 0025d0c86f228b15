//! The command line's words: clap types for every command and flag, and
//! their translation into the library's settings (the first layer; the
//! commands in `main.rs` are the second).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ebs2azure::azure::arm::{DataAccessAuthMode, DiskRef, HyperVGeneration, OsType};
use ebs2azure::convert::Input;
use ebs2azure::diskformats::Format;
use ebs2azure::fixup::apply::FixOptions;
use ebs2azure::source::ebs::{self, InFlightPolicy, Quotas};
use ebs2azure::upload;
use ebs2azure::{os_disk, plan};

/// Move whole disks from AWS to Azure, offline: read EBS snapshots or disk
/// images and write the fixed VHDs Azure takes, skipping holes and zeros.
#[derive(Parser)]
#[command(name = "ebs2azure", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More on standard error: -v phases, renewals and each disk's end;
    /// -vv every retry and throttle (RUST_LOG takes precedence).
    #[arg(long, short, global = true, action = clap::ArgAction::Count, help_heading = "Output")]
    pub verbose: u8,
    /// Nothing on standard error but errors: no progress, notes or warnings.
    #[arg(
        long,
        short,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output"
    )]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// (A second path is a mistake: the output is given with --out.)
        #[arg(hide = true)]
        extra: Vec<String>,
        /// Path of the image to write.
        #[arg(long, short, required_unless_present = "extra")]
        out: Option<PathBuf>,
        /// Format to write.
        #[arg(long, value_enum, default_value_t = OutputFormat::VhdFixed)]
        output_format: OutputFormat,
        /// Read INPUT as raw even if it ends with a VHD footer.
        #[arg(long)]
        input_raw: bool,
        /// Open a VHD whose footer checksum is wrong (recovery only).
        #[arg(long)]
        accept_bad_checksum: bool,
        /// Blocks copied at once [default: for images one per CPU core, 4 to 16; for snapshots as many requests in flight as the quota needs at the measured round trip, up to 512, lowered while throttled].
        #[arg(long, value_parser = parse_count)]
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
    /// Inspect a Linux or Windows guest disk for what it needs to boot on Azure (read-only; needs root and loop devices).
    ///
    /// Reads the partition table and every filesystem's superblock, mounts
    /// the Linux filesystems read-only without replaying their journals, and
    /// reports the distribution, boot mode and Hyper-V generation, kernels
    /// and their Hyper-V drivers, fstab, cloud-init, network pinning and the
    /// Azure agent. A Windows volume (NTFS, through ntfs-3g) is read for its
    /// product, version and control sets, and its registry (through hivex)
    /// for what Azure needs. Each finding is a blocker (will not boot), a
    /// fix-up, or advice.
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
    /// persistent-net rules. On Windows it changes the registry of the
    /// current and default control sets (Hyper-V drivers at boot, Xen PV
    /// drivers and EC2 agents disabled, SAN policy, RDP, UTC clock, EC2
    /// routes, KMS) through hivex, never when a hive is dirty or Windows is
    /// hibernated. Each original is kept as FILE.ebs2azure-orig; a second run
    /// changes nothing; the filesystem must check clean afterwards.
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
        /// Name of the managed disk.
        #[arg(long, help_heading = "Azure")]
        disk_name: String,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Put Page requests in flight [default: 16].
        #[arg(long, value_parser = parse_count)]
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
        #[arg(required_unless_present = "plan", conflicts_with = "plan")]
        snapshot: Option<String>,
        /// Name of the managed disk.
        #[arg(
            long,
            help_heading = "Azure",
            required_unless_present = "plan",
            conflicts_with = "plan"
        )]
        disk_name: Option<String>,
        /// Move every disk of a plan (see `ebs2azure plan new`) instead of one snapshot.
        #[arg(long, help_heading = "Plans")]
        plan: Option<PathBuf>,
        /// Where a plan's journals and reports are kept; a run resumes from
        /// them [default: PLAN's name with .state].
        #[arg(long, requires = "plan", help_heading = "Plans")]
        state_dir: Option<PathBuf>,
        /// Run shard I of N (0-based): a stable share of the plan's machines
        /// [default: from JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX,
        /// with N from --shards or EBS2AZURE_SHARD_COUNT].
        #[arg(long, requires = "plan", value_name = "I/N", help_heading = "Plans")]
        shard: Option<plan::Shard>,
        /// The number of shards, when a scheduler gives the index.
        #[arg(
            long,
            requires = "plan",
            conflicts_with = "shard",
            help_heading = "Plans"
        )]
        shards: Option<u32>,
        /// Disks moved at the same time; they share one bound of requests in flight.
        #[arg(long, value_parser = parse_count, default_value_t = NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN), help_heading = "Plans")]
        disks_at_once: NonZeroUsize,
        /// Run a plan changed since its last run: the changed disks start over.
        #[arg(long, requires = "plan", help_heading = "Plans")]
        accept_plan_changes: bool,
        /// Copy each disk but leave it open (in its upload state) for delta
        /// syncs, to be finished by `ebs2azure cutover`; OS disks keep their
        /// fixed-up staged copy under --staging-dir.
        #[arg(long, requires = "plan", help_heading = "Plans")]
        pre_seed: bool,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// GetSnapshotBlock requests in flight, a fixed count, for all disks together [default: as the quota needs at the measured round trip, up to 512 for the run, lowered while throttled].
        #[arg(long, value_parser = parse_count)]
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
        /// Print the summary as JSON on standard output (with --plan: one
        /// JSON event per line as disks start, progress, finish and fail).
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Bring a plan's pre-seeded disks to newer snapshots, writing only the blocks that changed.
    ///
    /// Each disk pre-seeded by `migrate --plan --pre-seed` holds a base
    /// snapshot. Its new snapshot comes from the plan (edit each disk's
    /// `snapshot`) or from --to-snapshots. ListChangedBlocks lists what
    /// changed; changed blocks are written, trimmed blocks cleared, OS disks
    /// fixed up again, and the base moves forward. Disks stay open: sync as
    /// often as you like before the window, then run `ebs2azure cutover`.
    #[command(after_help = "Examples:
  ebs2azure sync --plan fleet.toml --to-snapshots new-snapshots.txt
  # new-snapshots.txt: one `DISK-OR-OLD-SNAPSHOT NEW-SNAPSHOT` pair per line")]
    Sync {
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Run the cutover window: final snapshots, delta sync, finished disks, verified, with a timeline.
    ///
    /// For each machine with an `instance_id` in the plan: stop the instance
    /// (with --stop-instances), take crash-consistent snapshots of all its
    /// volumes at once (CreateSnapshots), wait for them, sync each pre-seeded
    /// disk to its volume's new snapshot, end each disk's upload, and read it
    /// back. Disks of machines without an instance take their final snapshot
    /// from the plan or --to-snapshots. The report holds the window's
    /// timeline, phase by phase per machine, and how to roll back.
    #[command(after_help = "Examples:
  ebs2azure cutover --plan fleet.toml --stop-instances
  ebs2azure cutover --plan fleet.toml --to-snapshots final.txt --verify changed")]
    Cutover {
        #[command(flatten)]
        window: WindowArgs,
        /// Stop each machine's EC2 instance before its final snapshot (the
        /// only change made on AWS; the report says how to start them again).
        #[arg(long, help_heading = "Cutover")]
        stop_instances: bool,
        /// Longest wait, in minutes, for instances to stop and for the final
        /// snapshots to complete.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=10080), help_heading = "Cutover")]
        wait_minutes: u64,
        /// How each finished disk is read back: `full` (a data disk against
        /// its final snapshot, an OS disk against its digest: the whole disk),
        /// `changed` (only the blocks the window changed, against their
        /// SHA-256 from the snapshot: for short windows), or `none`.
        #[arg(long, value_enum, default_value = "full", help_heading = "Cutover")]
        verify: VerifyArg,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  ebs2azure completions bash > /etc/bash_completion.d/ebs2azure\n  ebs2azure completions zsh > \"${fpath[1]}/_ebs2azure\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `ebs2azure man > ebs2azure.1`.
    Man,
    /// Write and check plans: the machines and disks a fleet run moves.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Show or merge the reports of plan runs.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Make Azure VMs from a plan's machines, once their disks are finished.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Say, for each machine of a plan, whether it is ready for Azure,
    /// without copying its disks (needs root, loop devices and FUSE).
    ///
    /// Runs the same inspection as `inspect` on each OS disk straight from
    /// its snapshot: the snapshot is mounted as a file through FUSE and only
    /// the blocks the inspection touches are fetched (GetSnapshotBlock, a
    /// bounded cache). Each machine is ready, ready with fix-ups (which
    /// `migrate` makes), or blocked, with the blockers and what to do, its
    /// generation, its VM size checked against it, and the bytes read.
    /// Exits 3 when a machine is blocked or could not be assessed.
    #[command(
        after_help = "Examples:\n  sudo ebs2azure assess --plan fleet.toml\n  sudo ebs2azure assess --plan fleet.toml --machine web01 --json"
    )]
    Assess {
        /// The plan.
        #[arg(long)]
        plan: PathBuf,
        /// Only this machine (repeatable) [default: every machine not excluded].
        #[arg(long)]
        machine: Vec<String>,
        /// Memory for each snapshot's block cache, in MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
        cache_mib: u64,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print the assessments as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Delete what a test migration made, and nothing else.
    ///
    /// For each machine of the plan: the VM `MACHINE-test`, its NIC and
    /// public IP, and the disk copies `NAME-test`, each deleted only when it
    /// carries the test run tag (of --run-id, or of any run).
    #[command(
        after_help = "Examples:\n  ebs2azure cleanup --test --plan fleet.toml --run-id test-20261129T101500Z"
    )]
    Cleanup {
        /// Clean a test migration up (the only clean-up there is).
        #[arg(long, required = true)]
        test: bool,
        /// The plan.
        #[arg(long)]
        plan: PathBuf,
        /// Only this test run's resources [default: any test run's].
        #[arg(long)]
        run_id: Option<String>,
        /// Only this machine [default: every machine].
        #[arg(long)]
        machine: Vec<String>,
        #[command(flatten)]
        azure: AzureConn,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print the results as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Read a managed disk back and compare it with its source, range by range.
    ///
    /// Takes a read SAS, compares SHA-256 digests of every non-zero range of
    /// the source (a fixed VHD or a snapshot) with the disk's bytes there, and
    /// checks the VHD footer. Exits non-zero on any difference.
    #[command(
        after_help = "Examples:\n  ebs2azure verify disk.vhd --subscription $SUB -g rg --disk-name web01-os\n  ebs2azure verify --digest $(jq -r '.disks[] | select(.name == \"web01-os\") | .digest' plan.state/report.json) -g rg --disk-name web01-os"
    )]
    Verify {
        /// The source: a fixed VHD or an EBS snapshot id.
        #[arg(required_unless_present = "digest", conflicts_with = "digest")]
        source: Option<String>,
        /// Check the disk against the content digest a plan run reported
        /// (report.json) instead of a source.
        #[arg(long, value_name = "SHA256")]
        digest: Option<String>,
        /// Name of the managed disk.
        #[arg(long, help_heading = "Azure")]
        disk_name: String,
        #[command(flatten)]
        azure: AzureConn,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print every range, not only the differing ones.
        #[arg(long, help_heading = "Output")]
        all_ranges: bool,
        /// Print the result as JSON on standard output.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
}

impl Command {
    /// True when the command was asked for JSON (its errors are JSON too).
    pub fn json(&self) -> bool {
        match self {
            Command::Convert { json, .. }
            | Command::Info { json, .. }
            | Command::Inspect { json, .. }
            | Command::Assess { json, .. }
            | Command::Fixup { json, .. }
            | Command::Upload { json, .. }
            | Command::Migrate { json, .. }
            | Command::Verify { json, .. }
            | Command::Plan(PlanCommand::Validate { json, .. })
            | Command::Report(
                ReportCommand::Show { json, .. } | ReportCommand::Merge { json, .. },
            ) => *json,
            Command::Sync { window } | Command::Cutover { window, .. } => window.json,
            Command::Vm(VmCommand::Create { json, .. }) | Command::Cleanup { json, .. } => *json,
            Command::Completions { .. } | Command::Man | Command::Plan(PlanCommand::New { .. }) => {
                false
            }
        }
    }
}

/// `ebs2azure vm ...`
#[derive(Subcommand)]
pub enum VmCommand {
    /// Make each machine's VM from its finished disks: a NIC in the plan's
    /// `subnet_id` (no public IP unless `public_ip = true`), the OS disk and
    /// the data disks (at their LUNs) attached, the plan's `vm_size`, the
    /// disks' zone, boot diagnostics on, the `license_type` and tags.
    #[command(
        after_help = "Examples:\n  ebs2azure vm create --plan fleet.toml\n  ebs2azure vm create --plan fleet.toml --machine web01 --emit-template templates/"
    )]
    Create {
        /// The plan.
        #[arg(long)]
        plan: PathBuf,
        /// Only this machine [default: every machine not excluded].
        #[arg(long)]
        machine: Vec<String>,
        /// Write one ARM template per machine into DIR instead of calling
        /// ARM (`az deployment group create -g RG --template-file DIR/NAME.json`).
        #[arg(long, value_name = "DIR", conflicts_with = "test")]
        emit_template: Option<PathBuf>,
        /// A test migration instead: copies of the finished disks
        /// (`NAME-test`) and VMs (`MACHINE-test`) in each machine's
        /// `test_subnet_id`, all tagged with the run's id; the real disks and
        /// VMs are never touched. `ebs2azure cleanup --test` removes them.
        #[arg(long)]
        test: bool,
        /// The test run's id [default: test-YYYYMMDDTHHMMSSZ].
        #[arg(long, requires = "test")]
        run_id: Option<String>,
        #[command(flatten)]
        azure: AzureConn,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print the results as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
}

/// `ebs2azure plan ...`
#[derive(Subcommand)]
pub enum PlanCommand {
    /// Write a plan from snapshot ids (arguments, standard input, or a CSV),
    /// or from EC2's instances, to edit and run.
    ///
    /// Each id becomes a disk of no machine; a CSV with a header row names
    /// `snapshot` and optionally `machine`, `role` (os or data), `name`,
    /// `lun`, `device` and `sku`, and its rows of one machine become one
    /// [[machine]] whose first row is the OS disk unless a row says role=os.
    ///
    /// With --from-ec2 each instance (by id, by tag, or every one of the
    /// region) becomes a machine: its Name tag, platform, type, boot mode and
    /// tags, its root volume as the OS disk and the others as data disks in
    /// device order, each with its newest completed snapshot (or new ones with
    /// --snapshot). Instances Azure cannot run are left out and listed, with why.
    #[command(
        after_help = "Examples:\n  ebs2azure plan new snap-0123456789abcdef0 snap-0fedcba9876543210 -g rg --location westeurope > plan.toml\n  aws ec2 describe-snapshots --owner-ids self --query 'Snapshots[].SnapshotId' --output text | tr '\\t' '\\n' | ebs2azure plan new -o plan.toml\n  ebs2azure plan new --csv fleet.csv -o plan.toml\n  ebs2azure plan new --from-ec2 --region us-east-1 --tag migration=wave1 -g rg --location westeurope -o wave1.toml\n  ebs2azure plan new --from-ec2 --instance-ids i-0123456789abcdef0 i-0fedcba9876543210 --snapshot -o plan.toml"
    )]
    New {
        /// Snapshot ids; none: read them from standard input, one per line.
        #[arg(conflicts_with = "from_ec2")]
        snapshots: Vec<String>,
        /// A CSV of snapshots with a header row.
        #[arg(long, conflicts_with_all = ["snapshots", "from_ec2"])]
        csv: Option<PathBuf>,
        /// Discover the machines from EC2 (DescribeInstances, DescribeVolumes,
        /// DescribeSnapshots) [default: every instance of the region].
        #[arg(long, help_heading = "From EC2")]
        from_ec2: bool,
        /// Only these instances.
        #[arg(long, num_args = 1.., requires = "from_ec2", conflicts_with = "tag", help_heading = "From EC2")]
        instance_ids: Vec<String>,
        /// Only instances with this tag KEY=VALUE (repeatable: all of them).
        #[arg(long, value_parser = parse_tag, requires = "from_ec2", help_heading = "From EC2")]
        tag: Vec<(String, String)>,
        /// Take new crash-consistent snapshots of each instance's volumes
        /// (CreateSnapshots) and wait for them, instead of the newest completed ones.
        #[arg(long, requires = "from_ec2", help_heading = "From EC2")]
        snapshot: bool,
        /// Longest wait for new snapshots, in minutes.
        #[arg(
            long,
            default_value_t = 120,
            requires = "snapshot",
            help_heading = "From EC2"
        )]
        wait_minutes: u64,
        /// Named AWS profile [default: AWS_PROFILE, or `default`].
        #[arg(long, requires = "from_ec2", help_heading = "From EC2")]
        profile: Option<String>,
        /// EC2 (and EBS) endpoint, such as a local emulator (AWS_ENDPOINT_URL_EC2 works too).
        #[arg(long, requires = "from_ec2", help_heading = "From EC2")]
        endpoint_url: Option<String>,
        /// Write the plan here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Replace OUT if it exists.
        #[arg(long, requires = "out")]
        force: bool,
        /// Subscription id for [defaults].
        #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
        subscription: Option<String>,
        /// Resource group for [defaults].
        #[arg(long, short = 'g')]
        resource_group: Option<String>,
        /// Azure region for [defaults].
        #[arg(long)]
        location: Option<String>,
        /// AWS region of the snapshots for [defaults] (with --from-ec2: the
        /// region asked) [default there: AWS_REGION, or the profile's].
        #[arg(long)]
        region: Option<String>,
        /// Disk SKU for [defaults] [default: Premium_LRS].
        #[arg(long)]
        sku: Option<String>,
    },
    /// Check a plan without moving data: every problem at once, each with its line.
    ///
    /// Checks the file (TOML, known keys), names (valid for Azure, unique per
    /// resource group), kinds, one OS disk per machine, LUNs, and then each
    /// snapshot: that it exists, is completed and readable, and that its size
    /// fits Azure's limits (only the first page of its listing is read).
    #[command(
        after_help = "Examples:\n  ebs2azure plan validate plan.toml\n  ebs2azure plan validate plan.toml --offline --json"
    )]
    Validate {
        /// The plan file.
        plan: PathBuf,
        /// Check the file only; do not look at the snapshots.
        #[arg(long)]
        offline: bool,
        /// Subscription id where the plan sets none.
        #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
        subscription: Option<String>,
        /// Resource Manager endpoint, for a plan's disk encryption sets.
        #[arg(long, env = "EBS2AZURE_ARM_ENDPOINT", default_value = ebs2azure::azure::ARM_ENDPOINT)]
        arm_endpoint: String,
        /// A file with an ARM bearer token (see `migrate --help`).
        #[arg(long, env = "EBS2AZURE_ARM_TOKEN_FILE")]
        arm_token_file: Option<PathBuf>,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print the result as JSON on standard output.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
}

/// `ebs2azure report ...`
#[derive(Subcommand)]
pub enum ReportCommand {
    /// Print the report of a plan run (a state directory or a report.json).
    #[command(after_help = "Example:\n  ebs2azure report show plan.state")]
    Show {
        /// A state directory, or a report.json.
        report: PathBuf,
        /// Print the report as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Combine the reports of a plan's shards into one.
    #[command(
        after_help = "Example:\n  ebs2azure report merge plan.state/shard-*-of-4 --out plan.state"
    )]
    Merge {
        /// Shards' state directories or report.json files.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged report.json and report.md into this directory
        /// (otherwise print it).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Print the merged report as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
}

/// Where the disks are and how to reach Azure: what every Azure command takes.
#[derive(clap::Args)]
#[command(next_help_heading = "Azure")]
pub struct AzureConn {
    /// Subscription id (with --plan: where the plan sets none).
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    pub subscription: Option<String>,
    /// Resource group (with --plan: where the plan sets none).
    #[arg(long, short = 'g')]
    pub resource_group: Option<String>,
    /// Resource Manager endpoint, e.g. an emulator's.
    #[arg(long, env = "EBS2AZURE_ARM_ENDPOINT", default_value = ebs2azure::azure::ARM_ENDPOINT)]
    pub arm_endpoint: String,
    /// A file with an ARM bearer token, bare or as `az account get-access-token` prints it
    /// [otherwise EBS2AZURE_ARM_TOKEN, then: client secret from AZURE_* variables,
    /// workload identity, managed identity, Azure CLI].
    #[arg(long, env = "EBS2AZURE_ARM_TOKEN_FILE")]
    pub arm_token_file: Option<PathBuf>,
    /// A file with an Entra token for disks whose dataAccessAuthMode is
    /// AzureActiveDirectory (`az account get-access-token --resource https://disk.azure.com/`),
    /// asked for only when a disk wants one [otherwise EBS2AZURE_DISK_TOKEN, then the
    /// credentials above].
    #[arg(long, env = "EBS2AZURE_DISK_TOKEN_FILE")]
    pub disk_token_file: Option<PathBuf>,
}

/// Which managed disk to create, and how (upload and migrate).
#[derive(clap::Args)]
#[command(next_help_heading = "Azure")]
pub struct AzureArgs {
    #[command(flatten)]
    pub conn: AzureConn,
    /// Azure region of a new disk, e.g. westeurope (with --plan: where the plan sets none).
    #[arg(long)]
    pub location: Option<String>,
    /// Disk SKU [default: Premium_LRS].
    #[arg(long)]
    pub sku: Option<String>,
    /// OS of an OS disk (leave out for data disks).
    #[arg(long, value_enum)]
    pub os_type: Option<OsTypeArg>,
    /// Hyper-V generation of an OS disk: V1 boots BIOS guests, V2 UEFI ones.
    #[arg(long, value_enum)]
    pub hyper_v_generation: Option<GenerationArg>,
    /// Availability zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// A tag KEY=VALUE (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// AzureActiveDirectory: a new disk's upload and read URLs also want an Entra
    /// token (see --disk-token-file); the identity needs the role Data Operator for
    /// Managed Disks [default: None, the SAS alone].
    #[arg(long, value_parser = parse_data_access)]
    pub data_access_auth_mode: Option<DataAccessAuthMode>,
    /// Continue an interrupted upload into the existing disk.
    #[arg(long, conflicts_with = "cleanup")]
    pub resume: bool,
    /// Delete the disk if the upload fails.
    #[arg(long)]
    pub cleanup: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OsTypeArg {
    Linux,
    Windows,
}

#[derive(Clone, Copy, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
pub enum GenerationArg {
    #[value(name = "V1", alias = "v1")]
    V1,
    #[value(name = "V2", alias = "v2")]
    V2,
}

fn parse_data_access(s: &str) -> Result<DataAccessAuthMode, String> {
    s.parse()
}

/// A count of at least one, in the command line's words.
fn parse_count(s: &str) -> Result<NonZeroUsize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| format!("{s:?} is not a whole number of at least 1"))
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("tag {s:?} is not KEY=VALUE")),
    }
}

impl AzureConn {
    /// The disk `disk_name` in the subscription and resource group given.
    pub fn disk(&self, disk_name: &str) -> Result<DiskRef, String> {
        let subscription = self
            .subscription
            .clone()
            .ok_or("no subscription is given: pass --subscription or set AZURE_SUBSCRIPTION_ID")?;
        let resource_group = self
            .resource_group
            .clone()
            .ok_or("no resource group is given: pass --resource-group (-g)")?;
        DiskRef::checked(&subscription, &resource_group, disk_name)
    }

    /// An existing disk to read (nothing about creating it).
    pub fn existing(&self, disk_name: &str) -> Result<upload::Target, String> {
        Ok(upload::Target {
            disk: self.disk(disk_name)?,
            location: None,
            sku: plan::model::DEFAULT_SKU.to_owned(),
            os_type: None,
            hyper_v_generation: None,
            zone: None,
            tags: Vec::new(),
            encryption: None,
            data_access: DataAccessAuthMode::None,
        })
    }

    /// Azure settings and the token source, for any Azure command.
    pub fn options(
        &self,
        limits: &LimitArgs,
        concurrency: Option<NonZeroUsize>,
    ) -> upload::Options {
        upload::Options {
            azure: ebs2azure::azure::Settings {
                arm_endpoint: self.arm_endpoint.clone(),
                request_timeout: Duration::from_secs(limits.request_timeout.max(1)),
                retry_budget: limits.retry_budget,
                stall_timeout: limits.stall(),
                ..Default::default()
            },
            token_file: self.arm_token_file.clone(),
            disk_token_file: self.disk_token_file.clone(),
            concurrency,
            ..Default::default()
        }
    }
}

impl AzureArgs {
    /// The disk `disk_name` these flags describe.
    pub fn target(&self, disk_name: &str) -> Result<upload::Target, String> {
        let problem = self
            .sku
            .as_deref()
            .and_then(ebs2azure::azure::names::sku_problem)
            .or_else(|| {
                self.location
                    .as_deref()
                    .and_then(ebs2azure::azure::names::location_problem)
            });
        if let Some(p) = problem {
            return Err(p);
        }
        Ok(upload::Target {
            disk: self.conn.disk(disk_name)?,
            location: self.location.clone(),
            sku: self
                .sku
                .clone()
                .unwrap_or_else(|| plan::model::DEFAULT_SKU.to_owned()),
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
            encryption: None,
            data_access: self.data_access_auth_mode.unwrap_or_default(),
        })
    }

    /// The keys a plan takes from these flags where it sets none itself.
    pub fn plan_fallback(&self, aws: &AwsArgs) -> plan::schema::Common {
        plan::schema::Common {
            subscription: self.conn.subscription.clone(),
            resource_group: self.conn.resource_group.clone(),
            location: self.location.clone(),
            sku: self.sku.clone(),
            zone: self.zone.clone(),
            region: aws.region.clone(),
            data_access_auth_mode: self.data_access_auth_mode.map(|m| m.to_string()),
            tags: self.tags.iter().cloned().collect(),
            ..Default::default()
        }
    }

    /// Azure settings, with resume and clean-up as asked.
    pub fn options(
        &self,
        limits: &LimitArgs,
        concurrency: Option<NonZeroUsize>,
    ) -> upload::Options {
        upload::Options {
            resume: self.resume,
            cleanup: self.cleanup,
            ..self.conn.options(limits, concurrency)
        }
    }
}

/// The machine's other disks, for the guest's fstab.
#[derive(clap::Args)]
#[command(next_help_heading = "Fix-ups")]
pub struct DataDiskArgs {
    /// Another disk of the machine as DEVICE=IMAGE (its EC2 device as fstab
    /// names it, and a raw image, VHD or EBS snapshot of it; a snapshot is
    /// read only where its partition table and superblocks are), so fstab
    /// entries on that device become UUIDs instead of being commented out
    /// (repeatable).
    #[arg(long = "data-disk", value_name = "DEVICE=IMAGE", value_parser = parse_data_disk)]
    pub data_disks: Vec<(String, String)>,
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
    /// Fix-up options with each data disk read (snapshots through EBS under
    /// the run's shared `quotas`).
    pub fn fix_options(
        &self,
        dry_run: bool,
        ebs: &ebs::Settings,
        quotas: &Arc<Quotas>,
    ) -> Result<FixOptions, String> {
        let data_disks = self
            .data_disks
            .iter()
            .map(|(dev, what)| {
                Input::parse_checked(what)
                    .map_err(|e| e.to_string())
                    .and_then(|i| {
                        os_disk::probe_data_disk(dev, &i, ebs, quotas.clone())
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| format!("--data-disk {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FixOptions {
            dry_run,
            data_disks,
        })
    }
}

/// `cutover --verify`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum VerifyArg {
    /// The whole disk.
    Full,
    /// The blocks the window changed.
    Changed,
    /// No read-back.
    None,
}

/// What `sync` and `cutover` share.
#[derive(clap::Args)]
pub struct WindowArgs {
    /// The plan whose pre-seeded disks move.
    #[arg(long, help_heading = "Plans")]
    pub plan: PathBuf,
    /// The plan's state directory [default: PLAN's name with .state].
    #[arg(long, help_heading = "Plans")]
    pub state_dir: Option<PathBuf>,
    /// A file of `DISK-OR-OLD-SNAPSHOT NEW-SNAPSHOT` pairs, one per line:
    /// the snapshot each disk moves to [default: the plan's snapshot].
    #[arg(long, value_name = "FILE", help_heading = "Plans")]
    pub to_snapshots: Option<PathBuf>,
    /// Copy new snapshots whole instead of their changes: for a snapshot of
    /// another volume, which a delta cannot be listed for.
    #[arg(long, help_heading = "Plans")]
    pub full: bool,
    /// Disks moved at the same time; they share one bound of requests in flight.
    #[arg(long, value_parser = parse_count, default_value_t = NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN), help_heading = "Plans")]
    pub disks_at_once: NonZeroUsize,
    #[command(flatten)]
    pub azure: AzureConn,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// GetSnapshotBlock requests in flight, a fixed count, for all disks together [default: as the quota needs at the measured round trip, up to 512 for the run].
    #[arg(long, value_parser = parse_count)]
    pub concurrency: Option<NonZeroUsize>,
    /// Send an OS disk even when, after the delta, inspection finds it will not boot on Azure.
    #[arg(long, help_heading = "Fix-ups")]
    pub allow_blockers: bool,
    /// One JSON event per line on standard output as disks and phases go.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

/// Where and how to reach AWS, for snapshot inputs.
#[derive(clap::Args)]
#[command(next_help_heading = "AWS (snapshot inputs)")]
pub struct AwsArgs {
    /// Region of the snapshot [default: AWS_REGION, or the profile's].
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config [default: AWS_PROFILE, or `default`].
    #[arg(long)]
    pub profile: Option<String>,
    /// EBS endpoint, such as a local emulator (AWS_ENDPOINT_URL_EBS and AWS_ENDPOINT_URL work too).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// GetSnapshotBlock requests per second per snapshot your account may make (AWS publishes 1,000; ask for yours in Service Quotas); requests are paced to it, and as many kept in flight as it needs at the measured round trip.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ebs_quota: u32,
}

/// Time limits and retries, for every cloud call of a run.
#[derive(clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Limit on one request, in seconds; a stalled request is retried.
    #[arg(long, default_value_t = 30)]
    pub request_timeout: u64,
    /// Retries allowed for the whole run, all requests together.
    #[arg(long, default_value_t = 1000)]
    pub retry_budget: u64,
    /// Seconds every request to an endpoint may fail, none getting through,
    /// before the run stops and names it (no byte of progress); no request
    /// waits longer either.
    #[arg(long, default_value_t = ebs2azure::retry::DEFAULT_STALL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
}

impl LimitArgs {
    /// The stall rule's limit.
    pub fn stall(&self) -> Duration {
        Duration::from_secs(self.stall_timeout)
    }
}

impl AwsArgs {
    pub fn settings(&self, limits: &LimitArgs, concurrency: Option<NonZeroUsize>) -> ebs::Settings {
        let defaults = ebs::Settings::default();
        ebs::Settings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            request_timeout: Duration::from_secs(limits.request_timeout.max(1)),
            retry_budget: limits.retry_budget,
            stall_timeout: limits.stall(),
            in_flight: concurrency.map_or(defaults.in_flight, |c| InFlightPolicy::Fixed(c.get())),
            ebs_quota: f64::from(self.ebs_quota),
            ..defaults
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
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
