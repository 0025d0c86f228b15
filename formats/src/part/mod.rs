//! Partition tables: MBR and GPT, read into one listing.

pub mod gpt;
pub mod guid;
pub mod kind;
pub mod mbr;

use crate::disk::Disk;
use crate::Result;
pub use gpt::{Gpt, GptHeader, GptPartition};
pub use guid::Guid;
pub use kind::{PartitionKind, TypeId};
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

/// The kind of partition table, without its contents.
///
/// `Display` writes `none`, `mbr`, `gpt` or `gpt (damaged)`; `FromStr` reads them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// No partition table.
    None,
    /// An MBR without GPT.
    Mbr,
    /// A GPT.
    Gpt,
    /// A GPT whose two copies are both damaged.
    DamagedGpt,
}

impl TableKind {
    const ALL: [TableKind; 4] = [
        TableKind::None,
        TableKind::Mbr,
        TableKind::Gpt,
        TableKind::DamagedGpt,
    ];

    /// The name `Display` writes.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::None => "none",
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
            TableKind::DamagedGpt => "gpt (damaged)",
        }
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for TableKind {
    type Err = kind::UnknownKind;

    fn from_str(s: &str) -> std::result::Result<TableKind, kind::UnknownKind> {
        TableKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| kind::UnknownKind(s.to_owned()))
    }
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
    /// What it is for, whatever the table.
    pub kind: PartitionKind,
    /// Its type as the table stores it.
    pub type_id: TypeId,
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

    /// Which kind of table this is.
    pub fn kind(&self) -> TableKind {
        match self {
            PartitionTable::None => TableKind::None,
            PartitionTable::Mbr(_) => TableKind::Mbr,
            PartitionTable::Gpt { .. } => TableKind::Gpt,
            PartitionTable::DamagedGpt { .. } => TableKind::DamagedGpt,
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
                    kind: PartitionKind::from_mbr(p.kind),
                    type_id: TypeId::Mbr(p.kind),
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
                    kind: PartitionKind::from_gpt(p.type_guid),
                    type_id: TypeId::Gpt(p.type_guid),
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
        assert_eq!(table.kind().to_string(), "gpt (damaged)");
        assert!(
            table.problems()[0].contains("both tables are damaged"),
            "{:?}",
            table.problems()
        );
        assert!(table.partitions().is_empty());
    }

    /// A fixture disk from the repository's testdata/ (see its README).
    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../testdata/part/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn gpt_fixtures_read_whole_from_the_backup_or_as_damaged() {
        let good = fixture("gpt-esp-linux.img");
        let table = PartitionTable::read(&good[..]).unwrap();
        assert_eq!(table.kind(), TableKind::Gpt);
        let parts = table.partitions();
        let kinds: Vec<_> = parts.iter().map(|p| (p.number, p.kind, p.start)).collect();
        assert_eq!(
            kinds,
            [
                (1, PartitionKind::EfiSystem, 40 * 512),
                (2, PartitionKind::LinuxFilesystem, 104 * 512)
            ]
        );
        assert_eq!(parts[0].name, "EFI");
        assert_eq!(
            parts[1].guid.as_deref(),
            Some("AAAAAAAA-0000-0000-0000-000000000002")
        );
        assert!(table.problems().is_empty(), "{:?}", table.problems());

        let table = PartitionTable::read(&fixture("gpt-primary-damaged.img")[..]).unwrap();
        assert_eq!(table.kind(), TableKind::Gpt);
        assert_eq!(
            table.partitions(),
            parts,
            "the backup gives the same partitions"
        );
        assert!(!table.problems().is_empty(), "the damage is said");

        let table = PartitionTable::read(&fixture("gpt-both-damaged.img")[..]).unwrap();
        assert_eq!(table.kind(), TableKind::DamagedGpt);
        assert!(table.partitions().is_empty());
    }

    #[test]
    fn mbr_fixtures_give_the_esp_and_the_logical_partitions_and_stop_a_loop() {
        let table = PartitionTable::read(&fixture("mbr-esp-logical.img")[..]).unwrap();
        assert_eq!(table.kind(), TableKind::Mbr);
        let got: Vec<_> = table
            .partitions()
            .into_iter()
            .map(|p| (p.number, p.kind, p.type_id, p.start / 512))
            .collect();
        assert_eq!(
            got,
            [
                (1, PartitionKind::EfiSystem, TypeId::Mbr(0xef), 2),
                (2, PartitionKind::LinuxFilesystem, TypeId::Mbr(0x83), 32),
                (3, PartitionKind::Extended, TypeId::Mbr(0x05), 64),
                (5, PartitionKind::LinuxFilesystem, TypeId::Mbr(0x83), 65),
                (6, PartitionKind::LinuxSwap, TypeId::Mbr(0x82), 81),
            ]
        );
        let table = PartitionTable::read(&fixture("mbr-looping-chain.img")[..]).unwrap();
        assert!(
            table.problems().iter().any(|p| p.contains("loop")),
            "{:?}",
            table.problems()
        );
        assert!(table.partitions().len() < 16, "the loop was not followed");
    }
}
