//! Partition tables: MBR and GPT, read into one listing.

pub mod gpt;
pub mod guid;
pub mod mbr;

use crate::disk::Disk;
use crate::Result;
pub use gpt::{Gpt, GptHeader, GptPartition};
pub use guid::Guid;
pub use mbr::{Mbr, MbrPartition};

/// The partition table found on a disk.
#[derive(Clone, Debug)]
pub enum PartitionTable {
    /// No MBR signature and no GPT.
    None,
    /// An MBR without GPT.
    Mbr(Mbr),
    /// A GPT signature whose primary and backup tables are both damaged.
    DamagedGpt {
        /// Sector 0's MBR.
        mbr: Option<Mbr>,
        /// What is wrong.
        problem: String,
    },
    /// A GPT (with its protective or hybrid MBR, if any).
    Gpt {
        /// Sector 0's MBR.
        mbr: Option<Mbr>,
        /// The GPT.
        gpt: Gpt,
    },
}

/// One partition, whatever the table type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Partition number as Linux names it.
    pub number: u32,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type: a name when known, else the GUID or the MBR type byte.
    pub kind: String,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// GPT unique partition GUID.
    pub guid: Option<String>,
}

impl PartitionTable {
    /// Reads the partition table of `disk`.
    ///
    /// ```
    /// use diskformats::{PartitionTable, vhd::FixedVhdWriter, Image, OpenOptions};
    /// let tmp = tempfile::NamedTempFile::new()?;
    /// FixedVhdWriter::create(tmp.reopen()?, 8 << 20)?.finish()?;
    /// let img = Image::open(tmp.path(), &OpenOptions::default())?;
    /// assert!(matches!(PartitionTable::read(&img)?, PartitionTable::None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(disk: &(impl Disk + ?Sized)) -> Result<PartitionTable> {
        let mbr = Mbr::read(disk)?;
        match Gpt::read(disk) {
            Ok(Some(gpt)) => return Ok(PartitionTable::Gpt { mbr, gpt }),
            Ok(None) => {}
            Err(e @ crate::Error::Invalid { .. }) => {
                return Ok(PartitionTable::DamagedGpt {
                    mbr,
                    problem: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        }
        Ok(match mbr {
            Some(m) => PartitionTable::Mbr(m),
            None => PartitionTable::None,
        })
    }

    /// "gpt", "mbr" or "none".
    pub fn kind(&self) -> &'static str {
        match self {
            PartitionTable::None => "none",
            PartitionTable::Mbr(_) => "mbr",
            PartitionTable::Gpt { .. } => "gpt",
            PartitionTable::DamagedGpt { .. } => "gpt (damaged)",
        }
    }

    /// Every partition, in table order.
    pub fn partitions(&self) -> Vec<Partition> {
        match self {
            PartitionTable::None | PartitionTable::DamagedGpt { .. } => Vec::new(),
            PartitionTable::Mbr(m) => m
                .partitions
                .iter()
                .map(|p| Partition {
                    number: p.number,
                    start: p.start_lba * 512,
                    size: p.sectors * 512,
                    kind: format!("{} (0x{:02x})", p.type_name(), p.kind),
                    name: String::new(),
                    guid: None,
                })
                .collect(),
            PartitionTable::Gpt { gpt, .. } => gpt
                .partitions
                .iter()
                .map(|p| Partition {
                    number: p.number,
                    start: p.first_lba * gpt.sector_size,
                    size: (p.last_lba.saturating_sub(p.first_lba) + 1) * gpt.sector_size,
                    kind: p
                        .type_guid
                        .type_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| p.type_guid.to_string()),
                    name: p.name.clone(),
                    guid: Some(p.unique_guid.to_string()),
                })
                .collect(),
        }
    }

    /// Problems found in the table.
    pub fn problems(&self) -> Vec<String> {
        match self {
            PartitionTable::None => Vec::new(),
            PartitionTable::Mbr(m) => m.problems.clone(),
            PartitionTable::Gpt { gpt, .. } => gpt.problems.clone(),
            PartitionTable::DamagedGpt { problem, .. } => vec![problem.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpt_damaged_twice_is_reported_not_fatal() {
        let mut disk = gpt::tests::build(
            8192,
            &[("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 2048, 8000)],
        );
        disk[1024] ^= 1; // both entry arrays are the same, so both CRCs fail
        let last = 8191 * 512 - 32 * 512;
        disk[last] ^= 1;
        let table = PartitionTable::read(&disk[..]).unwrap();
        assert_eq!(table.kind(), "gpt (damaged)");
        assert!(
            table.problems()[0].contains("both tables are damaged"),
            "{:?}",
            table.problems()
        );
        assert!(table.partitions().is_empty());
    }
}
