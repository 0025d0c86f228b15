//! LVM2 physical volume labels and text metadata on arbitrary disks.
#![no_main]

use ebs2azure::fixup::lvm::volumes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = volumes(data, 0, data.len() as u64);
    if data.len() > 512 {
        let _ = volumes(data, 512, data.len() as u64 - 512);
    }
});
