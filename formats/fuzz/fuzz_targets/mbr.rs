//! MBR and extended-partition chains on arbitrary disks.
#![no_main]

use diskformats::part::Mbr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Mbr::read(data);
});
