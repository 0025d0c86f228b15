//! Runs a plan: every selected disk under one Azure session, one bound on
//! EBS requests in flight and one retry budget, several disks at once. Each
//! disk keeps a journal in the state directory, so a run killed at any point
//! goes on where it stopped; a failed disk does not stop the others.
//!
//! A disk is **ours** when its journal's `Started` record (written before
//! the disk is created) matches the plan entry. What a run does with a disk:
//!
//! | journal | disk in Azure | action |
//! |---|---|---|
//! | `Finished` | (not asked) | skipped, reported as finished earlier |
//! | anything | absent | journal restarted, disk created, moved |
//! | ours | in its upload state | resumed: journaled blocks are not read again |
//! | ours | Unattached | the upload ended before the journal said so: finished |
//! | not ours | present | refused: it is somebody else's disk |

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::journal::{self, Journal, Record};
use super::model::{DiskRole, Plan, PlannedDisk};
use super::report::{DiskReport, DiskStatus, RunReport};
use super::state::StateDir;
use crate::azure::arm::DiskState;
use crate::azure::Session;
use crate::convert::Input;
use crate::digest;
use crate::os_disk::{self, Staging};
use crate::pipeline::DoneBlock;
use crate::upload::{self, BoxError, Checkpoints};

/// The fewest Put Page requests in flight a disk of a run may size itself
/// to when many move at once (each holds up to 4 MiB).
const MIN_WRITES_SHARE: usize = 4;

/// How to run a plan.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Azure and EBS settings; `quotas` should be shared
    /// ([`crate::source::ebs::Quotas::shared`]) so every disk draws on one
    /// bound of requests in flight and one retry budget.
    pub upload: upload::Options,
    /// Where OS disks are staged, and what to do with the staged copies.
    pub staging: Staging,
    /// Disks moved at the same time.
    pub disks_at_once: NonZeroUsize,
    /// The plan file's name, for the report.
    pub plan_file: String,
    /// The shards this run covers, for the report (`I/N`).
    pub shards: Vec<String>,
    /// Copy each disk but leave it open for delta syncs (a pre-seed): the
    /// journal records the snapshot it holds, OS disks keep their staged copy.
    pub pre_seed: bool,
}

/// What a run tells its caller as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A disk starts (or resumes).
    Started {
        /// The disk.
        disk: &'a PlannedDisk,
        /// True when an earlier run's work is continued.
        resumed: bool,
    },
    /// A disk enters a step (staging, fixing up, uploading).
    Step {
        /// The disk's name.
        disk: &'a str,
        /// The step, in a few words.
        step: &'a str,
    },
    /// Bytes of a disk read in its current step.
    Bytes {
        /// The disk's name.
        disk: &'a str,
        /// Bytes just done.
        bytes: u64,
    },
    /// A disk ended (finished, failed, interrupted, skipped or excluded).
    Ended(&'a DiskReport),
    /// A phase of a machine in a cutover's window starts.
    Phase {
        /// The machine (or the lone disk).
        machine: &'a str,
        /// The phase, in a few words.
        phase: &'a str,
    },
}

