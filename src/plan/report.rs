//! What a plan's run did, per disk, per machine and in total, written at the
//! end of every run as `report.json` (for scripts) and `report.md` (for
//! people), and merged across shards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::DiskRole;
use super::state::write_atomically;

/// The report's file names in a state directory.
pub const REPORT_JSON: &str = "report.json";
/// The human-readable report beside it.
pub const REPORT_MD: &str = "report.md";

/// How a disk ended in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskStatus {
    /// Moved in this run.
    Finished,
    /// Moved by an earlier run of the same plan; skipped.
    FinishedEarlier,
    /// Failed; the error says why and what to do.
    Failed,
    /// Stopped by an interrupt; the next run resumes it.
    Interrupted,
    /// Excluded in the plan.
    Excluded,
    /// Not started: the run stopped first.
    NotRun,
    /// Copied whole and left open for delta syncs (a pre-seed).
    Seeded,
    /// Brought to a newer snapshot by a delta sync; still open.
    Synced,
}

impl DiskStatus {
    /// True when the disk is where the run meant it to be: finished, or
    /// open at its snapshot (a pre-seed or a sync).
    pub fn is_done(self) -> bool {
        matches!(
            self,
            DiskStatus::Finished
                | DiskStatus::FinishedEarlier
                | DiskStatus::Seeded
                | DiskStatus::Synced
        )
    }
}

/// What kind of run a report is of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `migrate`: disks copied and finished.
    #[default]
    Migrate,
    /// `migrate --pre-seed`: disks copied and left open.
    PreSeed,
    /// `sync`: open disks brought to newer snapshots.
    Sync,
    /// `cutover`: the window, from the final snapshots to finished disks.
    Cutover,
}

/// One phase of one machine in a cutover's window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// The machine (or the lone disk's name).
    pub machine: String,
    /// The phase: stop, snapshot, sync, finalize, verify.
    pub phase: String,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// Seconds from the window's start to the phase's start.
    pub offset_seconds: f64,
    /// How long it took, seconds.
    pub seconds: f64,
    /// ok, or why it failed.
    pub outcome: String,
}

/// One disk's line in the report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DiskReport {
    /// The managed disk's name.
    pub name: String,
    /// Its machine.
    pub machine: Option<String>,
    /// The EBS snapshot.
    pub snapshot: String,
    /// OS or data.
    pub role: DiskRole,
    /// The managed disk's resource id (when it was made).
    pub target: Option<String>,
    /// How it ended.
    pub status: DiskStatus,
    /// Why it failed, and what to do.
    pub error: Option<String>,
    /// Bytes of the blocks the snapshot holds that this run read.
    pub bytes_allocated: u64,
    /// Bytes sent to Azure.
    pub bytes_sent: u64,
    /// Bytes read and not sent because they were zero.
    pub bytes_zero: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Bytes read per second of copying (Azure's operations not counted), MiB/s.
    pub throughput_mib_s: f64,
    /// Retries of the run while this disk moved (the budget is shared).
    pub retries: u64,
    /// True when an earlier run's work was continued.
    pub resumed: bool,
    /// Fix-ups made (guest path: reason).
    pub fixups: Vec<String>,
    /// Blockers found (OS disks).
    pub blockers: Vec<String>,
    /// The content digest (see `crate::digest`), which `verify --digest` checks later.
    pub digest: Option<String>,
    /// For a sync: the snapshot the disk held before (its base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_from: Option<String>,
    /// Bytes cleared at the target (blocks that became zero), not sent.
    #[serde(default)]
    pub bytes_cleared: u64,
}

/// One machine's line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MachineReport {
    /// The machine.
    pub name: String,
    /// Its disks' names.
    pub disks: Vec<String>,
    /// True when every disk that is not excluded is done.
    pub complete: bool,
    /// Its Azure VM's resource id, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
}

