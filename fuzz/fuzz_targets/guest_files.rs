//! A Linux guest's files, arbitrary, read and planned as `inspect` and
//! `fixup` do (os-release, fstab, GRUB, grubenv, BLS, netplan, ifcfg,
//! interfaces, cloud-init, initramfs), then the plan applied in memory.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;

use ebs2azure::fixup::apply::apply;
use ebs2azure::fixup::guest::GuestFs;
use ebs2azure::fixup::{linux, Error};
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

/// A guest filesystem in memory: files by path, directories implied.
struct MemFs(RefCell<BTreeMap<String, Vec<u8>>>);

impl GuestFs for MemFs {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.borrow().get(path).cloned())
    }
    fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let dir = format!("{}/", path.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .0
            .borrow()
            .keys()
            .filter_map(|k| k.strip_prefix(&dir))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        names.dedup();
        Ok(names)
    }
    fn exists(&self, path: &str) -> Result<bool, Error> {
        Ok(self.read(path)?.is_some() || !self.list(path)?.is_empty())
    }
    fn write(&self, path: &str, data: &[u8], _mode: u32) -> Result<(), Error> {
        self.0.borrow_mut().insert(path.to_owned(), data.to_vec());
        Ok(())
    }
    fn rename(&self, from: &str, to_name: &str) -> Result<(), Error> {
        let dir = from.rsplit_once('/').map_or("", |(d, _)| d);
        let mut files = self.0.borrow_mut();
        match files.remove(from) {
            Some(data) => {
                files.insert(format!("{dir}/{to_name}"), data);
                Ok(())
            }
            None => Err(Error::Guest(format!("{from} is missing"))),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut files = BTreeMap::new();
    for (path, piece) in PATHS.iter().zip(data.split(|&b| b == 0xFF)) {
        files.insert((*path).to_owned(), piece.to_vec());
    }
    files.insert(
        "/lib/modules/6.1.0-13-cloud-amd64/modules.builtin".into(),
        Vec::new(),
    );
    let fs = MemFs(RefCell::new(files));
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
