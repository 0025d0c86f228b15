//! `inspect`: what an EC2 Linux guest needs before it boots on Azure.
//! Read-only: the filesystems are mounted without journal replay.

use std::path::Path;

use diskformats::{Disk, Format, Image, OpenOptions, PartitionKind, PartitionTable, TableKind};
use serde::{Deserialize, Serialize};

use super::esp::Esp;
use super::guest::GuestFs;
use super::mount::{check_host, Mounted};
use super::probe::{probe, FsKind, Probe};
use super::{Class, Error, Finding};
use crate::kinds::{BootMode, HyperVGeneration};

/// The Hyper-V drivers a guest needs, with the kernel options that build them in.
pub const HYPERV_DRIVERS: [(&str, &str); 3] = [
    ("hv_vmbus", "CONFIG_HYPERV"),
    ("hv_storvsc", "CONFIG_HYPERV_STORAGE"),
    ("hv_netvsc", "CONFIG_HYPERV_NET"),
];

/// Where a filesystem lives on the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// A partition of this kind.
    Partition(PartitionKind),
    /// A linear LVM logical volume, read at its offset in its physical volume.
    LogicalVolume {
        /// Its volume group.
        vg: String,
        /// Its name.
        name: String,
    },
    /// The whole disk (it has no partition table).
    WholeDisk,
}

impl VolumeKind {
    /// True for an EFI system partition, whatever the partition table.
    pub fn is_efi_system(&self) -> bool {
        *self == VolumeKind::Partition(PartitionKind::EfiSystem)
    }
}

impl std::fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeKind::Partition(k) => write!(f, "{k}"),
            VolumeKind::LogicalVolume { vg, name } => write!(f, "LVM volume {vg}/{name}"),
            VolumeKind::WholeDisk => f.write_str("whole disk"),
        }
    }
}

impl std::str::FromStr for VolumeKind {
    type Err = diskformats::part::kind::UnknownKind;

    fn from_str(s: &str) -> Result<VolumeKind, Self::Err> {
        if s == "whole disk" {
            return Ok(VolumeKind::WholeDisk);
        }
        if let Some((vg, name)) = s
            .strip_prefix("LVM volume ")
            .and_then(|v| v.split_once('/'))
        {
            return Ok(VolumeKind::LogicalVolume {
                vg: vg.to_owned(),
                name: name.to_owned(),
            });
        }
        s.parse().map(VolumeKind::Partition)
    }
}

/// A partition and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartInfo {
    /// Partition number (0: a disk with no partition table).
    pub number: u32,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type, or logical volume.
    #[serde(with = "crate::kinds::as_text")]
    pub kind: VolumeKind,
    /// Filesystem found.
    pub fs: Probe,
}

/// The distribution, from os-release.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Os {
    /// ID (debian, ubuntu, rhel, amzn, ...).
    pub id: String,
    /// PRETTY_NAME or NAME.
    pub name: String,
    /// VERSION_ID.
    pub version: String,
}

/// An installed kernel and where its Hyper-V drivers are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    /// Release, e.g. 6.1.0-26-cloud-amd64.
    pub version: String,
    /// Drivers built into the kernel.
    pub built_in: Vec<String>,
    /// Drivers present as loadable modules under /lib/modules.
    pub modules: Vec<String>,
    /// The kernel's initramfs, if found.
    pub initramfs: Option<String>,
    /// The Hyper-V drivers its initramfs holds, when it could be read.
    pub in_initramfs: Option<Vec<String>>,
}

/// An /etc/fstab entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FstabEntry {
    /// What is mounted (UUID=..., /dev/..., LABEL=...).
    pub spec: String,
    /// Where.
    pub mount_point: String,
    /// Filesystem type.
    pub fstype: String,
    /// Options.
    pub options: String,
}

/// What `inspect` found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The image.
    pub image: String,
    /// Partition table kind.
    #[serde(with = "crate::kinds::as_text")]
    pub table: TableKind,
    /// Partitions and their filesystems.
    pub partitions: Vec<PartInfo>,
    /// The partition holding the root filesystem (with /etc/os-release).
    pub root_partition: Option<u32>,
    /// The distribution.
    pub os: Option<Os>,
    /// How the disk boots.
    pub boot_mode: BootMode,
    /// The Hyper-V generation to create the disk with.
    pub hyper_v_generation: HyperVGeneration,
    /// Installed kernels.
    pub kernels: Vec<Kernel>,
    /// /etc/fstab.
    pub fstab: Vec<FstabEntry>,
    /// cloud-init's datasource_list, if set.
    pub cloud_init_datasources: Option<String>,
    /// True when the Azure Linux agent (waagent) is installed.
    pub azure_agent: bool,
    /// Everything worth saying, most serious first.
    pub findings: Vec<Finding>,
}

