//! The guest file edits, each on arbitrary text: what `fixup` writes must
//! come out of any input without a panic.
#![no_main]

use ebs2azure::fixup::edits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edits::fix_grubenv(data);
    let text = String::from_utf8_lossy(data);
    let _ = edits::fix_fstab(
        &text,
        Some("0e6f2a7c-1111-4222-8333-944455556666"),
        &[],
        &[],
    );
    let _ = edits::fix_fstab(&text, None, &[], &[]);
    let _ = edits::fix_grub(&text);
    let _ = edits::fix_grub_cfg(&text);
    let _ = edits::fix_bls(&text);
    let _ = edits::fix_cmdline(&text);
    let _ = edits::fix_cloud_init(&text);
    let _ = edits::fix_initramfs_modules(&text);
    let _ = edits::fix_interfaces(&text);
    let _ = edits::names_other_interface(&text);
    let _ = edits::declares_eth0(&text);
    let _ = edits::nic_pinning(&text);
    let _ = edits::ifcfg_pinned(&text);
    let _ = edits::datasources_need_azure_first(&text);
    for word in text.split_whitespace().take(64) {
        let _ = edits::is_device_path(word);
        let _ = edits::root_disk_partition(word);
        let _ = edits::is_instance_store(word, "/mnt");
        let _ = edits::is_xen_arg(word);
        let _ = edits::ec2_only(word);
    }
});
