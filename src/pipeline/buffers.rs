//! The workers' write buffers, one run of blocks each: page-aligned, so a
//! file sink can hand them to direct I/O; reused, since faulting in
//! megabytes per run costs; and shareable as [`Bytes`], so that a sink that
//! sends them (an HTTP body) takes its slices without a copy. A buffer goes
//! back to its pool when the last slice of it is dropped.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::sink::BUFFER_ALIGN;

/// Spare buffers of one length.
pub(super) struct Pool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// Usable bytes per buffer.
    len: usize,
    /// Most spare buffers kept.
    keep: usize,
}

impl Pool {
    /// A pool of `len`-byte buffers that keeps up to `keep` spare.
    pub(super) fn new(len: usize, keep: usize) -> Arc<Pool> {
        Arc::new(Pool {
            spare: Mutex::new(Vec::new()),
            len,
            keep,
        })
    }

    /// A spare buffer, or a new one.
    pub(super) fn take(self: &Arc<Self>) -> Buf {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        Buf {
            data: spare.unwrap_or_else(|| vec![0u8; self.len + BUFFER_ALIGN]),
            pool: self.clone(),
        }
    }
}

/// One buffer, owned by one worker until shared.
pub(super) struct Buf {
    /// `len` usable bytes from the first aligned address.
    data: Vec<u8>,
    pool: Arc<Pool>,
}

impl Buf {
    fn start(&self) -> usize {
        self.data
            .as_ptr()
            .align_offset(BUFFER_ALIGN)
            .min(BUFFER_ALIGN)
    }

    /// The whole usable, aligned area.
    pub(super) fn as_mut(&mut self) -> &mut [u8] {
        let (start, len) = (self.start(), self.pool.len);
        &mut self.data[start..start + len]
    }

    /// The first `len` bytes, shared; the buffer returns to the pool when
    /// the last slice is dropped.
    pub(super) fn share(self, len: usize) -> Bytes {
        Bytes::from_owner(Shared {
            len: len.min(self.pool.len),
            buf: self,
        })
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        let mut spare = self
            .pool
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() < self.pool.keep && data.len() == self.pool.len + BUFFER_ALIGN {
            spare.push(data);
        }
    }
}

/// A buffer's first `len` bytes as the owner behind a [`Bytes`].
struct Shared {
    buf: Buf,
    len: usize,
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        let start = self.buf.start();
        &self.buf.data[start..start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_shared_without_a_copy_and_come_back() {
        let pool = Pool::new(3 * 4096, 1);
        let mut b = pool.take();
        let area = b.as_mut();
        assert!((area.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN));
        area[4096] = 7;
        let at = area.as_ptr();
        let shared = b.share(2 * 4096);
        assert_eq!(shared.len(), 2 * 4096);
        assert_eq!(shared.as_ptr(), at, "no copy");
        let slice = shared.slice(4096..);
        assert_eq!(slice[0], 7);
        drop(shared);
        assert!(
            pool.spare.lock().unwrap().is_empty(),
            "a slice still holds it"
        );
        drop(slice);
        assert_eq!(
            pool.spare.lock().unwrap().len(),
            1,
            "back once the last slice went"
        );
        let mut again = pool.take();
        assert_eq!(again.as_mut().as_ptr(), at, "reused");
        let other = pool.take();
        drop(again);
        drop(other);
        assert_eq!(pool.spare.lock().unwrap().len(), 1, "keeps at most `keep`");
    }
}