/// Sums over the disks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Disks in the report.
    pub disks: usize,
    /// Disks done (this run or an earlier one).
    pub done: usize,
    /// Disks that failed.
    pub failed: usize,
    /// Disks excluded.
    pub excluded: usize,
    /// Disks interrupted or not run.
    pub left: usize,
    /// Bytes read.
    pub bytes_allocated: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Zero bytes skipped.
    pub bytes_zero: u64,
}

/// Version of the report's JSON (as the command line's `schema_version`).
pub const REPORT_SCHEMA_VERSION: u32 = 1;

fn schema_version() -> u32 {
    REPORT_SCHEMA_VERSION
}

/// A run's report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// Version of this format.
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// The plan file.
    pub plan: String,
    /// Its digest.
    pub plan_digest: String,
    /// The shards this report covers (`I/N`; none: the whole plan).
    pub shards: Vec<String>,
    /// Wall time of the run, seconds (merged: the longest shard).
    pub seconds: f64,
    /// Per disk, in plan order.
    pub disks: Vec<DiskReport>,
    /// Per machine.
    pub machines: Vec<MachineReport>,
    /// Sums.
    pub totals: Totals,
    /// True when every disk that is not excluded is done.
    pub complete: bool,
    /// The kind of run.
    #[serde(default)]
    pub run: RunKind,
    /// A cutover's window, phase by phase per machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Phase>,
    /// How to undo what the run changed on the AWS side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// Why a report cannot be read, written or merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The file is not a report.
    #[error("{path} is not an ebs2azure report: {detail}")]
    NotAReport {
        /// The file.
        path: String,
        /// What the reader said.
        detail: String,
    },
    /// The reports come from different plans.
    #[error("{path} reports on plan {theirs}, not {ours} like the first report; merge the shards of one plan")]
    OtherPlan {
        /// The report.
        path: String,
        /// Its plan digest.
        theirs: String,
        /// The first report's.
        ours: String,
    },
    /// A disk is in two reports as done.
    #[error("disk {disk} is in two of the reports; each disk belongs to one shard")]
    Twice {
        /// The disk.
        disk: String,
    },
}

