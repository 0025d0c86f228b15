//! Dynamic VHDs: a footer copy, a dynamic disk header, a block allocation
//! table (BAT) and blocks that each start with a sector bitmap.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::footer::{checksum, DiskType, Footer, FOOTER_SIZE};
use super::MAX_DYNAMIC_SIZE;
use crate::disk::{check_range, Disk};
use crate::fields::{Be, Bytes};
use crate::raw::read_exact_at;
use crate::{Error, Result};

/// Size of the dynamic disk header.
pub const HEADER_SIZE: usize = 1024;
/// The dynamic header's cookie.
pub const HEADER_COOKIE: [u8; 8] = *b"cxsparse";
/// BAT entry of a block that is not allocated.
pub const UNALLOCATED: u32 = u32::MAX;
/// Block size written by default (the specification's and Hyper-V's 2 MiB).
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
/// Smallest and largest block sizes accepted when reading.
const BLOCK_SIZE_RANGE: Range<u64> = 512..(256 << 20) + 1;

const H_COOKIE: Bytes<8> = Bytes::at(0);
const H_DATA_OFFSET: Be<u64> = Be::at(8);
const H_TABLE_OFFSET: Be<u64> = Be::at(16);
const H_VERSION: Be<u32> = Be::at(24);
const H_MAX_TABLE_ENTRIES: Be<u32> = Be::at(28);
const H_BLOCK_SIZE: Be<u32> = Be::at(32);
const H_CHECKSUM: Be<u32> = Be::at(36);
const H_PARENT_ID: Bytes<16> = Bytes::at(40);
const H_PARENT_TIMESTAMP: Be<u32> = Be::at(56);

/// The dynamic disk header (the fields a dynamic, non-differencing disk uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// Header version (1.0 = 0x00010000).
    pub version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Bytes of data per block (a power of two; 2 MiB by default).
    pub block_size: u32,
    /// Parent's unique id (differencing disks only).
    pub parent_unique_id: [u8; 16],
    /// Parent's modification time (differencing disks only).
    pub parent_timestamp: u32,
}

impl DynamicHeader {
    /// Parses and checks a header (cookie and checksum).
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<DynamicHeader> {
        if H_COOKIE.get(b) != HEADER_COOKIE {
            return Err(Error::invalid(
                "VHD dynamic header",
                "cookie is not `cxsparse`",
            ));
        }
        let stored = H_CHECKSUM.get(b);
        let computed = checksum(b, 36..40);
        if stored != computed {
            return Err(Error::HeaderChecksum { stored, computed });
        }
        Ok(DynamicHeader {
            table_offset: H_TABLE_OFFSET.get(b),
            version: H_VERSION.get(b),
            max_table_entries: H_MAX_TABLE_ENTRIES.get(b),
            block_size: H_BLOCK_SIZE.get(b),
            parent_unique_id: H_PARENT_ID.get(b),
            parent_timestamp: H_PARENT_TIMESTAMP.get(b),
        })
    }

    /// Serialises the header with its checksum.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        H_COOKIE.set(&mut b, &HEADER_COOKIE);
        H_DATA_OFFSET.set(&mut b, u64::MAX);
        H_TABLE_OFFSET.set(&mut b, self.table_offset);
        H_VERSION.set(&mut b, self.version);
        H_MAX_TABLE_ENTRIES.set(&mut b, self.max_table_entries);
        H_BLOCK_SIZE.set(&mut b, self.block_size);
        H_PARENT_ID.set(&mut b, &self.parent_unique_id);
        H_PARENT_TIMESTAMP.set(&mut b, self.parent_timestamp);
        let sum = checksum(&b, 36..40);
        H_CHECKSUM.set(&mut b, sum);
        b
    }

    /// Bytes of the sector bitmap in front of each block (rounded up to a sector).
    pub fn bitmap_size(&self) -> u64 {
        bitmap_size(u64::from(self.block_size))
    }
}

fn bitmap_size(block_size: u64) -> u64 {
    (block_size / 512).div_ceil(8).div_ceil(512) * 512
}

/// A dynamic VHD opened for reading.
#[derive(Debug)]
pub struct DynamicVhd {
    file: File,
    footer: Footer,
    header: DynamicHeader,
    bat: Vec<u32>,
    size: u64,
    block_size: u64,
    bitmap_size: u64,
}