fn finding(class: Class, subject: &str, message: impl Into<String>) -> Finding {
    Finding {
        class,
        subject: subject.to_owned(),
        message: message.into(),
    }
}

/// Inspects the raw image or fixed VHD at `path`.
pub fn inspect(path: &Path) -> Result<Report, Error> {
    let shown = path.display().to_string();
    let image = Image::open(path, &OpenOptions::default()).map_err(|source| Error::Image {
        path: shown.clone(),
        source,
    })?;
    if image.format() == Format::VhdDynamic {
        return Err(Error::Host(format!(
            "{shown} is a dynamic VHD, which cannot be mounted in place; convert it first: ebs2azure convert {shown} --out disk.vhd"
        )));
    }
    let (table, parts) = read_partitions(&image, &shown)?;
    let bios = table == TableKind::Mbr
        || parts
            .iter()
            .any(|p| p.kind == VolumeKind::Partition(PartitionKind::BiosBoot));
    let uefi = parts.iter().any(|p| p.kind.is_efi_system());
    let boot_mode = BootMode::from_paths(bios, uefi);
    let mut report = Report {
        image: shown,
        table,
        partitions: parts,
        root_partition: None,
        os: None,
        boot_mode,
        hyper_v_generation: boot_mode.generation(),
        kernels: Vec::new(),
        fstab: Vec::new(),
        cloud_init_datasources: None,
        azure_agent: false,
        findings: Vec::new(),
    };
    let lvm_findings = logical_volumes(&image, &mut report.partitions);
    report.findings.extend(lvm_findings);
    drop(image);
    check_host()?;
    let candidates: Vec<PartInfo> = report
        .partitions
        .iter()
        .filter(|p| p.fs.kind.may_hold_linux_root())
        .cloned()
        .collect();
    for p in candidates {
        let m = Mounted::read_only(path, p.start, p.size, p.fs.kind)?;
        if m.exists("/etc/os-release")? || m.exists("/usr/lib/os-release")? {
            report.root_partition = Some(p.number);
            inspect_root(&m, &mut report)?;
            let esp = match super::apply::esp_partition(&report) {
                Some(e) => Some(Esp::open(path, e.start, e.size, false)?),
                None => None,
            };
            let pending = super::apply::pending(&m, esp.as_ref().map(|e| e as &dyn GuestFs))?;
            report.findings.extend(pending);
            break;
        }
    }
    if report.root_partition.is_none() {
        report.findings.push(finding(
            Class::Blocker,
            "root filesystem",
            "no partition holds a Linux root filesystem (/etc/os-release); is this an OS disk?",
        ));
    }
    if boot_mode == BootMode::Unknown && report.root_partition.is_some() {
        report.findings.push(finding(
            Class::Blocker,
            "boot",
            "the disk has neither an MBR, a BIOS boot partition nor an EFI system partition, so it cannot boot",
        ));
    }
    report.findings.sort_by_key(|f| match f.class {
        Class::Blocker => 0,
        Class::Fixup => 1,
        Class::Advice => 2,
    });
    Ok(report)
}

/// The partition table's kind and its partitions, each probed.
fn read_partitions(
    image: &(impl Disk + ?Sized),
    shown: &str,
) -> Result<(TableKind, Vec<PartInfo>), Error> {
    let table = PartitionTable::read(image).map_err(|source| Error::Image {
        path: shown.to_owned(),
        source,
    })?;
    let mut parts: Vec<PartInfo> = table
        .partitions()
        .into_iter()
        .map(|p| PartInfo {
            number: p.number,
            start: p.start,
            size: p.size,
            fs: probe(image, p.start, p.size),
            kind: VolumeKind::Partition(p.kind),
        })
        .collect();
    if parts.is_empty() {
        parts.push(PartInfo {
            number: 0,
            start: 0,
            size: image.size(),
            kind: VolumeKind::WholeDisk,
            fs: probe(image, 0, image.size()),
        });
    }
    Ok((table.kind(), parts))
}

