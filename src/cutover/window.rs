//! The runs over a plan: `sync` (every pre-seeded disk to its new
//! snapshot, as often as wanted before the window) and `cutover` (the
//! window itself, as one command).
//!
//! A cutover, per machine of the plan:
//!
//! | phase | what happens |
//! |---|---|
//! | stop | (when asked) StopInstances, then wait until EC2 says stopped |
//! | snapshot | CreateSnapshots of all its volumes at one instant, then wait until completed |
//! | sync | each disk's delta from its base to the final snapshot (OS disks fixed up again) |
//! | finalize | each disk's upload ends: it becomes an ordinary Unattached disk |
//! | verify | each disk read back: a data disk against the final snapshot, an OS disk against the digest of its fixed-up copy |
//!
//! Each phase's start and length per machine go into the report's
//! timeline. Nothing on the AWS side changes but the optional stop; the
//! report says how to undo it.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::sync::{sync_disk, SyncOptions};
use crate::azure::Session;
use crate::ec2::{self, Ec2};
use crate::plan::journal::{self, Journal};
use crate::plan::model::{DiskRole, Plan, PlannedDisk};
use crate::plan::report::{self, DiskReport, DiskStatus, Phase, RunKind, RunReport};
use crate::plan::run::{
    chain, digest_of, each_disk, failed, finalize_open, finish_locked, outcome, Event,
};
use crate::plan::state::StateDir;

/// How a run over a plan goes.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    /// How each disk syncs.
    pub sync: SyncOptions,
    /// Disks moved at the same time.
    pub disks_at_once: NonZeroUsize,
    /// The plan file's name, for the report.
    pub plan_file: String,
    /// Stop each machine's instance before its final snapshot.
    pub stop_instances: bool,
    /// Longest wait for instances to stop, and for snapshots to complete.
    pub wait_limit: Duration,
    /// How each finished disk is read back.
    pub verify: Verify,
}

/// How a cutover checks each disk it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The whole disk: a data disk against its final snapshot (every block
    /// read from both), an OS disk against the digest of its fixed-up copy.
    Full,
    /// Only the blocks the window's sync wrote or cleared, against their
    /// SHA-256 from the final snapshot, and the footer: the base was
    /// checked block by block against EBS's checksums when it was written.
    Changed,
    /// None.
    None,
}

