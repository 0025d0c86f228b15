//! The content digest a report gives each disk, so that the disk can be
//! checked again later, from its source or from Azure, without the run.
//!
//! Definition (independent of the order blocks are copied in, of which
//! blocks a source lists, and of a resume): the disk is cut into 512 KiB
//! blocks; every block that holds a non-zero byte contributes its index
//! (u64, little-endian) and the SHA-256 of its bytes, in ascending index
//! order; the digest is the SHA-256 of that sequence. A disk of zeros has
//! the digest of the empty sequence.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::model::hex;
use crate::source::{self, BlockSource, BLOCK_SIZE};

/// The SHA-256 of one block's bytes, in hex.
pub fn block_digest(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The disk digest of the non-zero blocks' digests (hex), by index.
pub fn combine<'a>(blocks: impl IntoIterator<Item = (&'a u64, &'a String)>) -> String {
    let mut h = Sha256::new();
    for (index, digest) in blocks {
        h.update(index.to_le_bytes());
        h.update(digest.as_bytes());
    }
    hex(&h.finalize())
}

/// The digest of a whole source, read block by block (512 KiB blocks).
pub fn of_source(source: &dyn BlockSource) -> Result<String, source::Error> {
    let bs = BLOCK_SIZE as usize;
    let mut buf = vec![0u8; bs.max(source.block_size() as usize)];
    let mut out = BTreeMap::new();
    let per = u64::from(source.block_size() / BLOCK_SIZE).max(1);
    let listed: Vec<u64> = source.blocks().collect::<Result<_, _>>()?;
    for index in listed {
        let data = source.read_block(index, &mut buf)?.to_vec();
        for (k, part) in data.chunks(bs).enumerate() {
            if !diskformats::is_zero(part) {
                out.insert(index * per + k as u64, block_digest(part));
            }
        }
        source.release_block(index);
    }
    Ok(combine(&out))
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
}
