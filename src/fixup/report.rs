//! What `inspect` reports about a guest: its layout, OS, boot mode,
//! kernels and configuration, and the findings, most serious first. Plain
//! data, shared by inspection, the fix-up report and the printers.

use serde::{Deserialize, Serialize};

use super::layout::PartInfo;
use super::{Class, Finding};
use crate::kinds::{BootMode, HyperVGeneration};
use diskformats::TableKind;

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
    /// A Windows guest's product, version and control sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<super::windows::WindowsInfo>,
    /// Everything worth saying, most serious first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The partition or volume holding the root filesystem.
    pub fn root(&self) -> Option<&PartInfo> {
        self.partitions
            .iter()
            .find(|p| Some(p.number) == self.root_partition)
    }

    /// The findings of class `class`.
    pub fn of_class(&self, class: Class) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.class == class)
    }

    /// Puts blockers first, then fix-ups, then advice (stable within each).
    pub fn sort_findings(&mut self) {
        self.findings.sort_by_key(|f| match f.class {
            Class::Blocker => 0,
            Class::Fixup => 1,
            Class::Advice => 2,
        });
    }
}
