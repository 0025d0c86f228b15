//! `verify`: reads a managed disk back through a read SAS and proves it
//! holds its source (a fixed VHD or a snapshot), the whole disk:
//! - where the source has data, the disk's bytes have the same SHA-256;
//! - everywhere else the disk must read as zero. Only what the disk's page
//!   listing (Get Page Ranges) says was written there is read back: an
//!   unwritten page of a page blob reads as zero by definition. So the cost
//!   grows with what is written on the disk, not with its size;
//! - the VHD footer is the one the source makes.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use diskformats::vhd::{DiskType, Footer};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::azure::arm::Access;
use crate::azure::{self, page_blob, Secret, Session};
use crate::convert::Input;
use crate::pipeline;
use crate::sink::{self, BlockSink};
use crate::source::{self, BlockSource, EbsSource};
use crate::upload::{self, check_vhd, copy_options, Options, Target};

/// What the source holds where a range of the disk was checked.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceHolds {
    /// Data: the disk's bytes are compared with the source's.
    Data,
    /// Zeros (or nothing): the disk's written pages there must read as zero.
    Zeros,
}

/// One checked range of `verify`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RangeCheck {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// True when the disk holds the source's bytes there.
    pub matches: bool,
    /// What the source holds there.
    pub source_holds: SourceHolds,
}

/// What `verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The disk's resource id.
    pub disk: String,
    /// The source compared with.
    pub source: String,
    /// Every checked range, in offset order: the source's data, then the
    /// pages written on the disk outside it.
    pub ranges: Vec<RangeCheck>,
    /// Ranges that differ.
    pub mismatches: u64,
    /// Bytes of the source's data compared.
    pub bytes_compared: u64,
    /// Bytes written on the disk outside the source's data, read back to
    /// check they are zero.
    pub bytes_outside_data: u64,
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
                source_holds: SourceHolds::Data,
            });
        Ok(())
    }
}

/// The disk to read back, or why there is none.
fn existing(session: &Session, target: &Target) -> Result<crate::azure::arm::DiskInfo, Error> {
    session
        .block_on(session.arm().get(&target.disk))?
        .ok_or_else(|| Error::DiskNotFound {
            disk: target.disk.name.clone(),
        })
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
    let info = existing(session, target)?;
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
        // Whatever else the disk holds must be zero: read back what its
        // listing says was written outside the source's data and the footer.
        let mut data = page_blob::merge(spans(&ranges));
        data.push(size..size + 512);
        let written = session.block_on(session.page_ranges(&sas, &target.disk.name, size + 512))?;
        for stray in outside(&written, &data) {
            ranges.extend(session.block_on(zero_checks(session, &sas, stray))?);
        }
        ranges.sort_by_key(|r| r.offset);
        Ok((ranges, footer_ok))
    })();
    // Access ends whatever the comparison found.
    let ended = session.block_on(arm.end_access(&target.disk));
    let (ranges, footer_ok) = check?;
    ended?;
    let mismatches = ranges.iter().filter(|r| !r.matches).count() as u64;
    let bytes = |holds| {
        ranges
            .iter()
            .filter(|r| r.source_holds == holds)
            .map(|r| r.len)
            .sum()
    };
    Ok(VerifyReport {
        disk: info.id,
        source: source_name,
        bytes_compared: bytes(SourceHolds::Data),
        bytes_outside_data: bytes(SourceHolds::Zeros),
        mismatches,
        ranges,
        footer_ok,
    })
}

/// What `verify --digest` found.
#[derive(Clone, Debug, Serialize)]
pub struct DigestCheck {
    /// The disk's resource id.
    pub disk: String,
    /// The digest expected (from a plan run's report).
    pub expected: String,
    /// The digest of what the disk holds.
    pub actual: String,
    /// True when they are the same.
    pub matches: bool,
    /// Bytes read back (the disk's written pages).
    pub bytes_read: u64,
    /// True when the disk's VHD footer is valid for its size.
    pub footer_ok: bool,
}

/// A managed disk read back through a read SAS, as a block source: the
/// blocks its page listing touches, each read where it is written (the rest
/// of a page blob reads as zero).
struct DiskSource<'a> {
    session: &'a Session,
    sas: Secret,
    disk: String,
    size: u64,
    /// Written ranges (the footer excluded), merged, by 512 KiB block.
    blocks: std::collections::BTreeMap<u64, Vec<Range<u64>>>,
    read: std::sync::atomic::AtomicU64,
}

