//! A Linux guest's files, arbitrary, read and planned as `inspect` and
//! `fixup` do (os-release, fstab, GRUB, grubenv, BLS, netplan, ifcfg,
//! interfaces, cloud-init, initramfs), then the plan applied in memory.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;

use ebs2azure::fixup::apply::apply;
use ebs2azure::fixup::guest::MemGuest;
use ebs2azure::fixup::linux;
use libfuzzer_sys::fuzz_target;

/// Where each piece of the input goes, in order (pieces split at 0xFF).
const PATHS: &[&str] = &[
    "/etc/os-release",
    "/etc/fstab",
    "/etc/default/grub",
    "/boot/grub/grubenv",
    "/etc/netplan/50-cloud-init.yaml",
    "/etc/sysconfig/network-scripts/ifcfg-eth0",
    "/etc/network/interfaces",
    "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
    "/boot/initrd.img-6.1.0-13-cloud-amd64",
    "/boot/loader/entries/a.conf",
    "/boot/grub/grub.cfg",
    "/etc/initramfs-tools/modules",
];

fuzz_target!(|data: &[u8]| {
    let mut files = BTreeMap::new();
    for (path, piece) in PATHS.iter().zip(data.split(|&b| b == 0xFF)) {
        files.insert((*path).to_owned(), piece.to_vec());
    }
    files.insert(
        "/lib/modules/6.1.0-13-cloud-amd64/modules.builtin".into(),
        Vec::new(),
    );
    let fs = MemGuest(RefCell::new(files));
    let Ok(mut report) = serde_json::from_value(serde_json::json!({
        "image": "fuzz", "table": "gpt", "partitions": [], "root_partition": null, "os": null,
        "boot_mode": "uefi", "hyper_v_generation": "V2", "kernels": [], "fstab": [],
        "cloud_init_datasources": null, "azure_agent": false, "findings": []
    })) else {
        return;
    };
    if linux::facts(&fs, &mut report).is_err() {
        return;
    }
    if let Ok(plan) = linux::plan_root(&fs, &report, &[]) {
        let _ = apply(&fs, &plan, false);
    }
});
