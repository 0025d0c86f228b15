//! Virtual disk formats for disk migrations: VHD (fixed and dynamic) read and
//! write, raw images and block devices with their holes, MBR and GPT, and a
//! fast all-zero test.
//!
//! No network, no async, no cloud SDK: the crate is usable on its own.
//!
//! Unix only: images are read with `pread` and their holes found with
//! `SEEK_DATA`/`SEEK_HOLE`. Reads are plain reads; [`Image::open_mapped`]
//! memory-maps instead, for callers that vouch the file will not change.
//!
//! # Examples
//!
//! Write a sparse fixed VHD that Azure accepts, then read it back:
//!
//! ```
//! use diskformats::{Disk, Image, OpenOptions, vhd::FixedVhdWriter};
//!
//! let tmp = tempfile::NamedTempFile::new()?;
//! let writer = FixedVhdWriter::create(tmp.reopen()?, 32 << 20)?; // a whole number of MiB
//! writer.write_at(b"hello", 1 << 20)?;                           // any order, any thread
//! writer.finish()?.sync_all()?;                                  // footer written last
//!
//! let img = Image::open(tmp.path(), &OpenOptions::default())?;
//! assert_eq!(img.size(), 32 << 20);
//! let mut buf = [0u8; 5];
//! img.read_at(&mut buf, 1 << 20)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Visit only the data of any image (holes of a raw file, allocated blocks of
//! a dynamic VHD):
//!
//! ```no_run
//! use diskformats::{data_ranges, Image, OpenOptions};
//! let img = Image::open("disk.raw", &OpenOptions::default())?;
//! for range in data_ranges(&img) {
//!     println!("data at {:?}", range?);
//! }
//! # Ok::<(), diskformats::Error>(())
//! ```

#![deny(missing_docs)]

#[cfg(not(unix))]
compile_error!(
    "diskformats needs a Unix: it reads with pread and finds holes with SEEK_DATA/SEEK_HOLE"
);

mod disk;
mod error;
mod fields;
mod image;
pub mod part;
mod raw;
pub mod vhd;
mod zero;

pub use disk::{data_ranges, DataRanges, Disk};
pub use error::{Error, Result};
pub use image::{open_input, Format, Image, OpenOptions};
pub use part::{Partition, PartitionKind, PartitionTable, TableKind, TypeId};
pub use raw::RawImage;
pub use zero::{is_zero, nonzero_runs, NonZeroRuns};

/// Rounds `size` up to a whole number of MiB, as Azure requires of a VHD's
/// virtual size.
///
/// ```
/// assert_eq!(diskformats::round_up_to_mib(1), 1 << 20);
/// assert_eq!(diskformats::round_up_to_mib(8 << 20), 8 << 20);
/// ```
pub fn round_up_to_mib(size: u64) -> u64 {
    size.div_ceil(1 << 20) * (1 << 20)
}
