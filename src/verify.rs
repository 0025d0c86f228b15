//! `verify`: reads a managed disk back through a read SAS and compares it
//! with its source (a fixed VHD or a snapshot), range by range, by SHA-256
//! digests of the source's data ranges, and checks the VHD footer.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use diskformats::vhd::{DiskType, Footer};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::azure::arm::Access;
use crate::azure::{self, Secret, Session};
use crate::convert::Input;
use crate::pipeline;
use crate::sink::{self, BlockSink};
use crate::source::{self, BlockSource, EbsSource};
use crate::upload::{self, check_vhd, copy_options, Options, Target};

/// One compared range of `verify`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RangeCheck {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// True when the disk holds the source's bytes there.
    pub matches: bool,
}

/// What `verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The disk's resource id.
    pub disk: String,
    /// The source compared with.
    pub source: String,
    /// Every compared range, in offset order.
    pub ranges: Vec<RangeCheck>,
    /// Ranges that differ.
    pub mismatches: u64,
    /// Bytes compared.
    pub bytes_compared: u64,
    /// True when the disk's VHD footer is valid for its size.
    pub footer_ok: bool,
}

/// Why a verification could not run (differences are not errors: they are
/// in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source VHD cannot be what an upload sent.
    #[error(transparent)]
    Vhd(#[from] upload::Error),
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// An Azure call failed.
    #[error(transparent)]
    Azure(#[from] azure::Error),
    /// The comparison failed.
    #[error(transparent)]
    Copy(#[from] pipeline::Error),
    /// There is no such disk.
    #[error("disk {disk} does not exist")]
    DiskNotFound {
        /// Disk name.
        disk: String,
    },
    /// The disk was made for another size than the source's.
    #[error("disk {disk} holds {held} bytes, but {source_name} makes {made}")]
    SizeMismatch {
        /// Disk name.
        disk: String,
        /// The disk's upload size.
        held: u64,
        /// The source.
        source_name: String,
        /// The source's upload size (with the footer).
        made: u64,
    },
}

/// Compares each written range with the same range of the disk.
struct VerifySink<'a> {
    session: &'a Session,
    sas: Secret,
    disk: String,
    results: Mutex<Vec<RangeCheck>>,
}

impl BlockSink for VerifySink<'_> {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), sink::Error> {
        let theirs = self
            .session
            .handle()
            .block_on(self.session.read(&self.sas, offset, data.len() as u64))
            .map_err(|source| sink::Error::Azure {
                disk: self.disk.clone(),
                source,
            })?;
        let matches = Sha256::digest(&theirs) == Sha256::digest(data);
        // A worker that panicked holding the list leaves it whole: keep using it.
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RangeCheck {
                offset,
                len: data.len() as u64,
                matches,
            });
        Ok(())
    }
}

/// Reads the disk back through a read SAS and compares it with `input`.
pub fn verify(
    session: &Session,
    input: &Input,
    target: &Target,
    opts: &Options,
) -> Result<VerifyReport, Error> {
    let (source, source_name, footer): (Box<dyn BlockSource>, String, Option<[u8; 512]>) =
        match input {
            Input::Image(path) => {
                let (s, f) = check_vhd(path)?;
                (Box::new(s), path.display().to_string(), Some(f))
            }
            Input::Snapshot(id) => (
                Box::new(EbsSource::open(id, &opts.ebs, opts.quotas.clone())?),
                id.clone(),
                None,
            ),
        };
    let arm = session.arm();
    let info = session
        .block_on(arm.get(&target.disk))?
        .ok_or_else(|| Error::DiskNotFound {
            disk: target.disk.name.clone(),
        })?;
    let size = source.size();
    if let Some(held) = info.upload_size_bytes.filter(|&u| u != size + 512) {
        return Err(Error::SizeMismatch {
            disk: target.disk.name.clone(),
            held,
            source_name,
            made: size + 512,
        });
    }
    let sas = session.block_on(arm.begin_access(&target.disk, Access::Read))?;
    let check = (|| -> Result<(Vec<RangeCheck>, bool), Error> {
        let sink = VerifySink {
            session,
            sas: sas.clone(),
            disk: target.disk.name.clone(),
            results: Mutex::new(Vec::new()),
        };
        pipeline::copy(source.as_ref(), &sink, &copy_options(opts), &|_| {})?;
        let theirs = session.block_on(session.read(&sas, size, 512))?;
        let footer_ok = match footer {
            Some(ours) => theirs == ours,
            None => {
                let mut f = [0u8; 512];
                f.copy_from_slice(&theirs);
                Footer::parse(&f)
                    .is_ok_and(|f| f.disk_type == DiskType::Fixed && f.current_size == size)
            }
        };
        let mut ranges = sink
            .results
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        ranges.sort_by_key(|r| r.offset);
        Ok((ranges, footer_ok))
    })();
    // Access ends whatever the comparison found.
    let ended = session.block_on(arm.end_access(&target.disk));
    let (ranges, footer_ok) = check?;
    ended?;
    let mismatches = ranges.iter().filter(|r| !r.matches).count() as u64;
    Ok(VerifyReport {
        disk: info.id,
        source: source_name,
        bytes_compared: ranges.iter().map(|r| r.len).sum(),
        mismatches,
        ranges,
        footer_ok,
    })
}

/// Merges adjacent ranges of the same outcome, for a shorter listing.
pub fn coalesce(ranges: &[RangeCheck]) -> Vec<RangeCheck> {
    let mut out: Vec<RangeCheck> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.matches == r.matches && l.offset + l.len == r.offset => l.len += r.len,
            _ => out.push(r.clone()),
        }
    }
    out
}

/// Half-open byte ranges of a verify listing (for tests and callers).
pub fn spans(ranges: &[RangeCheck]) -> Vec<Range<u64>> {
    ranges.iter().map(|r| r.offset..r.offset + r.len).collect()
}
