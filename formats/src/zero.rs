//! Zero detection: the test every moved byte goes through, so it must run at
//! memory bandwidth.

use std::ops::Range;

/// Bytes OR-ed together before each early-exit check; wide enough for the
/// compiler to vectorise, short enough to stop soon on data.
const STRIDE: usize = 512;

/// Returns true when every byte of `buf` is zero.
///
/// ```
/// assert!(diskformats::is_zero(&[0u8; 4096]));
/// let mut b = vec![0u8; 4096];
/// b[4095] = 1;
/// assert!(!diskformats::is_zero(&b));
/// ```
pub fn is_zero(buf: &[u8]) -> bool {
    // Data blocks usually differ from zero in their first bytes: look there first.
    if buf.first().is_some_and(|&b| b != 0) {
        return false;
    }
    let mut chunks = buf.chunks_exact(STRIDE);
    for chunk in &mut chunks {
        if or_all(chunk) != 0 {
            return false;
        }
    }
    or_all(chunks.remainder()) == 0
}

/// OR of all bytes; written as a plain fold so that LLVM turns it into SIMD.
#[inline(always)]
fn or_all(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, &b| acc | b)
}

/// Yields the byte ranges of `buf` that hold data, at `granularity` bytes: each
/// `granularity`-sized piece that is not all zero belongs to a range, and
/// neighbouring pieces are merged. The last piece may be shorter.
///
/// Used to write only the non-zero parts of a block, so that outputs stay sparse.
///
/// ```
/// let mut b = vec![0u8; 16384];
/// b[5000] = 7;
/// b[9000] = 7;
/// let runs: Vec<_> = diskformats::nonzero_runs(&b, 4096).collect();
/// assert_eq!(runs, vec![4096..12288]);
/// ```
pub fn nonzero_runs(buf: &[u8], granularity: usize) -> NonZeroRuns<'_> {
    NonZeroRuns {
        buf,
        granularity: granularity.max(1),
        pos: 0,
    }
}

/// Iterator returned by [`nonzero_runs`].
#[derive(Debug)]
pub struct NonZeroRuns<'a> {
    buf: &'a [u8],
    granularity: usize,
    pos: usize,
}

impl Iterator for NonZeroRuns<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let g = self.granularity;
        let len = self.buf.len();
        // Skip zero pieces.
        while self.pos < len {
            let end = (self.pos + g).min(len);
            if !is_zero(&self.buf[self.pos..end]) {
                break;
            }
            self.pos = end;
        }
        if self.pos >= len {
            return None;
        }
        let start = self.pos;
        // Take data pieces.
        while self.pos < len {
            let end = (self.pos + g).min(len);
            if is_zero(&self.buf[self.pos..end]) {
                break;
            }
            self.pos = end;
        }
        Some(start..self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_of_every_length_and_position() {
        for len in [0usize, 1, 7, 511, 512, 513, 4096, 4097, 70_000] {
            let mut buf = vec![0u8; len];
            assert!(is_zero(&buf), "len {len}");
            for pos in [0, len / 3, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                buf[pos] = 0x80;
                assert!(!is_zero(&buf), "len {len} pos {pos}");
                buf[pos] = 0;
            }
        }
    }

    #[test]
    fn runs_merge_neighbours_and_skip_zero_pieces() {
        let mut b = vec![0u8; 8 * 512];
        b[0] = 1; // piece 0
        b[700] = 1; // piece 1
        b[5 * 512 + 3] = 1; // piece 5
        let runs: Vec<_> = nonzero_runs(&b, 512).collect();
        assert_eq!(runs, vec![0..1024, 2560..3072]);
        assert_eq!(nonzero_runs(&[0u8; 100], 512).count(), 0);
        // A short tail piece is reported up to the end of the buffer.
        let mut t = vec![0u8; 1000];
        t[999] = 1;
        assert_eq!(nonzero_runs(&t, 512).collect::<Vec<_>>(), vec![512..1000]);
    }
}