/// Numbers given to logical volumes in reports: they follow the partitions.
pub const FIRST_VOLUME_NUMBER: u32 = 1001;

/// Adds the linear logical volumes of each LVM physical volume to the
/// report's partitions (so they are probed and searched for the root like
/// partitions), and says which volumes cannot be read.
fn logical_volumes(image: &(impl Disk + ?Sized), parts: &mut Vec<PartInfo>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let pvs: Vec<PartInfo> = parts
        .iter()
        .filter(|p| p.fs.kind == FsKind::LvmMember)
        .cloned()
        .collect();
    let mut number = FIRST_VOLUME_NUMBER;
    for pv in pvs {
        let subject = format!("LVM physical volume on partition {}", pv.number);
        match super::lvm::volumes(image, pv.start, pv.size) {
            Err(why) => findings.push(finding(
                Class::Advice,
                &subject,
                format!("{why}; its logical volumes are not inspected"),
            )),
            Ok(lvs) => {
                for lv in lvs {
                    match lv.linear {
                        Some((off, len)) => {
                            parts.push(PartInfo {
                                number,
                                start: pv.start + off,
                                size: len,
                                kind: VolumeKind::LogicalVolume {
                                    vg: lv.vg.clone(),
                                    name: lv.name.clone(),
                                },
                                fs: probe(image, pv.start + off, len),
                            });
                            number += 1;
                        }
                        None => findings.push(finding(
                            Class::Advice,
                            &format!("LVM volume {}/{}", lv.vg, lv.name),
                            format!(
                                "{}; only linear volumes are read here (this host has no device-mapper), so it is not inspected",
                                lv.why_not.unwrap_or_default()
                            ),
                        )),
                    }
                }
            }
        }
    }
    findings
}

/// The partitions of the image at `path`, then its linear LVM logical
/// volumes, with their filesystems, from the partition table, the LVM
/// metadata and superblocks alone (nothing is mounted).
pub fn partitions(path: &Path) -> Result<Vec<PartInfo>, Error> {
    let shown = path.display().to_string();
    let image = Image::open(path, &OpenOptions::default()).map_err(|source| Error::Image {
        path: shown.clone(),
        source,
    })?;
    partitions_of(&image, &shown)
}

/// The same for any disk (`shown` names it in errors), such as a snapshot
/// read a few blocks at a time.
pub fn partitions_of(disk: &(impl Disk + ?Sized), shown: &str) -> Result<Vec<PartInfo>, Error> {
    let mut parts = read_partitions(disk, shown)?.1;
    logical_volumes(disk, &mut parts);
    Ok(parts)
}

/// The value of KEY in an os-release or shell-style assignment file.
fn value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

fn inspect_root(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let osr = match m.read_text("/etc/os-release")? {
        Some(t) => Some(t),
        None => m.read_text("/usr/lib/os-release")?,
    };
    if let Some(t) = osr {
        let id = value(&t, "ID").unwrap_or_default();
        let name = value(&t, "PRETTY_NAME")
            .or_else(|| value(&t, "NAME"))
            .unwrap_or_default();
        if id == "amzn" {
            r.findings.push(finding(
                Class::Blocker,
                "/etc/os-release",
                format!("{name} runs only on AWS (its kernel, repositories and support are tied to EC2); move the workload to a distribution Azure supports"),
            ));
        }
        r.os = Some(Os {
            id,
            name,
            version: value(&t, "VERSION_ID").unwrap_or_default(),
        });
    }
    kernels(m, r)?;
    fstab(m, r)?;
    boot_config(m, r)?;
    cloud_init(m, r)?;
    network(m, r)?;
    r.azure_agent = m.exists("/usr/sbin/waagent")?
        || m.exists("/usr/lib/systemd/system/walinuxagent.service")?
        || m.exists("/lib/systemd/system/walinuxagent.service")?
        || m.exists("/usr/lib/systemd/system/waagent.service")?;
    if !r.azure_agent {
        r.findings.push(finding(
            Class::Advice,
            "Azure Linux agent",
            "the Azure Linux agent (walinuxagent) is not installed; install it for extensions, password resets and boot diagnostics",
        ));
    }
    for f in m.list("/etc/modprobe.d")? {
        let path = format!("/etc/modprobe.d/{f}");
        let text = m.read_text(&path)?.unwrap_or_default();
        for module in ["udf", "vfat"] {
            let blacklisted = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.first() == Some(&"blacklist") && w.get(1) == Some(&module))
                    || (w.first() == Some(&"install")
                        && w.get(1) == Some(&module)
                        && l.contains("/bin/true"))
            });
            if blacklisted {
                r.findings.push(finding(
                    Class::Advice,
                    &path,
                    format!("{module} is disabled; Azure provisioning reads its settings from a {module} disk, so allow it"),
                ));
            }
        }
    }
    Ok(())
}