impl DynamicVhd {
    /// Opens a dynamic VHD whose footer has been parsed already (see [`crate::Image::open`]).
    pub fn with_footer(file: File, file_len: u64, footer: Footer) -> Result<DynamicVhd> {
        match footer.disk_type {
            DiskType::Dynamic => {}
            other => return Err(Error::UnsupportedDiskType(other.to_u32())),
        }
        let size = footer.current_size;
        if size % 512 != 0 {
            return Err(Error::invalid(
                "VHD footer",
                format!("current size {size} is not a multiple of 512"),
            ));
        }
        let header_end = footer.data_offset.checked_add(HEADER_SIZE as u64);
        if header_end.is_none_or(|end| end > file_len) {
            return Err(Error::truncated(format!(
                "the dynamic header at offset {} lies past the end of the {file_len}-byte file",
                footer.data_offset
            )));
        }
        let mut hb = [0u8; HEADER_SIZE];
        read_exact_at(&file, &mut hb, footer.data_offset)?;
        let header = DynamicHeader::parse(&hb)?;
        let block_size = u64::from(header.block_size);
        if !BLOCK_SIZE_RANGE.contains(&block_size) || !block_size.is_power_of_two() {
            return Err(Error::invalid(
                "VHD dynamic header",
                format!("block size {block_size} is not a power of two between 512 B and 256 MiB"),
            ));
        }
        let blocks = size.div_ceil(block_size);
        if blocks > u64::from(header.max_table_entries) {
            return Err(Error::invalid(
                "VHD dynamic header",
                format!(
                    "{} BAT entries cannot map {size} bytes in {block_size}-byte blocks",
                    header.max_table_entries
                ),
            ));
        }
        // `blocks` fits in u32 now; the BAT it needs must lie inside the file.
        let bat_len = blocks * 4;
        if header
            .table_offset
            .checked_add(bat_len)
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::truncated(format!(
                "the BAT at offset {} ({bat_len} bytes) lies past the end of the {file_len}-byte file",
                header.table_offset
            )));
        }
        let mut raw = vec![0u8; bat_len as usize];
        read_exact_at(&file, &mut raw, header.table_offset)?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bitmap_size = bitmap_size(block_size);
        let data_end = file_len.saturating_sub(FOOTER_SIZE as u64);
        for (i, &entry) in bat.iter().enumerate() {
            if entry == UNALLOCATED {
                continue;
            }
            let in_block = block_size.min(size - i as u64 * block_size);
            let end = u64::from(entry) * 512 + bitmap_size + in_block;
            if end > data_end {
                return Err(Error::truncated(format!(
                    "BAT entry {i} points to sector {entry}, whose block ends at byte {end}, past the data end {data_end}"
                )));
            }
        }
        Ok(DynamicVhd {
            file,
            footer,
            header,
            bat,
            size,
            block_size,
            bitmap_size,
        })
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic disk header.
    pub fn header(&self) -> &DynamicHeader {
        &self.header
    }

    /// Number of allocated blocks.
    pub fn allocated_blocks(&self) -> usize {
        self.bat.iter().filter(|&&e| e != UNALLOCATED).count()
    }

    /// Reads `buf.len()` bytes inside block `index`, starting `in_block` bytes in.
    fn read_in_block(&self, index: usize, in_block: u64, buf: &mut [u8]) -> Result<()> {
        let entry = self.bat[index];
        if entry == UNALLOCATED {
            buf.fill(0);
            return Ok(());
        }
        let base = u64::from(entry) * 512;
        read_exact_at(&self.file, buf, base + self.bitmap_size + in_block)?;
        // Sectors whose bitmap bit is clear hold no data: they read as zero.
        let first = in_block / 512;
        let last = (in_block + buf.len() as u64 - 1) / 512;
        let mut bitmap = vec![0u8; ((last / 8) - (first / 8) + 1) as usize];
        read_exact_at(&self.file, &mut bitmap, base + first / 8)?;
        for sector in first..=last {
            let byte = bitmap[((sector / 8) - (first / 8)) as usize];
            if byte & (0x80 >> (sector % 8)) == 0 {
                let s = (sector * 512).max(in_block) - in_block;
                let e = ((sector + 1) * 512 - in_block).min(buf.len() as u64);
                buf[s as usize..e as usize].fill(0);
            }
        }
        Ok(())
    }
}

