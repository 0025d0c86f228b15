//! The state directory of a plan's runs: which plan they ran (its digest
//! and each disk's), a journal per disk, and the last report.
//!
//! ```text
//! STATE/plan.json                the plan's digest, and each disk's
//! STATE/journals/DISK.journal    what is durably done for DISK (locked while a run moves it)
//! STATE/lock, report.json, report.md            a whole-plan run's lock and report
//! STATE/shard-I-of-N/lock, report.json, ...     shard I's
//! ```
//!
//! Journals are by disk, whatever the shard: shards move disjoint disks, and
//! a plan run again with another number of shards still finds every disk's
//! journal. Each shard has its own lock and report, so shards sharing one
//! volume never write the same file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::Plan;

/// The file holding the digests of the plan the state belongs to.
const PLAN_FILE: &str = "plan.json";

/// What the state remembers of its plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// The resolved plan's digest.
    pub digest: String,
    /// Each disk's digest, by name.
    pub disks: BTreeMap<String, String>,
    /// Each disk's digest with its snapshot left out, by name: a sync may
    /// move a pre-seeded disk's snapshot and change nothing else.
    #[serde(default)]
    pub layouts: BTreeMap<String, String>,
}

impl PlanRecord {
    /// The record of `plan`.
    pub fn of(plan: &Plan) -> PlanRecord {
        PlanRecord {
            digest: plan.digest.clone(),
            disks: plan
                .disks
                .iter()
                .map(|d| (d.name.clone(), d.digest()))
                .collect(),
            layouts: plan
                .disks
                .iter()
                .map(|d| (d.name.clone(), d.with_snapshot("").digest()))
                .collect(),
        }
    }

    /// The disks of `self` (the earlier plan) that `now` plans differently.
    pub fn changed(&self, now: &PlanRecord) -> Vec<String> {
        now.disks
            .iter()
            .filter(|(name, digest)| self.disks.get(*name).is_some_and(|d| d != *digest))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The disks `now` plans differently in anything but their snapshot.
    pub fn changed_layout(&self, now: &PlanRecord) -> Vec<String> {
        if self.layouts.is_empty() {
            return self.changed(now);
        }
        now.layouts
            .iter()
            .filter(|(name, digest)| self.layouts.get(*name).is_some_and(|d| d != *digest))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of it cannot be read or written.
    #[error("state directory {dir}: cannot {action}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What was done.
        action: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Another run holds the directory.
    #[error("another run is using state directory {dir} (it holds {dir}/lock); wait for it to end or stop it, then run again")]
    Busy {
        /// The directory.
        dir: String,
    },
    /// The plan changed since the state was written.
    #[error("the plan changed since the last run in {dir}: {} planned differently now ({}); undo the change, or accept it to start those disks over", if disks.len() == 1 { "1 disk is".to_owned() } else { format!("{} disks are", disks.len()) }, disks.join(", "))]
    PlanChanged {
        /// The directory.
        dir: String,
        /// The disks whose entries changed.
        disks: Vec<String>,
    },
}

/// A state directory, opened for a run of one plan (or one shard of it).
/// The run's directory is held (an exclusive `flock` on its `lock`) while
/// this value lives, so one shard never runs twice at once.
#[derive(Debug)]
pub struct StateDir {
    base: PathBuf,
    dir: PathBuf,
    _lock: fs::File,
}

impl StateDir {
    /// Opens (creating) `base` for `plan`, and the run's own directory in
    /// it: `base` itself, or `shard-I-of-N` (`shard_dir`). When the plan
    /// changed since the state was written, the run stops unless
    /// `accept_changes`, which starts the changed disks among `mine` (the
    /// disks this run moves) over: their journals are dropped.
    pub fn open(
        base: &Path,
        shard_dir: Option<&str>,
        plan: &Plan,
        mine: &[&str],
        accept_changes: bool,
    ) -> Result<StateDir, Error> {
        Self::open_with(base, shard_dir, plan, mine, accept_changes, false)
    }

    /// [`StateDir::open`] for a sync or a cutover: a disk whose snapshot
    /// alone changed is not a changed plan (its new snapshot is where the
    /// sync takes it).
    pub fn open_for_sync(base: &Path, plan: &Plan) -> Result<StateDir, Error> {
        Self::open_with(base, None, plan, &[], false, true)
    }

    fn open_with(
        base: &Path,
        shard_dir: Option<&str>,
        plan: &Plan,
        mine: &[&str],
        accept_changes: bool,
        snapshots_move: bool,
    ) -> Result<StateDir, Error> {
        let dir = match shard_dir {
            Some(s) => base.join(s),
            None => base.to_owned(),
        };
        let shown = base.display().to_string();
        let io = |action: &str, source| Error::Io {
            dir: shown.clone(),
            action: action.to_owned(),
            source,
        };
        fs::create_dir_all(base.join("journals")).map_err(|e| io("create it", e))?;
        fs::create_dir_all(&dir).map_err(|e| io("create the shard's directory", e))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| io("open its lock", e))?;
        // SAFETY: flock on a file descriptor this function owns; released
        // when the file is closed (the process's end included, SIGKILL too).
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(Error::Busy {
                    dir: dir.display().to_string(),
                });
            }
            return Err(io("lock it", e));
        }
        let state = StateDir {
            base: base.to_owned(),
            dir,
            _lock: lock,
        };
        let now = PlanRecord::of(plan);
        let path = base.join(PLAN_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                // An unreadable record is treated as a changed plan for every disk.
                let before: PlanRecord = serde_json::from_slice(&bytes).unwrap_or_default();
                let mut changed = if snapshots_move {
                    before.changed_layout(&now)
                } else {
                    before.changed(&now)
                };
                if before.digest.is_empty() {
                    changed = now.disks.keys().cloned().collect();
                }
                if !changed.is_empty() {
                    if !accept_changes {
                        return Err(Error::PlanChanged {
                            dir: shown,
                            disks: changed,
                        });
                    }
                    for name in changed.iter().filter(|n| mine.contains(&n.as_str())) {
                        match fs::remove_file(state.journal(name)) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io("drop a changed disk's journal", e)),
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read plan.json", e)),
        }
        let json = serde_json::to_vec_pretty(&now).unwrap_or_default();
        write_atomically(&path, &json).map_err(|e| io("write plan.json", e))?;
        Ok(state)
    }

