//! `info`: what an image is (format, VHD footer, geometry, sizes, partitions)
//! and whether Azure would take it as it is.

use std::path::Path;

use diskformats::vhd::{Footer, FOOTER_SIZE};
use std::os::unix::fs::FileTypeExt;

use diskformats::{
    data_ranges, Disk, Format, Image, OpenOptions, PartitionKind, PartitionTable, TableKind, TypeId,
};
use serde::Serialize;

use crate::limits;
use crate::source::ebs::{EbsSource, Quotas, Settings};
use crate::source::{self, BlockSource};

/// What `info` reports about an EBS snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub snapshot: String,
    /// Region read.
    pub region: String,
    /// Volume size in bytes.
    pub volume_size: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks written in the snapshot (the only ones that will be read).
    pub blocks: u64,
    /// Bytes in those blocks.
    pub allocated_bytes: u64,
}

/// Lists an EBS snapshot (no block data is read).
pub fn snapshot_info(snapshot: &str, settings: &Settings) -> Result<SnapshotInfo, source::Error> {
    let src = EbsSource::open(snapshot, settings, Quotas::published())?;
    let blocks = src.count_blocks()?;
    Ok(SnapshotInfo {
        snapshot: snapshot.to_owned(),
        region: src.region().to_owned(),
        volume_size: src.size(),
        block_size: src.block_size(),
        blocks,
        allocated_bytes: blocks * u64::from(src.block_size()),
    })
}

/// Everything `info` reports about an image.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    /// The path given.
    pub path: String,
    /// Detected format.
    #[serde(serialize_with = "crate::kinds::as_text::serialize")]
    pub format: Format,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// Size of the file in bytes (for a block device, its size).
    pub file_size: u64,
    /// Bytes in the image's data ranges (the rest is holes or unallocated blocks).
    pub allocated_bytes: u64,
    /// The VHD footer, for VHDs.
    pub footer: Option<FooterInfo>,
    /// Dynamic VHD header fields.
    pub dynamic: Option<DynamicInfo>,
    /// "gpt", "mbr", "none" or "gpt (damaged)".
    #[serde(serialize_with = "crate::kinds::as_text::serialize")]
    pub partition_table: TableKind,
    /// Partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// Problems found in the partition table.
    pub problems: Vec<String>,
    /// Why Azure would refuse this image for upload; empty when it would take it.
    pub azure_upload_problems: Vec<String>,
}

/// The VHD footer, field by field.
#[derive(Clone, Debug, Serialize)]
pub struct FooterInfo {
    /// `Features`.
    pub features: u32,
    /// `File Format Version`, as major.minor.
    pub format_version: String,
    /// `Data Offset`, hex (a fixed VHD's is all ones, past what JSON
    /// numbers carry exactly).
    pub data_offset: String,
    /// `Time Stamp`, as UTC date and time.
    pub timestamp: String,
    /// `Creator Application`.
    pub creator_application: String,
    /// `Creator Version`, as major.minor.
    pub creator_version: String,
    /// `Creator Host OS`.
    pub creator_host_os: String,
    /// `Original Size`.
    pub original_size: u64,
    /// `Current Size`.
    pub current_size: u64,
    /// `Disk Geometry`: cylinders.
    pub cylinders: u16,
    /// `Disk Geometry`: heads.
    pub heads: u8,
    /// `Disk Geometry`: sectors per track.
    pub sectors_per_track: u8,
    /// Capacity of the CHS geometry in bytes.
    pub geometry_size: u64,
    /// `Disk Type`.
    pub disk_type: String,
    /// `Checksum`, hex.
    pub checksum: String,
    /// True when the checksum matches.
    pub checksum_valid: bool,
    /// `Unique Id`.
    pub unique_id: String,
    /// `Saved State`.
    pub saved_state: u8,
}

/// Dynamic VHD header fields.
#[derive(Clone, Debug, Serialize)]
pub struct DynamicInfo {
    /// Block size in bytes.
    pub block_size: u32,
    /// BAT entries.
    pub max_table_entries: u32,
    /// BAT offset.
    pub table_offset: u64,
    /// Allocated blocks.
    pub allocated_blocks: usize,
}

