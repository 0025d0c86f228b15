//! The `ebs2azure` command: parses the arguments ([`args`]), turns them into
//! the library's settings, calls the library, and hands the result to
//! [`print`] with a [`progress`] display on the way. No logic a library
//! user would need lives here.

mod args;
mod assess;
mod errors;
mod fleet;
mod print;
mod progress;
mod vm;

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

/// Logs to standard error through tracing: warnings by default, more with
/// -v, errors only with -q; RUST_LOG, when set, says instead.
fn init_logs(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,ebs2azure=info",
        (false, _) => "warn,ebs2azure=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose, cli.quiet);
    progress::set_quiet(cli.quiet);
    print::set_json_errors(cli.command.json());
    let result = match cli.command {
        c @ Command::Convert { .. } => {
            return interruptible(|stop| convert(c, stop), |e| {
                format!("interrupted: {e}; the output was not written and no partial file is left")
            })
        }
        Command::Info {
            file,
            input_raw,
            accept_bad_checksum,
            json,
            aws,
            limits,
        } => match Input::parse_checked(&file).map_err(said) {
            Err(e) => Err(e),
            Ok(Input::Snapshot(id)) => info::snapshot_info(&id, &aws.settings(&limits, None))
                .map_err(said)
                .and_then(|i| print::print_snapshot_info(&i, json)),
            Ok(Input::Image(path)) => {
                let opts = OpenOptions {
                    accept_bad_checksum,
                    force_raw: input_raw,
                };
                info::info(&path, &opts)
                    .map_err(said)
                    .and_then(|i| print::print_info(&i, json))
            }
        },
        Command::Inspect { image, json } => match guest_work(|| fixup::inspect::inspect(&image)) {
            Err(fixup::Error::Interrupted) => return guest_interrupted(&image),
            Err(e) => Err(said(e)),
            Ok(r) => match print::print_inspect(&r, json) {
                Err(e) => Err(e),
                Ok(()) => match r.of_class(fixup::Class::Blocker).count() {
                    0 => Ok(()),
                    n => return blocked(&format!(
                        "{n} blocker{}: the guest will not boot on Azure as it is (the findings say what to do)",
                        if n == 1 { "" } else { "s" }
                    )),
                },
            },
        },
        Command::Fixup {
            image,
            dry_run,
            disks,
            aws,
            limits,
            json,
        } => match disks
            .fix_options(dry_run, &aws.settings(&limits, None), &Quotas::published())
            .map(|o| guest_work(|| fixup::apply::fixup(&image, &o)))
        {
            Err(e) => Err(e),
            Ok(Err(fixup::Error::Interrupted)) => return guest_interrupted(&image),
            Ok(Err(e)) => Err(said(e)),
            Ok(Ok(r)) => match print::print_fixup(&r, json) {
                Err(e) => Err(e),
                Ok(()) if fixup::windows::unsafe_to_edit(&r.inspection.findings) => {
                    return blocked("nothing was changed: Windows left this disk in a state that must not be edited (the blockers say why and what to do)")
                }
                Ok(()) => Ok(()),
            },
        },
        // Rendered whole, then printed as results are (a closed pipe ends quietly).
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ebs2azure", &mut buf);
            print::text(&String::from_utf8_lossy(&buf));
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| format!("cannot render the manual page: {e}"))
                .map(|()| print::text(&String::from_utf8_lossy(&buf)))
        }
        Command::Plan(c) => match fleet::plan_command(c) {
            Ok(Some(problems)) => return blocked(&problems),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
        Command::Report(c) => fleet::report_command(c),
        Command::Vm(c) => return vm::command(c),
        Command::Assess {
            plan,
            machine,
            cache_mib,
            aws,
            limits,
            json,
        } => return assess::command(&plan, &machine, cache_mib, &aws, &limits, json),
        c @ Command::Cleanup { .. } => return vm::cleanup(c),
        Command::Upload {
            vhd,
            disk_name,
            azure,
            limits,
            concurrency,
            json,
        } => {
            return interruptible(
                |stop| {
                    let opts = upload::Options {
                        stop: Some(stop),
                        ..azure.options(&limits, concurrency)
                    };
                    let target = azure.target(&disk_name)?;
                    let s = session(&opts)?;
                    // Each step on its own line; the copy against the VHD's data.
                    let progress = Progress::new(None, "read");
                    let r = upload::upload(&s, &vhd, &target, &opts, &|p| {
                        progress.show(&disk_name, p)
                    });
                    progress.finish();
                    r.map_err(said).and_then(|r| print::print_upload(&r, json))
                },
                |e| format!("interrupted: {e}"),
            )
        }
        c @ Command::Migrate { .. } => return migrate(c),
        Command::Sync { window } => return plan_window(window, fleet::WindowRun::Sync),
        Command::Cutover {
            window,
            stop_instances,
            wait_minutes,
            verify,
        } => {
            return plan_window(
                window,
                fleet::WindowRun::Cutover {
                    stop_instances,
                    wait: std::time::Duration::from_secs(wait_minutes * 60),
                    verify: match verify {
                        args::VerifyArg::Full => ebs2azure::cutover::window::Verify::Full,
                        args::VerifyArg::Changed => ebs2azure::cutover::window::Verify::Changed,
                        args::VerifyArg::None => ebs2azure::cutover::window::Verify::None,
                    },
                },
            )
        }
        Command::Verify {
            source,
            digest,
            disk_name,
            azure,
            aws,
            limits,
            all_ranges,
            json,
        } => {
            let opts = upload::Options {
                ebs: aws.settings(&limits, None),
                ..azure.options(&limits, None)
            };
            let target = azure.existing(&disk_name);
            target
                .and_then(|t| session(&opts).map(|s| (s, t)))
                .and_then(|(s, target)| match (digest, source) {
                    (Some(d), _) => verify::verify_digest(&s, &target, &d, &opts)
                        .map_err(said)
                        .and_then(|r| print::print_digest_check(&r, &disk_name, json)),
                    (None, Some(source)) => {
                        Input::parse_checked(&source)
                            .map_err(said)
                            .and_then(|i| verify::verify(&s, &i, &target, &opts).map_err(said))
                            .and_then(|r| print::print_verify(&r, &disk_name, all_ranges, json))
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

/// Says what is wrong with `command`'s arguments, as clap does, and exits 2.
fn usage_error(command: &str, message: &str) -> ! {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let mut cmd = cli
        .find_subcommand_mut(command)
        .map(|c| c.clone().bin_name(format!("ebs2azure {command}")))
        .unwrap_or_default();
    cmd.error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// Exit code when the input has problems that stop a migration: `inspect`
/// found blockers, `fixup` would not edit, `plan validate` found problems.
pub(crate) const EXIT_BLOCKED: u8 = 3;

/// Says why the input stops a migration, and exits with [`EXIT_BLOCKED`].
fn blocked(message: &str) -> ExitCode {
    print::error(message);
    ExitCode::from(EXIT_BLOCKED)
}

/// Exit code of a run stopped by an interrupt (128 + SIGINT), as shells use.
const EXIT_INTERRUPTED: u8 = 130;

/// Runs `run` with a stop switch the first SIGINT or SIGTERM sets; when it
/// fails after one, says so with `left` (what was left and how to go on)
/// and exits 130.
fn interruptible(
    run: impl FnOnce(Arc<AtomicBool>) -> Result<(), Failed>,
    left: impl FnOnce(&str) -> String,
) -> ExitCode {
    let stop = match stop_on_signals() {
        Ok(s) => s,
        Err(e) => {
            print::error(&e);
            return ExitCode::FAILURE;
        }
    };
    match run(stop.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if stop.load(std::sync::atomic::Ordering::SeqCst) => {
            print::error(&left(&e));
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            print::error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Runs guest work (inspect, fixup) with SIGINT and SIGTERM stopping it
/// between two guest steps, so that it unwinds: filesystems unmounted, loop
/// devices detached. Without the handlers (they could not be set) a signal
/// ends the process as usual.
fn guest_work<T>(work: impl FnOnce() -> Result<T, fixup::Error>) -> Result<T, fixup::Error> {
    if let Err(e) = stop_on_signals() {
        tracing::warn!("{e}");
    }
    work()
}

/// Says that guest work on `image` was interrupted, and exits 130.
fn guest_interrupted(image: &std::path::Path) -> ExitCode {
    print::error(&format!(
        "interrupted: {} was unmounted and its loop devices detached; a file being replaced was left whole (old or new); run the command again",
        image.display()
    ));
    ExitCode::from(EXIT_INTERRUPTED)
}

/// A flag set by the first SIGINT or SIGTERM (also the library's interrupt
/// request); a second one ends the process at once.
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
    ebs2azure::interrupt::watch(stop.clone());
    Ok(stop)
}

/// The run's one Azure session.
fn session(opts: &upload::Options) -> Result<Session, Failed> {
    Session::new(
        &opts.azure,
        opts.token_file.as_deref(),
        opts.disk_token_file.as_deref(),
    )
    .map_err(said)
}

fn convert(c: Command, stop: Arc<AtomicBool>) -> Result<(), Failed> {
    let Command::Convert {
        input,
        extra,
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
    let out = match (out, extra.first()) {
        (Some(out), None) => out,
        (_, Some(second)) => usage_error("convert", &format!(
            "convert takes one input and writes where --out says: ebs2azure convert {input} --out {second}"
        )),
        (None, None) => usage_error("convert", "--out is needed: where to write the image"),
    };
    if !fixup && !disks.data_disks.is_empty() {
        usage_error("convert", "--data-disk tells the guest fix-up about the machine's other disks: add --fixup, or leave --data-disk out");
    }
    // One run, one set of quotas: the data disks' reads and the copy share them.
    let quotas = Quotas::published();
    let fixup = fixup
        .then(|| disks.fix_options(false, &aws.settings(&limits, None), &quotas))
        .transpose()?;
    let input = Input::parse_checked(&input).map_err(said)?;
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
        stop: Some(stop),
    };
    let conversion = Conversion::prepare(&input, &out, &opts).map_err(said)?;
    // A snapshot's listing is read as the copy goes: no total to show.
    let progress = Progress::new(conversion.bytes_to_read().map_err(said)?, "read");
    // A snapshot lists as it goes: the total shows once its listing is complete.
    let listing = conversion.listing();
    let report = conversion.run(&|n| {
        progress.inc(n);
        if let Some(l) = &listing {
            progress.listing(l);
        }
    });
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
        pre_seed,
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
        base_copy: false,
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
                    pre_seed,
                };
                stop_on_signals().and_then(|stop| fleet::migrate_plan(run, stop))
            }
        }
        (None, Some(snapshot), Some(disk_name)) => {
            return interruptible(
                |stop| {
                    one_disk(
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
                        stop,
                    )
                },
                |e| format!("interrupted: {e}"),
            )
        }
        _ => Err("give a snapshot and --disk-name, or --plan".into()),
    };
    plan_exit(result)
}

/// A plan run's exit code: whether every disk is done, or it was interrupted.
fn plan_exit(result: Result<fleet::Ended, String>) -> ExitCode {
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

/// `sync` and `cutover`.
fn plan_window(w: args::WindowArgs, kind: fleet::WindowRun) -> ExitCode {
    plan_exit(stop_on_signals().and_then(|stop| fleet::window(w, kind, stop)))
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
    stop: Arc<AtomicBool>,
) -> Result<(), Failed> {
    let opts = upload::Options {
        ebs: aws.settings(limits, concurrency),
        stop: Some(stop),
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
    let report = migrate::migrate(&session, snapshot, &target, &role, &opts, &|p| {
        progress.show(disk_name, p)
    });
    progress.finish();
    match report.map_err(said)? {
        migrate::Report::Streamed(r) => print::print_upload(&r, json),
        migrate::Report::FixedUp(r) => print::print_os_disk(&r, json),
    }
}