/// Brings every selected pre-seeded disk to its snapshot in `targets`
/// (disk name -> snapshot), writes the report into the state directory.
#[allow(clippy::too_many_arguments)]
pub fn sync(
    plan: &Plan,
    selected: &[usize],
    targets: &BTreeMap<String, String>,
    state: &StateDir,
    session: &Session,
    opts: &WindowOptions,
    events: &(dyn Fn(Event<'_>) + Sync),
) -> Result<RunReport, report::Error> {
    let never = AtomicBool::new(false);
    let stop: &AtomicBool = opts.sync.upload.stop.as_deref().unwrap_or(&never);
    let started = Instant::now();
    let disks = each_disk(plan, selected, opts.disks_at_once, stop, events, &|disk| {
        one_sync(
            plan, disk, targets, state, session, &opts.sync, stop, events,
        )
    });
    let mut report = RunReport::new(
        opts.plan_file.clone(),
        plan.digest.clone(),
        Vec::new(),
        started.elapsed().as_secs_f64(),
        disks,
    );
    report.run = RunKind::Sync;
    report.write(state.path())?;
    Ok(report)
}

/// One disk's sync as a report line (failures included).
#[allow(clippy::too_many_arguments)]
fn one_sync(
    plan: &Plan,
    disk: &PlannedDisk,
    targets: &BTreeMap<String, String>,
    state: &StateDir,
    session: &Session,
    opts: &SyncOptions,
    stop: &AtomicBool,
    events: &(dyn Fn(Event<'_>) + Sync),
) -> DiskReport {
    let started = Instant::now();
    let to = targets
        .get(&disk.name)
        .cloned()
        .unwrap_or_else(|| disk.snapshot.clone());
    match sync_disk(plan, disk, &to, state, session, opts, stop, events) {
        Ok(r) => r,
        Err(e) => failed(
            DiskReport {
                snapshot: to,
                ..outcome(disk, DiskStatus::Failed)
            },
            e,
            stop,
            started,
        ),
    }
}

/// One recorded part of a phase: machine, phase, start, end, outcome.
type Entry = (String, String, Instant, Instant, String);

/// The timeline being recorded.
struct Timeline {
    start: Instant,
    wall: SystemTime,
    entries: Mutex<Vec<Entry>>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            start: Instant::now(),
            wall: SystemTime::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, machine: &str, phase: &str, from: Instant, outcome: &str) {
        tracing::info!(
            machine,
            phase,
            seconds = from.elapsed().as_secs_f64(),
            "{outcome}"
        );
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((
                machine.into(),
                phase.into(),
                from,
                Instant::now(),
                outcome.into(),
            ));
    }

    /// One line per machine and phase: from its first start to its last
    /// end, failed if any part failed.
    fn phases(self) -> Vec<Phase> {
        let mut merged: Vec<Entry> = Vec::new();
        for (m, p, a, b, o) in self
            .entries
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            match merged.iter_mut().find(|e| e.0 == m && e.1 == p) {
                Some(e) => {
                    e.2 = e.2.min(a);
                    e.3 = e.3.max(b);
                    if e.4 == "ok" {
                        e.4 = o;
                    }
                }
                None => merged.push((m, p, a, b, o)),
            }
        }
        merged.sort_by_key(|e| e.2);
        merged
            .into_iter()
            .map(|(machine, phase, a, b, outcome)| {
                let offset = a.duration_since(self.start);
                Phase {
                    machine,
                    phase,
                    started: rfc3339(self.wall + offset),
                    offset_seconds: offset.as_secs_f64(),
                    seconds: b.duration_since(a).as_secs_f64(),
                    outcome,
                }
            })
            .collect()
    }
}

/// `t` as RFC 3339 in UTC, to the millisecond.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let whole = crate::info::utc_string(d.as_secs());
    let secs = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{secs}.{:03}Z", d.subsec_millis())
}

/// The unit a cutover stops and snapshots: a machine's name and its disks.
fn machine_of<'a>(plan: &'a Plan, disk: &PlannedDisk) -> Option<&'a crate::plan::model::Machine> {
    plan.machines
        .iter()
        .find(|m| Some(&m.name) == disk.machine.as_ref())
}

