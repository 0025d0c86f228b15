//! Superblock probes (ext4, XFS, btrfs, NTFS, FAT, swap, LVM), the NTFS
//! volume flags and the partition layout, on arbitrary disks.
#![no_main]

use ebs2azure::fixup::{layout, ntfs, probe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let _ = probe::probe(data, 0, size);
    let _ = ntfs::volume_flags(data, 0, size);
    let _ = ntfs::hibernated(data);
    let _ = layout::partitions_of(data, "fuzz");
});
