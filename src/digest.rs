//! The content digest of a disk, so that a copy can be checked later against
//! what a run reported, from its source or from Azure, without the run.
//!
//! Definition (independent of the order blocks are copied in, of which
//! blocks a source lists, and of resumes): the disk is cut into 512 KiB
//! blocks; every block that holds a non-zero byte contributes its index
//! (u64, little-endian) and the SHA-256 of its bytes (as 64 lower-case hex
//! digits), in ascending index order; the digest is the SHA-256 of that
//! sequence, in hex. A disk of zeros has the digest of the empty sequence.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::pipeline::{self, DoneBlock, Hooks};
use crate::sink::{self, BlockSink};
use crate::source::{BlockSource, BLOCK_SIZE};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of one block's bytes, in hex.
pub fn block_digest(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The digest of a 512 KiB block the copy finished: `None` for a block of
/// zeros or of another size; the SHA-256 the source checked on the way when
/// it has one (EBS), else computed here.
pub fn of_block(b: &DoneBlock<'_>) -> Option<String> {
    let data = b.data.filter(|d| d.len() == BLOCK_SIZE as usize)?;
    Some(match b.sha256 {
        Some(d) => hex(&d),
        None => block_digest(data),
    })
}

/// The disk digest from the non-zero blocks' digests (hex), by index.
pub fn combine<'a>(blocks: impl IntoIterator<Item = (&'a u64, &'a String)>) -> String {
    let mut h = Sha256::new();
    for (index, digest) in blocks {
        h.update(index.to_le_bytes());
        h.update(digest.as_bytes());
    }
    hex(&h.finalize())
}

/// Gathers the digests of the blocks a copy finishes, in any order and from
/// any thread, for [`Collector::digest`]. The copy's blocks must start at
/// multiples of 512 KiB (sources with 512 KiB or 4 MiB blocks do).
#[derive(Debug, Default)]
pub struct Collector {
    found: Mutex<BTreeMap<u64, String>>,
}

impl Collector {
    /// Takes the digests of `b`'s non-zero 512 KiB blocks.
    pub fn add(&self, b: &DoneBlock<'_>) {
        let Some(data) = b.data else { return };
        let bs = BLOCK_SIZE as usize;
        let first = b.offset / u64::from(BLOCK_SIZE);
        let parts: Vec<(u64, String)> = match of_block(b) {
            // One 512 KiB block, its SHA-256 known or computed once.
            Some(d) => vec![(first, d)],
            None => data
                .chunks(bs)
                .enumerate()
                .filter(|(_, part)| !diskformats::is_zero(part))
                .map(|(k, part)| (first + k as u64, block_digest(part)))
                .collect(),
        };
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(parts);
    }

    /// The disk digest of what was added.
    pub fn digest(&self) -> String {
        combine(&*self.found.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The non-zero 512 KiB blocks added, with their SHA-256 (hex).
    pub fn into_blocks(self) -> BTreeMap<u64, String> {
        self.found
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An upload can gather the digest as it reads: nothing is skipped, nothing
/// recorded.
impl crate::upload::Checkpoints for Collector {
    fn done(&self) -> std::collections::HashSet<u64> {
        std::collections::HashSet::new()
    }

    fn block_done(&self, block: &DoneBlock<'_>) -> Result<(), crate::upload::BoxError> {
        self.add(block);
        Ok(())
    }

    fn copied(&self) -> Result<(), crate::upload::BoxError> {
        Ok(())
    }
}

/// Takes every write and keeps nothing: the digest comes from the block hook.
struct Discard;

impl BlockSink for Discard {
    fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<(), sink::Error> {
        Ok(())
    }
}

/// The digest of a whole source, its blocks read `workers` at a time. The
/// source's block size must be a multiple of 512 KiB.
pub fn of_source(
    source: &dyn BlockSource,
    workers: std::num::NonZeroUsize,
) -> Result<String, pipeline::Error> {
    Ok(combine(&blocks_of_source(source, workers)?))
}

/// The SHA-256 of each non-zero 512 KiB block of a whole source, by index
/// (what [`of_source`] combines).
pub fn blocks_of_source(
    source: &dyn BlockSource,
    workers: std::num::NonZeroUsize,
) -> Result<BTreeMap<u64, String>, pipeline::Error> {
    let collector = Collector::default();
    let hook = |b: &DoneBlock<'_>| {
        collector.add(b);
        Ok(())
    };
    let opts = pipeline::Options {
        concurrency: Some(workers),
        ..Default::default()
    };
    pipeline::copy_with(
        source,
        &Discard,
        &opts,
        Hooks {
            progress: &|_| {},
            block_done: Some(&hook),
            stop: None,
        },
    )?;
    Ok(collector.into_blocks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_zero_blocks_do_not_count() {
        let a = [(5u64, "x".to_owned()), (1, "y".into())];
        let sorted: BTreeMap<u64, String> = a.iter().cloned().collect();
        let again: BTreeMap<u64, String> = a.iter().rev().cloned().collect();
        assert_eq!(combine(&sorted), combine(&again));
        let other: BTreeMap<u64, String> = [(5u64, "x".to_owned())].into();
        assert_ne!(combine(&sorted), combine(&other));
        assert_eq!(
            combine(&BTreeMap::new()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_block_digest_uses_the_checked_sha256_and_only_for_whole_blocks() {
        let data = vec![7u8; BLOCK_SIZE as usize];
        let computed = block_digest(&data);
        let mut b = DoneBlock {
            index: 3,
            offset: 3 * u64::from(BLOCK_SIZE),
            data: Some(&data),
            sha256: None,
        };
        assert_eq!(of_block(&b).as_deref(), Some(computed.as_str()));
        let known: [u8; 32] = Sha256::digest(&data).into();
        b.sha256 = Some(known);
        assert_eq!(of_block(&b).as_deref(), Some(computed.as_str()));
        b.data = None;
        assert_eq!(of_block(&b), None, "a block of zeros has no digest");
        b.data = Some(&data[..4096]);
        assert_eq!(of_block(&b), None, "not a 512 KiB block");
    }

    #[test]
    fn a_source_digest_splits_big_blocks_and_skips_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"one", 3 * 512 * 1024 + 5).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], 0).unwrap();
        let mut block = vec![0u8; 512 * 1024];
        block[5..8].copy_from_slice(b"one");
        let want = combine(&BTreeMap::from([(3u64, block_digest(&block))]));
        let workers = std::num::NonZeroUsize::new(2).unwrap();
        for size in [512 * 1024, 4 << 20] {
            let src = crate::source::ImageSource::open(&path, &Default::default())
                .unwrap()
                .with_block_size(size);
            assert_eq!(of_source(&src, workers).unwrap(), want, "block size {size}");
        }
    }
}
