//! Delta sync: a disk pre-seeded earlier (left open at its base snapshot)
//! is brought to a newer snapshot of the same volume by writing only what
//! changed.
//!
//! - **Data disks.** ListChangedBlocks between the base and the new
//!   snapshot lists what to do: a changed block is fetched and written
//!   whole over the old one (its zero pages cleared, not skipped); a block
//!   with no second token (trimmed) is cleared. Pages are cleared only
//!   where the journal says the disk held data, so blocks that were zero
//!   cost nothing.
//! - **OS disks.** The delta goes into the staged copy of the base as it
//!   was before its fix-ups (kept by the pre-seed), which then equals the
//!   new snapshot; a copy of it is fixed up again, and every block of that
//!   copy whose SHA-256 differs from what the journal says the disk holds
//!   is sent: the union of the delta and of what the fix-ups changed,
//!   never the whole disk.
//!
//!   Interop decision: the delta is not applied to the fixed-up copy
//!   itself. The fix-ups allocated inodes and blocks the source's file
//!   system knows nothing of; the source's later changes (directory,
//!   inode table and bitmap blocks, files written to the same free blocks)
//!   written over them would leave a file system that is neither, which
//!   fsck calls corrupt. Fixing up a copy of the exact new snapshot costs a
//!   local copy of the OS disk's data per sync (shared extents where the
//!   file system has them) and gives the bytes a fresh migration would.
//!
//! Crash safety: `SyncStarted` is journaled before the first write, every
//! block written is journaled once durable, and `Synced` moves the base.
//! A sync killed at any point runs again to the same snapshot and skips
//! the blocks it journaled.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::azure::arm::{Access, DiskRef};
use crate::azure::Session;
use crate::fixup::{apply, Class};
use crate::pipeline::{self, DoneBlock};
use crate::plan::journal::{self, Journal, Record};
use crate::plan::model::{DiskRole, Plan, PlannedDisk};
use crate::plan::report::{DiskReport, DiskStatus};
use crate::plan::run::{self, chain, digest_of, outcome, Event, Journaled};
use crate::plan::state::StateDir;
use crate::sink::in_place::InPlaceSink;
use crate::sink::{self as sinks, BlockSink, ManagedDiskSink};
use crate::source::ebs::EbsSource;
use crate::source::{self, BlockSource, ImageSource, BLOCK_SIZE};
use crate::upload::{self, Checkpoints};

/// How to sync.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Azure and EBS settings (quotas shared across the run's disks).
    pub upload: upload::Options,
    /// Staging settings (OS disks' data disks, blockers).
    pub staging: crate::os_disk::Staging,
    /// Copy the new snapshot whole instead of its delta: for a snapshot of
    /// another volume, which ListChangedBlocks refuses.
    pub full: bool,
}

/// The sink of a sync: writes pass through; clears reach the disk only in
/// blocks where it holds data (elsewhere it reads zeros already).
struct Delta<'a> {
    inner: &'a dyn BlockSink,
    had_data: &'a HashSet<u64>,
}

impl BlockSink for Delta<'_> {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), sinks::Error> {
        self.inner.write_at(offset, data)
    }

    fn write_bytes(&self, offset: u64, data: bytes::Bytes) -> Result<(), sinks::Error> {
        self.inner.write_bytes(offset, data)
    }

    fn clear_at(&self, offset: u64, len: u64) -> Result<(), sinks::Error> {
        let bs = u64::from(BLOCK_SIZE);
        let (first, last) = (offset / bs, (offset + len.max(1) - 1) / bs);
        if (first..=last).any(|i| self.had_data.contains(&i)) {
            self.inner.clear_at(offset, len)
        } else {
            Ok(())
        }
    }
}

/// Some blocks of another source.
struct Subset<'a> {
    inner: &'a dyn BlockSource,
    blocks: Vec<u64>,
}

impl BlockSource for Subset<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, source::Error>> + Send + '_> {
        Box::new(self.blocks.iter().map(|&i| Ok(i)))
    }
    fn read_block<'a>(&'a self, index: u64, buf: &'a mut [u8]) -> Result<&'a [u8], source::Error> {
        self.inner.read_block(index, buf)
    }
}