impl Disk for DynamicVhd {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = (pos / self.block_size) as usize;
            let in_block = pos % self.block_size;
            let n = ((self.block_size - in_block) as usize).min(buf.len() - done);
            self.read_in_block(index, in_block, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn next_data(&self, offset: u64) -> Result<Option<Range<u64>>> {
        if offset >= self.size {
            return Ok(None);
        }
        let first = (offset / self.block_size) as usize;
        let Some(start) = (first..self.bat.len()).find(|&i| self.bat[i] != UNALLOCATED) else {
            return Ok(None);
        };
        let end = (start..self.bat.len())
            .find(|&i| self.bat[i] == UNALLOCATED)
            .unwrap_or(self.bat.len());
        let s = (start as u64 * self.block_size).max(offset);
        let e = (end as u64 * self.block_size).min(self.size);
        Ok(Some(s..e))
    }
}

/// Writes a dynamic VHD: positional writes in any order, from many threads;
/// a block is allocated on its first write. Call [`DynamicVhdWriter::finish`]
/// to write the BAT, the header and both footer copies.
///
/// ```
/// use diskformats::{Disk, Image, OpenOptions};
/// use diskformats::vhd::DynamicVhdWriter;
/// let tmp = tempfile::NamedTempFile::new()?;
/// let w = DynamicVhdWriter::create(tmp.reopen()?, 64 << 20)?;
/// w.write_at(&[1u8; 512], 10 << 20)?;
/// w.finish()?;
/// let img = Image::open(tmp.path(), &OpenOptions::default())?;
/// let mut b = [0u8; 512];
/// img.read_at(&mut b, 10 << 20)?;
/// assert_eq!(b, [1u8; 512]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DynamicVhdWriter {
    file: File,
    size: u64,
    block_size: u64,
    bitmap_size: u64,
    table_offset: u64,
    state: Mutex<WriterState>,
}

#[derive(Debug)]
struct WriterState {
    bat: Vec<u32>,
    next_free: u64,
}

/// Alignment of block data in the file, so holes inside a block stay holes.
const DATA_ALIGN: u64 = 4096;

impl DynamicVhdWriter {
    /// Prepares `file` (expected empty) for a dynamic VHD of `size` bytes with 2 MiB blocks.
    pub fn create(file: File, size: u64) -> Result<DynamicVhdWriter> {
        Self::with_block_size(file, size, DEFAULT_BLOCK_SIZE)
    }

    /// As [`DynamicVhdWriter::create`], with another block size (a power of two from 512 B to 256 MiB).
    pub fn with_block_size(file: File, size: u64, block_size: u32) -> Result<DynamicVhdWriter> {
        if size % 512 != 0 {
            return Err(Error::UnsupportedSize {
                size,
                reason: "a VHD's size must be a multiple of 512 bytes",
            });
        }
        if size > MAX_DYNAMIC_SIZE {
            return Err(Error::UnsupportedSize {
                size,
                reason: "a dynamic VHD holds at most 2040 GiB; use a fixed VHD",
            });
        }
        let bs = u64::from(block_size);
        if !BLOCK_SIZE_RANGE.contains(&bs) || !bs.is_power_of_two() {
            return Err(Error::invalid(
                "block size",
                format!("{bs} is not a power of two between 512 B and 256 MiB"),
            ));
        }
        let entries = size.div_ceil(bs);
        let table_offset = (FOOTER_SIZE + HEADER_SIZE) as u64;
        let bat_bytes = (entries * 4).div_ceil(512) * 512;
        Ok(DynamicVhdWriter {
            file,
            size,
            block_size: bs,
            bitmap_size: bitmap_size(bs),
            table_offset,
            state: Mutex::new(WriterState {
                bat: vec![UNALLOCATED; entries as usize],
                next_free: table_offset + bat_bytes,
            }),
        })
    }