    /// The run's directory (its report and lock).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The journal of disk `name`.
    pub fn journal(&self, name: &str) -> PathBuf {
        self.base.join("journals").join(format!("{name}.journal"))
    }
}

/// Writes `bytes` to `path` so that it holds either the old or the new
/// contents after a crash: a file beside it, synced, then renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Named for this process: shards sharing a volume write the same files.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.partial", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::schema::Common;

    fn plan(sku: &str) -> Plan {
        let text = format!("[defaults]\nsubscription = \"00000000-0000-0000-0000-000000000001\"\nresource_group = \"rg\"\nlocation = \"westeurope\"\n[[disk]]\nname = \"a\"\nsnapshot = \"snap-00000001\"\n[[disk]]\nname = \"b\"\nsnapshot = \"snap-00000002\"\nsku = \"{sku}\"\n");
        Plan::parse(&text, "p", &Common::default()).unwrap()
    }

    #[test]
    fn a_changed_disk_is_named_and_only_its_journal_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path(), None, &plan("Premium_LRS"), &["a", "b"], false).unwrap();
        fs::write(s.journal("a"), b"x").unwrap();
        fs::write(s.journal("b"), b"x").unwrap();
        drop(s);
        // Same plan: fine.
        StateDir::open(dir.path(), None, &plan("Premium_LRS"), &["a", "b"], false).unwrap();
        let e = StateDir::open(dir.path(), None, &plan("Standard_LRS"), &["a", "b"], false)
            .unwrap_err();
        match &e {
            Error::PlanChanged { disks, .. } => assert_eq!(disks, &["b"]),
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .contains("1 disk is planned differently now (b)"),
            "{e}"
        );
        let s = StateDir::open(dir.path(), None, &plan("Standard_LRS"), &["a", "b"], true).unwrap();
        assert!(s.journal("a").exists());
        assert!(!s.journal("b").exists());
        drop(s);
        let held =
            StateDir::open(dir.path(), None, &plan("Standard_LRS"), &["a", "b"], false).unwrap();
        // A second run on the same directory is refused while the first holds it.
        let e = StateDir::open(dir.path(), None, &plan("Standard_LRS"), &["a", "b"], false)
            .unwrap_err();
        assert!(matches!(e, Error::Busy { .. }), "{e}");
        drop(held);
        StateDir::open(dir.path(), None, &plan("Standard_LRS"), &["a", "b"], false).unwrap();
    }
}