/// Moves the disks `selected` (indexes into `plan.disks`) and writes the
/// run's report into the state directory. The stop switch in the options
/// (`opts.upload.stop`), once set, lets blocks in flight finish, starts
/// nothing new, and leaves every unfinished disk to resume.
pub fn run(
    plan: &Plan,
    selected: &[usize],
    state: &StateDir,
    session: &Session,
    opts: &RunOptions,
    events: &(dyn Fn(Event<'_>) + Sync),
) -> Result<RunReport, super::report::Error> {
    let never = AtomicBool::new(false);
    let stop: &AtomicBool = opts.upload.stop.as_deref().unwrap_or(&never);
    let started = Instant::now();
    let run = Run {
        plan,
        state,
        session,
        opts,
        events,
        stop,
    };
    let disks = each_disk(plan, selected, opts.disks_at_once, stop, events, &|disk| {
        run.move_disk(disk)
    });
    let mut report = RunReport::new(
        opts.plan_file.clone(),
        plan.digest.clone(),
        opts.shards.clone(),
        started.elapsed().as_secs_f64(),
        disks,
    );
    if opts.pre_seed {
        report.run = super::report::RunKind::PreSeed;
    }
    report.write(state.path())?;
    Ok(report)
}

/// Runs `work` on each disk of `selected`, `disks_at_once` at a time;
/// excluded disks and those left when `stop` is set get their report line
/// without work. Returns the lines in plan order.
pub(crate) fn each_disk(
    plan: &Plan,
    selected: &[usize],
    disks_at_once: NonZeroUsize,
    stop: &AtomicBool,
    events: &(dyn Fn(Event<'_>) + Sync),
    work: &(dyn Fn(&PlannedDisk) -> DiskReport + Sync),
) -> Vec<DiskReport> {
    let queue: Mutex<VecDeque<usize>> = Mutex::new(selected.iter().copied().collect());
    let results: Mutex<BTreeMap<usize, DiskReport>> = Mutex::new(BTreeMap::new());
    let workers = disks_at_once.get().min(selected.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(i) = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front()
                else {
                    return;
                };
                let disk = &plan.disks[i];
                let report = if disk.exclude {
                    outcome(disk, DiskStatus::Excluded)
                } else if stop.load(Ordering::SeqCst) {
                    outcome(disk, DiskStatus::NotRun)
                } else {
                    work(disk)
                };
                match &report.error {
                    Some(e) => tracing::info!(disk = %report.name, "{}: {e}", super::report::status_text(report.status)),
                    None => tracing::info!(disk = %report.name, "{}", super::report::status_text(report.status)),
                }
                events(Event::Ended(&report));
                results
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(i, report);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_values()
        .collect()
}

/// A report line for a disk that did not move in this run.
pub(crate) fn outcome(disk: &PlannedDisk, status: DiskStatus) -> DiskReport {
    DiskReport {
        name: disk.name.clone(),
        machine: disk.machine.clone(),
        snapshot: disk.snapshot.clone(),
        role: disk.role,
        target: None,
        status,
        error: None,
        bytes_allocated: 0,
        bytes_sent: 0,
        bytes_zero: 0,
        seconds: 0.0,
        throughput_mib_s: 0.0,
        retries: 0,
        resumed: false,
        fixups: Vec::new(),
        blockers: Vec::new(),
        digest: None,
        synced_from: None,
        bytes_cleared: 0,
    }
}

/// `line` as failed with `error` (interrupted when `stop` is set), after
/// the seconds since `started`.
pub(crate) fn failed(
    line: DiskReport,
    error: String,
    stop: &AtomicBool,
    started: Instant,
) -> DiskReport {
    DiskReport {
        status: if stop.load(Ordering::SeqCst) {
            DiskStatus::Interrupted
        } else {
            DiskStatus::Failed
        },
        error: Some(error),
        seconds: started.elapsed().as_secs_f64(),
        ..line
    }
}

/// One line per fix-up change; a hive's changes one per registry value.
pub(crate) fn fixup_lines(r: &crate::fixup::apply::Report) -> Vec<String> {
    r.changes
        .iter()
        .flat_map(|c| match c.notes.is_empty() {
            true => vec![format!("{}: {}", c.path, c.reason)],
            false => c.notes.clone(),
        })
        .collect()
}

/// What happened to one disk, before it becomes a report line.
enum Moved {
    Now(Box<DiskReport>),
    Earlier(Box<DiskReport>),
}

/// What every disk of a run shares.
#[derive(Clone, Copy)]
struct Run<'a> {
    plan: &'a Plan,
    state: &'a StateDir,
    session: &'a Session,
    opts: &'a RunOptions,
    events: &'a (dyn Fn(Event<'_>) + Sync),
    stop: &'a AtomicBool,
}

/// The error chain of `e` in one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cur = s.source();
    }
    text
}

