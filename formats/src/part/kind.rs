//! What a partition is for, as one type whatever the table: a GPT type GUID
//! and an MBR type byte that mean the same thing (an EFI system partition is
//! `C12A7328-...` on GPT and `0xEF` on MBR) become the same [`PartitionKind`],
//! so callers match on meaning, not on table-specific spellings.

use std::fmt;
use std::str::FromStr;

use super::guid::Guid;

/// The raw type of a partition as its table stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeId {
    /// An MBR partition type byte.
    Mbr(u8),
    /// A GPT partition type GUID.
    Gpt(Guid),
}

impl fmt::Display for TypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeId::Mbr(b) => write!(f, "0x{b:02x}"),
            TypeId::Gpt(g) => write!(f, "{g}"),
        }
    }
}

/// What a partition is for.
///
/// `Display` gives the short English name (`EFI system`, `Linux swap`);
/// `FromStr` reads that name back, so reports can store kinds as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PartitionKind {
    /// EFI system partition (GPT `C12A7328-...`, MBR `0xEF`).
    EfiSystem,
    /// BIOS boot partition: GRUB's core image on a GPT disk booted by BIOS.
    BiosBoot,
    /// Linux filesystem data (GPT `0FC63DAF-...`, MBR `0x83`).
    LinuxFilesystem,
    /// Linux swap (GPT `0657FD6D-...`, MBR `0x82`).
    LinuxSwap,
    /// LVM physical volume (GPT `E6D6D379-...`, MBR `0x8E`).
    LinuxLvm,
    /// Linux software RAID member (GPT `A19D880F-...`, MBR `0xFD`).
    LinuxRaid,
    /// Discoverable root partition for x86-64.
    LinuxRootX86_64,
    /// Discoverable root partition for ARM64.
    LinuxRootArm64,
    /// Linux extended boot partition (`/boot` of the discoverable partitions spec).
    LinuxExtendedBoot,
    /// Discoverable `/home` partition.
    LinuxHome,
    /// Microsoft basic data (NTFS, FAT or exFAT data on GPT).
    MicrosoftBasicData,
    /// Microsoft reserved partition (MSR).
    MicrosoftReserved,
    /// Windows recovery environment (GPT `DE94BBA4-...`, MBR `0x27`).
    WindowsRecovery,
    /// Windows LDM (dynamic disk) metadata.
    WindowsLdmMetadata,
    /// Windows LDM (dynamic disk) data.
    WindowsLdmData,
    /// FAT12 or FAT16 (MBR `0x01`, `0x04`, `0x06`, `0x0E`).
    Fat,
    /// FAT32 (MBR `0x0B`, `0x0C`).
    Fat32,
    /// NTFS or exFAT (MBR `0x07`).
    NtfsOrExfat,
    /// An extended partition holding logical ones (MBR `0x05`, `0x0F`, `0x85`).
    Extended,
    /// A BSD disklabel (MBR `0xA5`, `0xA6`, `0xA9`).
    Bsd,
    /// The protective entry of a GPT disk (MBR `0xEE`).
    GptProtective,
    /// A GPT type not named here.
    OtherGpt(Guid),
    /// An MBR type byte not named here.
    OtherMbr(u8),
}

/// The GPT type GUIDs named here, with their kinds.
const GPT_TYPES: &[(&str, PartitionKind)] = &[
    (
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        PartitionKind::EfiSystem,
    ),
    (
        "21686148-6449-6E6F-744E-656564454649",
        PartitionKind::BiosBoot,
    ),
    (
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        PartitionKind::LinuxFilesystem,
    ),
    (
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        PartitionKind::LinuxSwap,
    ),
    (
        "E6D6D379-F507-44C2-A23C-238F2A3DF928",
        PartitionKind::LinuxLvm,
    ),
    (
        "A19D880F-05FC-4D3B-A006-743F0F84911E",
        PartitionKind::LinuxRaid,
    ),
    (
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        PartitionKind::LinuxRootX86_64,
    ),
    (
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        PartitionKind::LinuxRootArm64,
    ),
    (
        "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        PartitionKind::LinuxExtendedBoot,
    ),
    (
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
        PartitionKind::LinuxHome,
    ),
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        PartitionKind::MicrosoftBasicData,
    ),
    (
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
        PartitionKind::MicrosoftReserved,
    ),
    (
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
        PartitionKind::WindowsRecovery,
    ),
    (
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
        PartitionKind::WindowsLdmMetadata,
    ),
    (
        "AF9B60A0-1431-4F62-BC68-3311714A69AD",
        PartitionKind::WindowsLdmData,
    ),
];

impl Guid {
    /// The well-known name of a partition type GUID, if it is one.
    pub fn type_name(&self) -> Option<&'static str> {
        PartitionKind::from_gpt(*self).name()
    }
}

impl PartitionKind {
    /// The kind of a GPT partition type GUID.
    pub fn from_gpt(guid: Guid) -> PartitionKind {
        let text = guid.to_string();
        GPT_TYPES
            .iter()
            .find(|(g, _)| g.eq_ignore_ascii_case(&text))
            .map_or(PartitionKind::OtherGpt(guid), |(_, k)| *k)
    }