/// Brings `disk` (pre-seeded, open) to `to`. `events` hears its steps.
#[allow(clippy::too_many_arguments)]
pub fn sync_disk(
    plan: &Plan,
    disk: &PlannedDisk,
    to: &str,
    state: &StateDir,
    session: &Session,
    opts: &SyncOptions,
    stop: &AtomicBool,
    events: &(dyn Fn(Event<'_>) + Sync),
) -> Result<DiskReport, String> {
    let started = Instant::now();
    let (journal, st) = Journal::open(&state.journal(&disk.name)).map_err(|e| chain(&e))?;
    let name = disk.name.as_str();
    if st.finished.is_some() {
        return Err(format!(
            "disk {name} is finished (its upload ended), so it takes no more writes; a delta sync needs a pre-seeded disk"
        ));
    }
    let Some((base, staged)) = st.base.clone() else {
        return Err(format!(
            "disk {name} was not pre-seeded, so it holds no base snapshot to sync from; pre-seed it first"
        ));
    };
    if !run::is_ours(disk, &st) {
        return Err(format!(
            "disk {name} is planned differently from the pre-seed that made it; undo the change to the plan, or start the disk over"
        ));
    }
    if let Some((from, was_to)) = &st.syncing {
        if was_to != to {
            return Err(format!(
                "disk {name}: a sync from {from} to {was_to} did not finish; sync it to {was_to} first, then to {to}"
            ));
        }
    }
    let line = |status,
                sent: u64,
                read: u64,
                zero: u64,
                cleared: u64,
                done: &BTreeMap<u64, Option<String>>| DiskReport {
        snapshot: to.to_owned(),
        target: Some(disk.target().disk.id()),
        status,
        bytes_allocated: read,
        bytes_sent: sent,
        bytes_zero: zero,
        bytes_cleared: cleared,
        seconds: started.elapsed().as_secs_f64(),
        synced_from: Some(base.clone()),
        digest: Some(digest_of(done)),
        ..outcome(disk, status)
    };
    if base == to && st.syncing.is_none() {
        return Ok(line(DiskStatus::Synced, 0, 0, 0, 0, &st.done));
    }
    let target = disk.target();
    let now = session
        .block_on(session.arm().get(&target.disk))
        .map_err(|e| chain(&e))?;
    let upload_size = match now {
        Some(d) if d.state.is_upload() => d.upload_size_bytes.unwrap_or(0),
        Some(d) => {
            return Err(format!(
                "disk {name} is {}, no longer open for writes, so it cannot be synced",
                d.state
            ))
        }
        None => return Err(format!("disk {name} is gone from Azure; pre-seed it again")),
    };
    if st.syncing.is_none() {
        journal
            .append(
                &Record::SyncStarted {
                    from: base.clone(),
                    to: to.to_owned(),
                },
                true,
            )
            .map_err(|e| chain(&e))?;
    }
    events(Event::Started {
        disk,
        resumed: st.syncing.is_some(),
    });
    let ctx = Ctx {
        plan,
        disk,
        base: &base,
        to,
        size: upload_size.saturating_sub(512),
        session,
        opts,
        stop,
        events,
        journal: &journal,
        st: &st,
        target: &target.disk,
    };
    let moved = match (disk.role, staged) {
        (DiskRole::Os, Some(staged)) => ctx.os(&staged),
        _ => ctx.data(),
    };
    let _ = journal.flush();
    let m = moved?;
    journal
        .append(&Record::Synced { to: to.to_owned() }, true)
        .map_err(|e| chain(&e))?;
    Ok(DiskReport {
        fixups: m.fixups,
        blockers: m.blockers,
        resumed: st.syncing.is_some(),
        throughput_mib_s: m.read as f64 / f64::from(1u32 << 20) / m.copy_seconds.max(1e-9),
        ..line(
            DiskStatus::Synced,
            m.sent,
            m.read,
            m.zero,
            m.cleared,
            &m.done,
        )
    })
}

/// What a sync moved.
struct Moved {
    read: u64,
    sent: u64,
    zero: u64,
    cleared: u64,
    copy_seconds: f64,
    done: BTreeMap<u64, Option<String>>,
    fixups: Vec<String>,
    blockers: Vec<String>,
}

/// One disk's sync.
struct Ctx<'a> {
    plan: &'a Plan,
    disk: &'a PlannedDisk,
    base: &'a str,
    to: &'a str,
    /// The disk's virtual size.
    size: u64,
    session: &'a Session,
    opts: &'a SyncOptions,
    stop: &'a AtomicBool,
    events: &'a (dyn Fn(Event<'_>) + Sync),
    journal: &'a Journal,
    st: &'a journal::State,
    target: &'a DiskRef,
}

