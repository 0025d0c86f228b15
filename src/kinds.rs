//! The kinds that cross module boundaries, as types: what a guest boots
//! with ([`BootMode`]), what Azure creates for it ([`OsType`],
//! [`HyperVGeneration`]). Each has `Display` for text output and serde for
//! JSON reports, so the compiler checks every match instead of strings that
//! may drift apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The OS a disk boots, when it is an OS disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OsType {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

impl fmt::Display for OsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            OsType::Linux => "Linux",
            OsType::Windows => "Windows",
        })
    }
}

/// Hyper-V generation: V1 boots BIOS guests, V2 UEFI ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HyperVGeneration {
    /// BIOS (Azure's Generation 1 VMs).
    V1,
    /// UEFI (Generation 2).
    V2,
}

impl fmt::Display for HyperVGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            HyperVGeneration::V1 => "V1",
            HyperVGeneration::V2 => "V2",
        })
    }
}

/// How a guest disk can boot, from its partition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootMode {
    /// BIOS only (an MBR, or a GPT with a BIOS boot partition and no ESP).
    #[serde(rename = "bios")]
    Bios,
    /// UEFI only (an EFI system partition and no BIOS boot path).
    #[serde(rename = "uefi")]
    Uefi,
    /// Both: a hybrid layout, as many cloud images have.
    #[serde(rename = "bios+uefi")]
    BiosAndUefi,
    /// Neither was found: the disk cannot boot.
    #[serde(rename = "unknown")]
    Unknown,
}

impl BootMode {
    /// The boot mode of a disk with these boot paths.
    pub fn from_paths(bios: bool, uefi: bool) -> BootMode {
        match (bios, uefi) {
            (true, true) => BootMode::BiosAndUefi,
            (true, false) => BootMode::Bios,
            (false, true) => BootMode::Uefi,
            (false, false) => BootMode::Unknown,
        }
    }

    /// The generation to create the disk with: V2 only where UEFI is the
    /// only way in; a hybrid disk boots on V1, which every VM size offers.
    pub fn generation(self) -> HyperVGeneration {
        match self {
            BootMode::Uefi => HyperVGeneration::V2,
            BootMode::Bios | BootMode::BiosAndUefi | BootMode::Unknown => HyperVGeneration::V1,
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            BootMode::Bios => "bios",
            BootMode::Uefi => "uefi",
            BootMode::BiosAndUefi => "bios+uefi",
            BootMode::Unknown => "unknown",
        })
    }
}

/// Serde through `Display` and `FromStr`, for kinds defined where serde is
/// not a dependency (the `diskformats` crate) or whose text is open-ended.
pub(crate) mod as_text {
    use super::*;

    /// Writes `v` as its `Display` text.
    pub fn serialize<T: fmt::Display, S: serde::Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Reads a value back from its text.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: serde::Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_modes_give_their_generation_and_print_as_before() {
        assert_eq!(
            BootMode::from_paths(true, true).generation(),
            HyperVGeneration::V1
        );
        assert_eq!(
            BootMode::from_paths(false, true).generation(),
            HyperVGeneration::V2
        );
        assert_eq!(BootMode::BiosAndUefi.to_string(), "bios+uefi");
        assert_eq!(
            serde_json::to_string(&BootMode::BiosAndUefi).unwrap(),
            "\"bios+uefi\""
        );
        assert_eq!(
            serde_json::to_string(&HyperVGeneration::V2).unwrap(),
            "\"V2\""
        );
    }
}