/// One partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionInfo {
    /// Number as Linux names it.
    pub number: u32,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the partition is for (a name, else its type GUID or byte).
    #[serde(serialize_with = "crate::kinds::as_text::serialize")]
    pub kind: PartitionKind,
    /// Its type as the table stores it: a GPT type GUID or an MBR type byte.
    #[serde(serialize_with = "crate::kinds::as_text::serialize")]
    pub type_id: TypeId,
    /// GPT name.
    pub name: String,
    /// GPT unique GUID.
    pub guid: Option<String>,
}

/// Why `info` failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct Error {
    path: String,
    source: diskformats::Error,
}

/// Inspects the image at `path`.
pub fn info(path: &Path, opts: &OpenOptions) -> Result<Info, Error> {
    let err = |source| Error {
        path: path.display().to_string(),
        source,
    };
    // The size comes from the descriptor the image is read through: no
    // second look at the path that could fail, or find another file.
    let file = diskformats::open_input(path).map_err(err)?;
    let meta = file.metadata().map_err(|source| {
        err(diskformats::Error::Io {
            context: "reading the image's metadata".into(),
            source,
        })
    })?;
    let image = Image::from_file(file, opts).map_err(err)?;
    let allocated_bytes = data_ranges(&image)
        .map(|r| r.map(|r| r.end - r.start))
        .sum::<Result<u64, _>>()
        .map_err(err)?;
    // A block device's metadata says 0 bytes: its size is the device's.
    let file_size = if meta.file_type().is_block_device() {
        image.size()
    } else {
        meta.len()
    };
    let table = PartitionTable::read(&image).map_err(err)?;
    let footer = image.footer().map(footer_info);
    let dynamic = match &image {
        Image::Dynamic(d) => Some(DynamicInfo {
            block_size: d.header().block_size,
            max_table_entries: d.header().max_table_entries,
            table_offset: d.header().table_offset,
            allocated_blocks: d.allocated_blocks(),
        }),
        _ => None,
    };
    let mut azure = Vec::new();
    if image.format() != Format::VhdFixed {
        azure.push(format!(
            "Azure takes only fixed VHDs and this is {}; run `ebs2azure convert` to make one",
            image.format()
        ));
    }
    azure.extend(limits::azure_size_problems(image.size()));
    Ok(Info {
        path: path.display().to_string(),
        format: image.format(),
        virtual_size: image.size(),
        file_size,
        allocated_bytes,
        footer,
        dynamic,
        partition_table: table.kind(),
        partitions: table
            .partitions()
            .into_iter()
            .map(|p| PartitionInfo {
                number: p.number,
                start: p.start,
                size: p.size,
                kind: p.kind,
                type_id: p.type_id,
                name: p.name,
                guid: p.guid,
            })
            .collect(),
        problems: table.problems(),
        azure_upload_problems: azure,
    })
}

fn footer_info(f: &Footer) -> FooterInfo {
    let valid = f.clone().with_checksum().checksum == f.checksum;
    FooterInfo {
        features: f.features,
        format_version: version(f.format_version),
        data_offset: format!("{:#018x}", f.data_offset),
        timestamp: utc_string(f.timestamp_unix()),
        creator_application: printable(&f.creator_application),
        creator_version: version(f.creator_version),
        creator_host_os: printable(&f.creator_host_os),
        original_size: f.original_size,
        current_size: f.current_size,
        cylinders: f.geometry.cylinders,
        heads: f.geometry.heads,
        sectors_per_track: f.geometry.sectors_per_track,
        geometry_size: f.geometry.sectors() * FOOTER_SIZE as u64,
        disk_type: f.disk_type.name().to_string(),
        checksum: format!("{:#010x}", f.checksum),
        checksum_valid: valid,
        unique_id: f.unique_id_string(),
        saved_state: f.saved_state,
    }
}

fn version(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xffff)
}

fn printable(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn utc_string(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(946_684_800), "2000-01-01T00:00:00Z");
        assert_eq!(utc_string(1_709_210_096), "2024-02-29T12:34:56Z");
    }
}
