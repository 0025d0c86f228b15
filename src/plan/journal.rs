//! A disk's journal: what a run has durably done for one disk, so that a
//! run killed at any point (SIGKILL included) goes on where it stopped.
//!
//! The file is a sequence of records, each framed as
//! `[length: u32 LE][crc32 of the payload: u32 LE][payload: JSON]`. A record
//! is appended only after what it says is durable at the target (a block's
//! Put Page requests answered, the upload ended), so a record lost in a
//! crash only costs redoing its work. A torn or corrupt tail, the mark of a
//! crash during an append, is ignored and cut off before the next append.
//! Records are not fsynced one by one: a lost record is safe, a wrong one is
//! impossible.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest record read back (a record of a few thousand blocks is ~100 KiB).
const MAX_RECORD: u32 = 4 << 20;
/// Largest journal read back: a 64 TiB disk's journal (128 Mi blocks at
/// ~80 bytes) is far below it; anything past it is treated as a torn tail.
const MAX_JOURNAL: u64 = 1 << 30;
/// Blocks gathered before a `Done` record is appended.
const BATCH_BLOCKS: usize = 256;
/// Longest a finished block waits before its record is appended.
const BATCH_AGE: Duration = Duration::from_secs(2);

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The run is about to create (or resume) this disk: written before the
    /// disk exists, so a disk found later in its upload state is ours.
    Started {
        /// Digest of the disk's plan entry.
        plan: String,
        /// The snapshot.
        snapshot: String,
        /// The disk's uploadSizeBytes.
        upload_size: u64,
    },
    /// Blocks whose data is durable at the target, with the SHA-256 of each
    /// block that holds data (hex; absent for a block of zeros).
    Done {
        /// Block index and digest.
        blocks: Vec<(u64, Option<String>)>,
    },
    /// Every block is done; the footer and the end of the upload follow.
    Copied,
    /// A pre-seed copy is whole and the disk is left open for writes: the
    /// disk holds `snapshot` (its base) and the blocks recorded since
    /// `Started` describe its content.
    Seeded {
        /// The snapshot the disk now holds.
        snapshot: String,
        /// An OS disk's staged copy of `snapshot` before its fix-ups, kept
        /// for the syncs to come.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        staged: Option<PathBuf>,
    },
    /// A delta sync from the base to `to` starts: the blocks recorded from
    /// here on are the sync's, until `Synced`.
    SyncStarted {
        /// The base it starts from.
        from: String,
        /// The snapshot it brings the disk to.
        to: String,
    },
    /// The sync to `to` is whole: `to` is the base now.
    Synced {
        /// The new base.
        to: String,
    },
    /// The disk is finished: uploaded, ended, Unattached. The summary is the
    /// disk's report, for runs that skip it later.
    Finished {
        /// The disk's report (JSON).
        summary: serde_json::Value,
    },
}

/// What a journal holds, read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The last `Started` record's plan digest, snapshot and size.
    pub started: Option<(String, String, u64)>,
    /// Blocks done since that record, with their digests: what the disk
    /// holds (a later record of a block replaces an earlier one; `None` is
    /// a block of zeros).
    pub done: BTreeMap<u64, Option<String>>,
    /// True once a `Copied` record follows.
    pub copied: bool,
    /// The snapshot a pre-seeded (open) disk holds, and its staged copy.
    pub base: Option<(String, Option<PathBuf>)>,
    /// A sync under way: from, to.
    pub syncing: Option<(String, String)>,
    /// Blocks the sync under way has made durable.
    pub synced: std::collections::BTreeSet<u64>,
    /// The summary of a finished disk.
    pub finished: Option<serde_json::Value>,
    /// Bytes of valid records (a torn tail starts here).
    pub valid_len: u64,
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct Error {
    /// The journal file.
    pub path: String,
    /// The system's error.
    #[source]
    pub source: std::io::Error,
}

