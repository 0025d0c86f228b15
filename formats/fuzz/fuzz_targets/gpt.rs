//! GPT parsing (and growth) on arbitrary disks.
#![no_main]

use std::ops::Range;

use diskformats::part::Gpt;
use diskformats::{Disk, Error};
use libfuzzer_sys::fuzz_target;

struct Mem<'a>(&'a [u8]);

impl Disk for Mem<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let o = usize::try_from(offset).map_err(|_| Error::OutOfRange { offset, len: 0, size: 0 })?;
        let src = self.0.get(o..o + buf.len()).ok_or(Error::OutOfRange {
            offset,
            len: buf.len() as u64,
            size: self.size(),
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn next_data(&self, o: u64) -> Result<Option<Range<u64>>, Error> {
        Ok((o < self.size()).then(|| o..self.size()))
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(gpt)) = Gpt::read(&Mem(data)) {
        let _ = gpt.grow_writes(&[0u8; 512], data.len() as u64 * 2);
    }
});
