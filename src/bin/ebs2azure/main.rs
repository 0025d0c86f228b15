//! The `ebs2azure` command: parses the arguments ([`args`]), turns them into
//! the library's settings, calls the library, and hands the result to
//! [`print`] with a [`progress`] display on the way. No logic a library
//! user would need lives here.

mod args;
mod errors;
mod fleet;
mod print;
mod progress;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use ebs2azure::azure::Session;
use ebs2azure::convert::{Conversion, Input, Options};
use ebs2azure::diskformats::OpenOptions;
use ebs2azure::migrate::{self, Role};
use ebs2azure::sink::vhd_file::FileOptions;
use ebs2azure::source::ebs::Quotas;
use ebs2azure::source::InputMapping;
use ebs2azure::{fixup, info, os_disk, pipeline, upload, verify};

use args::{Cli, Command, OsTypeArg};
use progress::Progress;

/// A command's failure, already in the command line's words.
type Failed = String;

/// The library error `e` as one sentence with the flags that fix it.
fn said(e: impl std::error::Error + 'static) -> Failed {
    errors::explain(&e)
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        c @ Command::Convert { .. } => convert(c),
        Command::Info {
            file,
            input_raw,
            accept_bad_checksum,
            json,
            aws,
            limits,
        } => match Input::parse(&file) {
            Input::Snapshot(id) => info::snapshot_info(&id, &aws.settings(&limits, None))
                .map_err(said)
                .and_then(|i| print::print_snapshot_info(&i, json)),
            Input::Image(path) => {
                let opts = OpenOptions {
                    accept_bad_checksum,
                    force_raw: input_raw,
                };
                info::info(&path, &opts)
                    .map_err(said)
                    .and_then(|i| print::print_info(&i, json))
            }
        },
        Command::Inspect { image, json } => fixup::inspect::inspect(&image)
            .map_err(said)
            .and_then(|r| print::print_inspect(&r, json)),
        Command::Fixup {
            image,
            dry_run,
            disks,
            aws,
            limits,
            json,
        } => disks
            .fix_options(dry_run, &aws.settings(&limits, None), &Quotas::published())
            .and_then(|o| fixup::apply::fixup(&image, &o).map_err(said))
            .and_then(|r| print::print_fixup(&r, json)),
        Command::Plan(c) => fleet::plan_command(c),
        Command::Report(c) => fleet::report_command(c),
        Command::Upload {
            vhd,
            disk_name,
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
            let target = azure.target(&disk_name);
            target
                .and_then(|t| session(&opts).map(|s| (s, t)))
                .and_then(|(s, target)| {
                    let progress = Progress::new(total, "read");
                    let r = upload::upload(&s, &vhd, &target, &opts, &|n| progress.inc(n));
                    progress.finish();
                    r.map_err(said).and_then(|r| print::print_upload(&r, json))
                })
        }
        c @ Command::Migrate { .. } => return migrate(c),
        Command::Verify {
            source,
            digest,
            disk_name,
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
            let target = azure.target(&disk_name);
            target
                .and_then(|t| session(&opts).map(|s| (s, t)))
                .and_then(|(s, target)| match (digest, source) {
                    (Some(d), _) => verify::verify_digest(&s, &target, &d, &opts)
                        .map_err(said)
                        .and_then(|r| print::print_digest_check(&r, &disk_name, json)),
                    (None, Some(source)) => {
                        verify::verify(&s, &Input::parse(&source), &target, &opts)
                            .map_err(said)
                            .and_then(|r| print::print_verify(&r, &disk_name, verbose, json))
                    }
                    (None, None) => Err("give a source or --digest".into()),
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            print::error(&message);
            ExitCode::FAILURE
        }
    }
}

/// Exit code of a run stopped by an interrupt (128 + SIGINT), as shells use.
const EXIT_INTERRUPTED: u8 = 130;

/// A flag set by the first SIGINT or SIGTERM; a second one ends the
/// process at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>, Failed> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            sig,
            i32::from(EXIT_INTERRUPTED),
            stop.clone(),
        )
        .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
        .map_err(|e| format!("cannot handle interrupts: {e}"))?;
    }
    Ok(stop)
}

/// The run's one Azure session.
fn session(opts: &upload::Options) -> Result<Session, Failed> {
    Session::new(&opts.azure, opts.token_file.as_deref()).map_err(said)
}