/// Reads the journal at `path` (an absent file is an empty journal).
pub fn read(path: &Path) -> Result<State, Error> {
    let err = |source| Error {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(f) => {
            f.take(MAX_JOURNAL).read_to_end(&mut bytes).map_err(err)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(err(e)),
    }
    Ok(replay(&bytes))
}

/// The state the framed records in `bytes` describe, up to the first torn
/// or corrupt one.
pub fn replay(bytes: &[u8]) -> State {
    let mut state = State::default();
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice::<Record>(payload) else {
            break;
        };
        apply(&mut state, record);
        at += 8 + len as usize;
        state.valid_len = at as u64;
    }
    state
}

fn apply(state: &mut State, record: Record) {
    match record {
        Record::Started {
            plan,
            snapshot,
            upload_size,
        } => {
            *state = State {
                started: Some((plan, snapshot, upload_size)),
                valid_len: state.valid_len,
                ..State::default()
            };
        }
        Record::Done { blocks } => {
            if state.syncing.is_some() {
                state.synced.extend(blocks.iter().map(|(i, _)| *i));
            }
            state.done.extend(blocks);
        }
        Record::Copied => state.copied = true,
        Record::Seeded { snapshot, staged } => state.base = Some((snapshot, staged)),
        Record::SyncStarted { from, to } => {
            state.syncing = Some((from, to));
            state.synced.clear();
        }
        Record::Synced { to } => {
            if let Some((base, _)) = &mut state.base {
                *base = to;
            }
            state.syncing = None;
            state.synced.clear();
        }
        Record::Finished { summary } => state.finished = Some(summary),
    }
}

/// The frame of one record.
pub fn frame(record: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(record).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Blocks done and not yet appended, with the time the batch started.
type Pending = (Vec<(u64, Option<String>)>, Instant);

/// Appends records to a disk's journal; finished blocks are gathered and
/// appended in batches.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    pending: Mutex<Pending>,
}

