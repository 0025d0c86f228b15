//! LVM2 physical volumes, read directly: the volume group's metadata text
//! and, for each logical volume, where its bytes are when it is linear (one
//! contiguous run of extents on this PV). A linear volume is then probed
//! and mounted through a loop device like a partition, which needs no
//! device-mapper (this host has none). Anything else (striped, mirrored,
//! thin, spread over several PVs) is reported, not read.

use diskformats::Disk;

/// A logical volume of the volume group on a PV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalVolume {
    /// The volume group's name.
    pub vg: String,
    /// The volume's name.
    pub name: String,
    /// Offset within the PV and size in bytes, when the volume is linear here.
    pub linear: Option<(u64, u64)>,
    /// Why it is not read, when it is not linear.
    pub why_not: Option<String>,
}

/// Largest metadata text read.
const MAX_TEXT: u64 = 4 << 20;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read(disk: &(impl Disk + ?Sized), at: u64, len: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len as usize];
    disk.read_at(&mut buf, at)
        .map_err(|e| format!("cannot read the LVM metadata: {e}"))?;
    Ok(buf)
}

/// The PV's UUID (without dashes) and the volume group metadata text of
/// the PV at `start` (`size` bytes) of `disk`.
fn metadata(
    disk: &(impl Disk + ?Sized),
    start: u64,
    size: u64,
) -> Result<(String, String), String> {
    let head = read(disk, start, 4096.min(size))?;
    let label = (0..4)
        .map(|s| s * 512)
        .find(|&at| {
            head.get(at..at + 8) == Some(b"LABELONE")
                && head.get(at + 24..at + 32) == Some(b"LVM2 001")
        })
        .ok_or("no LVM2 label")?;
    let bad = || "the LVM label is damaged".to_owned();
    let pv = label + u32_at(&head, label + 20).ok_or_else(bad)? as usize;
    let uuid = String::from_utf8_lossy(head.get(pv..pv + 32).ok_or_else(bad)?).into_owned();
    // Data areas, then metadata areas, each list ending with a zero entry.
    let mut at = pv + 40;
    while u64_at(&head, at).ok_or_else(bad)? != 0 {
        at += 16;
    }
    at += 16;
    let mda = u64_at(&head, at).ok_or_else(bad)?;
    if mda == 0 {
        return Err("this PV holds no metadata copy".into());
    }
    // Offsets from the label are the PV's word: checked, never wrapped.
    let mda_at = start.checked_add(mda).ok_or_else(bad)?;
    let h = read(disk, mda_at, 512)?;
    if h.get(4..20) != Some(b" LVM2 x[5A%r0N*>") {
        return Err("the LVM metadata area is damaged".into());
    }
    let area = u64_at(&h, 32).ok_or_else(bad)?;
    let (off, len) = (
        u64_at(&h, 40).ok_or_else(bad)?,
        u64_at(&h, 48).ok_or_else(bad)?,
    );
    if len == 0 || len > MAX_TEXT || off >= area {
        return Err("the LVM metadata area holds no usable metadata".into());
    }
    // The area is a ring after its 512-byte header: the text may wrap.
    let first = len.min(area - off);
    let mut text = read(disk, mda_at.checked_add(off).ok_or_else(bad)?, first)?;
    if first < len {
        text.extend(read(
            disk,
            mda_at.checked_add(512).ok_or_else(bad)?,
            len - first,
        )?);
    }
    let text = String::from_utf8_lossy(&text)
        .trim_end_matches('\0')
        .to_owned();
    Ok((uuid, text))
}