    /// Virtual size of the disk being written.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes `data` at virtual offset `offset`, allocating blocks as needed.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        check_range(offset, data.len(), self.size)?;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let index = (pos / self.block_size) as usize;
            let in_block = pos % self.block_size;
            let n = ((self.block_size - in_block) as usize).min(data.len() - done);
            let base = self.block_offset(index)?;
            self.file
                .write_all_at(&data[done..done + n], base + self.bitmap_size + in_block)
                .map_err(|e| Error::io(format!("writing block {index}"), e))?;
            done += n;
        }
        Ok(())
    }

    /// File offset of block `index`, allocating it (bitmap all set) on first use.
    fn block_offset(&self, index: usize) -> Result<u64> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::invalid("writer", "a writer thread panicked"))?;
        let entry = st.bat[index];
        if entry != UNALLOCATED {
            return Ok(u64::from(entry) * 512);
        }
        // Place the block so that its data (after the bitmap) is 4 KiB aligned.
        let base =
            (st.next_free + self.bitmap_size).div_ceil(DATA_ALIGN) * DATA_ALIGN - self.bitmap_size;
        let sector = u32::try_from(base / 512).map_err(|_| Error::UnsupportedSize {
            size: self.size,
            reason: "the file outgrew the 32-bit sector offsets of the BAT",
        })?;
        let bitmap = vec![0xffu8; self.bitmap_size as usize];
        self.file
            .write_all_at(&bitmap, base)
            .map_err(|e| Error::io(format!("writing the bitmap of block {index}"), e))?;
        st.bat[index] = sector;
        st.next_free = base + self.bitmap_size + self.block_size;
        Ok(base)
    }

    /// Writes the BAT, header and footers and returns the file (not yet synced).
    pub fn finish(self) -> Result<File> {
        let st = self
            .state
            .into_inner()
            .map_err(|_| Error::invalid("writer", "a writer thread panicked"))?;
        let header = DynamicHeader {
            table_offset: self.table_offset,
            version: 0x0001_0000,
            max_table_entries: st.bat.len() as u32,
            block_size: self.block_size as u32,
            parent_unique_id: [0; 16],
            parent_timestamp: 0,
        };
        let mut bat: Vec<u8> = st.bat.iter().flat_map(|e| e.to_be_bytes()).collect();
        bat.resize(bat.len().div_ceil(512) * 512, 0xff);
        let footer = Footer::new(DiskType::Dynamic, self.size).to_bytes();
        let io = |what: &'static str| move |e| Error::io(what, e);
        self.file
            .write_all_at(&footer, 0)
            .map_err(io("writing the footer copy"))?;
        self.file
            .write_all_at(&header.to_bytes(), FOOTER_SIZE as u64)
            .map_err(io("writing the dynamic header"))?;
        self.file
            .write_all_at(&bat, self.table_offset)
            .map_err(io("writing the BAT"))?;
        self.file
            .write_all_at(&footer, st.next_free)
            .map_err(io("writing the footer"))?;
        self.file
            .set_len(st.next_free + FOOTER_SIZE as u64)
            .map_err(io("sizing the VHD file"))?;
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::data_ranges;
    use crate::{Image, OpenOptions};

    fn write_sample(size: u64, writes: &[(u64, u8, usize)]) -> tempfile::NamedTempFile {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let w = DynamicVhdWriter::create(tmp.reopen().unwrap(), size).unwrap();
        for &(off, byte, len) in writes {
            w.write_at(&vec![byte; len], off).unwrap();
        }
        w.finish().unwrap();
        tmp
    }

    #[test]
    fn round_trip_across_block_boundaries() {
        let tmp = write_sample(
            10 << 20,
            &[(0, 1, 512), ((2 << 20) - 100, 2, 300), (9 << 20, 3, 4096)],
        );
        let img = Image::open(tmp.path(), &OpenOptions::default()).unwrap();
        assert_eq!(img.format(), crate::Format::VhdDynamic);
        assert_eq!(img.size(), 10 << 20);
        let mut b = vec![0u8; 300];
        img.read_at(&mut b, (2 << 20) - 100).unwrap();
        assert!(b.iter().all(|&x| x == 2));
        let ranges: Vec<_> = data_ranges(&img).collect::<Result<_>>().unwrap();
        assert_eq!(ranges, vec![0..(4 << 20), (8 << 20)..(10 << 20)]);
        let mut z = vec![9u8; 4096];
        img.read_at(&mut z, 5 << 20).unwrap();
        assert!(z.iter().all(|&x| x == 0));
    }

    #[test]
    fn cleared_bitmap_bits_read_as_zero() {
        let tmp = write_sample(4 << 20, &[(0, 5, 2048)]);
        // Clear the bit of sector 1 in block 0's bitmap.
        let img = Image::open(tmp.path(), &OpenOptions::default()).unwrap();
        let Image::Dynamic(d) = &img else {
            panic!("not dynamic")
        };
        let base = u64::from(d.bat[0]) * 512;
        let f = tmp.reopen().unwrap();
        f.write_all_at(&[0xbf], base).unwrap();
        let img = Image::open(tmp.path(), &OpenOptions::default()).unwrap();
        let mut b = vec![0u8; 2048];
        img.read_at(&mut b, 0).unwrap();
        assert!(b[..512].iter().all(|&x| x == 5));
        assert!(b[512..1024].iter().all(|&x| x == 0));
        assert!(b[1024..].iter().all(|&x| x == 5));
    }

    #[test]
    fn bat_entry_past_the_end_is_a_truncation_error() {
        let tmp = write_sample(4 << 20, &[(0, 5, 512)]);
        let f = tmp.reopen().unwrap();
        f.write_all_at(&0x00ff_ffffu32.to_be_bytes(), 1536).unwrap();
        let err = Image::open(tmp.path(), &OpenOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
    }

    #[test]
    fn too_large_is_refused() {
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            DynamicVhdWriter::create(f, MAX_DYNAMIC_SIZE + (1 << 20)),
            Err(Error::UnsupportedSize { .. })
        ));
    }

    fn rewrite_header(tmp: &tempfile::NamedTempFile, edit: impl FnOnce(&mut DynamicHeader)) {
        let f = tmp.reopen().unwrap();
        let mut hb = [0u8; HEADER_SIZE];
        f.read_exact_at(&mut hb, 512).unwrap();
        let mut h = DynamicHeader::parse(&hb).unwrap();
        edit(&mut h);
        f.write_all_at(&h.to_bytes(), 512).unwrap();
    }

    type Edit = fn(&mut DynamicHeader);

    #[test]
    fn absurd_headers_are_errors() {
        let cases: [(&str, Edit); 4] = [
            ("zero block size", |h| h.block_size = 0),
            ("odd block size", |h| h.block_size = 3 << 20),
            ("too few BAT entries", |h| h.max_table_entries = 1),
            ("BAT past the end", |h| h.table_offset = u64::MAX - 8),
        ];
        for (what, edit) in cases {
            let tmp = write_sample(8 << 20, &[(0, 5, 512)]);
            rewrite_header(&tmp, edit);
            let r = Image::open(tmp.path(), &OpenOptions::default());
            assert!(r.is_err(), "{what}: opened");
        }
    }

    #[test]
    fn odd_current_size_is_an_error() {
        let tmp = write_sample(4 << 20, &[]);
        let f = tmp.reopen().unwrap();
        let len = f.metadata().unwrap().len();
        let mut footer = Footer::new(DiskType::Dynamic, (4 << 20) - 100);
        footer.data_offset = 512;
        f.write_all_at(&footer.to_bytes(), len - 512).unwrap();
        let err = Image::open(tmp.path(), &OpenOptions::default()).unwrap_err();
        assert!(err.to_string().contains("multiple of 512"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn random_headers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), HEADER_SIZE)) {
            let tmp = write_sample(4 << 20, &[(0, 5, 512)]);
            let mut hb = [0u8; HEADER_SIZE];
            hb.copy_from_slice(&bytes);
            hb[..8].copy_from_slice(&HEADER_COOKIE);
            let sum = checksum(&hb, 36..40);
            H_CHECKSUM.set(&mut hb, sum);
            tmp.as_file().write_all_at(&hb, 512).unwrap();
            if let Ok(img) = Image::open(tmp.path(), &OpenOptions::default()) {
                let mut b = vec![0u8; 4096];
                let _ = img.read_at(&mut b, 0);
                let _ = data_ranges(&img).take(100).count();
            }
        }
    }
}
