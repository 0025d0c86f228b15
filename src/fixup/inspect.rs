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
use super::ntfs;
use super::probe::FsKind;
use super::windows;
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
        windows: None,
        findings: Vec::new(),
    };
    let lvm_findings = logical_volumes(&image, &mut report.partitions);
    report.findings.extend(lvm_findings);
    // An NTFS volume Windows left dirty, read before anything mounts it.
    let dirty: Vec<u32> = report
        .partitions
        .iter()
        .filter(|p| p.fs.kind == FsKind::Ntfs)
        .filter(|p| {
            ntfs::volume_flags(&image, p.start, p.size)
                .is_ok_and(|f| f & ntfs::VOLUME_IS_DIRTY != 0)
        })
        .map(|p| p.number)
        .collect();
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
            report.findings.extend(m.odd_files());
            break;
        }
    }
    if report.root_partition.is_none() {
        windows(path, &mut report, &dirty)?;
    }
    if report.root_partition.is_none() {
        report.findings.push(Finding::new(
            Class::Blocker,
            "root filesystem",
            "no partition holds a Linux root filesystem (/etc/os-release) or a Windows installation (Windows\\System32\\config\\SYSTEM); is this an OS disk?",
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

/// Looks for Windows on the NTFS partitions, read-only; the first one
/// holding its hives is the guest's.
fn windows(path: &Path, report: &mut Report, dirty: &[u32]) -> Result<(), Error> {
    let candidates: Vec<PartInfo> = report
        .partitions
        .iter()
        .filter(|p| p.fs.kind == FsKind::Ntfs)
        .cloned()
        .collect();
    for p in candidates {
        let m = Mounted::read_only(path, p.start, p.size, p.fs.kind)?;
        if !windows::is_windows(&m)? {
            continue;
        }
        report.root_partition = Some(p.number);
        if dirty.contains(&p.number) {
            report.findings.push(Finding::new(
                Class::Blocker,
                "NTFS volume",
                "the Windows volume is marked dirty (Windows did not close it cleanly), so it is not edited: run chkdsk or shut the instance down cleanly, then take the snapshot again",
            ));
        }
        let (info, plan, blockers) = windows::plan(&m)?;
        if let Some(i) = &info {
            report.os = Some(Os {
                id: "windows".into(),
                name: i.product.clone(),
                version: format!("{} build {}", i.version, i.build),
            });
        }
        // Windows Server 2008 R2 (6.1) has no Generation 2 support on Azure.
        if info.as_ref().is_some_and(|i| i.version == "6.1")
            && report.boot_mode == crate::kinds::BootMode::Uefi
        {
            report.findings.push(Finding::new(
                Class::Blocker,
                "boot",
                "Windows Server 2008 R2 boots only from BIOS on Azure (Generation 1 VMs), and this disk boots only by UEFI; migrate it from a BIOS (MBR) installation",
            ));
        }
        report.windows = info;
        report.findings.extend(blockers);
        if !windows::unsafe_to_edit(&report.findings) {
            report.findings.extend(plan.findings());
        }
        return Ok(());
    }
    Ok(())
}
