//! The master boot record: four primary entries and the chain of extended
//! boot records that holds logical partitions.

use std::collections::HashSet;

use crate::disk::Disk;
use crate::fields::{Bytes, Le};
use crate::Result;

/// Partition type of a GPT protective MBR entry.
pub const PROTECTIVE_TYPE: u8 = 0xee;
/// Longest chain of extended boot records followed (hostile images loop).
const MAX_LOGICAL: usize = 128;

const M_SIGNATURE: Bytes<2> = Bytes::at(510);
const M_DISK_ID: Le<u32> = Le::at(440);
const ENTRY_BASE: usize = 446;

/// One MBR partition (primary or logical).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrPartition {
    /// Number as Linux names it: 1-4 primary, 5 and up logical.
    pub number: u32,
    /// Boot indicator set.
    pub bootable: bool,
    /// Partition type byte.
    pub kind: u8,
    /// First sector (absolute).
    pub start_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
}

impl MbrPartition {
    /// A short name for the partition type.
    pub fn type_name(&self) -> &'static str {
        type_name(self.kind)
    }

    /// True for extended-partition containers (types 0x05, 0x0f, 0x85).
    pub fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0f | 0x85)
    }
}

/// A parsed MBR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mbr {
    /// The 32-bit disk signature.
    pub disk_signature: u32,
    /// Non-empty partitions, primaries first, then logical ones.
    pub partitions: Vec<MbrPartition>,
    /// Problems found while walking the table (loops, entries outside the disk).
    pub problems: Vec<String>,
}

fn entry(sector: &[u8], i: usize) -> (bool, u8, u32, u32) {
    let at = ENTRY_BASE + 16 * i;
    (
        sector[at] & 0x80 != 0,
        sector[at + 4],
        Le::<u32>::at(at + 8).get(sector),
        Le::<u32>::at(at + 12).get(sector),
    )
}

impl Mbr {
    /// Parses the primary entries of sector 0; `None` without the 0x55AA signature
    /// or when every entry is empty.
    pub fn parse(sector: &[u8; 512]) -> Option<Mbr> {
        if M_SIGNATURE.get(sector) != [0x55, 0xaa] {
            return None;
        }
        let partitions: Vec<_> = (0..4)
            .filter_map(|i| {
                let (bootable, kind, start, len) = entry(sector, i);
                (kind != 0 && len != 0).then_some(MbrPartition {
                    number: i as u32 + 1,
                    bootable,
                    kind,
                    start_lba: u64::from(start),
                    sectors: u64::from(len),
                })
            })
            .collect();
        if partitions.is_empty() {
            return None;
        }
        Some(Mbr {
            disk_signature: M_DISK_ID.get(sector),
            partitions,
            problems: Vec::new(),
        })
    }

    /// Reads the MBR of `disk`, following the extended partition's chain.
    pub fn read(disk: &(impl Disk + ?Sized)) -> Result<Option<Mbr>> {
        if disk.size() < 512 {
            return Ok(None);
        }
        let mut s0 = [0u8; 512];
        disk.read_at(&mut s0, 0)?;
        let Some(mut mbr) = Mbr::parse(&s0) else {
            return Ok(None);
        };
        let sectors = disk.size() / 512;
        if let Some(ext) = mbr.partitions.iter().find(|p| p.is_extended()).cloned() {
            mbr.walk_logical(disk, ext.start_lba)?;
        }
        for p in &mbr.partitions {
            if p.kind != PROTECTIVE_TYPE && p.start_lba + p.sectors > sectors {
                mbr.problems.push(format!(
                    "partition {} ends at sector {}, past the disk's {} sectors",
                    p.number,
                    p.start_lba + p.sectors,
                    sectors
                ));
            }
        }
        Ok(Some(mbr))
    }

    fn walk_logical(&mut self, disk: &(impl Disk + ?Sized), ext_start: u64) -> Result<()> {
        let sectors = disk.size() / 512;
        let mut seen = HashSet::new();
        let mut ebr = ext_start;
        let mut number = 5;
        for _ in 0..MAX_LOGICAL {
            if ebr >= sectors || !seen.insert(ebr) {
                if ebr < sectors {
                    self.problems
                        .push(format!("extended boot record chain loops at sector {ebr}"));
                } else {
                    self.problems.push(format!(
                        "extended boot record at sector {ebr} is past the disk"
                    ));
                }
                return Ok(());
            }
            let mut s = [0u8; 512];
            disk.read_at(&mut s, ebr * 512)?;
            if M_SIGNATURE.get(&s) != [0x55, 0xaa] {
                self.problems.push(format!(
                    "extended boot record at sector {ebr} has no signature"
                ));
                return Ok(());
            }
            let (bootable, kind, start, len) = entry(&s, 0);
            if kind != 0 && len != 0 {
                self.partitions.push(MbrPartition {
                    number,
                    bootable,
                    kind,
                    start_lba: ebr + u64::from(start),
                    sectors: u64::from(len),
                });
                number += 1;
            }
            let (_, next_kind, next, next_len) = entry(&s, 1);
            if next_kind == 0 || next_len == 0 {
                return Ok(());
            }
            ebr = ext_start + u64::from(next);
        }
        self.problems.push(format!(
            "more than {MAX_LOGICAL} logical partitions; the rest are not listed"
        ));
        Ok(())
    }