/// Runs the window over the selected disks: stop (when asked), final
/// snapshots, sync, finalize and verify, as the module says. Disks whose
/// machine names no instance take their final snapshot from `targets`
/// (or the plan). Writes the report, timeline included.
#[allow(clippy::too_many_arguments)]
pub fn cutover(
    plan: &Plan,
    selected: &[usize],
    targets: &BTreeMap<String, String>,
    state: &StateDir,
    session: &Session,
    ec2: Option<&Ec2>,
    opts: &WindowOptions,
    events: &(dyn Fn(Event<'_>) + Sync),
) -> Result<RunReport, report::Error> {
    let never = AtomicBool::new(false);
    let stop: &AtomicBool = opts.sync.upload.stop.as_deref().unwrap_or(&never);
    let timeline = Timeline::new();
    // The machines of the selected disks that name an instance, unless an
    // earlier cutover finished all their disks.
    let finished = |d: &PlannedDisk| {
        journal::read(&state.journal(&d.name)).is_ok_and(|st| st.finished.is_some())
    };
    let mut instances: Vec<(String, String)> = Vec::new();
    for &i in selected {
        let disk = &plan.disks[i];
        if disk.exclude || finished(disk) {
            continue;
        }
        if let Some(m) = machine_of(plan, disk) {
            if let (Some(id), false) = (&m.instance_id, m.exclude) {
                if !instances.iter().any(|(n, _)| *n == m.name) {
                    instances.push((m.name.clone(), id.clone()));
                }
            }
        }
    }
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut finals: BTreeMap<String, String> = targets.clone();
    if !instances.is_empty() {
        match ec2 {
            None => {
                for (m, _) in &instances {
                    failed.insert(m.clone(), "no EC2 client to snapshot its instance".into());
                }
            }
            Some(ec2) => {
                if opts.stop_instances {
                    stop_all(
                        ec2,
                        &instances,
                        opts.wait_limit,
                        stop,
                        &timeline,
                        &mut failed,
                        events,
                    );
                }
                snapshot_all(
                    plan,
                    selected,
                    state,
                    ec2,
                    &instances,
                    (opts.wait_limit, stop),
                    &timeline,
                    &mut failed,
                    &mut finals,
                    events,
                );
            }
        }
    }
    let disks = each_disk(plan, selected, opts.disks_at_once, stop, events, &|disk| {
        let unit = disk.machine.clone().unwrap_or_else(|| disk.name.clone());
        if let Some(why) = failed.get(&unit) {
            return DiskReport {
                error: Some(format!("machine {unit}: {why}")),
                ..outcome(disk, DiskStatus::Failed)
            };
        }
        window_disk(
            plan, disk, &finals, state, session, opts, stop, events, &timeline, &unit,
        )
    });
    let mut report = RunReport::new(
        opts.plan_file.clone(),
        plan.digest.clone(),
        Vec::new(),
        timeline.start.elapsed().as_secs_f64(),
        disks,
    );
    report.run = RunKind::Cutover;
    // Last, each machine whose disks are all finished gets its VM, when
    // the plan says what it is to be.
    for m in report.machines.iter_mut().filter(|m| m.complete) {
        let Some(machine) = plan.machines.iter().find(|x| x.name == m.name) else {
            continue;
        };
        if machine.exclude || machine.vm.size.is_none() || machine.vm.subnet_id.is_none() {
            continue;
        }
        let from = Instant::now();
        events(Event::Phase {
            machine: &m.name,
            phase: "creating the VM",
        });
        let made = crate::machines::vm::spec(session, plan, machine)
            .and_then(|spec| crate::machines::vm::create(session, &spec));
        match made {
            Ok(id) => {
                timeline.add(&m.name, "vm", from, "ok");
                m.vm = Some(id);
            }
            Err(e) => {
                timeline.add(&m.name, "vm", from, &chain(&e));
                m.complete = false;
                report.complete = false;
            }
        }
    }
    report.timeline = timeline.phases();
    if opts.stop_instances && !instances.is_empty() {
        let ids: Vec<&str> = instances.iter().map(|(_, i)| i.as_str()).collect();
        report.rollback = Some(format!(
            "The source instances were stopped and nothing else on AWS changed. To roll back, start them again: `aws ec2 start-instances --instance-ids {}`, and leave the Azure disks unused (or delete them).",
            ids.join(" ")
        ));
    } else {
        report.rollback = Some("Nothing on AWS was changed: the source machines run as before. To roll back, leave the Azure disks unused (or delete them).".into());
    }
    report.write(state.path())?;
    Ok(report)
}

fn stop_all(
    ec2: &Ec2,
    instances: &[(String, String)],
    limit: Duration,
    interrupt: &AtomicBool,
    timeline: &Timeline,
    failed: &mut BTreeMap<String, String>,
    events: &(dyn Fn(Event<'_>) + Sync),
) {
    let from = Instant::now();
    for (m, _) in instances {
        events(Event::Phase {
            machine: m,
            phase: "stopping the instance",
        });
    }
    let ids: Vec<String> = instances.iter().map(|(_, i)| i.clone()).collect();
    if let Err(e) = ec2.stop(&ids) {
        for (m, _) in instances {
            let why = format!("stopping its instance failed: {e}");
            timeline.add(m, "stop", from, &why);
            failed.insert(m.clone(), why);
        }
        return;
    }
    let mut waiting: Vec<&(String, String)> = instances.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for pair in waiting {
            let interrupted = interrupt.load(std::sync::atomic::Ordering::SeqCst);
            match ec2.instance(&pair.1) {
                Ok(i) if i.state == "stopped" => timeline.add(&pair.0, "stop", from, "ok"),
                Ok(_) if interrupted => {
                    let why = "interrupted while its instance was stopping".to_owned();
                    timeline.add(&pair.0, "stop", from, &why);
                    failed.insert(pair.0.clone(), why);
                }
                Ok(_) if from.elapsed() < limit => still.push(pair),
                Ok(i) => {
                    let why = format!(
                        "its instance {} is still {} after {limit:?}",
                        pair.1, i.state
                    );
                    timeline.add(&pair.0, "stop", from, &why);
                    failed.insert(pair.0.clone(), why);
                }
                Err(e) => {
                    let why = format!("cannot tell whether its instance stopped: {e}");
                    timeline.add(&pair.0, "stop", from, &why);
                    failed.insert(pair.0.clone(), why);
                }
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// CreateSnapshots per machine, then one wait for them all; fills
/// `finals` (disk -> final snapshot) by volume.
#[allow(clippy::too_many_arguments)]
fn snapshot_all(
    plan: &Plan,
    selected: &[usize],
    state: &StateDir,
    ec2: &Ec2,
    instances: &[(String, String)],
    (limit, stop): (Duration, &AtomicBool),
    timeline: &Timeline,
    failed: &mut BTreeMap<String, String>,
    finals: &mut BTreeMap<String, String>,
    events: &(dyn Fn(Event<'_>) + Sync),
) {
    let from = Instant::now();
    let mut taken: Vec<(String, Vec<ec2::Snapshot>)> = Vec::new();
    for (m, id) in instances {
        if failed.contains_key(m) {
            continue;
        }
        events(Event::Phase {
            machine: m,
            phase: "taking crash-consistent snapshots of its volumes",
        });
        match ec2.create_snapshots(id, &format!("ebs2azure cutover of {m}")) {
            Ok(s) => taken.push((m.clone(), s)),
            Err(e) => {
                let why = format!("CreateSnapshots failed: {e}");
                timeline.add(m, "snapshot", from, &why);
                failed.insert(m.clone(), why);
            }
        }
    }
    let ids: Vec<String> = taken
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.id.clone()))
        .collect();
    let waited = if ids.is_empty() {
        Ok(Vec::new())
    } else {
        // Each machine's snapshots' progress, told when it moves.
        let told: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
        let progress = |now: &[ec2::Snapshot]| {
            for (m, snaps) in &taken {
                let line = snaps
                    .iter()
                    .filter_map(|s| now.iter().find(|n| n.id == s.id))
                    .map(|n| {
                        format!(
                            "{} {}",
                            n.id,
                            if n.state == "completed" {
                                "completed"
                            } else {
                                &n.progress
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut told = told.lock().unwrap_or_else(PoisonError::into_inner);
                if told.get(m) != Some(&line) {
                    events(Event::Phase {
                        machine: m,
                        phase: &format!("snapshots: {line}"),
                    });
                    told.insert(m.clone(), line);
                }
            }
        };
        ec2::wait_completed(
            ec2,
            &ids,
            Duration::from_millis(500),
            limit,
            stop,
            &progress,
        )
    };
    if let Err(e) = waited {
        for (m, _) in &taken {
            let why = format!("waiting for its snapshots: {e}");
            timeline.add(m, "snapshot", from, &why);
            failed.insert(m.clone(), why);
        }
        return;
    }
    // Each disk's final snapshot is the new one of its base's volume.
    for (m, snaps) in &taken {
        let disks: Vec<&PlannedDisk> = selected
            .iter()
            .map(|&i| &plan.disks[i])
            .filter(|d| d.machine.as_deref() == Some(m.as_str()) && !d.exclude)
            .collect();
        let bases: Vec<String> = disks
            .iter()
            .map(|d| {
                journal::read(&state.journal(&d.name))
                    .ok()
                    .and_then(|st| st.base.map(|b| b.0))
                    .unwrap_or_else(|| d.snapshot.clone())
            })
            .collect();
        let volumes = match ec2.snapshots(&bases) {
            Ok(v) => v,
            Err(e) => {
                let why = format!("cannot find the volumes of its disks' base snapshots: {e}");
                timeline.add(m, "snapshot", from, &why);
                failed.insert(m.clone(), why);
                continue;
            }
        };
        let mut outcome = "ok".to_owned();
        for (d, base) in disks.iter().zip(&bases) {
            let volume = volumes
                .iter()
                .find(|v| v.id == *base)
                .map(|v| v.volume.clone());
            match volume.and_then(|v| snaps.iter().find(|s| s.volume == v)) {
                Some(s) => {
                    finals.insert(d.name.clone(), s.id.clone());
                }
                None => {
                    outcome = format!(
                        "no new snapshot of the volume of {} (base {base}): the instance no longer has that volume",
                        d.name
                    );
                    failed.insert(m.clone(), outcome.clone());
                }
            }
        }
        timeline.add(m, "snapshot", from, &outcome);
    }
}

/// Sync, finalize and verify of one disk in the window.
#[allow(clippy::too_many_arguments)]
fn window_disk(
    plan: &Plan,
    disk: &PlannedDisk,
    finals: &BTreeMap<String, String>,
    state: &StateDir,
    session: &Session,
    opts: &WindowOptions,
    stop: &AtomicBool,
    events: &(dyn Fn(Event<'_>) + Sync),
    timeline: &Timeline,
    unit: &str,
) -> DiskReport {
    let started = Instant::now();
    let fail = |r: DiskReport, e: String| failed(r, e, stop, started);
    let earlier = journal::read(&state.journal(&disk.name)).unwrap_or_default();
    // A disk finished by an earlier cutover run is skipped.
    if let Some(summary) = &earlier.finished {
        if let Ok(r) = serde_json::from_value::<DiskReport>(summary.clone()) {
            return DiskReport {
                status: DiskStatus::FinishedEarlier,
                ..r
            };
        }
    }
    let target = disk.target();
    // An earlier run ended the upload and stopped before its journal said
    // so: the disk holds its base and takes no more writes.
    let ended_earlier = match (&earlier.base, &earlier.syncing) {
        (Some((base, _)), None) => session
            .block_on(session.arm().get(&target.disk))
            .ok()
            .flatten()
            .filter(|d| d.state == crate::azure::arm::DiskState::Unattached)
            .map(|_| base.clone()),
        _ => None,
    };
    // What the disk held before the sync, to tell what the sync changed
    // (blocks an interrupted run of it wrote count as changed).
    let mut before = earlier.done.clone();
    for i in &earlier.synced {
        before.insert(*i, Some(String::new()));
    }
    if let Some(base) = &ended_earlier {
        // It may count as finished only if the volume did not change since.
        if let Some(to) = finals.get(&disk.name).filter(|to| *to != base) {
            let differ = crate::source::ebs::EbsSource::open_changed(
                base,
                to,
                &opts.sync.upload.ebs,
                opts.sync.upload.quotas.clone(),
            )
            .and_then(|s| s.count_blocks());
            match differ {
                Ok(0) => {}
                Ok(n) => {
                    return fail(
                        outcome(disk, DiskStatus::Failed),
                        format!(
                            "disk {} was finished at snapshot {base} by an earlier run, and {n} blocks changed on the volume since (snapshot {to}); it takes no more writes, so delete it and migrate it again",
                            disk.name
                        ),
                    )
                }
                Err(e) => return fail(outcome(disk, DiskStatus::Failed), chain(&e)),
            }
        }
    }
    let mut r = match ended_earlier {
        Some(base) => DiskReport {
            status: DiskStatus::Finished,
            snapshot: base.clone(),
            target: Some(target.disk.id()),
            synced_from: Some(base),
            resumed: true,
            ..outcome(disk, DiskStatus::Finished)
        },
        None => {
            let from = Instant::now();
            events(Event::Phase {
                machine: unit,
                phase: "delta sync",
            });
            let r = one_sync(plan, disk, finals, state, session, &opts.sync, stop, events);
            timeline.add(unit, "sync", from, r.error.as_deref().unwrap_or("ok"));
            if r.error.is_some() {
                return r;
            }
            let from = Instant::now();
            let ended = finalize_open(session, &target.disk);
            timeline.add(
                unit,
                "finalize",
                from,
                ended.as_ref().err().map_or("ok", String::as_str),
            );
            if let Err(e) = ended {
                return fail(r, e);
            }
            r
        }
    };
    r.status = DiskStatus::Finished;
    let (journal, st) = match Journal::open(&state.journal(&disk.name)) {
        Ok(j) => j,
        Err(e) => return fail(r, chain(&e)),
    };
    if opts.verify != Verify::None {
        let from = Instant::now();
        events(Event::Step {
            disk: &disk.name,
            step: "verifying",
        });
        let checked = match opts.verify {
            Verify::Changed => verify_changed(session, disk, &before, &st, opts),
            _ => verify_one(session, disk, &r.snapshot, &st, opts),
        };
        timeline.add(
            unit,
            "verify",
            from,
            checked.as_ref().err().map_or("ok", String::as_str),
        );
        if let Err(e) = checked {
            return fail(r, e);
        }
    }
    r.digest = Some(digest_of(&st.done));
    r.seconds = started.elapsed().as_secs_f64();
    if let Err(e) = finish_locked(session, disk, &journal, &r) {
        return fail(r, e);
    }
    r
}

/// Reads back the blocks whose content the window's sync changed.
fn verify_changed(
    session: &Session,
    disk: &PlannedDisk,
    before: &BTreeMap<u64, Option<String>>,
    st: &journal::State,
    opts: &WindowOptions,
) -> Result<(), String> {
    let norm = |d: Option<&Option<String>>| d.cloned().flatten();
    let mut changed: BTreeMap<u64, Option<String>> = BTreeMap::new();
    for i in before.keys().chain(st.done.keys()) {
        let now = norm(st.done.get(i));
        if norm(before.get(i)) != now {
            changed.insert(*i, now);
        }
    }
    let c = crate::verify::verify_blocks(session, &disk.target(), &changed, &opts.sync.upload)
        .map_err(|e| chain(&e))?;
    if !c.mismatched.is_empty() || !c.footer_ok {
        return Err(format!(
            "verify: disk {} does not hold what the sync wrote: {} of {} blocks differ{}",
            disk.name,
            c.mismatched.len(),
            c.blocks,
            if c.footer_ok { "" } else { ", footer invalid" }
        ));
    }
    Ok(())
}

/// Reads a finished disk back: a data disk against its final snapshot, an
/// OS disk (fixed up, so not the snapshot's bytes) against the digest of
/// what its journal says was written.
fn verify_one(
    session: &Session,
    disk: &PlannedDisk,
    snapshot: &str,
    st: &journal::State,
    opts: &WindowOptions,
) -> Result<(), String> {
    let target = disk.target();
    if disk.role == DiskRole::Os && disk.fixup {
        let expected = digest_of(&st.done);
        let c = crate::verify::verify_digest(session, &target, &expected, &opts.sync.upload)
            .map_err(|e| chain(&e))?;
        if !c.matches || !c.footer_ok {
            return Err(format!(
                "verify: disk {} does not hold what was sent (digest {} instead of {}{})",
                disk.name,
                c.actual,
                expected,
                if c.footer_ok { "" } else { ", footer invalid" }
            ));
        }
        return Ok(());
    }
    let v = crate::verify::verify(
        session,
        &crate::convert::Input::Snapshot(snapshot.to_owned()),
        &target,
        &opts.sync.upload,
    )
    .map_err(|e| chain(&e))?;
    if v.mismatches > 0 {
        return Err(format!(
            "verify: disk {} differs from snapshot {snapshot} in {} ranges",
            disk.name, v.mismatches
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_914_123_456);
        assert_eq!(rfc3339(t), "2026-11-29T01:02:03.456Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