impl<'a> DiskSource<'a> {
    fn new(
        session: &'a Session,
        sas: Secret,
        disk: &str,
        size: u64,
        written: &[Range<u64>],
    ) -> Self {
        let bs = u64::from(source::BLOCK_SIZE);
        let mut blocks: std::collections::BTreeMap<u64, Vec<Range<u64>>> = Default::default();
        for r in written {
            let (start, end) = (r.start, r.end.min(size));
            let mut at = start;
            while at < end {
                let block = at / bs;
                let stop = ((block + 1) * bs).min(end);
                blocks.entry(block).or_default().push(at..stop);
                at = stop;
            }
        }
        DiskSource {
            session,
            sas,
            disk: disk.to_owned(),
            size,
            blocks,
            read: Default::default(),
        }
    }
}

impl BlockSource for DiskSource<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        source::BLOCK_SIZE
    }

    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, source::Error>> + Send + '_> {
        Box::new(self.blocks.keys().map(|&b| Ok(b)))
    }

    fn read_block<'b>(&'b self, index: u64, buf: &'b mut [u8]) -> Result<&'b [u8], source::Error> {
        let bs = u64::from(source::BLOCK_SIZE);
        let start = index * bs;
        let len = (self.size - start.min(self.size)).min(bs) as usize;
        let out = &mut buf[..len];
        out.fill(0);
        for r in self.blocks.get(&index).into_iter().flatten() {
            let bytes = self
                .session
                .handle()
                .block_on(self.session.read(&self.sas, r.start, r.end - r.start))
                .map_err(|e| source::Error::Elsewhere {
                    what: format!("disk {}", self.disk),
                    block: index,
                    source: Box::new(e),
                })?;
            let at = (r.start - start) as usize;
            out[at..at + bytes.len()].copy_from_slice(&bytes);
            self.read
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(out)
    }
}

/// Reads disk `target` back and checks that its content digest (see
/// [`crate::digest`]) is `expected`, as a plan run reported it: no source
/// is needed, and only the disk's written pages are read.
pub fn verify_digest(
    session: &Session,
    target: &Target,
    expected: &str,
    opts: &Options,
) -> Result<DigestCheck, Error> {
    let arm = session.arm();
    let info = existing(session, target)?;
    let upload_size = info.upload_size_bytes.unwrap_or(0);
    let size = upload_size.saturating_sub(512);
    let sas = session.block_on(arm.begin_access(&target.disk, Access::Read))?;
    let check = (|| -> Result<(String, u64, bool), Error> {
        let written =
            session.block_on(session.page_ranges(&sas, &target.disk.name, upload_size))?;
        let disk = DiskSource::new(session, sas.clone(), &target.disk.name, size, &written);
        let workers = copy_options(opts)
            .concurrency
            .unwrap_or(pipeline::default_concurrency());
        let actual = crate::digest::of_source(&disk, workers)?;
        let theirs = session.block_on(session.read(&sas, size, 512))?;
        let mut f = [0u8; 512];
        f.copy_from_slice(&theirs);
        let footer_ok = Footer::parse(&f)
            .is_ok_and(|f| f.disk_type == DiskType::Fixed && f.current_size == size);
        Ok((actual, disk.read.into_inner(), footer_ok))
    })();
    let ended = session.block_on(arm.end_access(&target.disk));
    let (actual, bytes_read, footer_ok) = check?;
    ended?;
    Ok(DigestCheck {
        disk: info.id,
        matches: actual.eq_ignore_ascii_case(expected.trim()),
        expected: expected.trim().to_owned(),
        actual,
        bytes_read,
        footer_ok,
    })
}

/// What [`verify_blocks`] found.
#[derive(Clone, Debug, Serialize)]
pub struct BlocksCheck {
    /// Blocks read back.
    pub blocks: u64,
    /// Blocks that do not hold what was expected, by index.
    pub mismatched: Vec<u64>,
    /// True when the disk's VHD footer is valid for its size.
    pub footer_ok: bool,
}

