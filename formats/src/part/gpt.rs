//! The GUID partition table: header and entry parsing with CRC32 checks, and
//! moving the backup table to the new end of a disk that grew.

use std::ops::Range;

use super::guid::Guid;
use super::mbr;
use crate::disk::Disk;
use crate::fields::{Bytes, Le};
use crate::{Error, Result};

/// The header signature.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Largest partition entry array read (the specification's minimum is 16 KiB).
const MAX_ENTRIES_BYTES: u64 = 4 << 20;

const G_SIGNATURE: Bytes<8> = Bytes::at(0);
const G_REVISION: Le<u32> = Le::at(8);
const G_HEADER_SIZE: Le<u32> = Le::at(12);
const G_HEADER_CRC: Le<u32> = Le::at(16);
const G_MY_LBA: Le<u64> = Le::at(24);
const G_ALTERNATE_LBA: Le<u64> = Le::at(32);
const G_FIRST_USABLE: Le<u64> = Le::at(40);
const G_LAST_USABLE: Le<u64> = Le::at(48);
const G_DISK_GUID: Bytes<16> = Bytes::at(56);
const G_ENTRIES_LBA: Le<u64> = Le::at(72);
const G_ENTRY_COUNT: Le<u32> = Le::at(80);
const G_ENTRY_SIZE: Le<u32> = Le::at(84);
const G_ENTRIES_CRC: Le<u32> = Le::at(88);
const MIN_HEADER_SIZE: u32 = 92;

const E_TYPE: Bytes<16> = Bytes::at(0);
const E_UNIQUE: Bytes<16> = Bytes::at(16);
const E_FIRST: Le<u64> = Le::at(32);
const E_LAST: Le<u64> = Le::at(40);
const E_ATTRS: Le<u64> = Le::at(48);
const E_NAME: Range<usize> = 56..128;

/// A GPT header's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptHeader {
    /// Revision (1.0 = 0x00010000).
    pub revision: u32,
    /// Bytes of the header covered by its CRC.
    pub header_size: u32,
    /// The header's CRC32.
    pub header_crc32: u32,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// First LBA a partition may use.
    pub first_usable_lba: u64,
    /// Last LBA a partition may use.
    pub last_usable_lba: u64,
    /// The disk's GUID.
    pub disk_guid: Guid,
    /// LBA of the partition entry array.
    pub entries_lba: u64,
    /// Number of entries in the array.
    pub entry_count: u32,
    /// Size of one entry.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc32: u32,
}

/// One used GPT partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based index in the entry array.
    pub number: u32,
    /// Partition type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// Name (UTF-16LE on disk).
    pub name: String,
}

/// A GPT read from a disk.
#[derive(Clone, Debug)]
pub struct Gpt {
    /// Logical sector size the table was found with (512 or 4096).
    pub sector_size: u64,
    /// The header the table was read from (primary unless it was damaged).
    pub header: GptHeader,
    /// Used partitions, in entry order.
    pub partitions: Vec<GptPartition>,
    /// Problems found: damaged headers, overlaps, partitions outside the usable range.
    pub problems: Vec<String>,
    /// True when the primary header and entries were valid.
    pub primary_ok: bool,
    header_bytes: Vec<u8>,
    entries_bytes: Vec<u8>,
}

