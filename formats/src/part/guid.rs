//! GUIDs as GPT stores them (first three fields little-endian).

use std::fmt;

/// A GUID in its on-disk byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (any case).
    pub fn parse(s: &str) -> Option<Guid> {
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return None;
        }
        let mut v = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let txt = std::str::from_utf8(pair).ok()?;
            v[i] = u8::from_str_radix(txt, 16).ok()?;
        }
        // Text order to on-disk order: swap the first three fields.
        v[0..4].reverse();
        v[4..6].reverse();
        v[6..8].reverse();
        Some(Guid(v))
    }

    /// True for the all-zero GUID (an unused partition entry).
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The well-known name of a partition type GUID, if it is one.
    pub fn type_name(&self) -> Option<&'static str> {
        let text = self.to_string();
        KNOWN_TYPES
            .iter()
            .find(|(g, _)| g.eq_ignore_ascii_case(&text))
            .map(|(_, n)| *n)
    }
}

const KNOWN_TYPES: &[(&str, &str)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI system"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    (
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "Linux root (x86-64)",
    ),
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM64)"),
    (
        "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        "Linux extended boot",
    ),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "Microsoft basic data",
    ),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery"),
    (
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
        "Windows LDM metadata",
    ),
    ("AF9B60A0-1431-4F62-BC68-3311714A69AD", "Windows LDM data"),
];

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_names_types() {
        let s = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let g = Guid::parse(s).unwrap();
        assert_eq!(g.0[0], 0x28, "first field is little-endian on disk");
        assert_eq!(g.to_string(), s);
        assert_eq!(g.type_name(), Some("EFI system"));
        assert!(Guid::parse("nonsense").is_none());
        assert!(Guid::default().is_nil());
    }
}
