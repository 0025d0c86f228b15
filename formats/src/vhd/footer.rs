//! The 512-byte VHD footer ("hard disk footer") of the Microsoft VHD
//! specification: every field, its checksum and the CHS geometry algorithm.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::fields::{Be, Bytes};
use crate::{Error, Result};

/// Size of the footer in bytes.
pub const FOOTER_SIZE: usize = 512;
/// The footer's cookie.
pub const COOKIE: [u8; 8] = *b"conectix";
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// `Features` bit that the specification says must always be set.
pub const FEATURES_RESERVED: u32 = 0x0000_0002;
/// The only file format version the specification defines (1.0).
pub const FORMAT_VERSION: u32 = 0x0001_0000;
/// `Data Offset` of a fixed disk: no dynamic header.
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// `Creator Host OS` value for Windows.
pub const HOST_OS_WINDOWS: [u8; 4] = *b"Wi2k";
/// `Creator Application` we write. Readers such as qemu take the disk size
/// from the CHS geometry unless the creator is one they know to use
/// `Current Size` (Hyper-V's `win ` among them); Azure and Hyper-V use
/// `Current Size`, so we write `win ` for every reader to agree on the size.
pub const CREATOR_APPLICATION: [u8; 4] = *b"win ";
/// `Creator Version` we write: major 10, minor 0, as Hyper-V's `win ` does.
pub const CREATOR_VERSION: u32 = 0x000a_0000;

// Field layout (offsets from the specification).
const F_COOKIE: Bytes<8> = Bytes::at(0);
const F_FEATURES: Be<u32> = Be::at(8);
const F_VERSION: Be<u32> = Be::at(12);
const F_DATA_OFFSET: Be<u64> = Be::at(16);
const F_TIMESTAMP: Be<u32> = Be::at(24);
const F_CREATOR_APP: Bytes<4> = Bytes::at(28);
const F_CREATOR_VERSION: Be<u32> = Be::at(32);
const F_CREATOR_HOST_OS: Bytes<4> = Bytes::at(36);
const F_ORIGINAL_SIZE: Be<u64> = Be::at(40);
const F_CURRENT_SIZE: Be<u64> = Be::at(48);
const F_CYLINDERS: Be<u16> = Be::at(56);
const F_HEADS: Be<u8> = Be::at(58);
const F_SECTORS: Be<u8> = Be::at(59);
const F_DISK_TYPE: Be<u32> = Be::at(60);
const F_CHECKSUM: Be<u32> = Be::at(64);
const F_UNIQUE_ID: Bytes<16> = Bytes::at(68);
const F_SAVED_STATE: Be<u8> = Be::at(84);

/// The VHD disk type (footer field `Disk Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskType {
    /// 0: none.
    None,
    /// 2: fixed hard disk (raw data followed by the footer).
    Fixed,
    /// 3: dynamic hard disk (sparse, with a block allocation table).
    Dynamic,
    /// 4: differencing hard disk (needs a parent).
    Differencing,
    /// Any other value, kept as read.
    Other(u32),
}

impl DiskType {
    /// The value stored in the footer.
    pub fn to_u32(self) -> u32 {
        match self {
            DiskType::None => 0,
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
            DiskType::Other(v) => v,
        }
    }

    /// The type for a stored value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => DiskType::None,
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            v => DiskType::Other(v),
        }
    }

    /// A lower-case name for display.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::None => "none",
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
            DiskType::Other(_) => "unknown",
        }
    }
}

/// Cylinder/head/sector geometry as stored in the footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The largest geometry the footer can express (65535 x 16 x 255).
    pub const MAX: Geometry = Geometry {
        cylinders: 65535,
        heads: 16,
        sectors_per_track: 255,
    };

    /// Geometry for a disk of `size` bytes, by the specification's algorithm
    /// (which may round the CHS capacity down; `Current Size` stays exact).
    pub fn for_size(size: u64) -> Geometry {
        let max = 65535u64 * 16 * 255;
        let total = (size / 512).min(max);
        let (spt, heads, cth): (u64, u64, u64);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cth = total / spt;
        } else {
            let mut s = 17;
            let mut c = total / s;
            let mut h = c.div_ceil(1024).max(4);
            if c >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                c = total / s;
            }
            if c >= h * 1024 {
                s = 63;
                h = 16;
                c = total / s;
            }
            spt = s;
            heads = h;
            cth = c;
        }
        Geometry {
            // All three fit by construction: cth / heads <= 65535, heads <= 16, spt <= 255.
            cylinders: (cth / heads).min(65535) as u16,
            heads: heads as u8,
            sectors_per_track: spt as u8,
        }
    }

    /// Capacity in 512-byte sectors that this geometry describes.
    pub fn sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }
}