    /// The kind of an MBR partition type byte.
    pub fn from_mbr(byte: u8) -> PartitionKind {
        match byte {
            0x01 | 0x04 | 0x06 | 0x0e => PartitionKind::Fat,
            0x07 => PartitionKind::NtfsOrExfat,
            0x0b | 0x0c => PartitionKind::Fat32,
            0x05 | 0x0f | 0x85 => PartitionKind::Extended,
            0x27 => PartitionKind::WindowsRecovery,
            0x82 => PartitionKind::LinuxSwap,
            0x83 => PartitionKind::LinuxFilesystem,
            0x8e => PartitionKind::LinuxLvm,
            0xa5 | 0xa6 | 0xa9 => PartitionKind::Bsd,
            0xee => PartitionKind::GptProtective,
            0xef => PartitionKind::EfiSystem,
            0xfd => PartitionKind::LinuxRaid,
            other => PartitionKind::OtherMbr(other),
        }
    }

    /// The kind of a raw table type.
    pub fn from_type_id(id: TypeId) -> PartitionKind {
        match id {
            TypeId::Mbr(b) => PartitionKind::from_mbr(b),
            TypeId::Gpt(g) => PartitionKind::from_gpt(g),
        }
    }

    /// The short name, or `None` for a type not named here.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            PartitionKind::EfiSystem => "EFI system",
            PartitionKind::BiosBoot => "BIOS boot",
            PartitionKind::LinuxFilesystem => "Linux filesystem",
            PartitionKind::LinuxSwap => "Linux swap",
            PartitionKind::LinuxLvm => "Linux LVM",
            PartitionKind::LinuxRaid => "Linux RAID",
            PartitionKind::LinuxRootX86_64 => "Linux root (x86-64)",
            PartitionKind::LinuxRootArm64 => "Linux root (ARM64)",
            PartitionKind::LinuxExtendedBoot => "Linux extended boot",
            PartitionKind::LinuxHome => "Linux home",
            PartitionKind::MicrosoftBasicData => "Microsoft basic data",
            PartitionKind::MicrosoftReserved => "Microsoft reserved",
            PartitionKind::WindowsRecovery => "Windows recovery",
            PartitionKind::WindowsLdmMetadata => "Windows LDM metadata",
            PartitionKind::WindowsLdmData => "Windows LDM data",
            PartitionKind::Fat => "FAT",
            PartitionKind::Fat32 => "FAT32",
            PartitionKind::NtfsOrExfat => "NTFS/exFAT",
            PartitionKind::Extended => "extended",
            PartitionKind::Bsd => "BSD",
            PartitionKind::GptProtective => "GPT protective",
            PartitionKind::OtherGpt(_) | PartitionKind::OtherMbr(_) => return None,
        })
    }

    /// Every named kind, for parsing names back.
    const NAMED: [PartitionKind; 21] = [
        PartitionKind::EfiSystem,
        PartitionKind::BiosBoot,
        PartitionKind::LinuxFilesystem,
        PartitionKind::LinuxSwap,
        PartitionKind::LinuxLvm,
        PartitionKind::LinuxRaid,
        PartitionKind::LinuxRootX86_64,
        PartitionKind::LinuxRootArm64,
        PartitionKind::LinuxExtendedBoot,
        PartitionKind::LinuxHome,
        PartitionKind::MicrosoftBasicData,
        PartitionKind::MicrosoftReserved,
        PartitionKind::WindowsRecovery,
        PartitionKind::WindowsLdmMetadata,
        PartitionKind::WindowsLdmData,
        PartitionKind::Fat,
        PartitionKind::Fat32,
        PartitionKind::NtfsOrExfat,
        PartitionKind::Extended,
        PartitionKind::Bsd,
        PartitionKind::GptProtective,
    ];
}

impl fmt::Display for PartitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionKind::OtherGpt(g) => f.pad(&g.to_string()),
            PartitionKind::OtherMbr(b) => f.pad(&format!("type 0x{b:02x}")),
            named => f.pad(named.name().unwrap_or("unknown")),
        }
    }
}

/// A text that names no partition kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a partition kind (a name such as \"EFI system\", a GPT type GUID, or \"type 0xNN\")")]
pub struct UnknownKind(pub String);

impl FromStr for PartitionKind {
    type Err = UnknownKind;

    /// Reads what `Display` writes.
    fn from_str(s: &str) -> Result<PartitionKind, UnknownKind> {
        if let Some(k) = PartitionKind::NAMED.iter().find(|k| k.name() == Some(s)) {
            return Ok(*k);
        }
        if let Some(g) = Guid::parse(s) {
            return Ok(PartitionKind::from_gpt(g));
        }
        s.strip_prefix("type 0x")
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map(PartitionKind::OtherMbr)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kind_whatever_the_table() {
        let esp = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(PartitionKind::from_gpt(esp), PartitionKind::EfiSystem);
        assert_eq!(PartitionKind::from_mbr(0xef), PartitionKind::EfiSystem);
        assert_eq!(
            PartitionKind::from_mbr(0x83),
            PartitionKind::LinuxFilesystem
        );
        assert_eq!(
            PartitionKind::from_type_id(TypeId::Mbr(0x42)),
            PartitionKind::OtherMbr(0x42)
        );
    }

    #[test]
    fn names_read_back() {
        let odd = Guid::parse("01234567-89AB-CDEF-0123-456789ABCDEF").unwrap();
        for k in PartitionKind::NAMED
            .into_iter()
            .chain([PartitionKind::OtherGpt(odd), PartitionKind::OtherMbr(0x42)])
        {
            assert_eq!(k.to_string().parse::<PartitionKind>(), Ok(k), "{k}");
        }
        assert!("no such kind".parse::<PartitionKind>().is_err());
        assert_eq!(PartitionKind::EfiSystem.to_string(), "EFI system");
        assert_eq!(TypeId::Mbr(0xef).to_string(), "0xef");
    }
}
