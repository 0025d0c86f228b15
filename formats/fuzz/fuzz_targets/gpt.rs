//! GPT parsing (and growth) on arbitrary disks.
#![no_main]

use diskformats::part::Gpt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(gpt)) = Gpt::read(data) {
        let _ = gpt.grow_writes(&[0u8; 512], data.len() as u64 * 2);
    }
});
