//! Recognises a filesystem (or swap, or an LVM physical volume) from its
//! superblock, with its UUID and label, without mounting anything.

use diskformats::Disk;
use serde::{Deserialize, Serialize};

/// A filesystem (or what else a partition may hold), as blkid names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (one driver mounts them all).
    #[serde(rename = "ext4")]
    Ext4,
    /// XFS.
    #[serde(rename = "xfs")]
    Xfs,
    /// Btrfs.
    #[serde(rename = "btrfs")]
    Btrfs,
    /// FAT12/16/32 (an EFI system partition).
    #[serde(rename = "vfat")]
    Vfat,
    /// NTFS (a Windows volume; mounted through ntfs-3g).
    #[serde(rename = "ntfs")]
    Ntfs,
    /// Linux swap.
    #[serde(rename = "swap")]
    Swap,
    /// An LVM physical volume.
    #[serde(rename = "LVM2_member")]
    LvmMember,
    /// Nothing recognised.
    #[serde(rename = "unknown")]
    Unknown,
}

impl FsKind {
    /// The name blkid and `mount -t` use.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Swap => "swap",
            FsKind::LvmMember => "LVM2_member",
            FsKind::Unknown => "unknown",
        }
    }

    /// True for the filesystems a Linux root is looked for on (and mounted).
    pub fn may_hold_linux_root(self) -> bool {
        matches!(self, FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs)
    }
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What a partition holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The filesystem found.
    pub kind: FsKind,
    /// The UUID as fstab's `UUID=` takes it (FAT: the volume serial, XXXX-XXXX).
    pub uuid: Option<String>,
    /// The label, if any.
    pub label: Option<String>,
}

fn uuid_string(b: &[u8]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Reads `len` bytes at `offset` of the partition that starts at `start`.
fn read(
    disk: &(impl Disk + ?Sized),
    start: u64,
    size: u64,
    offset: u64,
    len: usize,
) -> Option<Vec<u8>> {
    if offset + len as u64 > size {
        return None;
    }
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, start + offset).ok()?;
    Some(buf)
}

/// Probes the partition at `start` (`size` bytes) of `disk`.
pub fn probe(disk: &(impl Disk + ?Sized), start: u64, size: u64) -> Probe {
    let unknown = Probe {
        kind: FsKind::Unknown,
        uuid: None,
        label: None,
    };
    if let Some(sb) = read(disk, start, size, 1024, 1024) {
        if sb[56..58] == [0x53, 0xEF] {
            return Probe {
                kind: FsKind::Ext4,
                uuid: Some(uuid_string(&sb[104..120])),
                label: label(&sb[120..136]),
            };
        }
    }
    if let Some(sb) = read(disk, start, size, 0, 512) {
        if &sb[0..4] == b"XFSB" {
            return Probe {
                kind: FsKind::Xfs,
                uuid: Some(uuid_string(&sb[32..48])),
                label: label(&sb[108..120]),
            };
        }
        if &sb[3..11] == b"NTFS    " {
            // The volume serial number, as Windows and blkid print it.
            let serial = u64::from_le_bytes([
                sb[72], sb[73], sb[74], sb[75], sb[76], sb[77], sb[78], sb[79],
            ]);
            return Probe {
                kind: FsKind::Ntfs,
                uuid: Some(format!("{serial:016X}")),
                label: None,
            };
        }
        if &sb[82..90] == b"FAT32   " || &sb[54..59] == b"FAT16" || &sb[54..59] == b"FAT12" {
            let (id, lab) = if &sb[82..90] == b"FAT32   " {
                (&sb[67..71], &sb[71..82])
            } else {
                (&sb[39..43], &sb[43..54])
            };
            let lab = label(lab).filter(|l| l != "NO NAME");
            return Probe {
                kind: FsKind::Vfat,
                uuid: Some(format!(
                    "{:02X}{:02X}-{:02X}{:02X}",
                    id[3], id[2], id[1], id[0]
                )),
                label: lab,
            };
        }
    }
    if let Some(sb) = read(disk, start, size, 512, 32) {
        if &sb[0..8] == b"LABELONE" && &sb[24..32] == b"LVM2 001" {
            return Probe {
                kind: FsKind::LvmMember,
                uuid: None,
                label: None,
            };
        }
    }
    if let Some(sb) = read(disk, start, size, 65536, 512) {
        if &sb[64..72] == b"_BHRfS_M" {
            return Probe {
                kind: FsKind::Btrfs,
                uuid: Some(uuid_string(&sb[32..48])),
                label: label(&sb[299..512]),
            };
        }
    }
    if let Some(page) = read(disk, start, size, 0, 4096) {
        if &page[4086..4096] == b"SWAPSPACE2" {
            return Probe {
                kind: FsKind::Swap,
                uuid: Some(uuid_string(&page[1036..1052])),
                label: label(&page[1052..1068]),
            };
        }
    }
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblocks_are_recognised() {
        let mut d = vec![0u8; 1 << 20];
        // ext4
        d[1024 + 56] = 0x53;
        d[1024 + 57] = 0xEF;
        d[1024 + 104..1024 + 120].copy_from_slice(&[0x11; 16]);
        d[1024 + 120..1024 + 124].copy_from_slice(b"root");
        let p = probe(&d[..], 0, 1 << 20);
        assert_eq!(p.kind, FsKind::Ext4);
        assert_eq!(
            p.uuid.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(p.label.as_deref(), Some("root"));
        // XFS in a partition further on.
        let start = 512 * 1024;
        d[start..start + 4].copy_from_slice(b"XFSB");
        let p = probe(&d[..], start as u64, 512 * 1024);
        assert_eq!(p.kind, FsKind::Xfs);
        // NTFS: the OEM id and the serial.
        let mut n = vec![0u8; 4096];
        n[3..11].copy_from_slice(b"NTFS    ");
        n[72..80].copy_from_slice(&0x0123_4567_89AB_CDEFu64.to_le_bytes());
        let p = probe(&n[..], 0, 4096);
        assert_eq!(p.kind, FsKind::Ntfs);
        assert_eq!(p.uuid.as_deref(), Some("0123456789ABCDEF"));
        // Nothing there.
        let z = vec![0u8; 8192];
        assert_eq!(probe(&z[..], 0, 8192).kind, FsKind::Unknown);
        // Too small to hold a superblock: no read past the partition.
        assert_eq!(probe(&d[..], 0, 100).kind, FsKind::Unknown);
    }
}
