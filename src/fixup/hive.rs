//! Windows registry hives, through hivex: keys are read with
//! `hivexregedit --export` and changed with `hivexregedit --merge`, which
//! edits the hive in place (class names, security descriptors and every
//! other key survive). Never a Windows binary, never a rewrite of the hive
//! by us. What we parse ourselves is the `.reg` text hivexregedit prints
//! and the hive's base block (its sequence numbers), both bounded.
//!
//! Registry names are case-insensitive; lookups here are too, and keep the
//! case the hive has.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::Error;

/// REG_SZ.
pub const REG_SZ: u32 = 1;
/// REG_EXPAND_SZ.
pub const REG_EXPAND_SZ: u32 = 2;
/// REG_DWORD.
pub const REG_DWORD: u32 = 4;
/// REG_MULTI_SZ.
pub const REG_MULTI_SZ: u32 = 7;
/// Size of a hive's base block.
const BASE_BLOCK: usize = 4096;
/// Largest `.reg` export read (a whole SYSTEM control set is a few MiB).
const MAX_EXPORT: usize = 256 << 20;

/// A registry value: its type and raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// REG_* type.
    pub kind: u32,
    /// The data, as stored.
    pub data: Vec<u8>,
}

impl Value {
    /// A REG_DWORD.
    pub fn dword(n: u32) -> Value {
        Value {
            kind: REG_DWORD,
            data: n.to_le_bytes().to_vec(),
        }
    }

    /// A REG_SZ.
    pub fn string(s: &str) -> Value {
        Value {
            kind: REG_SZ,
            data: utf16z(s),
        }
    }

    /// A REG_MULTI_SZ.
    pub fn multi(items: &[String]) -> Value {
        let mut data = Vec::new();
        for i in items {
            data.extend(utf16z(i));
        }
        data.extend([0, 0]);
        Value {
            kind: REG_MULTI_SZ,
            data,
        }
    }

    /// The number, for a REG_DWORD.
    pub fn as_dword(&self) -> Option<u32> {
        (self.kind == REG_DWORD && self.data.len() == 4)
            .then(|| u32::from_le_bytes([self.data[0], self.data[1], self.data[2], self.data[3]]))
    }

    /// The text, for REG_SZ and REG_EXPAND_SZ (up to the first NUL).
    pub fn as_string(&self) -> Option<String> {
        matches!(self.kind, REG_SZ | REG_EXPAND_SZ).then(|| {
            let s = utf16(&self.data);
            s.split('\0').next().unwrap_or("").to_owned()
        })
    }

    /// The strings, for a REG_MULTI_SZ.
    pub fn as_multi(&self) -> Option<Vec<String>> {
        (self.kind == REG_MULTI_SZ).then(|| {
            utf16(&self.data)
                .split('\0')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(n) = self.as_dword() {
            write!(f, "{n}")
        } else if let Some(s) = self.as_string() {
            write!(f, "{s:?}")
        } else if let Some(m) = self.as_multi() {
            write!(f, "{m:?}")
        } else {
            write!(f, "type {} ({} bytes)", self.kind, self.data.len())
        }
    }
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// One key: its path from the hive's root (`\ControlSet002\Services`) and
/// its values by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Key {
    /// Path from the hive's root, with a leading backslash.
    pub path: String,
    /// Values by name ("" is the default value).
    pub values: BTreeMap<String, Value>,
}

impl Key {
    /// The value named `name`, whatever its case.
    pub fn get(&self, name: &str) -> Option<(&String, &Value)> {
        self.values
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// Keys of a hive, as an export gives them.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    /// The key at `path` (case-insensitive).
    pub fn key(&self, path: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.path.eq_ignore_ascii_case(path))
    }

    /// The keys directly under `path`.
    pub fn children<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| {
            // Byte slices through `get`: a name may hold any character.
            k.path.len() > path.len() + 1
                && k.path
                    .get(..path.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(path))
                && k.path.as_bytes()[path.len()] == b'\\'
                && k.path
                    .get(path.len() + 1..)
                    .is_some_and(|rest| !rest.contains('\\'))
        })
    }