/// A value of LVM's metadata syntax.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Num(i64),
    Str(String),
    List(Vec<Value>),
    Section(Vec<(String, Value)>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn num(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn sections(&self) -> Vec<(&str, &Value)> {
        match self {
            Value::Section(items) => items
                .iter()
                .filter(|(_, v)| matches!(v, Value::Section(_)))
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Tokens: names, numbers, strings and the punctuation `{ } [ ] = ,`.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = text.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            '#' => while it.next_if(|&c| c != '\n').is_some() {},
            '"' => {
                it.next();
                let mut s = String::from("\"");
                while let Some(c) = it.next() {
                    match c {
                        '\\' => s.extend(it.next()),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(s);
            }
            '{' | '}' | '[' | ']' | '=' | ',' => {
                out.push(c.to_string());
                it.next();
            }
            c if c.is_whitespace() => {
                it.next();
            }
            _ => {
                let mut s = String::new();
                while let Some(c) = it.next_if(|c| {
                    !c.is_whitespace()
                        && !matches!(c, '{' | '}' | '[' | ']' | '=' | ',' | '#' | '"')
                }) {
                    s.push(c);
                }
                out.push(s);
            }
        }
    }
    out
}

fn scalar(t: &str) -> Value {
    match t.strip_prefix('"') {
        Some(s) => Value::Str(s.to_owned()),
        None => t
            .parse()
            .map_or_else(|_| Value::Str(t.to_owned()), Value::Num),
    }
}

/// Parses `name = value` and `name { ... }` items until `}` or the end.
fn section(t: &[String], i: &mut usize, depth: usize) -> Result<Value, String> {
    if depth > 16 {
        return Err("the LVM metadata nests too deep".into());
    }
    let mut items = Vec::new();
    while let Some(name) = t.get(*i) {
        if name == "}" {
            *i += 1;
            break;
        }
        *i += 1;
        match t.get(*i).map(String::as_str) {
            Some("{") => {
                *i += 1;
                items.push((name.clone(), section(t, i, depth + 1)?));
            }
            Some("=") => {
                *i += 1;
                let v = match t.get(*i).map(String::as_str) {
                    Some("[") => {
                        *i += 1;
                        let mut list = Vec::new();
                        while let Some(x) = t.get(*i) {
                            *i += 1;
                            match x.as_str() {
                                "]" => break,
                                "," => {}
                                x => list.push(scalar(x)),
                            }
                        }
                        Value::List(list)
                    }
                    Some(x) => {
                        *i += 1;
                        scalar(x)
                    }
                    None => return Err("the LVM metadata ends early".into()),
                };
                items.push((name.clone(), v));
            }
            _ => return Err(format!("unexpected {name:?} in the LVM metadata")),
        }
    }
    Ok(Value::Section(items))
}

/// Where a volume's bytes are on the PV named `pv`, if it is one contiguous run there.
fn linear_extents(lv: &Value, pv: &str) -> Result<(i64, i64), String> {
    let count = lv.num("segment_count").unwrap_or(0);
    let mut run: Option<(i64, i64)> = None;
    for n in 1..=count {
        let seg = lv
            .get(&format!("segment{n}"))
            .ok_or("a segment is missing")?;
        let kind = seg.str("type").unwrap_or("?");
        if kind != "striped" || seg.num("stripe_count") != Some(1) {
            return Err(format!("it is {kind} (not linear)"));
        }
        let (Some(Value::List(stripes)), Some(extents)) =
            (seg.get("stripes"), seg.num("extent_count"))
        else {
            return Err("its segment is incomplete".into());
        };
        match stripes.as_slice() {
            [Value::Str(p), Value::Num(first)] if p == pv => {
                run = match run {
                    None => Some((*first, extents)),
                    Some((s, c)) if s + c == *first => Some((s, c + extents)),
                    Some(_) => return Err("its extents are not contiguous".into()),
                };
            }
            _ => return Err("it spans other physical volumes".into()),
        }
    }
    run.ok_or_else(|| "it has no segments".into())
}

/// The logical volumes of the PV at `start` (`size` bytes) of `disk`.
pub fn volumes(
    disk: &(impl Disk + ?Sized),
    start: u64,
    size: u64,
) -> Result<Vec<LogicalVolume>, String> {
    let (uuid, text) = metadata(disk, start, size)?;
    let toks = tokens(&text);
    let top = section(&toks, &mut 0, 0)?;
    let (vg_name, vg) = top
        .sections()
        .into_iter()
        .find(|(_, v)| v.get("physical_volumes").is_some())
        .ok_or("the LVM metadata names no volume group")?;
    let extent = vg
        .num("extent_size")
        .ok_or("the volume group has no extent size")?;
    let (pv_key, pe_start) = vg
        .get("physical_volumes")
        .map(Value::sections)
        .unwrap_or_default()
        .into_iter()
        .find(|(_, p)| p.str("id").is_some_and(|id| id.replace('-', "") == uuid))
        .and_then(|(k, p)| Some((k, p.num("pe_start")?)))
        .ok_or("this PV is not in its volume group's metadata")?;
    let mut out = Vec::new();
    for (name, lv) in vg
        .get("logical_volumes")
        .map(Value::sections)
        .unwrap_or_default()
    {
        let placed = linear_extents(lv, pv_key).and_then(|(first, count)| {
            let off = (pe_start + first * extent) as u64 * 512;
            let len = (count * extent) as u64 * 512;
            if first < 0 || count <= 0 || off + len > size {
                Err("its extents lie outside the physical volume".into())
            } else {
                Ok((off, len))
            }
        });
        out.push(LogicalVolume {
            vg: vg_name.to_owned(),
            name: name.to_owned(),
            why_not: placed.as_ref().err().cloned(),
            linear: placed.ok(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_area_offset_past_the_end_of_u64_is_damage_not_a_panic() {
        // Found by the `lvm` fuzz target: the label's metadata area offset
        // plus the PV's start overflowed.
        let crash = include_bytes!("../../testdata/lvm/fuzz-mda-offset-overflow.bin");
        let r = volumes(&crash[..], 0, crash.len() as u64);
        assert!(r.is_err(), "{r:?}");
        let r = volumes(&crash[..], 512, crash.len() as u64 - 512);
        assert!(r.is_err(), "{r:?}");
    }

    const TEXT: &str = r#"# Generated by LVM2
vg0 {
	id = "EhVqqu-OnCW-aLXO-D6IK-3hJF-2Zdn-w26uSM"
	seqno = 3
	status = ["RESIZEABLE", "READ", "WRITE"]
	extent_size = 8192		# 4 Megabytes
	physical_volumes {
		pv0 {
			id = "fRsK3b-J1Ni-FZLb-zifd-wUkT-VqbR-wrT0va"
			device = "/dev/loop0"	# Hint only
			pe_start = 2048
			pe_count = 230
		}
	}
	logical_volumes {
		root {
			segment_count = 2
			segment1 { start_extent = 0
				extent_count = 10 type = "striped" stripe_count = 1 stripes = [ "pv0", 10 ] }
			segment2 { start_extent = 10
				extent_count = 5 type = "striped" stripe_count = 1 stripes = [ "pv0", 20 ] }
		}
		swap {
			segment_count = 1
			segment1 { start_extent = 0 extent_count = 5 type = "thin" }
		}
		split {
			segment_count = 2
			segment1 { extent_count = 1 type = "striped" stripe_count = 1 stripes = [ "pv0", 0 ] }
			segment2 { extent_count = 1 type = "striped" stripe_count = 1 stripes = [ "pv0", 100 ] }
		}
	}
}
contents = "Text Format Volume Group"
"#;

    #[test]
    fn the_metadata_syntax_is_parsed() {
        let top = section(&tokens(TEXT), &mut 0, 0).unwrap();
        let vg = top.get("vg0").unwrap();
        assert_eq!(vg.num("extent_size"), Some(8192));
        assert_eq!(top.str("contents"), Some("Text Format Volume Group"));
        let lvs = vg.get("logical_volumes").unwrap().sections();
        assert_eq!(lvs.len(), 3);
        assert_eq!(
            linear_extents(lvs[0].1, "pv0"),
            Ok((10, 15)),
            "contiguous segments join"
        );
        assert!(linear_extents(lvs[1].1, "pv0")
            .unwrap_err()
            .contains("thin"));
        assert!(linear_extents(lvs[2].1, "pv0")
            .unwrap_err()
            .contains("contiguous"));
        assert!(linear_extents(lvs[0].1, "pv1")
            .unwrap_err()
            .contains("other physical"));
        assert!(section(&tokens("a = "), &mut 0, 0).is_err());
        assert!(section(&tokens(&"x {".repeat(40)), &mut 0, 0).is_err());
    }
}