impl Ctx<'_> {
    fn step(&self, step: &str) {
        (self.events)(Event::Step {
            disk: &self.disk.name,
            step,
        });
    }

    /// The snapshot's blocks to apply: its delta from the base, or all of it.
    fn source(&self, skip: HashSet<u64>) -> Result<EbsSource, String> {
        let ebs = crate::source::ebs::Settings {
            region: self
                .disk
                .region
                .clone()
                .or_else(|| self.opts.upload.ebs.region.clone()),
            ..self.opts.upload.ebs.clone()
        };
        let quotas = self.opts.upload.quotas.clone();
        let src = if self.opts.full {
            EbsSource::open(self.to, &ebs, quotas)
        } else {
            EbsSource::open_changed(self.base, self.to, &ebs, quotas)
        }
        .map_err(|e| chain(&e))?;
        if src.size() != self.size {
            return Err(format!(
                "snapshot {} is of a {} GiB volume and disk {} holds {} GiB; a pre-seeded disk cannot change size, so start it over",
                self.to,
                src.size() >> 30,
                self.disk.name,
                self.size >> 30
            ));
        }
        Ok(src.skipping(skip))
    }

    /// Blocks where the disk holds data now.
    fn had_data(&self) -> HashSet<u64> {
        self.st
            .done
            .iter()
            .filter(|(_, d)| d.is_some())
            .map(|(i, _)| *i)
            .collect()
    }

    /// Writes `source`'s blocks over the disk (through a fresh write SAS),
    /// journaling each; returns (copy stats, upload stats, the disk's
    /// blocks now, the blocks this pass wrote, seconds).
    fn write(
        &self,
        source: &dyn BlockSource,
        had_data: &HashSet<u64>,
    ) -> Result<
        (
            pipeline::Stats,
            crate::sink::managed_disk::UploadStats,
            Journaled<'_>,
            f64,
        ),
        String,
    > {
        self.step("granting write access");
        let sas = self
            .session
            .block_on(self.session.arm().begin_access(self.target, Access::Write))
            .map_err(|e| chain(&e))?;
        let sink = ManagedDiskSink::new(self.session, self.target.clone(), sas, Vec::new());
        let delta = Delta {
            inner: &sink,
            had_data,
        };
        let checkpoints = Journaled::new(self.journal, self.st.done.clone());
        let hook = |b: &DoneBlock<'_>| checkpoints.block_done(b);
        let copy_opts = pipeline::Options {
            overwrite: true,
            ..upload::copy_options(&self.opts.upload)
        };
        self.step("writing the changed blocks");
        let name = self.disk.name.as_str();
        let bytes = |n| {
            (self.events)(Event::Bytes {
                disk: name,
                bytes: n,
            })
        };
        let started = Instant::now();
        let stats = pipeline::copy_with(
            source,
            &delta,
            &copy_opts,
            pipeline::Hooks {
                progress: &bytes,
                block_done: Some(&hook),
                stop: Some(self.stop),
            },
        )
        .map_err(|e| chain(&e))?;
        let seconds = started.elapsed().as_secs_f64();
        self.journal.flush().map_err(|e| chain(&e))?;
        Ok((stats, sink.stats(), checkpoints, seconds))
    }

    fn data(&self) -> Result<Moved, String> {
        let skip: HashSet<u64> = self.st.synced.iter().copied().collect();
        let source = self.source(skip)?;
        self.step(if self.opts.full {
            "copying the snapshot whole"
        } else {
            "listing and writing the changed blocks"
        });
        let had = self.had_data();
        let (stats, up, checkpoints, seconds) = self.write(&source, &had)?;
        let mut cleared = up.bytes_cleared;
        let mut done = {
            let now: HashSet<u64> = checkpoints
                .now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let mut done = checkpoints.into_done();
            if self.opts.full {
                // A whole copy lists only the new snapshot's blocks: what
                // else holds data now is no longer on the volume.
                cleared += self.clear_rest(&mut done, &now)?;
            }
            done
        };
        done.retain(|_, d| d.is_some());
        Ok(Moved {
            read: stats.bytes_read,
            sent: up.bytes_sent,
            zero: stats.bytes_zero,
            cleared,
            copy_seconds: seconds,
            done,
            fixups: Vec::new(),
            blockers: Vec::new(),
        })
    }

    /// Clears the blocks holding data that neither this sync nor an
    /// interrupted run of it wrote; returns the bytes cleared.
    fn clear_rest(
        &self,
        done: &mut BTreeMap<u64, Option<String>>,
        now: &HashSet<u64>,
    ) -> Result<u64, String> {
        let stale: Vec<u64> = done
            .iter()
            .filter(|(i, d)| d.is_some() && !now.contains(i) && !self.st.synced.contains(i))
            .map(|(i, _)| *i)
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let sas = self
            .session
            .block_on(self.session.arm().begin_access(self.target, Access::Write))
            .map_err(|e| chain(&e))?;
        let sink = ManagedDiskSink::new(self.session, self.target.clone(), sas, Vec::new());
        let bs = u64::from(BLOCK_SIZE);
        for i in &stale {
            sink.clear_at(i * bs, bs).map_err(|e| chain(&e))?;
            self.journal.block_done(*i, None).map_err(|e| chain(&e))?;
            done.insert(*i, None);
        }
        self.journal.flush().map_err(|e| chain(&e))?;
        Ok(sink.stats().bytes_cleared)
    }

    fn os(&self, base: &Path) -> Result<Moved, String> {
        if !base.is_file() {
            return Err(format!(
                "the staged copy of OS disk {} ({}) is gone, and a sync applies its delta there; start the disk over",
                self.disk.name,
                base.display()
            ));
        }
        // 1. The delta into the copy of the base (redone whole after a
        //    crash: writing a block's new bytes again changes nothing).
        self.step("applying the delta to the staged copy");
        let source = self.source(HashSet::new())?;
        let file = InPlaceSink::open(base, self.size).map_err(|e| chain(&e))?;
        if self.opts.full {
            file.clear_at(0, self.size).map_err(|e| chain(&e))?;
        }
        let name = self.disk.name.as_str();
        let bytes = |n| {
            (self.events)(Event::Bytes {
                disk: name,
                bytes: n,
            })
        };
        let applied = pipeline::copy_with(
            &source,
            &file,
            &pipeline::Options {
                overwrite: true,
                ..pipeline::Options::default()
            },
            pipeline::Hooks {
                progress: &bytes,
                block_done: None,
                stop: Some(self.stop),
            },
        )
        .map_err(|e| chain(&e))?;
        file.sync().map_err(|e| chain(&e))?;
        drop(source);
        // 2. A copy of it, fixed up as a fresh migration would.
        self.step("fixing a copy of the guest up");
        let fixed = base.with_extension("fixing.vhd");
        let fixed_guard = Removed(&fixed);
        crate::os_disk::copy_sparse(base, &fixed)
            .map_err(|e| format!("cannot copy {} for its fix-ups: {e}", base.display()))?;
        let data_disks = run::data_disks_for(self.plan, self.disk, &self.opts.upload)?;
        let fix = apply::fixup(
            &fixed,
            &apply::FixOptions {
                dry_run: false,
                data_disks,
            },
        )
        .map_err(|e| chain(&e))?;
        let blockers: Vec<String> = fix
            .inspection
            .of_class(Class::Blocker)
            .map(|f| format!("{}: {}", f.subject, f.message))
            .collect();
        if let (Some(first), false) = (blockers.first(), self.opts.staging.allow_blockers) {
            return Err(format!(
                "after the delta, the guest of {name} will not boot on Azure: {first}; fix the source and sync again"
            ));
        }
        let staged: &Path = &fixed;
        // 3. What differs from what the disk holds: the delta and the fix-ups' changes.
        self.step("finding the blocks that differ");
        let image = ImageSource::open(staged, &diskformats::OpenOptions::default())
            .map_err(|e| chain(&e))?
            .with_block_size(BLOCK_SIZE);
        let now = crate::digest::blocks_of_source(&image, pipeline::default_concurrency())
            .map_err(|e| chain(&e))?;
        let mut differ: BTreeSet<u64> = now
            .iter()
            .filter(|(i, d)| self.st.done.get(i).and_then(|o| o.as_ref()) != Some(*d))
            .map(|(i, _)| *i)
            .collect();
        differ.extend(
            self.st
                .done
                .iter()
                .filter(|(i, d)| d.is_some() && !now.contains_key(i))
                .map(|(i, _)| *i),
        );
        // 4. Those blocks, written whole over the disk.
        let subset = Subset {
            inner: &image,
            blocks: differ.into_iter().collect(),
        };
        let had = self.had_data();
        let (stats, up, checkpoints, seconds) = self.write(&subset, &had)?;
        let mut done = checkpoints.into_done();
        done.retain(|_, d| d.is_some());
        drop(fixed_guard);
        Ok(Moved {
            read: applied.bytes_read,
            sent: up.bytes_sent,
            zero: stats.bytes_zero,
            cleared: up.bytes_cleared,
            copy_seconds: seconds,
            done,
            fixups: run::fixup_lines(&fix),
            blockers,
        })
    }
}

/// Removes a scratch file when dropped, however the sync ends.
struct Removed<'a>(&'a Path);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}
