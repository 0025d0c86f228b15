//! The initramfs reader (cpio archives, gzip/zstd/lz4/xz/lzma segments,
//! capped unpacking) on arbitrary images.
#![no_main]

use ebs2azure::fixup::initramfs::{drivers_in, list, Contents};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Contents::Files(files)) = list(data) {
        let _ = drivers_in(&files, &["hv_vmbus", "hv_storvsc", "hv_netvsc"]);
    }
});
