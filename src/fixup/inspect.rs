//! `inspect`: what a guest needs before it boots on Azure. Read-only: the
//! filesystems are mounted without journal replay. The blockers and advice
//! come from the OS rules' facts; every fix-up finding comes from the same
//! plan that `fixup` carries out ([`super::plan`]), so the two agree.

use std::path::Path;

use diskformats::{Format, Image, OpenOptions};

use super::esp::Esp;
use super::layout::{self, logical_volumes, read_partitions, PartInfo};
use super::linux;
use super::mount::{check_host, Mounted};
use super::{Class, Error, Finding};

pub use super::report::{FstabEntry, Kernel, Os, Report};

/// Inspects the raw image or fixed VHD at `path`.
pub fn inspect(path: &Path) -> Result<Report, Error> {
    let shown = path.display().to_string();
    let image = Image::open(path, &OpenOptions::default()).map_err(|source| Error::Image {
        path: shown.clone(),
        source,
    })?;
    if image.format() == Format::VhdDynamic {
        return Err(Error::DynamicVhd { path: shown });
    }
    let (table, parts) = read_partitions(&image, &shown)?;
    let boot_mode = layout::boot_mode(table, &parts);
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
        if linux::is_root(&m)? {
            report.root_partition = Some(p.number);
            linux::facts(&m, &mut report)?;
            let mut found = linux::plan_root(&m, &report, &[])?.findings();
            if let Some(e) = layout::esp(&report.partitions) {
                let esp = Esp::open(path, e.start, e.size, false)?;
                found.extend(linux::plan_esp(&esp)?.findings());
            }
            report.findings.extend(found);
            break;
        }
    }
    if report.root_partition.is_none() {
        report.findings.push(Finding::new(
            Class::Blocker,
            "root filesystem",
            "no partition holds a Linux root filesystem (/etc/os-release); is this an OS disk?",
        ));
    }
    if boot_mode == crate::kinds::BootMode::Unknown && report.root_partition.is_some() {
        report.findings.push(Finding::new(
            Class::Blocker,
            "boot",
            "the disk has neither an MBR, a BIOS boot partition nor an EFI system partition, so it cannot boot",
        ));
    }
    report.sort_findings();
    Ok(report)
}