    /// True when `path` or a key under it was exported.
    pub fn has(&self, path: &str) -> bool {
        self.keys.iter().any(|k| {
            k.path
                .get(..path.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(path))
                && (k.path.len() == path.len() || k.path.as_bytes()[path.len()] == b'\\')
        })
    }

    /// The value `name` of key `path`.
    pub fn value(&self, path: &str, name: &str) -> Option<&Value> {
        self.key(path).and_then(|k| k.get(name)).map(|(_, v)| v)
    }

    /// Adds the keys of another export.
    pub fn extend(&mut self, other: Keys) {
        self.keys.extend(other.keys);
    }
}

/// Parses `hivexregedit --export` output (regedit format 5.00).
pub fn parse_reg(text: &str) -> Result<Keys, String> {
    let mut keys = Vec::new();
    let mut current: Option<Key> = None;
    // A hex value may go on over lines that end in a backslash.
    let mut joined = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim();
        let in_hex = !joined.is_empty() || line.contains("=hex");
        if let (true, Some(part)) = (in_hex, line.strip_suffix('\\')) {
            joined.push_str(part);
            continue;
        }
        let full = if joined.is_empty() {
            line.to_owned()
        } else {
            let mut j = std::mem::take(&mut joined);
            j.push_str(line);
            j
        };
        let l = full.trim();
        if l.is_empty() || l.starts_with("Windows Registry Editor") || l.starts_with(';') {
            continue;
        }
        if let Some(path) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if let Some(k) = current.take() {
                keys.push(k);
            }
            current = Some(Key {
                path: path.to_owned(),
                values: BTreeMap::new(),
            });
            continue;
        }
        let key = current
            .as_mut()
            .ok_or_else(|| format!("line {}: a value before any key", n + 1))?;
        let (name, rest) =
            parse_name(l).ok_or_else(|| format!("line {}: not a value: {l}", n + 1))?;
        let value = parse_value(rest).ok_or_else(|| format!("line {}: not a value: {l}", n + 1))?;
        key.values.insert(name, value);
    }
    if let Some(k) = current {
        keys.push(k);
    }
    Ok(Keys { keys })
}

/// `"name"=...` or `@=...`: the name and what follows the `=`.
fn parse_name(l: &str) -> Option<(String, &str)> {
    if let Some(rest) = l.strip_prefix("@=") {
        return Some((String::new(), rest));
    }
    let mut chars = l.strip_prefix('"')?.char_indices();
    let mut name = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => name.push(chars.next()?.1),
            '"' => return Some((name, l[i + 2..].strip_prefix('=')?)),
            c => name.push(c),
        }
    }
    None
}

fn parse_value(v: &str) -> Option<Value> {
    if let Some(h) = v.strip_prefix("dword:") {
        return Some(Value::dword(u32::from_str_radix(h, 16).ok()?));
    }
    if let Some(rest) = v.strip_prefix("hex(") {
        let (t, bytes) = rest.split_once("):")?;
        return Some(Value {
            kind: u32::from_str_radix(t, 16).ok()?,
            data: hex_bytes(bytes)?,
        });
    }
    if let Some(bytes) = v.strip_prefix("hex:") {
        return Some(Value {
            kind: 3,
            data: hex_bytes(bytes)?,
        });
    }
    if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Some(Value::string(
            &s.replace("\\\"", "\"").replace("\\\\", "\\"),
        ));
    }
    None
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.trim().is_empty() {
        return Some(Vec::new());
    }
    s.split(',')
        .map(|b| u8::from_str_radix(b.trim(), 16).ok())
        .collect()
}

/// A change to one value: set (`Some`) or delete (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Key path from the hive's root.
    pub key: String,
    /// Value name.
    pub name: String,
    /// The new value; `None` deletes it.
    pub value: Option<Value>,
}