impl RunReport {
    /// A report of `disks` (plan order) grouped by machine, with totals.
    pub fn new(
        plan: String,
        plan_digest: String,
        shards: Vec<String>,
        seconds: f64,
        disks: Vec<DiskReport>,
    ) -> RunReport {
        let mut machines: BTreeMap<String, Vec<&DiskReport>> = BTreeMap::new();
        let mut order = Vec::new();
        for d in &disks {
            if let Some(m) = &d.machine {
                if !machines.contains_key(m) {
                    order.push(m.clone());
                }
                machines.entry(m.clone()).or_default().push(d);
            }
        }
        let machines = order
            .into_iter()
            .map(|m| {
                let ds = &machines[&m];
                MachineReport {
                    disks: ds.iter().map(|d| d.name.clone()).collect(),
                    complete: ds
                        .iter()
                        .all(|d| d.status.is_done() || d.status == DiskStatus::Excluded),
                    name: m,
                    vm: None,
                }
            })
            .collect();
        let mut t = Totals {
            disks: disks.len(),
            ..Totals::default()
        };
        for d in &disks {
            match d.status {
                DiskStatus::Finished
                | DiskStatus::FinishedEarlier
                | DiskStatus::Seeded
                | DiskStatus::Synced => t.done += 1,
                DiskStatus::Failed => t.failed += 1,
                DiskStatus::Excluded => t.excluded += 1,
                DiskStatus::Interrupted | DiskStatus::NotRun => t.left += 1,
            }
            t.bytes_allocated += d.bytes_allocated;
            t.bytes_sent += d.bytes_sent;
            t.bytes_zero += d.bytes_zero;
        }
        let complete = t.failed == 0 && t.left == 0;
        RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            plan,
            plan_digest,
            shards,
            seconds,
            disks,
            machines,
            totals: t,
            complete,
            run: RunKind::Migrate,
            timeline: Vec::new(),
            rollback: None,
        }
    }

    /// Writes `report.json` and `report.md` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        for (name, bytes) in [
            (REPORT_JSON, json),
            (REPORT_MD, self.markdown().into_bytes()),
        ] {
            let path = dir.join(name);
            write_atomically(&path, &bytes).map_err(|source| Error::Io {
                action: "write",
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Reads the report in `dir` (a state directory) or at `path` (a report.json).
    pub fn read(path: &Path) -> Result<RunReport, Error> {
        let file: PathBuf = if path.is_dir() {
            path.join(REPORT_JSON)
        } else {
            path.to_owned()
        };
        let shown = file.display().to_string();
        let bytes = std::fs::read(&file).map_err(|source| Error::Io {
            action: "read",
            path: shown.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::NotAReport {
            path: shown,
            detail: e.to_string(),
        })
    }

    /// One report of several shards' reports of one plan.
    pub fn merge(parts: &[(String, RunReport)]) -> Result<RunReport, Error> {
        let Some((_, first)) = parts.first() else {
            return Err(Error::NotAReport {
                path: "(none)".into(),
                detail: "no reports were given".into(),
            });
        };
        let mut disks: BTreeMap<String, DiskReport> = BTreeMap::new();
        let mut shards = Vec::new();
        let mut seconds: f64 = 0.0;
        for (path, r) in parts {
            if r.plan_digest != first.plan_digest {
                return Err(Error::OtherPlan {
                    path: path.clone(),
                    theirs: r.plan_digest.clone(),
                    ours: first.plan_digest.clone(),
                });
            }
            shards.extend(r.shards.iter().cloned());
            seconds = seconds.max(r.seconds);
            for d in &r.disks {
                if disks.insert(d.name.clone(), d.clone()).is_some() {
                    return Err(Error::Twice {
                        disk: d.name.clone(),
                    });
                }
            }
        }
        // Plan order: machines' disks first as the shards list them.
        let mut ordered: Vec<DiskReport> = Vec::new();
        for (_, r) in parts {
            for d in &r.disks {
                if let Some(x) = disks.remove(&d.name) {
                    ordered.push(x);
                }
            }
        }
        shards.sort();
        Ok(RunReport::new(
            first.plan.clone(),
            first.plan_digest.clone(),
            shards,
            seconds,
            ordered,
        ))
    }

    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(s, "# ebs2azure run report\n");
        let _ = writeln!(
            s,
            "- Plan: `{}` (digest `{}`)",
            self.plan,
            short(&self.plan_digest)
        );
        if !self.shards.is_empty() {
            let _ = writeln!(s, "- Shards: {}", self.shards.join(", "));
        }
        let _ = writeln!(
            s,
            "- Result: {} of {} disks done, {} failed, {} left, {} excluded — {}",
            t.done,
            t.disks,
            t.failed,
            t.left,
            t.excluded,
            if self.complete {
                "complete"
            } else {
                "NOT complete"
            }
        );
        let _ = writeln!(
            s,
            "- Data: {} read, {} sent, {} skipped as zero, in {:.1} s\n",
            mib(t.bytes_allocated),
            mib(t.bytes_sent),
            mib(t.bytes_zero),
            self.seconds
        );
        let _ = writeln!(s, "| disk | machine | role | snapshot | status | read | sent | zero | s | MiB/s | retries | fix-ups | digest |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for d in &self.disks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
                d.name,
                d.machine.as_deref().unwrap_or("-"),
                d.role,
                d.snapshot,
                status_text(d.status),
                mib(d.bytes_allocated),
                mib(d.bytes_sent),
                mib(d.bytes_zero),
                d.seconds,
                d.throughput_mib_s,
                d.retries,
                d.fixups.len(),
                d.digest.as_deref().map(short).unwrap_or("-"),
            );
        }
        let failed: Vec<&DiskReport> = self.disks.iter().filter(|d| d.error.is_some()).collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\n## Problems\n");
            for d in failed {
                let _ = writeln!(s, "- **{}**: {}", d.name, d.error.as_deref().unwrap_or(""));
            }
        }
        let blocked: Vec<&DiskReport> = self
            .disks
            .iter()
            .filter(|d| !d.blockers.is_empty())
            .collect();
        for d in blocked {
            let _ = writeln!(s, "\n## Blockers of {}\n", d.name);
            for b in &d.blockers {
                let _ = writeln!(s, "- {b}");
            }
        }
        if !self.timeline.is_empty() {
            let _ = writeln!(s, "\n## Window timeline\n");
            let _ = writeln!(
                s,
                "| machine | phase | started (UTC) | at +s | took s | outcome |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for p in &self.timeline {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {:.1} | {} |",
                    p.machine, p.phase, p.started, p.offset_seconds, p.seconds, p.outcome
                );
            }
        }
        if let Some(r) = &self.rollback {
            let _ = writeln!(s, "\n## Rollback\n\n{r}");
        }
        if !self.machines.is_empty() {
            let _ = writeln!(s, "\n## Machines\n");
            for m in &self.machines {
                let _ = writeln!(
                    s,
                    "- {}: {} ({}){}",
                    m.name,
                    if m.complete {
                        "complete"
                    } else {
                        "not complete"
                    },
                    m.disks.join(", "),
                    m.vm.as_deref()
                        .map(|v| format!("; VM {v}"))
                        .unwrap_or_default()
                );
            }
        }
        s
    }
}