fn convert(c: Command) -> Result<(), Failed> {
    let Command::Convert {
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
    } = c
    else {
        unreachable!("convert() is called for the convert command only")
    };
    // One run, one set of quotas: the data disks' reads and the copy share them.
    let quotas = Quotas::published();
    let fixup = fixup
        .then(|| disks.fix_options(false, &aws.settings(&limits, None), &quotas))
        .transpose()?;
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
        // SAFETY: the command's documented contract (README, convert): an
        // input is not written or truncated while it is converted. Mapping
        // it saves a copy of every block.
        input_mapping: unsafe { InputMapping::mapped() },
        ebs: aws.settings(&limits, concurrency),
        quotas,
        fixup,
        stop: None,
    };
    let conversion = Conversion::prepare(&input, &out, &opts).map_err(said)?;
    // A snapshot's listing is read as the copy goes: no total to show.
    let progress = Progress::new(conversion.bytes_to_read().map_err(said)?, "read");
    let report = conversion.run(&|n| progress.inc(n));
    progress.finish();
    print::print_convert(&report.map_err(said)?, json)
}

fn migrate(c: Command) -> ExitCode {
    let Command::Migrate {
        snapshot,
        disk_name,
        plan,
        state_dir,
        shard,
        shards,
        disks_at_once,
        accept_plan_changes,
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
    } = c
    else {
        unreachable!("migrate() is called for the migrate command only")
    };
    let staging = os_disk::Staging {
        dir: staging_dir,
        keep: keep_staged,
        allow_blockers,
        data_disks: Vec::new(),
    };
    let result = match (plan, snapshot, disk_name) {
        (Some(plan), _, _) => {
            if !disks.data_disks.is_empty() || no_fixup {
                Err("with --plan, data disks (device = ...) and fixup = false are set in the plan, not with --data-disk or --no-fixup".into())
            } else {
                let run = fleet::PlanRun {
                    plan,
                    state_dir,
                    shard,
                    shards,
                    disks_at_once,
                    accept_plan_changes,
                    azure: &azure,
                    aws: &aws,
                    limits: &limits,
                    concurrency,
                    staging,
                    json,
                };
                stop_on_signals().and_then(|stop| fleet::migrate_plan(run, stop))
            }
        }
        (None, Some(snapshot), Some(disk_name)) => one_disk(
            &snapshot,
            &disk_name,
            &azure,
            &aws,
            &limits,
            concurrency,
            no_fixup,
            staging,
            &disks,
            json,
        )
        .map(|()| fleet::Ended::Complete),
        _ => Err("give a snapshot and --disk-name, or --plan".into()),
    };
    match result {
        Ok(fleet::Ended::Complete) => ExitCode::SUCCESS,
        Ok(fleet::Ended::Incomplete) => ExitCode::FAILURE,
        Ok(fleet::Ended::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(message) => {
            print::error(&message);
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn one_disk(
    snapshot: &str,
    disk_name: &str,
    azure: &args::AzureArgs,
    aws: &args::AwsArgs,
    limits: &args::LimitArgs,
    concurrency: Option<std::num::NonZeroUsize>,
    no_fixup: bool,
    staging: os_disk::Staging,
    disks: &args::DataDiskArgs,
    json: bool,
) -> Result<(), Failed> {
    let opts = upload::Options {
        ebs: aws.settings(limits, concurrency),
        ..azure.options(limits, None)
    };
    let target = azure.target(disk_name)?;
    let role = match azure.os_type {
        Some(OsTypeArg::Linux) if !no_fixup => {
            let fix = disks.fix_options(false, &opts.ebs, &opts.quotas)?;
            Role::FixedUp(os_disk::Staging {
                data_disks: fix.data_disks,
                ..staging
            })
        }
        // A Windows guest's fix-ups are registry changes; data disks come
        // online by the SAN policy, not by fstab.
        Some(OsTypeArg::Windows) if !no_fixup => Role::FixedUp(staging),
        _ => Role::Streamed,
    };
    let session = session(&opts)?;
    let progress = Progress::new(None, "read");
    let report = migrate::migrate(&session, snapshot, &target, &role, &opts, &|p| match p {
        migrate::Progress::Step(step) => progress.step(snapshot, step),
        migrate::Progress::Bytes(n) => progress.inc(n),
    });
    progress.finish();
    match report.map_err(said)? {
        migrate::Report::Streamed(r) => print::print_upload(&r, json),
        migrate::Report::FixedUp(r) => print::print_os_disk(&r, json),
    }
}