    /// True when the MBR is a GPT protective MBR.
    pub fn is_protective(&self) -> bool {
        self.partitions.iter().any(|p| p.kind == PROTECTIVE_TYPE)
    }
}

/// The protective MBR of `sector0` resized to cover a disk of `new_sectors`
/// sectors, or `None` when sector 0 has no protective entry that covered the
/// disk of `old_sectors` sectors (a hybrid MBR is left as it is).
pub fn resize_protective(
    sector0: &[u8; 512],
    old_sectors: u64,
    new_sectors: u64,
) -> Option<[u8; 512]> {
    if M_SIGNATURE.get(sector0) != [0x55, 0xaa] {
        return None;
    }
    let cover = |n: u64| u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX);
    for i in 0..4 {
        let (_, kind, start, len) = entry(sector0, i);
        if kind == PROTECTIVE_TYPE && start == 1 && len == cover(old_sectors) {
            let mut out = *sector0;
            Le::<u32>::at(ENTRY_BASE + 16 * i + 12).set(&mut out, cover(new_sectors));
            return Some(out);
        }
    }
    None
}

/// A short name for an MBR partition type byte ("other" when not named).
pub fn type_name(kind: u8) -> &'static str {
    super::kind::PartitionKind::from_mbr(kind)
        .name()
        .unwrap_or("other")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn set_entry(s: &mut [u8], i: usize, kind: u8, start: u32, len: u32) {
        let at = ENTRY_BASE + 16 * i;
        s[at + 4] = kind;
        s[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        s[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xaa;
    }

    #[test]
    fn primaries_and_logicals() {
        let mut d = vec![0u8; 4096 * 512];
        set_entry(&mut d[..512], 0, 0x83, 2048, 1000);
        set_entry(&mut d[..512], 1, 0x05, 3072, 1000);
        // EBR at 3072: logical at +63, next EBR at ext+500.
        set_entry(&mut d[3072 * 512..3073 * 512], 0, 0x82, 63, 100);
        set_entry(&mut d[3072 * 512..3073 * 512], 1, 0x05, 500, 400);
        set_entry(&mut d[3572 * 512..3573 * 512], 0, 0x83, 63, 200);
        let mbr = Mbr::read(&d[..]).unwrap().unwrap();
        let nums: Vec<_> = mbr
            .partitions
            .iter()
            .map(|p| (p.number, p.kind, p.start_lba))
            .collect();
        assert_eq!(
            nums,
            vec![
                (1, 0x83, 2048),
                (2, 0x05, 3072),
                (5, 0x82, 3135),
                (6, 0x83, 3635)
            ]
        );
        assert!(mbr.problems.is_empty(), "{:?}", mbr.problems);
    }

    #[test]
    fn a_looping_chain_is_reported_not_followed_forever() {
        let mut d = vec![0u8; 4096 * 512];
        set_entry(&mut d[..512], 0, 0x05, 100, 1000);
        set_entry(&mut d[100 * 512..101 * 512], 0, 0x83, 1, 10);
        set_entry(&mut d[100 * 512..101 * 512], 1, 0x05, 0, 10); // points at itself
        let mbr = Mbr::read(&d[..]).unwrap().unwrap();
        assert_eq!(mbr.partitions.len(), 2);
        assert!(mbr.problems[0].contains("loops"), "{:?}", mbr.problems);
    }

    #[test]
    fn protective_entry_is_resized() {
        let mut s = [0u8; 512];
        set_entry(&mut s, 0, 0xee, 1, 999);
        let out = resize_protective(&s, 1000, 4096).unwrap();
        assert_eq!(entry(&out, 0).3, 4095);
        assert!(
            resize_protective(&s, 2000, 4096).is_none(),
            "did not cover the old disk"
        );
        let big = resize_protective(&s, 1000, 1 << 40).unwrap();
        assert_eq!(entry(&big, 0).3, u32::MAX);
    }
}