/// The words for a status.
pub fn status_text(s: DiskStatus) -> &'static str {
    match s {
        DiskStatus::Finished => "finished",
        DiskStatus::FinishedEarlier => "finished earlier",
        DiskStatus::Failed => "FAILED",
        DiskStatus::Interrupted => "interrupted",
        DiskStatus::Excluded => "excluded",
        DiskStatus::NotRun => "not run",
        DiskStatus::Seeded => "pre-seeded (open)",
        DiskStatus::Synced => "synced (open)",
    }
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, machine: Option<&str>, status: DiskStatus) -> DiskReport {
        DiskReport {
            name: name.into(),
            machine: machine.map(Into::into),
            snapshot: "snap-00000001".into(),
            role: DiskRole::Data,
            target: None,
            status,
            error: (status == DiskStatus::Failed).then(|| "snapshot was not found".into()),
            bytes_allocated: 1 << 20,
            bytes_sent: 1 << 19,
            bytes_zero: 1 << 19,
            seconds: 1.0,
            throughput_mib_s: 1.0,
            retries: 0,
            resumed: false,
            fixups: vec![],
            blockers: vec![],
            digest: None,
            synced_from: None,
            bytes_cleared: 0,
        }
    }

    #[test]
    fn totals_machines_and_merge() {
        let a = RunReport::new(
            "p".into(),
            "d".into(),
            vec!["0/2".into()],
            3.0,
            vec![
                disk("web01-os", Some("web01"), DiskStatus::Finished),
                disk("web01-data0", Some("web01"), DiskStatus::Failed),
            ],
        );
        assert!(!a.complete);
        assert_eq!(a.totals.failed, 1);
        assert!(!a.machines[0].complete);
        assert!(a.markdown().contains("snapshot was not found"));
        let b = RunReport::new(
            "p".into(),
            "d".into(),
            vec!["1/2".into()],
            5.0,
            vec![
                disk("db01-os", Some("db01"), DiskStatus::FinishedEarlier),
                disk("archive", None, DiskStatus::Excluded),
            ],
        );
        let m = RunReport::merge(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        assert_eq!(m.totals.disks, 4);
        assert_eq!(m.totals.done, 2);
        assert_eq!(m.seconds, 5.0);
        assert_eq!(m.shards, ["0/2", "1/2"]);
        assert!(matches!(
            RunReport::merge(&[("a".into(), a.clone()), ("a2".into(), a.clone())]),
            Err(Error::Twice { .. })
        ));
        let mut other = b;
        other.plan_digest = "x".into();
        assert!(matches!(
            RunReport::merge(&[("a".into(), a), ("b".into(), other)]),
            Err(Error::OtherPlan { .. })
        ));
    }
}