impl Journal {
    /// Opens the journal at `path` (created if absent) for this run alone:
    /// it is locked (`flock`, released when the run ends, however it ends),
    /// read back, and cut after its last valid record. Returns it with what
    /// it holds.
    pub fn open(path: &Path) -> Result<(Journal, State), Error> {
        let err = |source| Error {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        // SAFETY: flock on a descriptor owned by `file`, which the journal keeps.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            let e = std::io::Error::last_os_error();
            return Err(err(if e.kind() == std::io::ErrorKind::WouldBlock {
                std::io::Error::new(e.kind(), "another run is moving this disk right now")
            } else {
                e
            }));
        }
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_JOURNAL)
            .read_to_end(&mut bytes)
            .map_err(err)?;
        let state = replay(&bytes);
        if file.metadata().map_err(err)?.len() != state.valid_len {
            file.set_len(state.valid_len).map_err(err)?;
        }
        Ok((
            Journal {
                path: path.to_owned(),
                file: Mutex::new(file),
                pending: Mutex::new((Vec::new(), Instant::now())),
            },
            state,
        ))
    }

    /// Starts the journal over (a new disk) with `record`.
    pub fn restart(&self, record: &Record) -> Result<(), Error> {
        {
            let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            file.set_len(0).map_err(|e| self.err(e))?;
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clear();
        self.append(record, true)
    }

    /// Appends `record`; with `sync`, waits until it is on disk.
    pub fn append(&self, record: &Record, sync: bool) -> Result<(), Error> {
        let bytes = frame(record);
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&bytes).map_err(|e| self.err(e))?;
        if sync {
            file.sync_data().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records block `index` as durable at the target, with its digest.
    pub fn block_done(&self, index: u64, digest: Option<String>) -> Result<(), Error> {
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.0.push((index, digest));
            if p.0.len() < BATCH_BLOCKS && p.1.elapsed() < BATCH_AGE {
                return Ok(());
            }
            p.1 = Instant::now();
            std::mem::take(&mut p.0)
        };
        self.append(&Record::Done { blocks: batch }, false)
    }

    /// Appends the blocks gathered so far.
    pub fn flush(&self) -> Result<(), Error> {
        let batch = std::mem::take(
            &mut self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        );
        if batch.is_empty() {
            return Ok(());
        }
        self.append(&Record::Done { blocks: batch }, true)
    }

    fn err(&self, source: std::io::Error) -> Error {
        Error {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Record {
        Record::Started {
            plan: "p".into(),
            snapshot: "snap-00000001".into(),
            upload_size: 1 << 30,
        }
    }

    #[test]
    fn records_come_back_and_a_torn_tail_is_ignored_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.journal");
        let (j, st) = Journal::open(&path).unwrap();
        assert_eq!(st, State::default());
        j.restart(&started()).unwrap();
        j.block_done(3, Some("ab".into())).unwrap();
        j.block_done(1, None).unwrap();
        j.flush().unwrap();
        // A second run cannot open it while this one holds it.
        assert!(Journal::open(&path)
            .unwrap_err()
            .to_string()
            .contains("another run"));
        drop(j);
        let whole = std::fs::read(&path).unwrap();
        let s = read(&path).unwrap();
        assert_eq!(s.done.len(), 2);
        assert_eq!(s.done[&3].as_deref(), Some("ab"));
        assert_eq!(s.valid_len, whole.len() as u64);
        // Every torn length replays to a prefix of what was written.
        for cut in 0..whole.len() {
            let st = replay(&whole[..cut]);
            assert!(st.valid_len <= cut as u64);
            assert!(st.done.len() <= 2);
        }
        // A flipped byte in the last record drops that record only.
        let mut bad = whole.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0xff;
        let st = replay(&bad);
        assert!(st.started.is_some() && st.done.is_empty());
        // Appending after a torn tail cuts it off first.
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let (j, st) = Journal::open(&path).unwrap();
        assert!(st.done.is_empty() && st.started.is_some());
        j.append(&Record::Copied, true).unwrap();
        let st = read(&path).unwrap();
        assert!(st.copied && st.started.is_some());
        assert!(st.done.is_empty(), "the torn record's blocks are redone");
    }

    #[test]
    fn a_new_start_forgets_what_the_old_disk_had() {
        let mut bytes = frame(&started());
        bytes.extend(frame(&Record::Done {
            blocks: vec![(1, None)],
        }));
        bytes.extend(frame(&started()));
        let st = replay(&bytes);
        assert!(st.done.is_empty() && st.started.is_some());
    }

    #[test]
    fn a_sync_moves_the_base_and_its_blocks_replace_the_old_ones() {
        let mut bytes = frame(&started());
        bytes.extend(frame(&Record::Done {
            blocks: vec![(1, Some("a".into())), (2, Some("b".into()))],
        }));
        bytes.extend(frame(&Record::Seeded {
            snapshot: "snap-00000001".into(),
            staged: None,
        }));
        bytes.extend(frame(&Record::SyncStarted {
            from: "snap-00000001".into(),
            to: "snap-00000002".into(),
        }));
        bytes.extend(frame(&Record::Done {
            blocks: vec![(2, None), (3, Some("c".into()))],
        }));
        let st = replay(&bytes);
        assert_eq!(st.base.as_ref().unwrap().0, "snap-00000001");
        assert_eq!(
            st.syncing,
            Some(("snap-00000001".into(), "snap-00000002".into()))
        );
        assert_eq!(st.synced.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(st.done[&2], None);
        bytes.extend(frame(&Record::Synced {
            to: "snap-00000002".into(),
        }));
        let st = replay(&bytes);
        assert_eq!(st.base.unwrap().0, "snap-00000002");
        assert!(st.syncing.is_none() && st.synced.is_empty());
        assert_eq!(st.done.len(), 3);
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        bytes.extend([1, 2, 3]);
        assert_eq!(replay(&bytes), State::default());
    }
}