/// Reads back only the 512 KiB blocks in `expected` (index -> SHA-256 in
/// hex, `None` for zeros) and the footer: a check of what one delta sync
/// wrote and cleared, without reading the whole disk.
pub fn verify_blocks(
    session: &Session,
    target: &Target,
    expected: &std::collections::BTreeMap<u64, Option<String>>,
    opts: &Options,
) -> Result<BlocksCheck, Error> {
    let arm = session.arm();
    let info = existing(session, target)?;
    let size = info.upload_size_bytes.unwrap_or(0).saturating_sub(512);
    let bs = u64::from(source::BLOCK_SIZE);
    let ranges: Vec<Range<u64>> = expected
        .keys()
        .map(|i| i * bs..((i + 1) * bs).min(size))
        .filter(|r| r.start < r.end)
        .collect();
    let sas = session.block_on(arm.begin_access(&target.disk, Access::Read))?;
    let check = (|| -> Result<(std::collections::BTreeMap<u64, String>, bool), Error> {
        let disk = DiskSource::new(session, sas.clone(), &target.disk.name, size, &ranges);
        let workers = copy_options(opts)
            .concurrency
            .unwrap_or(pipeline::default_concurrency());
        let found = crate::digest::blocks_of_source(&disk, workers)?;
        let theirs = session.block_on(session.read(&sas, size, 512))?;
        let mut f = [0u8; 512];
        f.copy_from_slice(&theirs);
        let footer_ok = Footer::parse(&f)
            .is_ok_and(|f| f.disk_type == DiskType::Fixed && f.current_size == size);
        Ok((found, footer_ok))
    })();
    let ended = session.block_on(arm.end_access(&target.disk));
    let (found, footer_ok) = check?;
    ended?;
    let mismatched = expected
        .iter()
        .filter(|(i, want)| found.get(i) != want.as_ref())
        .map(|(i, _)| *i)
        .collect();
    Ok(BlocksCheck {
        blocks: expected.len() as u64,
        mismatched,
        footer_ok,
    })
}

/// The parts of `written` that lie outside every range of `data` (both
/// sorted and merged).
pub fn outside(written: &[Range<u64>], data: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut d = 0;
    for w in written {
        let mut at = w.start;
        while d < data.len() && data[d].end <= at {
            d += 1;
        }
        let mut i = d;
        while at < w.end {
            match data.get(i) {
                Some(r) if r.start < w.end => {
                    if r.start > at {
                        out.push(at..r.start);
                    }
                    at = at.max(r.end);
                    i += 1;
                }
                _ => {
                    out.push(at..w.end);
                    at = w.end;
                }
            }
        }
    }
    out
}

/// Largest read of a range that must be zero.
const ZERO_CHECK_READ: u64 = 4 << 20;

/// Reads `range` of the disk back and checks that it is zero: a range check
/// that matches for each zero read, and one that differs for each run of
/// non-zero 512-byte sectors.
async fn zero_checks(
    session: &Session,
    sas: &Secret,
    range: Range<u64>,
) -> Result<Vec<RangeCheck>, Error> {
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let len = (range.end - at).min(ZERO_CHECK_READ);
        let theirs = session.read(sas, at, len).await?;
        if diskformats::is_zero(&theirs) {
            out.push(RangeCheck {
                offset: at,
                len,
                matches: true,
                source_holds: SourceHolds::Zeros,
            });
        } else {
            out.extend(
                diskformats::nonzero_runs(&theirs, 512).map(|run| RangeCheck {
                    offset: at + run.start as u64,
                    len: run.len() as u64,
                    matches: false,
                    source_holds: SourceHolds::Zeros,
                }),
            );
        }
        at += len;
    }
    Ok(out)
}

/// Merges adjacent ranges of the same outcome, for a shorter listing.
pub fn coalesce(ranges: &[RangeCheck]) -> Vec<RangeCheck> {
    let mut out: Vec<RangeCheck> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l)
                if l.matches == r.matches
                    && l.source_holds == r.source_holds
                    && l.offset + l.len == r.offset =>
            {
                l.len += r.len
            }
            _ => out.push(r.clone()),
        }
    }
    out
}

/// Half-open byte ranges of a verify listing (for tests and callers).
pub fn spans(ranges: &[RangeCheck]) -> Vec<Range<u64>> {
    ranges.iter().map(|r| r.offset..r.offset + r.len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // One-range lists are what these functions take here.
    #[allow(clippy::single_range_in_vec_init)]
    fn what_lies_outside_the_data_is_found() {
        let data = [100..200, 300..400, 1000..1512];
        assert_eq!(outside(&[], &data), Vec::<Range<u64>>::new());
        assert_eq!(outside(&[100..200], &data), Vec::<Range<u64>>::new());
        assert_eq!(outside(&[0..50], &data), [0..50]);
        assert_eq!(outside(&[50..450], &data), [50..100, 200..300, 400..450]);
        assert_eq!(
            outside(&[150..350, 390..1100], &data),
            [200..300, 400..1000]
        );
        assert_eq!(outside(&[1400..2000], &data), [1512..2000]);
        assert_eq!(outside(&[0..4096], &[]), [0..4096]);
    }

    #[test]
    fn coalescing_keeps_data_and_zeros_apart() {
        let r = |offset, matches, source_holds| RangeCheck {
            offset,
            len: 512,
            matches,
            source_holds,
        };
        let c = coalesce(&[
            r(0, true, SourceHolds::Data),
            r(512, true, SourceHolds::Data),
            r(1024, true, SourceHolds::Zeros),
            r(1536, false, SourceHolds::Zeros),
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].offset, c[0].len), (0, 1024));
    }
}