/// The VHD footer, every field of the specification.
///
/// ```
/// use diskformats::vhd::{DiskType, Footer};
/// let f = Footer::new(DiskType::Fixed, 64 << 20);
/// let bytes = f.to_bytes();
/// let back = Footer::parse(&bytes).unwrap();
/// assert_eq!(back, f);
/// assert_eq!(back.current_size, 64 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Footer {
    /// `Features` bit field (bit 1, reserved, is always set).
    pub features: u32,
    /// `File Format Version` (1.0 = 0x00010000).
    pub format_version: u32,
    /// `Data Offset`: byte offset of the dynamic header, or all ones for fixed disks.
    pub data_offset: u64,
    /// `Time Stamp`: seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    /// `Creator Application`, four bytes.
    pub creator_application: [u8; 4],
    /// `Creator Version`: major in the high 16 bits, minor in the low.
    pub creator_version: u32,
    /// `Creator Host OS`: `Wi2k` or `Mac `.
    pub creator_host_os: [u8; 4],
    /// `Original Size`: the size at creation time, in bytes.
    pub original_size: u64,
    /// `Current Size`: the virtual disk size in bytes.
    pub current_size: u64,
    /// `Disk Geometry`.
    pub geometry: Geometry,
    /// `Disk Type`.
    pub disk_type: DiskType,
    /// `Checksum` as read (recomputed by [`Footer::to_bytes`]).
    pub checksum: u32,
    /// `Unique Id`, a UUID.
    pub unique_id: [u8; 16],
    /// `Saved State`: 1 when the disk is in a saved state.
    pub saved_state: u8,
}

impl Footer {
    /// A new footer for a disk of `size` bytes, stamped now, with a fresh unique id.
    pub fn new(disk_type: DiskType, size: u64) -> Footer {
        Footer {
            features: FEATURES_RESERVED,
            format_version: FORMAT_VERSION,
            data_offset: match disk_type {
                DiskType::Fixed => NO_DATA_OFFSET,
                _ => FOOTER_SIZE as u64,
            },
            timestamp: timestamp_now(),
            creator_application: CREATOR_APPLICATION,
            creator_version: CREATOR_VERSION,
            creator_host_os: HOST_OS_WINDOWS,
            original_size: size,
            current_size: size,
            geometry: Geometry::for_size(size),
            disk_type,
            checksum: 0,
            unique_id: new_unique_id(),
            saved_state: 0,
        }
        .with_checksum()
    }

    /// Parses a footer and verifies its cookie and checksum.
    pub fn parse(bytes: &[u8; FOOTER_SIZE]) -> Result<Footer> {
        let f = Footer::parse_ignoring_checksum(bytes)?;
        let computed = checksum(bytes, F_CHECKSUM.range_u32());
        if computed != f.checksum {
            return Err(Error::FooterChecksum {
                stored: f.checksum,
                computed,
            });
        }
        Ok(f)
    }

    /// Parses a footer, checking only the cookie: for recovering images whose
    /// checksum is known to be wrong.
    pub fn parse_ignoring_checksum(bytes: &[u8; FOOTER_SIZE]) -> Result<Footer> {
        if F_COOKIE.get(bytes) != COOKIE {
            return Err(Error::NotVhd);
        }
        Ok(Footer {
            features: F_FEATURES.get(bytes),
            format_version: F_VERSION.get(bytes),
            data_offset: F_DATA_OFFSET.get(bytes),
            timestamp: F_TIMESTAMP.get(bytes),
            creator_application: F_CREATOR_APP.get(bytes),
            creator_version: F_CREATOR_VERSION.get(bytes),
            creator_host_os: F_CREATOR_HOST_OS.get(bytes),
            original_size: F_ORIGINAL_SIZE.get(bytes),
            current_size: F_CURRENT_SIZE.get(bytes),
            geometry: Geometry {
                cylinders: F_CYLINDERS.get(bytes),
                heads: F_HEADS.get(bytes),
                sectors_per_track: F_SECTORS.get(bytes),
            },
            disk_type: DiskType::from_u32(F_DISK_TYPE.get(bytes)),
            checksum: F_CHECKSUM.get(bytes),
            unique_id: F_UNIQUE_ID.get(bytes),
            saved_state: F_SAVED_STATE.get(bytes),
        })
    }