/// Locks the finished disk's network access unless the plan leaves it
/// open, then records it finished.
pub(crate) fn finish_locked(
    session: &Session,
    disk: &PlannedDisk,
    journal: &Journal,
    r: &DiskReport,
) -> Result<(), String> {
    if !disk.network_open {
        session
            .block_on(session.arm().lock_network(&disk.target().disk))
            .map_err(|e| chain(&e))?;
    }
    finish(journal, r)
}

pub(crate) fn finish(journal: &Journal, r: &DiskReport) -> Result<(), String> {
    let summary = serde_json::to_value(r).map_err(|e| e.to_string())?;
    journal
        .append(&Record::Finished { summary }, true)
        .map_err(|e| chain(&e))
}

pub(crate) fn digest_of(done: &BTreeMap<u64, Option<String>>) -> String {
    let blocks: BTreeMap<u64, String> = done
        .iter()
        .filter_map(|(i, d)| d.clone().map(|d| (*i, d)))
        .collect();
    digest::combine(&blocks)
}

/// The data disks of `disk`'s machine that name a device, probed from
/// their snapshots, so the OS disk's fstab mounts them by UUID.
pub(crate) fn data_disks_for(
    plan: &Plan,
    disk: &PlannedDisk,
    upload_opts: &upload::Options,
) -> Result<Vec<crate::fixup::layout::DataDisk>, String> {
    let mut data_disks = Vec::new();
    if let Some(m) = plan
        .machines
        .iter()
        .find(|m| Some(&m.name) == disk.machine.as_ref())
    {
        for other in m.disks.iter().map(|&i| &plan.disks[i]) {
            let (DiskRole::Data, Some(dev)) = (other.role, other.device.as_deref()) else {
                continue;
            };
            let probed = os_disk::probe_data_disk(
                dev,
                &Input::Snapshot(other.snapshot.clone()),
                &upload_opts.ebs,
                upload_opts.quotas.clone(),
            )
            .map_err(|e| chain(&e))?;
            data_disks.push(probed);
        }
    }
    Ok(data_disks)
}

/// True when the journal's disk is the one `disk` plans: the same entry,
/// and the same snapshot unless the disk was pre-seeded (a pre-seeded
/// disk's snapshot moves forward with each sync).
pub(crate) fn is_ours(disk: &PlannedDisk, st: &journal::State) -> bool {
    st.started.as_ref().is_some_and(|(p, s, _)| match &st.base {
        Some(_) => *p == disk.with_snapshot(s).digest(),
        None => *p == disk.digest() && *s == disk.snapshot,
    })
}

/// Ends the upload of an open disk; one that has ended already is fine.
pub(crate) fn finalize_open(
    session: &Session,
    disk: &crate::azure::arm::DiskRef,
) -> Result<(), String> {
    let now = session
        .block_on(session.arm().get(disk))
        .map_err(|e| chain(&e))?;
    match now {
        Some(d) if d.state == DiskState::Unattached => Ok(()),
        Some(d) if d.state.is_upload() => upload::finalize(session, disk).map_err(|e| chain(&e)),
        Some(d) => Err(format!(
            "disk {} is {}, neither open for upload nor finished; look at it in the portal",
            disk.name, d.state
        )),
        None => Err(format!(
            "disk {} is gone from Azure; start it over (its journal no longer matches)",
            disk.name
        )),
    }
}

/// A disk's journal as the upload's checkpoints.
pub(crate) struct Journaled<'a> {
    pub(crate) journal: &'a Journal,
    /// Every block done, with its digest: earlier runs' and this one's.
    pub(crate) done: Mutex<BTreeMap<u64, Option<String>>>,
    /// The blocks this run made durable.
    pub(crate) now: Mutex<HashSet<u64>>,
}