fn parse_header(b: &[u8], sector_size: u64) -> Result<GptHeader> {
    if G_SIGNATURE.get(b) != SIGNATURE {
        return Err(Error::invalid("GPT header", "no `EFI PART` signature"));
    }
    let header_size = G_HEADER_SIZE.get(b);
    if header_size < MIN_HEADER_SIZE || u64::from(header_size) > sector_size {
        return Err(Error::invalid(
            "GPT header",
            format!("header size {header_size} is outside 92..={sector_size}"),
        ));
    }
    let stored = G_HEADER_CRC.get(b);
    let computed = header_crc(&b[..header_size as usize]);
    if stored != computed {
        return Err(Error::invalid(
            "GPT header",
            format!("CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    let h = GptHeader {
        revision: G_REVISION.get(b),
        header_size,
        header_crc32: stored,
        my_lba: G_MY_LBA.get(b),
        alternate_lba: G_ALTERNATE_LBA.get(b),
        first_usable_lba: G_FIRST_USABLE.get(b),
        last_usable_lba: G_LAST_USABLE.get(b),
        disk_guid: Guid(G_DISK_GUID.get(b)),
        entries_lba: G_ENTRIES_LBA.get(b),
        entry_count: G_ENTRY_COUNT.get(b),
        entry_size: G_ENTRY_SIZE.get(b),
        entries_crc32: G_ENTRIES_CRC.get(b),
    };
    if h.entry_size < 128 || h.entry_size % 8 != 0 {
        return Err(Error::invalid(
            "GPT header",
            format!(
                "entry size {} is not a multiple of 8 of at least 128",
                h.entry_size
            ),
        ));
    }
    if u64::from(h.entry_count) * u64::from(h.entry_size) > MAX_ENTRIES_BYTES {
        return Err(Error::invalid(
            "GPT header",
            format!(
                "{} entries of {} bytes is more than the {MAX_ENTRIES_BYTES}-byte limit",
                h.entry_count, h.entry_size
            ),
        ));
    }
    Ok(h)
}

/// CRC32 of a header with its CRC field taken as zero.
fn header_crc(header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..16]);
    h.update(&[0u8; 4]);
    h.update(&header[20..]);
    h.finalize()
}

impl Gpt {
    /// Reads the GPT of `disk`, trying 512- then 4096-byte sectors. `None` when
    /// there is no GPT signature; an error only when both headers are damaged.
    pub fn read(disk: &(impl Disk + ?Sized)) -> Result<Option<Gpt>> {
        for ss in [512u64, 4096] {
            if disk.size() < ss * 3 {
                continue;
            }
            let mut sector = vec![0u8; ss as usize];
            disk.read_at(&mut sector, ss)?;
            if G_SIGNATURE.get(&sector) != SIGNATURE {
                continue;
            }
            return Gpt::read_with_sector_size(disk, ss).map(Some);
        }
        Ok(None)
    }

    fn read_with_sector_size(disk: &(impl Disk + ?Sized), ss: u64) -> Result<Gpt> {
        let last_lba = disk.size() / ss - 1;
        let mut problems = Vec::new();
        let primary = Gpt::read_at(disk, ss, 1);
        let mut gpt = match primary {
            Ok(g) => g,
            Err(e) => {
                problems.push(format!("primary GPT is damaged ({e}); read the backup"));
                let mut g = Gpt::read_at(disk, ss, last_lba).map_err(|e2| {
                    Error::invalid(
                        "GPT",
                        format!("both tables are damaged: primary: {e}; backup: {e2}"),
                    )
                })?;
                g.primary_ok = false;
                g
            }
        };
        if gpt.primary_ok {
            if gpt.header.alternate_lba != last_lba {
                problems.push(format!(
                    "the backup GPT header is at LBA {}, not at the disk's last LBA {last_lba}",
                    gpt.header.alternate_lba
                ));
            } else if let Err(e) = Gpt::read_at(disk, ss, last_lba) {
                problems.push(format!("backup GPT is damaged ({e})"));
            }
        }
        problems.extend(gpt.layout_problems(last_lba));
        gpt.problems = problems;
        Ok(gpt)
    }

    /// Reads and checks the header at `lba` and its entry array.
    fn read_at(disk: &(impl Disk + ?Sized), ss: u64, lba: u64) -> Result<Gpt> {
        let mut hb = vec![0u8; ss as usize];
        disk.read_at(&mut hb, lba * ss)?;
        let header = parse_header(&hb, ss)?;
        if header.my_lba != lba {
            return Err(Error::invalid(
                "GPT header",
                format!("found at LBA {lba} but says it is at LBA {}", header.my_lba),
            ));
        }
        let len = u64::from(header.entry_count) * u64::from(header.entry_size);
        let start = header.entries_lba.checked_mul(ss);
        if start
            .and_then(|s| s.checked_add(len))
            .is_none_or(|end| end > disk.size())
        {
            return Err(Error::invalid(
                "GPT header",
                format!(
                    "entry array at LBA {} lies outside the disk",
                    header.entries_lba
                ),
            ));
        }
        let mut entries = vec![0u8; len as usize];
        disk.read_at(&mut entries, header.entries_lba * ss)?;
        let crc = crc32fast::hash(&entries);
        if crc != header.entries_crc32 {
            return Err(Error::invalid(
                "GPT entries",
                format!(
                    "CRC32 mismatch (stored {:#010x}, computed {crc:#010x})",
                    header.entries_crc32
                ),
            ));
        }
        let partitions = entries
            .chunks_exact(header.entry_size as usize)
            .enumerate()
            .filter_map(|(i, e)| {
                let type_guid = Guid(E_TYPE.get(e));
                (!type_guid.is_nil()).then(|| GptPartition {
                    number: i as u32 + 1,
                    type_guid,
                    unique_guid: Guid(E_UNIQUE.get(e)),
                    first_lba: E_FIRST.get(e),
                    last_lba: E_LAST.get(e),
                    attributes: E_ATTRS.get(e),
                    name: utf16_name(&e[E_NAME]),
                })
            })
            .collect();
        hb.truncate(header.header_size as usize);
        Ok(Gpt {
            sector_size: ss,
            header,
            partitions,
            problems: Vec::new(),
            primary_ok: lba == 1,
            header_bytes: hb,
            entries_bytes: entries,
        })
    }

    /// Overlaps, inverted ranges and partitions outside the usable area.
    fn layout_problems(&self, last_lba: u64) -> Vec<String> {
        let h = &self.header;
        let mut out = Vec::new();
        if h.first_usable_lba > h.last_usable_lba || h.last_usable_lba > last_lba {
            out.push(format!(
                "usable range {}..={} does not fit the disk's {} sectors",
                h.first_usable_lba,
                h.last_usable_lba,
                last_lba + 1
            ));
        }
        let mut sorted: Vec<&GptPartition> = self.partitions.iter().collect();
        sorted.sort_by_key(|p| p.first_lba);
        for p in &sorted {
            if p.first_lba > p.last_lba {
                out.push(format!("partition {} ends before it starts", p.number));
            } else if p.first_lba < h.first_usable_lba || p.last_lba > h.last_usable_lba {
                out.push(format!(
                    "partition {} ({}..={}) lies outside the usable range {}..={}",
                    p.number, p.first_lba, p.last_lba, h.first_usable_lba, h.last_usable_lba
                ));
            }
        }
        for pair in sorted.windows(2) {
            if pair[1].first_lba <= pair[0].last_lba {
                out.push(format!(
                    "partitions {} and {} overlap",
                    pair[0].number, pair[1].number
                ));
            }
        }
        out
    }

    /// The writes that move the backup header and entries to the end of a disk
    /// grown to `new_size` bytes, update the primary header (alternate LBA,
    /// last usable LBA, CRC) and resize a protective MBR (`sector0`) that
    /// covered the old disk. Apply them in order: the old backup is cleared first.
    ///
    /// Needs a valid primary table; partitions are not changed.
    pub fn grow_writes(&self, sector0: &[u8; 512], new_size: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        if !self.primary_ok {
            return Err(Error::invalid(
                "GPT",
                "the primary table is damaged, so the backup cannot be rebuilt from it",
            ));
        }
        let ss = self.sector_size;
        let h = &self.header;
        let entries_sectors = (self.entries_bytes.len() as u64).div_ceil(ss);
        let new_last = new_size / ss - 1;
        let old_last = h.alternate_lba;
        if new_last <= old_last {
            return Err(Error::invalid(
                "GPT",
                format!(
                    "the disk did not grow (backup at LBA {old_last}, new last LBA {new_last})"
                ),
            ));
        }
        let new_entries_lba = new_last - entries_sectors;
        if new_entries_lba <= h.entries_lba + entries_sectors {
            return Err(Error::invalid(
                "GPT",
                "the disk is too small for two entry arrays",
            ));
        }
        // Extend the usable area only if it reached the old backup table.
        let old_max_usable = old_last.saturating_sub(entries_sectors + 1);
        let last_usable = if h.last_usable_lba >= old_max_usable {
            new_entries_lba - 1
        } else {
            h.last_usable_lba
        };

        let mut primary = self.header_bytes.clone();
        G_ALTERNATE_LBA.set(&mut primary, new_last);
        G_LAST_USABLE.set(&mut primary, last_usable);
        seal(&mut primary);
        let mut backup = primary.clone();
        G_MY_LBA.set(&mut backup, new_last);
        G_ALTERNATE_LBA.set(&mut backup, 1);
        G_ENTRIES_LBA.set(&mut backup, new_entries_lba);
        seal(&mut backup);

        let sector = |b: &[u8]| {
            let mut v = b.to_vec();
            v.resize(ss as usize, 0);
            v
        };
        let mut entries = self.entries_bytes.clone();
        entries.resize((entries_sectors * ss) as usize, 0);

        let mut writes = Vec::new();
        // Clear the old backup header and the entry array in front of it, when
        // they lie where the primary's usable area or array is not.
        let old_start = old_last.saturating_sub(entries_sectors);
        if old_start > h.entries_lba + entries_sectors {
            writes.push((
                old_start * ss,
                vec![0u8; ((entries_sectors + 1) * ss) as usize],
            ));
        }
        writes.push((ss, sector(&primary)));
        writes.push((new_entries_lba * ss, entries));
        writes.push((new_last * ss, sector(&backup)));
        if ss == 512 {
            if let Some(m) = mbr::resize_protective(sector0, old_last + 1, new_last + 1) {
                writes.push((0, m.to_vec()));
            }
        }
        Ok(writes)
    }
}

/// Recomputes a header's CRC in place.
fn seal(header: &mut [u8]) {
    let crc = header_crc(header);
    G_HEADER_CRC.set(header, crc);
}

fn utf16_name(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Applies `writes` to an in-memory disk, growing it as needed.
    pub(crate) fn apply(disk: &mut Vec<u8>, writes: &[(u64, Vec<u8>)]) {
        for (off, data) in writes {
            let o = *off as usize;
            if disk.len() < o + data.len() {
                disk.resize(o + data.len(), 0);
            }
            disk[o..o + data.len()].copy_from_slice(data);
        }
    }

    /// Builds a GPT disk of `sectors` 512-byte sectors with the given partitions
    /// (type, first, last), 128 entries of 128 bytes.
    pub(crate) fn build(sectors: u64, parts: &[(&str, u64, u64)]) -> Vec<u8> {
        let ss = 512u64;
        let mut d = vec![0u8; (sectors * ss) as usize];
        let mut s0 = [0u8; 512];
        crate::part::mbr::tests::set_entry(&mut s0, 0, 0xee, 1, (sectors - 1) as u32);
        d[..512].copy_from_slice(&s0);
        let mut entries = vec![0u8; 128 * 128];
        for (i, (t, first, last)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            E_TYPE.set(e, &Guid::parse(t).unwrap().0);
            E_UNIQUE.set(e, &[i as u8 + 1; 16]);
            E_FIRST.set(e, *first);
            E_LAST.set(e, *last);
            for (j, u) in format!("part{i}").encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let last = sectors - 1;
        let mut h = vec![0u8; 92];
        G_SIGNATURE.set(&mut h, &SIGNATURE);
        G_REVISION.set(&mut h, 0x0001_0000);
        G_HEADER_SIZE.set(&mut h, 92);
        G_MY_LBA.set(&mut h, 1);
        G_ALTERNATE_LBA.set(&mut h, last);
        G_FIRST_USABLE.set(&mut h, 34);
        G_LAST_USABLE.set(&mut h, last - 33);
        G_DISK_GUID.set(&mut h, &[9; 16]);
        G_ENTRIES_LBA.set(&mut h, 2);
        G_ENTRY_COUNT.set(&mut h, 128);
        G_ENTRY_SIZE.set(&mut h, 128);
        G_ENTRIES_CRC.set(&mut h, crc32fast::hash(&entries));
        seal(&mut h);
        let mut b = h.clone();
        G_MY_LBA.set(&mut b, last);
        G_ALTERNATE_LBA.set(&mut b, 1);
        G_ENTRIES_LBA.set(&mut b, last - 32);
        seal(&mut b);
        d[512..604].copy_from_slice(&h);
        d[1024..1024 + entries.len()].copy_from_slice(&entries);
        let be = ((last - 32) * ss) as usize;
        d[be..be + entries.len()].copy_from_slice(&entries);
        d[(last * ss) as usize..(last * ss) as usize + 92].copy_from_slice(&b);
        d
    }

    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

    #[test]
    fn reads_partitions_and_checks_crcs() {
        let disk = build(8192, &[(ESP, 2048, 4095), (LINUX, 4096, 8158)]);
        let gpt = Gpt::read(&disk[..]).unwrap().unwrap();
        assert!(gpt.problems.is_empty(), "{:?}", gpt.problems);
        assert_eq!(gpt.partitions.len(), 2);
        assert_eq!(gpt.partitions[0].type_guid.type_name(), Some("EFI system"));
        assert_eq!(gpt.partitions[1].name, "part1");
        assert_eq!(gpt.partitions[1].first_lba, 4096);
    }

    #[test]
    fn damaged_primary_falls_back_to_backup() {
        let mut disk = build(8192, &[(LINUX, 2048, 8000)]);
        disk[1024] ^= 0xff; // entry array CRC no longer matches
        let gpt = Gpt::read(&disk[..]).unwrap().unwrap();
        assert!(!gpt.primary_ok);
        assert!(
            gpt.problems[0].contains("primary GPT is damaged"),
            "{:?}",
            gpt.problems
        );
        assert_eq!(gpt.partitions.len(), 1);
        assert!(gpt.grow_writes(&[0; 512], 16384 * 512).is_err());
    }

    #[test]
    fn overlaps_and_out_of_range_partitions_are_reported() {
        let disk = build(8192, &[(LINUX, 2048, 5000), (LINUX, 4000, 9000)]);
        let gpt = Gpt::read(&disk[..]).unwrap().unwrap();
        let all = gpt.problems.join("; ");
        assert!(all.contains("overlap"), "{all}");
        assert!(all.contains("outside the usable range"), "{all}");
    }

    #[test]
    fn growing_moves_the_backup_and_keeps_a_valid_table() {
        let mut disk = build(8192, &[(LINUX, 2048, 8158)]);
        let before = Gpt::read(&disk[..]).unwrap().unwrap();
        let new_size = 12288 * 512;
        let mut s0 = [0u8; 512];
        s0.copy_from_slice(&disk[..512]);
        let writes = before.grow_writes(&s0, new_size).unwrap();
        disk.resize(new_size as usize, 0);
        apply(&mut disk, &writes);
        let after = Gpt::read(&disk[..]).unwrap().unwrap();
        assert!(after.primary_ok);
        assert!(after.problems.is_empty(), "{:?}", after.problems);
        assert_eq!(after.header.alternate_lba, 12287);
        assert_eq!(after.header.last_usable_lba, 12287 - 33);
        assert_eq!(after.partitions, before.partitions);
        // The old backup header is gone.
        assert_ne!(&disk[8191 * 512..8191 * 512 + 8], b"EFI PART");
        let backup = Gpt::read_at(&disk[..], 512, 12287).unwrap();
        assert_eq!(backup.header.entries_lba, 12287 - 32);
        let mbr = crate::part::mbr::Mbr::read(&disk[..]).unwrap().unwrap();
        assert_eq!(mbr.partitions[0].sectors, 12287);
    }

    #[test]
    fn absurd_entry_counts_are_refused() {
        let mut disk = build(8192, &[(LINUX, 2048, 8000)]);
        let h = &mut disk[512..604];
        G_ENTRY_COUNT.set(h, u32::MAX);
        seal(h);
        let r = Gpt::read(&disk[..]);
        // Primary refused; the intact backup still gives a table.
        let gpt = r.unwrap().unwrap();
        assert!(!gpt.primary_ok);
        assert!(gpt.problems[0].contains("limit"), "{:?}", gpt.problems);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Up to 8 non-overlapping partitions inside 34..=8158 of an 8192-sector disk.
        fn layouts() -> impl Strategy<Value = Vec<(u64, u64)>> {
            proptest::collection::btree_set(34u64..8100, 0..16).prop_map(|cuts| {
                let cuts: Vec<u64> = cuts.into_iter().collect();
                cuts.chunks_exact(2)
                    .map(|c| (c[0], c[1] - 1))
                    .filter(|(a, b)| a <= b)
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn tables_round_trip_and_survive_growth(parts in layouts(), extra in 1u64..5000) {
                let spec: Vec<(&str, u64, u64)> = parts.iter().map(|&(a, b)| (LINUX, a, b)).collect();
                let mut disk = build(8192, &spec);
                let gpt = Gpt::read(&disk[..]).unwrap().unwrap();
                prop_assert!(gpt.problems.is_empty(), "{:?}", gpt.problems);
                let got: Vec<(u64, u64)> = gpt.partitions.iter().map(|p| (p.first_lba, p.last_lba)).collect();
                prop_assert_eq!(&got, &parts);

                let new_size = (8192 + extra) * 512;
                let mut s0 = [0u8; 512];
                s0.copy_from_slice(&disk[..512]);
                let writes = gpt.grow_writes(&s0, new_size).unwrap();
                disk.resize(new_size as usize, 0);
                apply(&mut disk, &writes);
                let grown = Gpt::read(&disk[..]).unwrap().unwrap();
                prop_assert!(grown.primary_ok);
                prop_assert!(grown.problems.is_empty(), "{:?}", grown.problems);
                prop_assert_eq!(grown.partitions, gpt.partitions);
                prop_assert_eq!(grown.header.alternate_lba, 8192 + extra - 1);
            }

            #[test]
            fn hostile_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 92), count in any::<u32>(), size in any::<u32>()) {
                let mut disk = build(8192, &[(LINUX, 2048, 4000)]);
                let h = &mut disk[512..604];
                h[20..].copy_from_slice(&bytes[20..]);
                G_ENTRY_COUNT.set(h, count);
                G_ENTRY_SIZE.set(h, size);
                seal(h);
                let _ = Gpt::read(&disk[..]);
            }
        }
    }
}