    /// Serialises the footer, computing the checksum (the stored
    /// [`Footer::checksum`] is ignored). Reserved bytes are zero.
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        F_COOKIE.set(&mut b, &COOKIE);
        F_FEATURES.set(&mut b, self.features);
        F_VERSION.set(&mut b, self.format_version);
        F_DATA_OFFSET.set(&mut b, self.data_offset);
        F_TIMESTAMP.set(&mut b, self.timestamp);
        F_CREATOR_APP.set(&mut b, &self.creator_application);
        F_CREATOR_VERSION.set(&mut b, self.creator_version);
        F_CREATOR_HOST_OS.set(&mut b, &self.creator_host_os);
        F_ORIGINAL_SIZE.set(&mut b, self.original_size);
        F_CURRENT_SIZE.set(&mut b, self.current_size);
        F_CYLINDERS.set(&mut b, self.geometry.cylinders);
        F_HEADS.set(&mut b, self.geometry.heads);
        F_SECTORS.set(&mut b, self.geometry.sectors_per_track);
        F_DISK_TYPE.set(&mut b, self.disk_type.to_u32());
        F_UNIQUE_ID.set(&mut b, &self.unique_id);
        F_SAVED_STATE.set(&mut b, self.saved_state);
        let sum = checksum(&b, F_CHECKSUM.range_u32());
        F_CHECKSUM.set(&mut b, sum);
        b
    }

    /// The footer with its checksum field set to what [`Footer::to_bytes`] writes.
    pub fn with_checksum(mut self) -> Footer {
        self.checksum = F_CHECKSUM.get(&self.to_bytes());
        self
    }

    /// `Time Stamp` as seconds since the Unix epoch.
    pub fn timestamp_unix(&self) -> u64 {
        VHD_EPOCH_UNIX + u64::from(self.timestamp)
    }

    /// `Unique Id` in the usual 8-4-4-4-12 text form.
    pub fn unique_id_string(&self) -> String {
        let u = &self.unique_id;
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]
        )
    }
}

impl Be<u32> {
    /// The byte range of a `u32` field, for checksum exclusion.
    const fn range_u32(&self) -> std::ops::Range<usize> {
        let at = self.offset();
        at..at + 4
    }
}

/// One's complement of the byte sum of `bytes`, leaving out `skip` (the
/// checksum field itself), as the specification defines it for the footer and
/// the dynamic header.
pub(crate) fn checksum(bytes: &[u8], skip: std::ops::Range<usize>) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// Seconds since the VHD epoch, now (saturating; it wraps in 2136).
pub fn timestamp_now() -> u32 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(VHD_EPOCH_UNIX);
    u32::try_from(unix.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX)
}