impl<'a> Journaled<'a> {
    /// Checkpoints into `journal`, the disk holding `done` already.
    pub(crate) fn new(journal: &'a Journal, done: BTreeMap<u64, Option<String>>) -> Journaled<'a> {
        Journaled {
            journal,
            done: Mutex::new(done),
            now: Mutex::new(HashSet::new()),
        }
    }

    /// What the disk holds now.
    pub(crate) fn into_done(self) -> BTreeMap<u64, Option<String>> {
        self.done
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Checkpoints for Journaled<'_> {
    fn done(&self) -> HashSet<u64> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    fn block_done(&self, block: &DoneBlock<'_>) -> Result<(), BoxError> {
        // EBS blocks are 512 KiB and arrive with their checked SHA-256.
        let d = digest::of_block(block);
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(block.index, d.clone());
        self.now
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(block.index);
        self.journal.block_done(block.index, d)?;
        Ok(())
    }

    fn copied(&self) -> Result<(), BoxError> {
        self.journal.flush()?;
        self.journal.append(&Record::Copied, true)?;
        Ok(())
    }
}

impl Run<'_> {
    fn move_disk(&self, disk: &PlannedDisk) -> DiskReport {
        let stop = self.stop;
        let started = Instant::now();
        match self.try_move(disk) {
            Ok(Moved::Now(r)) => *r,
            Ok(Moved::Earlier(r)) => DiskReport {
                status: DiskStatus::FinishedEarlier,
                ..*r
            },
            Err(e) => failed(outcome(disk, DiskStatus::Failed), e, stop, started),
        }
    }

    fn try_move(&self, disk: &PlannedDisk) -> Result<Moved, String> {
        let Run {
            state,
            session,
            opts,
            events,
            ..
        } = *self;
        let path = state.journal(&disk.name);
        let (journal, st) = Journal::open(&path).map_err(|e| chain(&e))?;
        if let Some(summary) = st.finished.clone() {
            if let Ok(r) = serde_json::from_value::<DiskReport>(summary) {
                return Ok(Moved::Earlier(Box::new(r)));
            }
        }
        let target = disk.target();
        let ours = is_ours(disk, &st);
        if let (true, Some((base, _))) = (ours, &st.base) {
            return self.seeded_earlier(disk, &target, &journal, &st, base);
        }
        let started_record = Record::Started {
            plan: disk.digest(),
            snapshot: disk.snapshot.clone(),
            upload_size: 0,
        };
        let existing = session
            .block_on(session.arm().get(&target.disk))
            .map_err(|e| chain(&e))?;
        let resume = match existing {
        None => {
            journal.restart(&started_record).map_err(|e| chain(&e))?;
            false
        }
        Some(d) if ours && d.state.is_upload() => true,
        Some(d) if ours && d.state == DiskState::Unattached => {
            // The upload ended; the run stopped before its journal said so.
            let r = DiskReport {
                target: Some(d.id),
                status: DiskStatus::Finished,
                resumed: true,
                digest: st.copied.then(|| digest_of(&st.done)),
                ..outcome(disk, DiskStatus::Finished)
            };
            finish_locked(session, disk, &journal, &r)?;
            return Ok(Moved::Now(Box::new(r)));
        }
        Some(d) => {
            return Err(format!(
                "disk {} exists already ({}) and no run of this plan made it; delete it, or give the disk another name in the plan",
                disk.name, d.state
            ))
        }
    };
        events(Event::Started {
            disk,
            resumed: resume,
        });
        let upload_opts = upload::Options {
            resume,
            cleanup: false,
            leave_open: opts.pre_seed,
            // The disks moving at once share the run's bound on writes.
            max_writes: (upload::MAX_WRITES / opts.disks_at_once.get()).max(MIN_WRITES_SHARE),
            ebs: crate::source::ebs::Settings {
                region: disk
                    .region
                    .clone()
                    .or_else(|| opts.upload.ebs.region.clone()),
                ..opts.upload.ebs.clone()
            },
            ..opts.upload.clone()
        };
        let r = if disk.fixed_up() {
            self.fixed_up(disk, &target, &upload_opts, &journal)
        } else {
            self.streamed(disk, &target, &upload_opts, &journal, &st)
        };
        let _ = journal.flush();
        let r = r?;
        if r.status == DiskStatus::Finished {
            finish_locked(session, disk, &journal, &r)?;
        }
        Ok(Moved::Now(Box::new(r)))
    }

    /// A disk an earlier pre-seed left open at `base`: a pre-seed has
    /// nothing more to do; a migration finishes it when it holds the
    /// planned snapshot, and otherwise says it needs a sync first.
    fn seeded_earlier(
        &self,
        disk: &PlannedDisk,
        target: &upload::Target,
        journal: &Journal,
        st: &journal::State,
        base: &str,
    ) -> Result<Moved, String> {
        if let Some((from, to)) = &st.syncing {
            return Err(format!(
                "disk {}: a delta sync from {from} to {to} did not finish; sync it again before anything else",
                disk.name
            ));
        }
        if base != disk.snapshot {
            return Err(format!(
                "disk {} holds snapshot {base} (pre-seeded) and the plan now names {}; bring it there with a delta sync (or a cutover) first",
                disk.name, disk.snapshot
            ));
        }
        let line = DiskReport {
            status: DiskStatus::Seeded,
            digest: Some(digest_of(&st.done)),
            ..outcome(disk, DiskStatus::Seeded)
        };
        if self.opts.pre_seed {
            return Ok(Moved::Earlier(Box::new(line)));
        }
        let started = Instant::now();
        (self.events)(Event::Step {
            disk: &disk.name,
            step: "ending the upload",
        });
        finalize_open(self.session, &target.disk)?;
        let r = DiskReport {
            status: DiskStatus::Finished,
            target: Some(target.disk.id()),
            seconds: started.elapsed().as_secs_f64(),
            ..line
        };
        finish_locked(self.session, disk, journal, &r)?;
        Ok(Moved::Now(Box::new(r)))
    }

    fn streamed(
        &self,
        disk: &PlannedDisk,
        target: &upload::Target,
        opts: &upload::Options,
        journal: &Journal,
        st: &journal::State,
    ) -> Result<DiskReport, String> {
        let Run {
            session,
            events,
            stop,
            ..
        } = *self;
        let checkpoints = Journaled::new(
            journal,
            if opts.resume {
                st.done.clone()
            } else {
                BTreeMap::new()
            },
        );
        let name = disk.name.as_str();
        events(Event::Step {
            disk: name,
            step: "streaming",
        });
        let r = upload::stream_with(
            session,
            &disk.snapshot,
            target,
            opts,
            &|p| match p {
                upload::Progress::Step(step, _) => events(Event::Step { disk: name, step }),
                upload::Progress::Bytes(n) => events(Event::Bytes {
                    disk: name,
                    bytes: n,
                }),
            },
            Some(&checkpoints),
            Some(stop),
        )
        .map_err(|e| chain(&e))?;
        let done = checkpoints.into_done();
        if self.opts.pre_seed {
            journal.flush().map_err(|e| chain(&e))?;
            journal
                .append(
                    &Record::Seeded {
                        snapshot: disk.snapshot.clone(),
                        staged: None,
                    },
                    true,
                )
                .map_err(|e| chain(&e))?;
        }
        Ok(DiskReport {
            target: Some(r.disk.clone()),
            status: if self.opts.pre_seed {
                DiskStatus::Seeded
            } else {
                DiskStatus::Finished
            },
            bytes_allocated: r.copy.bytes_read,
            bytes_sent: r.upload.bytes_sent,
            bytes_zero: r.copy.bytes_zero,
            seconds: r.seconds,
            // Over the copy alone, not the waits for Azure's operations.
            throughput_mib_s: r.copy.bytes_read as f64
                / (1 << 20) as f64
                / r.copy_seconds.max(1e-9),
            retries: r.source_retries,
            resumed: r.resumed,
            digest: Some(digest_of(&done)),
            ..outcome(disk, DiskStatus::Finished)
        })
    }

    fn fixed_up(
        &self,
        disk: &PlannedDisk,
        target: &upload::Target,
        upload_opts: &upload::Options,
        journal: &Journal,
    ) -> Result<DiskReport, String> {
        let Run {
            plan,
            session,
            opts,
            events,
            ..
        } = *self;
        let name = disk.name.as_str();
        let data_disks = data_disks_for(plan, disk, upload_opts)?;
        let staging = Staging {
            data_disks,
            // A pre-seeded OS disk keeps the snapshot as staged, before its
            // fix-ups: each sync applies its delta there, then fixes a copy up.
            base_copy: opts.pre_seed,
            ..opts.staging.clone()
        };
        let staged = os_disk::staged_path(&staging.dir, &disk.snapshot, name);
        let mut upload_opts = upload_opts.clone();
        if upload_opts.resume && !staged.is_file() {
            // Ours, half uploaded, and its staged copy is gone: start it over.
            session
                .block_on(session.arm().delete(&target.disk))
                .map_err(|e| chain(&e))?;
            upload_opts.resume = false;
        }
        let step = |s: &str| {
            events(Event::Step {
                disk: name,
                step: s,
            })
        };
        let r = os_disk::stage_and_upload(
            session,
            &disk.snapshot,
            target,
            &upload_opts,
            &staging,
            &|p| match p {
                os_disk::Progress::Step(s, _) => step(s),
                os_disk::Progress::Bytes(n) => events(Event::Bytes {
                    disk: name,
                    bytes: n,
                }),
            },
        )
        .map_err(|e| chain(&e))?;
        if opts.pre_seed {
            // What the disk holds, block by block, for the syncs to come.
            for (i, d) in &r.blocks {
                journal
                    .block_done(*i, Some(d.clone()))
                    .map_err(|e| chain(&e))?;
            }
            journal.flush().map_err(|e| chain(&e))?;
            journal
                .append(
                    &Record::Seeded {
                        snapshot: disk.snapshot.clone(),
                        staged: Some(os_disk::base_path(std::path::Path::new(&r.staged))),
                    },
                    true,
                )
                .map_err(|e| chain(&e))?;
        }
        let up = &r.upload;
        let read = r
            .staging
            .as_ref()
            .map_or(up.copy.bytes_read, |s| s.stats.bytes_read);
        Ok(DiskReport {
            target: Some(up.disk.clone()),
            status: if opts.pre_seed {
                DiskStatus::Seeded
            } else {
                DiskStatus::Finished
            },
            bytes_allocated: read,
            bytes_sent: up.upload.bytes_sent,
            bytes_zero: up.copy.bytes_zero,
            seconds: up.seconds + r.staging.as_ref().map_or(0.0, |s| s.seconds),
            // Over the staging copy and the upload's copy, not Azure's waits.
            throughput_mib_s: read as f64
                / (1 << 20) as f64
                / (up.copy_seconds + r.staging.as_ref().map_or(0.0, |s| s.seconds)).max(1e-9),
            // This disk's snapshot reads (staging); Azure's retries are the run's.
            retries: r
                .staging
                .as_ref()
                .and_then(|s| s.ebs.as_ref())
                .map_or(0, |e| e.retries),
            resumed: up.resumed,
            fixups: fixup_lines(&r.fixup),
            blockers: r
                .fixup
                .inspection
                .of_class(crate::fixup::Class::Blocker)
                .map(|f| format!("{}: {}", f.subject, f.message))
                .collect(),
            digest: Some(r.digest.clone()),
            ..outcome(disk, DiskStatus::Finished)
        })
    }
}
