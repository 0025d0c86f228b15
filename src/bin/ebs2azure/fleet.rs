//! The plan commands: `plan new`, `plan validate`, `migrate --plan`,
//! `report show` and `report merge`: arguments turned into the library's
//! plan settings, and the results handed to [`print`].

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ebs2azure::azure::Session;
use ebs2azure::ec2;
use ebs2azure::os_disk::Staging;
use ebs2azure::plan::{self, check, discover, new, Plan, RunReport, Shard, StateDir};
use ebs2azure::source::ebs::Quotas;
use ebs2azure::upload;

use crate::args::{AwsArgs, AzureArgs, LimitArgs, PlanCommand, ReportCommand, WindowArgs};
use crate::print;
use crate::progress::FleetProgress;
use crate::said;

/// How a plan run ended, for the exit code.
pub enum Ended {
    /// Every disk that is not excluded is done.
    Complete,
    /// Some disk failed or is left.
    Incomplete,
    /// An interrupt stopped the run.
    Interrupted,
}

/// The longest a snapshot list read from standard input may be.
const MAX_LIST_BYTES: u64 = 16 << 20;

/// Runs a `plan` command; `Ok(Some(why))` when `plan validate` found problems.
/// Prints a new plan, or writes it to `out` (not over a file unless `force`).
fn write_plan(
    text: &str,
    out: Option<&Path>,
    force: bool,
    summary: &str,
) -> Result<Option<String>, String> {
    match out {
        None => print::text(text),
        Some(path) => {
            if path.exists() && !force {
                return Err(format!(
                    "{} exists already; pass --force to replace it",
                    path.display()
                ));
            }
            plan::state::write_atomically(path, text.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            print::note_line(&format!(
                "wrote {} ({summary}); edit it, then: ebs2azure plan validate {}",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(None)
}

/// EBS/EC2 settings from `plan new --from-ec2`'s flags.
fn ebsettings(
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
) -> ebs2azure::source::ebs::Settings {
    ebs2azure::source::ebs::Settings {
        region,
        profile,
        endpoint_url,
        ..Default::default()
    }
}

pub fn plan_command(c: PlanCommand) -> Result<Option<String>, String> {
    match c {
        PlanCommand::New {
            snapshots,
            csv,
            from_ec2,
            instance_ids,
            tag,
            snapshot,
            wait_minutes,
            profile,
            endpoint_url,
            out,
            force,
            subscription,
            resource_group,
            location,
            region,
            sku,
        } => {
            let defaults = new::Defaults {
                subscription,
                resource_group,
                location,
                region: region.clone(),
                sku,
            };
            if from_ec2 {
                if out.as_ref().is_some_and(|p| p.exists() && !force) {
                    return Err(format!(
                        "{} exists already; pass --force to replace it",
                        out.as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ));
                }
                let settings = ebsettings(region, profile, endpoint_url);
                let select = if !instance_ids.is_empty() {
                    ec2::Selection::Ids(instance_ids)
                } else if !tag.is_empty() {
                    ec2::Selection::Tags(tag)
                } else {
                    ec2::Selection::All
                };
                let ec2 = ec2::Ec2::connect(&settings).map_err(said)?;
                let stop = AtomicBool::new(false);
                let snapshots = if snapshot {
                    discover::Snapshots::Take {
                        wait: std::time::Duration::from_secs(wait_minutes.max(1) * 60),
                        stop: &stop,
                    }
                } else {
                    discover::Snapshots::Latest
                };
                let found = discover::discover(&ec2, &select, &snapshots, &|m| {
                    // Progress of the discovery: on a terminal only.
                    if crate::progress::shown() {
                        print::note_line(m)
                    }
                })
                .map_err(said)?;
                let left: Vec<String> = found
                    .left_out
                    .iter()
                    .map(|l| {
                        let name = l
                            .name
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default();
                        format!("{}{name}: {}", l.instance, l.why)
                    })
                    .collect();
                if found.machines.is_empty() {
                    return Err(format!(
                        "none of the {} instances found can go to Azure as they are: {}",
                        left.len(),
                        left.join("; ")
                    ));
                }
                for l in &left {
                    print::note_line(&format!("left out {l}"));
                }
                let text = discover::write(&found, &defaults);
                let summary = format!(
                    "{} machines, {} disks; {} instances left out",
                    found.machines.len(),
                    found.machines.iter().map(|m| m.disks.len()).sum::<usize>(),
                    found.left_out.len()
                );
                return write_plan(&text, out.as_deref(), force, &summary);
            }
            let rows = if let Some(path) = csv {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                new::rows_from_csv(&text).map_err(|e| format!("{}: {e}", path.display()))?
            } else if !snapshots.is_empty() {
                new::rows_from_ids(snapshots.iter().map(String::as_str))?
            } else {
                if std::io::stdin().is_terminal() {
                    return Err("no snapshots were given: pass snapshot ids, --csv FILE, or a list on standard input".into());
                }
                let mut text = String::new();
                std::io::stdin()
                    .take(MAX_LIST_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|e| format!("cannot read the snapshot list on standard input: {e}"))?;
                // One or more ids per line (as `aws ... --output text` prints them).
                new::rows_from_ids(
                    text.lines()
                        .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace()),
                )?
            };
            if rows.is_empty() {
                return Err("the snapshot list is empty".into());
            }
            let text = new::write(&rows, &defaults);
            write_plan(
                &text,
                out.as_deref(),
                force,
                &format!("{} disks", rows.len()),
            )
        }
        PlanCommand::Validate {
            plan,
            offline,
            subscription,
            arm_endpoint,
            arm_token_file,
            aws,
            limits,
            json,
        } => {
            let fallback = plan::schema::Common {
                subscription,
                region: aws.region.clone(),
                ..Default::default()
            };
            let loaded = Plan::load(&plan, &fallback);
            let (parsed, mut problems) = match loaded {
                Ok(p) => (Some(p), Vec::new()),
                Err(plan::model::Error::Invalid { problems, .. }) => (None, problems),
                // Not TOML of a plan's shape: a problem at its line too.
                Err(plan::model::Error::Syntax {
                    line,
                    column,
                    message,
                    ..
                }) => (
                    None,
                    vec![plan::model::Problem {
                        line,
                        message: format!("column {column}: {message}"),
                    }],
                ),
                Err(e) => return Err(said(e)),
            };
            if let (Some(p), false) = (&parsed, offline) {
                let quotas = Quotas::published();
                problems.extend(check::snapshots(p, &aws.settings(&limits, None), &quotas));
                if p.disks.iter().any(|d| d.encryption.is_some() && !d.exclude) {
                    let conn = crate::args::AzureConn {
                        subscription: None,
                        resource_group: None,
                        arm_endpoint,
                        arm_token_file,
                        disk_token_file: None,
                    };
                    let opts = conn.options(&limits, None);
                    match Session::new(
                        &opts.azure,
                        opts.token_file.as_deref(),
                        opts.disk_token_file.as_deref(),
                    ) {
                        Ok(session) => problems.extend(check::encryption_sets(p, &session)),
                        Err(e) => problems.push(plan::model::Problem {
                            line: 0,
                            message: format!(
                                "the disk encryption sets cannot be checked: {}",
                                said(e)
                            ),
                        }),
                    }
                }
            }
            print::print_validation(&plan, parsed.as_ref(), &problems, offline, json)?;
            if problems.is_empty() {
                Ok(None)
            } else {
                Ok(Some(format!(
                    "plan {} has {} problem{}",
                    plan.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                )))
            }
        }
    }
}

pub fn report_command(c: ReportCommand) -> Result<(), String> {
    match c {
        ReportCommand::Show { report, json } => {
            let r = RunReport::read(&report).map_err(said)?;
            print::print_run_report(&r, json)
        }
        ReportCommand::Merge { reports, out, json } => {
            let parts = reports
                .iter()
                .map(|p| RunReport::read(p).map(|r| (p.display().to_string(), r)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(said)?;
            let merged = RunReport::merge(&parts).map_err(said)?;
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                merged.write(&dir).map_err(said)?;
                print::note_line(&format!(
                    "wrote {}",
                    dir.join(plan::report::REPORT_JSON).display()
                ));
            }
            print::print_run_report(&merged, json)
        }
    }
}

/// What `migrate --plan` takes from the command line.
pub struct PlanRun<'a> {
    pub plan: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub shard: Option<Shard>,
    pub shards: Option<u32>,
    pub disks_at_once: std::num::NonZeroUsize,
    pub accept_plan_changes: bool,
    pub azure: &'a AzureArgs,
    pub aws: &'a AwsArgs,
    pub limits: &'a LimitArgs,
    pub concurrency: Option<std::num::NonZeroUsize>,
    pub staging: Staging,
    pub json: bool,
    pub pre_seed: bool,
}

/// The default state directory of `plan`: beside it, `NAME.state`.
fn default_state_dir(plan: &Path) -> PathBuf {
    let mut name = plan.file_stem().unwrap_or_default().to_owned();
    name.push(".state");
    plan.with_file_name(name)
}

pub fn migrate_plan(r: PlanRun<'_>, stop: Arc<AtomicBool>) -> Result<Ended, String> {
    if r.azure.resume || r.azure.cleanup {
        return Err("a plan run resumes by itself and keeps failed disks to resume; --resume and --cleanup are for one disk".into());
    }
    if r.azure.os_type.is_some() || r.azure.hyper_v_generation.is_some() {
        return Err("with --plan, os_type and hyper_v_generation are set in the plan (per machine or disk), not with --os-type or --hyper-v-generation".into());
    }
    let plan = Plan::load(&r.plan, &r.azure.plan_fallback(r.aws)).map_err(said)?;
    let shard = match r.shard {
        Some(s) => Some(s),
        None => Shard::from_env(r.shards, |k| std::env::var(k).ok())?,
    };
    if shard.is_none() && r.shards.is_some() {
        return Err(format!(
            "--shards says how many shards there are, but no shard index is set: pass --shard I/N, or run under a scheduler that sets {} or {}",
            plan::shard::K8S_INDEX_ENV,
            plan::shard::BATCH_INDEX_ENV
        ));
    }
    let selected: Vec<usize> = match shard {
        Some(s) => s.disks(&plan),
        None => (0..plan.disks.len()).collect(),
    };
    let base = r
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&r.plan));
    let shard_dir = shard.map(|s| s.dir_name());
    let mine: Vec<&str> = selected
        .iter()
        .map(|&i| plan.disks[i].name.as_str())
        .collect();
    let state = StateDir::open(
        &base,
        shard_dir.as_deref(),
        &plan,
        &mine,
        r.accept_plan_changes,
    )
    .map_err(|e| {
        let text = said(e);
        if text.contains("the plan changed") {
            format!("{text} (--accept-plan-changes)")
        } else {
            text
        }
    })?;
    let ebs = r.aws.settings(r.limits, None);
    let in_flight = r.concurrency.map_or(ebs.in_flight.cap(), |c| c.get());
    let upload_opts = upload::Options {
        ebs,
        quotas: Quotas::shared(in_flight, r.limits.retry_budget, r.limits.stall()),
        stop: Some(stop.clone()),
        ..r.azure.options(r.limits, None)
    };
    let session = Session::new(
        &upload_opts.azure,
        upload_opts.token_file.as_deref(),
        upload_opts.disk_token_file.as_deref(),
    )
    .map_err(said)?;
    let opts = plan::RunOptions {
        upload: upload_opts,
        staging: r.staging,
        disks_at_once: r.disks_at_once,
        plan_file: r.plan.display().to_string(),
        shards: shard.map(|s| s.to_string()).into_iter().collect(),
        pre_seed: r.pre_seed,
    };
    let progress = FleetProgress::new(selected.len(), r.json);
    let report = plan::run(&plan, &selected, &state, &session, &opts, &|e| {
        progress.event(&e)
    });
    progress.finish();
    let report = report.map_err(said)?;
    let interrupted = stop.load(std::sync::atomic::Ordering::SeqCst);
    if !r.json {
        print::print_run_report(&report, false)?;
    } else {
        print::print_run_end(&report, state.path());
    }
    let again = format!(
        "ebs2azure migrate --plan {}{}{}",
        r.plan.display(),
        if r.pre_seed { " --pre-seed" } else { "" },
        r.state_dir
            .as_ref()
            .map(|d| format!(" --state-dir {}", d.display()))
            .unwrap_or_default()
    );
    if interrupted {
        eprintln!("interrupted: the disks in progress are kept in their upload state; run `{again}` to resume");
        return Ok(Ended::Interrupted);
    }
    Ok(ended(&report, state.path(), &again))
}

/// How a finished (not interrupted) plan run ended, said on standard error.
fn ended(report: &RunReport, dir: &Path, again: &str) -> Ended {
    let md = dir.join(plan::report::REPORT_MD);
    if report.complete {
        print::note_line(&format!("report: {}", md.display()));
        Ended::Complete
    } else {
        print::error(&format!(
            "{} of {} disks are not done (report: {}); fix what it says and run `{again}` again: done disks are skipped",
            report.totals.failed + report.totals.left,
            report.totals.disks,
            md.display()
        ));
        Ended::Incomplete
    }
}

/// What `sync` or `cutover` runs.
pub enum WindowRun {
    /// Delta syncs only.
    Sync,
    /// The window.
    Cutover {
        /// Stop the instances first.
        stop_instances: bool,
        /// Longest wait for instances and snapshots.
        wait: std::time::Duration,
        /// How the finished disks are read back.
        verify: ebs2azure::cutover::window::Verify,
    },
}

/// Runs `sync` or `cutover` over a plan.
pub fn window(w: WindowArgs, kind: WindowRun, stop: Arc<AtomicBool>) -> Result<Ended, String> {
    let fallback = plan::schema::Common {
        subscription: w.azure.subscription.clone(),
        resource_group: w.azure.resource_group.clone(),
        region: w.aws.region.clone(),
        ..Default::default()
    };
    let plan = Plan::load(&w.plan, &fallback).map_err(said)?;
    let targets = match &w.to_snapshots {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            ebs2azure::cutover::targets::parse(&text, &f.display().to_string(), &plan)
                .map_err(said)?
        }
        None => Default::default(),
    };
    let base = w
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&w.plan));
    if !base.join("journals").is_dir() {
        return Err(format!(
            "{} holds no journals of this plan: pre-seed its disks first with `ebs2azure migrate --plan {} --pre-seed`",
            base.display(),
            w.plan.display()
        ));
    }
    let state = StateDir::open_for_sync(&base, &plan).map_err(said)?;
    let selected: Vec<usize> = (0..plan.disks.len()).collect();
    let ebs = w.aws.settings(&w.limits, None);
    let in_flight = w.concurrency.map_or(ebs.in_flight.cap(), |c| c.get());
    let upload_opts = upload::Options {
        ebs,
        quotas: Quotas::shared(in_flight, w.limits.retry_budget, w.limits.stall()),
        stop: Some(stop.clone()),
        ..w.azure.options(&w.limits, None)
    };
    let session = Session::new(
        &upload_opts.azure,
        upload_opts.token_file.as_deref(),
        upload_opts.disk_token_file.as_deref(),
    )
    .map_err(said)?;
    let opts = ebs2azure::cutover::window::WindowOptions {
        sync: ebs2azure::cutover::SyncOptions {
            staging: Staging {
                allow_blockers: w.allow_blockers,
                ..Staging::default()
            },
            upload: upload_opts,
            full: w.full,
        },
        disks_at_once: w.disks_at_once,
        plan_file: w.plan.display().to_string(),
        stop_instances: matches!(
            kind,
            WindowRun::Cutover {
                stop_instances: true,
                ..
            }
        ),
        wait_limit: match kind {
            WindowRun::Cutover { wait, .. } => wait,
            WindowRun::Sync => std::time::Duration::ZERO,
        },
        verify: match kind {
            WindowRun::Cutover { verify, .. } => verify,
            WindowRun::Sync => ebs2azure::cutover::window::Verify::None,
        },
    };
    let progress = FleetProgress::new(selected.len(), w.json);
    let events = |e: ebs2azure::plan::Event<'_>| progress.event(&e);
    let (report, verb) = match kind {
        WindowRun::Sync => (
            ebs2azure::cutover::window::sync(
                &plan, &selected, &targets, &state, &session, &opts, &events,
            ),
            "sync",
        ),
        WindowRun::Cutover { .. } => {
            let needs_ec2 = plan
                .machines
                .iter()
                .any(|m| m.instance_id.is_some() && !m.exclude);
            let ec2 = if needs_ec2 {
                Some(ebs2azure::ec2::Ec2::connect(&opts.sync.upload.ebs).map_err(said)?)
            } else {
                None
            };
            (
                ebs2azure::cutover::window::cutover(
                    &plan,
                    &selected,
                    &targets,
                    &state,
                    &session,
                    ec2.as_ref(),
                    &opts,
                    &events,
                ),
                "cutover",
            )
        }
    };
    progress.finish();
    let report = report.map_err(said)?;
    if !w.json {
        print::print_run_report(&report, false)?;
    } else {
        print::print_run_end(&report, state.path());
    }
    let again = format!(
        "ebs2azure {verb} --plan {}{}{}",
        w.plan.display(),
        w.state_dir
            .as_ref()
            .map(|d| format!(" --state-dir {}", d.display()))
            .unwrap_or_default(),
        w.to_snapshots
            .as_ref()
            .map(|f| format!(" --to-snapshots {}", f.display()))
            .unwrap_or_default()
    );
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!("interrupted: the disks stay open in their upload state; run `{again}` to go on where it stopped");
        return Ok(Ended::Interrupted);
    }
    Ok(ended(&report, state.path(), &again))
}