fn kernels(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let boot = m.list("/boot")?;
    let mut versions: Vec<String> = boot
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .collect();
    for v in m.list("/lib/modules")? {
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    versions.sort();
    for v in versions {
        let config = m
            .read_text(&format!("/boot/config-{v}"))?
            .unwrap_or_default();
        let builtin_list = m
            .read_text(&format!("/lib/modules/{v}/modules.builtin"))?
            .unwrap_or_default();
        let modules_dep = m
            .read_text(&format!("/lib/modules/{v}/modules.dep"))?
            .unwrap_or_default();
        let mut built_in = Vec::new();
        let mut modules = Vec::new();
        for (driver, option) in HYPERV_DRIVERS {
            let file = format!("/{driver}.ko");
            if config.lines().any(|l| l.trim() == format!("{option}=y"))
                || builtin_list.lines().any(|l| l.trim().ends_with(&file))
            {
                built_in.push(driver.to_owned());
            } else if modules_dep.lines().any(|l| {
                l.split(':').next().is_some_and(|p| {
                    p.ends_with(&file)
                        || p.ends_with(&format!("{file}.xz"))
                        || p.ends_with(&format!("{file}.zst"))
                })
            }) {
                modules.push(driver.to_owned());
            }
        }
        let initramfs = [
            format!("initrd.img-{v}"),
            format!("initramfs-{v}.img"),
            format!("initrd-{v}"),
        ]
        .into_iter()
        .find(|n| boot.contains(n))
        .map(|n| format!("/boot/{n}"));
        let missing: Vec<&str> = HYPERV_DRIVERS
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| !built_in.iter().any(|b| b == d) && !modules.iter().any(|b| b == d))
            .collect();
        if !missing.is_empty() {
            r.findings.push(finding(
                Class::Blocker,
                &format!("kernel {v}"),
                format!("kernel {v} has neither built in nor as modules the Hyper-V drivers {}; install a kernel with them (e.g. the distribution's generic or Azure kernel) on the source before the final snapshot", missing.join(", ")),
            ));
        } else if !modules.is_empty() && !initramfs_configured(m)? {
            let configurable =
                m.exists("/etc/initramfs-tools")? || m.exists("/etc/dracut.conf.d")?;
            r.findings.push(finding(
                if configurable { Class::Fixup } else { Class::Advice },
                &format!("kernel {v}"),
                if configurable {
                    format!("{} are modules of kernel {v}; fixup lists them in the dracut or initramfs-tools configuration so that every rebuilt initramfs keeps them", modules.join(", "))
                } else {
                    format!("{} are modules of kernel {v}; make sure whatever builds its initramfs keeps them (no dracut or initramfs-tools configuration was found)", modules.join(", "))
                },
            ));
        }
        let in_initramfs = if missing.is_empty() && !modules.is_empty() {
            initramfs_drivers(m, r, &v, initramfs.as_deref(), &modules)?
        } else {
            None
        };
        r.kernels.push(Kernel {
            version: v,
            built_in,
            modules,
            initramfs,
            in_initramfs,
        });
    }
    if r.kernels.is_empty() {
        r.findings.push(finding(
            Class::Blocker,
            "/boot",
            "no kernel was found in /boot or /lib/modules; /boot may be a separate partition this image lacks",
        ));
    }
    Ok(())
}