/// A random (version 4) UUID, from the standard library's randomly keyed hasher.
pub fn new_unique_id() -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut id = [0u8; 16];
    for (i, half) in id.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_usize(i);
        h.write_u32(std::process::id());
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn geometry_follows_the_specification() {
        // 127 GiB and up saturate at 255 sectors per track.
        let g = Geometry::for_size(200 << 30);
        assert_eq!((g.heads, g.sectors_per_track), (16, 255));
        // Past the CHS limit the geometry is the maximum.
        assert_eq!(Geometry::for_size(4 << 40), Geometry::MAX);
        // Small disk: 17 sectors per track, at least 4 heads.
        let g = Geometry::for_size(20 << 20);
        assert_eq!(g.sectors_per_track, 17);
        assert!(g.heads >= 4);
        // 1 GiB: 2097152 sectors -> the 63-spt branch (as Hyper-V writes it).
        let g = Geometry::for_size(1 << 30);
        assert_eq!(
            g,
            Geometry {
                cylinders: 2080,
                heads: 16,
                sectors_per_track: 63
            }
        );
        for size in [1u64 << 20, 3 << 20, 100 << 20, 10 << 30, 126 << 30] {
            let g = Geometry::for_size(size);
            assert!(g.sectors() <= size / 512, "{size}: {g:?}");
        }
    }

    #[test]
    fn checksum_is_ones_complement_of_byte_sum() {
        let f = Footer::new(DiskType::Fixed, 1 << 30);
        let b = f.to_bytes();
        let sum: u32 = b
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, &x)| u32::from(x))
            .sum();
        assert_eq!(u32::from_be_bytes([b[64], b[65], b[66], b[67]]), !sum);
        assert_eq!(&b[0..8], b"conectix");
        assert_eq!(&b[16..24], &[0xff; 8]);
    }

    #[test]
    fn a_corrupt_footer_is_a_typed_error_unless_accepted() {
        let mut b = Footer::new(DiskType::Fixed, 1 << 30).to_bytes();
        b[48] ^= 1;
        assert!(matches!(
            Footer::parse(&b),
            Err(Error::FooterChecksum { .. })
        ));
        assert!(Footer::parse_ignoring_checksum(&b).is_ok());
        b[0] = b'x';
        assert!(matches!(
            Footer::parse_ignoring_checksum(&b),
            Err(Error::NotVhd)
        ));
    }

    #[test]
    fn unique_ids_differ_and_are_version_4() {
        let a = new_unique_id();
        let b = new_unique_id();
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
    }

    proptest! {
        #[test]
        fn footer_round_trips(
            features in any::<u32>(), version in any::<u32>(), data_offset in any::<u64>(),
            timestamp in any::<u32>(), app in any::<[u8; 4]>(), cv in any::<u32>(),
            os in any::<[u8; 4]>(), orig in any::<u64>(), cur in any::<u64>(),
            c in any::<u16>(), h in any::<u8>(), s in any::<u8>(), t in any::<u32>(),
            id in any::<[u8; 16]>(), saved in any::<u8>(),
        ) {
            let f = Footer {
                features, format_version: version, data_offset, timestamp,
                creator_application: app, creator_version: cv, creator_host_os: os,
                original_size: orig, current_size: cur,
                geometry: Geometry { cylinders: c, heads: h, sectors_per_track: s },
                disk_type: DiskType::from_u32(t), checksum: 0, unique_id: id, saved_state: saved,
            }.with_checksum();
            let bytes = f.to_bytes();
            let back = Footer::parse(&bytes).unwrap();
            prop_assert_eq!(&back, &f);
            prop_assert_eq!(back.to_bytes(), bytes);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 512)) {
            let mut b = [0u8; 512];
            b.copy_from_slice(&bytes);
            b[..8].copy_from_slice(b"conectix");
            let _ = Footer::parse(&b);
        }
    }

    /// A fixture from the repository's testdata/ (see its README).
    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn footers_qemu_made_parse_as_qemu_wrote_them() {
        let b: [u8; 512] = fixture("vhd/qemu-fixed-32MiB.footer").try_into().unwrap();
        let f = Footer::parse(&b).unwrap();
        assert_eq!(f.disk_type, DiskType::Fixed);
        assert_eq!(f.current_size, 32 << 20);
        // With force_size qemu signs `qem2`: "take Current Size, not the CHS".
        assert_eq!(&f.creator_application, b"qem2");
        assert_eq!(f.data_offset, u64::MAX, "a fixed disk has no data offset");
        // ... and writes the largest geometry, so CHS cannot be mistaken for the size.
        assert_eq!(f.geometry, Geometry::MAX);
        assert_eq!(f.to_bytes(), b, "our writer gives back qemu's bytes");

        let head = fixture("vhd/qemu-dynamic-64MiB.head");
        let copy: [u8; 512] = head[..512].try_into().unwrap();
        let f = Footer::parse(&copy).unwrap();
        assert_eq!(
            (f.disk_type, f.current_size, f.data_offset),
            (DiskType::Dynamic, 64 << 20, 512)
        );
        let h: [u8; 1024] = head[512..].try_into().unwrap();
        let h = crate::vhd::DynamicHeader::parse(&h).unwrap();
        assert_eq!(h.block_size, 2 << 20);
        assert_eq!(h.max_table_entries, 32);

        let bad: [u8; 512] = fixture("vhd/bad-checksum.footer").try_into().unwrap();
        assert!(matches!(
            Footer::parse(&bad),
            Err(Error::FooterChecksum { .. })
        ));
        assert_eq!(
            Footer::parse_ignoring_checksum(&bad).unwrap().current_size,
            32 << 20
        );
    }
}