/// The `.reg` text that makes `sets`.
pub fn patch(sets: &[Set]) -> String {
    let mut out = String::from("Windows Registry Editor Version 5.00\n");
    let mut by_key: BTreeMap<&str, Vec<&Set>> = BTreeMap::new();
    for s in sets {
        by_key.entry(&s.key).or_default().push(s);
    }
    for (key, sets) in by_key {
        let _ = write!(out, "\n[{key}]\n");
        for s in sets {
            let name = s.name.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = match &s.value {
                None => writeln!(out, "\"{name}\"=-"),
                Some(v) if v.kind == REG_DWORD && v.data.len() == 4 => {
                    writeln!(out, "\"{name}\"=dword:{:08x}", v.as_dword().unwrap_or(0))
                }
                Some(v) => writeln!(
                    out,
                    "\"{name}\"=hex({:x}):{}",
                    v.kind,
                    v.data
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
        }
    }
    out
}

fn hivexregedit(args: &[&std::ffi::OsStr]) -> Result<std::process::Output, Error> {
    Command::new("hivexregedit")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            tool: "hivexregedit (apt-get install libwin-hivex-perl)".into(),
            source,
        })
}

/// The keys under `key` (itself included) of the hive file `hive`; empty
/// when the key does not exist.
pub fn export(hive: &Path, key: &str) -> Result<Keys, Error> {
    let out = hivexregedit(&["--export".as_ref(), hive.as_os_str(), key.as_ref()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if err.contains("path not found") {
            return Ok(Keys::default());
        }
        return Err(Error::Guest(format!(
            "hivexregedit could not read {key} of the hive: {}",
            err.trim()
        )));
    }
    if out.stdout.len() > MAX_EXPORT {
        return Err(Error::Guest(format!(
            "{key} of the hive exports to more than {MAX_EXPORT} bytes; this is no hive Windows wrote"
        )));
    }
    parse_reg(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| Error::Guest(format!("cannot read hivexregedit's export of {key}: {e}")))
}

/// Makes `sets` in the hive file `hive`, in place.
pub fn merge(hive: &Path, sets: &[Set]) -> Result<(), Error> {
    let mut file = tempfile::NamedTempFile::new().map_err(|source| Error::HostIo {
        action: "make a temporary file for the registry changes".into(),
        source,
    })?;
    std::io::Write::write_all(&mut file, patch(sets).as_bytes()).map_err(|source| {
        Error::HostIo {
            action: "write the registry changes".into(),
            source,
        }
    })?;
    let out = hivexregedit(&[
        "--merge".as_ref(),
        hive.as_os_str(),
        file.path().as_os_str(),
    ])?;
    if !out.status.success() {
        return Err(Error::Guest(format!(
            "hivexregedit could not change the hive: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// What a hive's base block and transaction logs say about its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiveState {
    /// Written completely: the two sequence numbers agree and no log holds newer entries.
    Clean,
    /// The primary and secondary sequence numbers differ: a write was cut short.
    Torn {
        /// Primary sequence number.
        primary: u32,
        /// Secondary sequence number.
        secondary: u32,
    },
    /// A transaction log holds entries not yet in the hive.
    LogPending,
}

/// The state of a hive from its first bytes and its logs' (`.LOG1`, `.LOG2`).
pub fn state(hive: &[u8], logs: &[&[u8]]) -> Result<HiveState, String> {
    let base = hive
        .get(..BASE_BLOCK)
        .ok_or("it is shorter than a hive's base block")?;
    if &base[..4] != b"regf" {
        return Err("it does not start with a hive's signature (regf)".into());
    }
    let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let (primary, secondary) = (word(base, 4), word(base, 8));
    if primary != secondary {
        return Ok(HiveState::Torn { primary, secondary });
    }
    for log in logs {
        // New-format logs (Windows 8.1 and later): a base block, then
        // entries "HvLE" with their sequence numbers at +12.
        let mut at = 512;
        while let Some(entry) = log.get(at..at + 16) {
            if &entry[..4] != b"HvLE" {
                break;
            }
            let (size, seq) = (word(entry, 4) as usize, word(entry, 12));
            if seq >= primary {
                return Ok(HiveState::LogPending);
            }
            if size < 16 || size % 512 != 0 {
                break;
            }
            at += size;
        }
    }
    Ok(HiveState::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = r#"Windows Registry Editor Version 5.00

[\ControlSet002\Control\Class\{4d36e967-e325-11ce-bfc1-08002be10318}]
"Class"=hex(1):44,00,69,00,73,00,6b,00,00,00
"UpperFilters"=hex(7):78,00,65,00,6e,00,66,00,69,00,6c,00,74,00,00,00,50,00,\
  61,00,72,00,74,00,4d,00,67,00,72,00,00,00,00,00

[\ControlSet002\Services]

[\ControlSet002\Services\vmbus]
"Start"=dword:00000003
"Odd \"name\""="a \\ b"
@=dword:00000001

[\ControlSet002\Services\vmbus\Parameters]
"#;

    #[test]
    fn exports_parse_with_continuations_and_odd_names() {
        let keys = parse_reg(EXPORT).unwrap();
        let class = "\\ControlSet002\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}";
        assert_eq!(
            keys.value(class, "upperfilters")
                .unwrap()
                .as_multi()
                .unwrap(),
            ["xenfilt", "PartMgr"]
        );
        assert_eq!(
            keys.value(class, "Class").unwrap().as_string().as_deref(),
            Some("Disk")
        );
        let vm = "\\ControlSet002\\Services\\vmbus";
        assert_eq!(keys.value(vm, "START").unwrap().as_dword(), Some(3));
        assert_eq!(
            keys.value(vm, "Odd \"name\"")
                .unwrap()
                .as_string()
                .as_deref(),
            Some("a \\ b")
        );
        assert_eq!(keys.value(vm, "").unwrap().as_dword(), Some(1));
        let under: Vec<&str> = keys
            .children("\\ControlSet002\\Services")
            .map(|k| k.path.as_str())
            .collect();
        assert_eq!(under, [vm]);
        // Names with characters of any width never split one.
        let odd = parse_reg("[\\Cöntrol\\ä]\n\"x\"=dword:00000001\n").unwrap();
        assert_eq!(odd.children("\\Co").count(), 0);
        assert!(!odd.has("\\Cö"));
        assert!(odd.has("\\Cöntrol"));
        assert!(parse_reg("\"x\"=dword:1\n").is_err());
        assert!(parse_reg("[\\a]\n\"x\"=dword:zz\n").is_err());
    }

    #[test]
    fn patches_round_trip_through_the_parser() {
        let sets = vec![
            Set {
                key: "\\A\\B".into(),
                name: "Start".into(),
                value: Some(Value::dword(0)),
            },
            Set {
                key: "\\A\\B".into(),
                name: "Filters \"x\"".into(),
                value: Some(Value::multi(&["PartMgr".into()])),
            },
            Set {
                key: "\\A\\C".into(),
                name: "Gone".into(),
                value: None,
            },
        ];
        let text = patch(&sets);
        assert!(text.contains("\"Gone\"=-"), "{text}");
        let without_delete: String = text
            .lines()
            .filter(|l| !l.ends_with("=-"))
            .map(|l| format!("{l}\n"))
            .collect();
        let keys = parse_reg(&without_delete).unwrap();
        assert_eq!(keys.value("\\A\\B", "Start").unwrap().as_dword(), Some(0));
        assert_eq!(
            keys.value("\\A\\B", "Filters \"x\"")
                .unwrap()
                .as_multi()
                .unwrap(),
            ["PartMgr"]
        );
    }

    #[test]
    fn torn_hives_and_pending_logs_are_told_apart() {
        let mut hive = vec![0u8; 4096];
        hive[..4].copy_from_slice(b"regf");
        hive[4..8].copy_from_slice(&5u32.to_le_bytes());
        hive[8..12].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(state(&hive, &[]), Ok(HiveState::Clean));
        let mut log = vec![0u8; 1024];
        log[512..516].copy_from_slice(b"HvLE");
        log[516..520].copy_from_slice(&512u32.to_le_bytes());
        log[524..528].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(state(&hive, &[&log]), Ok(HiveState::Clean), "an old entry");
        log[524..528].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(state(&hive, &[&log]), Ok(HiveState::LogPending));
        hive[4..8].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(
            state(&hive, &[]),
            Ok(HiveState::Torn {
                primary: 6,
                secondary: 5
            })
        );
        assert!(state(b"regf", &[]).is_err());
        assert!(state(&[0u8; 4096], &[]).is_err());
    }
}