/// True when the initramfs-tools or dracut configuration already asks for the Hyper-V drivers.
fn initramfs_configured(m: &dyn GuestFs) -> Result<bool, Error> {
    let listed = m
        .read_text("/etc/initramfs-tools/modules")?
        .unwrap_or_default();
    let all = HYPERV_DRIVERS.iter().all(|(d, _)| {
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(d))
    });
    if all {
        return Ok(true);
    }
    for f in m.list("/etc/dracut.conf.d")? {
        let t = m
            .read_text(&format!("/etc/dracut.conf.d/{f}"))?
            .unwrap_or_default();
        if t.contains("hv_storvsc") && t.contains("hv_vmbus") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Which of `modules` the kernel's initramfs holds; adds a finding when
/// boot-critical ones are missing or the image cannot be read.
fn initramfs_drivers(
    m: &dyn GuestFs,
    r: &mut Report,
    version: &str,
    path: Option<&str>,
    modules: &[String],
) -> Result<Option<Vec<String>>, Error> {
    let subject = format!("kernel {version}");
    let rebuild = "on the source, add them (dracut: add_drivers+=\" hv_vmbus hv_storvsc \" in /etc/dracut.conf.d/; initramfs-tools: /etc/initramfs-tools/modules), rebuild the initramfs (dracut -f, update-initramfs -u) and take the snapshot again";
    let Some(path) = path else {
        r.findings.push(finding(
            Class::Blocker,
            &subject,
            format!("kernel {version} loads its Hyper-V storage drivers as modules but has no initramfs in /boot; {rebuild}"),
        ));
        return Ok(None);
    };
    let Some(data) = m.read(path)? else {
        return Ok(None);
    };
    let files = match super::initramfs::list(&data) {
        Ok(super::initramfs::Contents::Files(f)) => f,
        Ok(super::initramfs::Contents::Unsupported(kind)) => {
            r.findings.push(finding(
                Class::Advice,
                path,
                format!("{path} is compressed with {kind}, which is not read here; check by hand that it holds hv_vmbus and hv_storvsc"),
            ));
            return Ok(None);
        }
        Err(why) => {
            r.findings.push(finding(
                Class::Advice,
                path,
                format!("{path} could not be read ({why}); check by hand that it holds hv_vmbus and hv_storvsc"),
            ));
            return Ok(None);
        }
    };
    let names: Vec<&str> = modules.iter().map(String::as_str).collect();
    let present = super::initramfs::drivers_in(&files, &names);
    let lacking: Vec<&str> = ["hv_vmbus", "hv_storvsc"]
        .into_iter()
        .filter(|d| modules.iter().any(|x| x == d) && !present.iter().any(|p| p == d))
        .collect();
    if !lacking.is_empty() {
        r.findings.push(finding(
            Class::Blocker,
            path,
            format!(
                "{path} lacks {}, so the kernel will not find its disk on Azure; {rebuild}",
                lacking.join(" and ")
            ),
        ));
    }
    Ok(Some(present))
}

fn fstab(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let Some(text) = m.read_text("/etc/fstab")? else {
        r.findings.push(finding(
            Class::Advice,
            "/etc/fstab",
            "there is no /etc/fstab (or it is a link out of the guest); the root filesystem comes from the kernel command line",
        ));
        return Ok(());
    };
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 3 {
            continue;
        }
        let e = FstabEntry {
            spec: w[0].to_owned(),
            mount_point: w[1].to_owned(),
            fstype: w[2].to_owned(),
            options: w.get(3).copied().unwrap_or("defaults").to_owned(),
        };
        let device_path = ["/dev/xvd", "/dev/sd", "/dev/nvme", "/dev/hd"]
            .iter()
            .any(|p| e.spec.starts_with(p));
        if e.fstype == "swap" {
            r.findings.push(finding(
                Class::Advice,
                "/etc/fstab",
                format!("swap on {} is on the disk; Azure puts swap on the VM's resource disk (cloud-init or waagent settings)", e.spec),
            ));
        } else if device_path
            && (e.mount_point.starts_with("/media/ephemeral")
                || e.mount_point == "/mnt" && e.spec.starts_with("/dev/xvdb"))
        {
            r.findings.push(finding(
                Class::Fixup,
                "/etc/fstab",
                format!("{} on {} looks like an EC2 instance-store volume, which does not move; fixup comments it out", e.spec, e.mount_point),
            ));
        } else if device_path {
            let root = e.mount_point == "/";
            let this_disk = root || super::apply::root_disk_partition(&e.spec).is_some();
            let boot = matches!(e.mount_point.as_str(), "/boot" | "/boot/efi");
            let what = if root || (this_disk && boot) {
                "fixup mounts it by UUID"
            } else if this_disk {
                "fixup mounts it by UUID with nofail"
            } else {
                "it is on another disk: fixup mounts it by UUID when given that disk (--data-disk DEVICE=IMAGE), otherwise comments it out with a note"
            };
            r.findings.push(finding(
                Class::Fixup,
                "/etc/fstab",
                format!(
                    "{} for {} is an AWS device name that will not exist on Azure (disks are sd* there); {what}",
                    e.spec, e.mount_point,
                ),
            ));
        } else if e.mount_point != "/"
            && !e.options.split(',').any(|o| o == "nofail")
            && e.mount_point != "/boot"
            && e.mount_point != "/boot/efi"
        {
            r.findings.push(finding(
                Class::Fixup,
                "/etc/fstab",
                format!("{} has no nofail: if that disk is not attached on Azure the VM stops at boot; fixup adds nofail", e.mount_point),
            ));
        }
        r.fstab.push(e);
    }
    Ok(())
}

