//! The guest disk's layout, read without mounting anything: its partitions
//! and linear LVM logical volumes, the filesystem each holds (from its
//! superblock), how the disk boots, and the same for the machine's other
//! disks ([`DataDisk`]), so that fstab can name them by UUID.

use std::path::Path;

use diskformats::{Disk, Image, OpenOptions, PartitionKind, PartitionTable, TableKind};
use serde::{Deserialize, Serialize};

use super::probe::{probe, FsKind, Probe};
use super::{Class, Error, Finding};
use crate::kinds::BootMode;

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
        // Through `pad`, so that widths in format strings apply.
        match self {
            VolumeKind::Partition(k) => f.pad(&k.to_string()),
            VolumeKind::LogicalVolume { vg, name } => f.pad(&format!("LVM volume {vg}/{name}")),
            VolumeKind::WholeDisk => f.pad("whole disk"),
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

/// How a disk with this table and these partitions boots: BIOS through an
/// MBR or a GPT's BIOS boot partition, UEFI through an EFI system partition
/// (of either table).
pub fn boot_mode(table: TableKind, parts: &[PartInfo]) -> BootMode {
    let bios = table == TableKind::Mbr
        || parts
            .iter()
            .any(|p| p.kind == VolumeKind::Partition(PartitionKind::BiosBoot));
    let uefi = parts.iter().any(|p| p.kind.is_efi_system());
    BootMode::from_paths(bios, uefi)
}

/// The EFI system partition, when it holds a FAT filesystem.
pub fn esp(parts: &[PartInfo]) -> Option<&PartInfo> {
    parts
        .iter()
        .find(|p| p.kind.is_efi_system() && p.fs.kind == FsKind::Vfat)
}

/// The partition table's kind and its partitions, each probed.
pub(crate) fn read_partitions(
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
pub(crate) fn logical_volumes(
    image: &(impl Disk + ?Sized),
    parts: &mut Vec<PartInfo>,
) -> Vec<Finding> {
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
            Err(why) => findings.push(Finding::new(
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
                        None => findings.push(Finding::new(
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

/// Another disk of the same machine, so fstab entries naming its device can
/// be turned into UUIDs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataDisk {
    /// Its device on EC2, as fstab names it (`/dev/xvdf`, `/dev/sdf`, `/dev/nvme1n1`).
    pub device: String,
    /// Its partitions (number 0: a filesystem on the whole disk).
    pub partitions: Vec<PartInfo>,
}

impl DataDisk {
    /// Reads the partition table and filesystem UUIDs of the image at `path`.
    pub fn probe(device: &str, path: &Path) -> Result<DataDisk, Error> {
        Ok(DataDisk {
            device: device.to_owned(),
            partitions: partitions(path)?,
        })
    }

    /// The same from any disk, such as a snapshot read a few blocks at a time
    /// ([`crate::source::snapshot_disk::SnapshotDisk`]); `shown` names it in errors.
    pub fn probe_disk(
        device: &str,
        disk: &(impl diskformats::Disk + ?Sized),
        shown: &str,
    ) -> Result<DataDisk, Error> {
        Ok(DataDisk {
            device: device.to_owned(),
            partitions: partitions_of(disk, shown)?,
        })
    }

    /// The UUID of the filesystem `spec` names on this disk, if it is one.
    pub fn uuid_of(&self, spec: &str) -> Option<String> {
        let names = |d: &str| -> Vec<String> {
            let mut v = vec![d.to_owned()];
            // Xen and SCSI names of one EC2 device are interchangeable.
            if let Some(r) = d.strip_prefix("/dev/xvd") {
                v.push(format!("/dev/sd{r}"));
            } else if let Some(r) = d.strip_prefix("/dev/sd") {
                v.push(format!("/dev/xvd{r}"));
            }
            v
        };
        let number = names(&self.device).into_iter().find_map(|d| {
            let rest = spec.strip_prefix(d.as_str())?;
            if rest.is_empty() {
                return Some(0);
            }
            rest.strip_prefix('p').unwrap_or(rest).parse::<u32>().ok()
        })?;
        let found = self.partitions.iter().find(|p| p.number == number);
        // A bare device whose only filesystem is its first partition.
        let found = match (found, number) {
            (None, 0) if self.partitions.len() == 1 => self.partitions.first(),
            (f, _) => f,
        };
        found.and_then(|p| p.fs.uuid.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 MiB MBR disk whose one partition (type `kind`, at 1 MiB) holds a FAT32 boot sector.
    fn mbr_disk(kind: u8) -> Vec<u8> {
        let mut d = vec![0u8; 4 << 20];
        let e = 446;
        d[e + 4] = kind;
        d[e + 8..e + 12].copy_from_slice(&2048u32.to_le_bytes());
        d[e + 12..e + 16].copy_from_slice(&4096u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        let fat = 2048 * 512;
        d[fat + 82..fat + 90].copy_from_slice(b"FAT32   ");
        d[fat + 67..fat + 71].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
        d
    }

    #[test]
    fn the_esp_of_an_mbr_disk_is_found() {
        let disk = mbr_disk(0xef);
        let (table, parts) = read_partitions(&disk[..], "mem").unwrap();
        assert_eq!(table, TableKind::Mbr);
        let found = esp(&parts).expect("an MBR 0xEF partition with FAT is the ESP");
        assert_eq!((found.number, found.start), (1, 1 << 20));
        assert_eq!(found.fs.uuid.as_deref(), Some("1234-5678"));
        assert_eq!(boot_mode(table, &parts), BootMode::BiosAndUefi);
        // Its kind prints as the GPT one does, and reads back.
        assert_eq!(found.kind.to_string(), "EFI system");
        let json = serde_json::to_value(found).unwrap();
        let back: PartInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back.kind, found.kind);
        // A FAT partition of another type is not an ESP.
        let (_, parts) = read_partitions(&mbr_disk(0x0c)[..], "mem").unwrap();
        assert!(esp(&parts).is_none());
    }

    #[test]
    fn volume_kinds_read_back() {
        for k in [
            VolumeKind::WholeDisk,
            VolumeKind::LogicalVolume {
                vg: "vg0".into(),
                name: "root".into(),
            },
            VolumeKind::Partition(PartitionKind::BiosBoot),
            VolumeKind::Partition(PartitionKind::OtherMbr(0x42)),
        ] {
            assert_eq!(k.to_string().parse::<VolumeKind>().unwrap(), k);
        }
    }
}