fn boot_config(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let grub = m.read_text("/etc/default/grub")?.unwrap_or_default();
    let cmdline = value(&grub, "GRUB_CMDLINE_LINUX").unwrap_or_default()
        + " "
        + &value(&grub, "GRUB_CMDLINE_LINUX_DEFAULT").unwrap_or_default();
    if !grub.is_empty() && !cmdline.contains("console=ttyS0") {
        r.findings.push(finding(
            Class::Fixup,
            "/etc/default/grub",
            "the kernel command line has no console=ttyS0, so Azure's serial console and boot diagnostics stay blank; fixup adds console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300",
        ));
    }
    if cmdline.contains("console=hvc0") || cmdline.contains("xen") {
        r.findings.push(finding(
            Class::Fixup,
            "/etc/default/grub",
            "the kernel command line has Xen console settings (console=hvc0 or xen_*), which do nothing on Hyper-V; fixup drops them",
        ));
    }
    Ok(())
}

fn cloud_init(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_owned()];
    files.extend(
        m.list("/etc/cloud/cloud.cfg.d")?
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
    );
    let mut installed = false;
    for f in files {
        let Some(text) = m.read_text(&f)? else {
            continue;
        };
        installed = true;
        for l in text.lines() {
            if let Some(v) = l.trim().strip_prefix("datasource_list:") {
                let v = v.trim().to_owned();
                if !v.contains("Azure")
                    || v.find("Ec2")
                        .is_some_and(|e| v.find("Azure").is_some_and(|a| e < a))
                {
                    r.findings.push(finding(
                        Class::Fixup,
                        &f,
                        format!("cloud-init's datasource_list {v} does not put Azure first, so it waits for the EC2 metadata service; fixup lists Azure first"),
                    ));
                }
                r.cloud_init_datasources = Some(v);
            }
        }
        let name = f.rsplit('/').next().unwrap_or_default();
        if f.starts_with("/etc/cloud/cloud.cfg.d/") && super::apply::ec2_only(name) {
            r.findings.push(finding(
                Class::Fixup,
                &f,
                "this cloud-init configuration was written for EC2; fixup disables it",
            ));
        }
    }
    if !installed && !r.azure_agent {
        r.findings.push(finding(
            Class::Advice,
            "cloud-init",
            "cloud-init is not installed; Azure provisioning needs cloud-init or the Azure Linux agent",
        ));
    }
    Ok(())
}

fn network(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    for f in [
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/etc/udev/rules.d/75-persistent-net-generator.rules",
    ] {
        if m.exists(f)? {
            r.findings.push(finding(
                Class::Fixup,
                f,
                "persistent-net rules pin interface names to the AWS NIC's MAC address, so Azure's NIC gets another name; fixup removes them",
            ));
        }
    }
    for n in m.list("/etc/netplan")? {
        if !n.ends_with(".yaml") {
            continue;
        }
        let f = format!("/etc/netplan/{n}");
        let t = m.read_text(&f)?.unwrap_or_default();
        if t.contains("ens5") && !t.contains("Written by ebs2azure") && n != "50-cloud-init.yaml" {
            r.findings.push(finding(
                Class::Advice,
                &f,
                "the interface is named ens5, EC2's name; on Azure it has another name (net.ifnames=0 and DHCP on eth0 is the safe form)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_values_are_read() {
        let t = "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID='12'\n";
        assert_eq!(value(t, "ID").as_deref(), Some("debian"));
        assert_eq!(value(t, "NAME").as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(value(t, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(value(t, "MISSING"), None);
    }
}
