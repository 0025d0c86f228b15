//! ebs2azure moves whole disks from AWS to Azure the offline way: it reads
//! disks block by block, skips what is zero, and writes images Azure takes.
//!
//! The flow is `source` -> `pipeline` -> `sink`: a [`source::BlockSource`]
//! lists the blocks that may hold data, the [`pipeline`] copies them with
//! bounded concurrency and memory, and a [`sink::BlockSink`] takes positional
//! writes. Operations sit on top: [`convert`], [`info`], [`upload`] (a VHD,
//! or a snapshot streamed), [`verify`], [`os_disk`] (staged, fixed up,
//! uploaded) and [`migrate`] (either, by the disk's role), all sharing one
//! [`azure::Session`] per run; [`fixup`] inspects and fixes guests up, and
//! [`plan`] runs fleets of machines and disks; [`cutover`] keeps pre-seeded
//! disks open, brings them forward by delta syncs and runs the cutover
//! window, with the few [`ec2`] calls it needs; [`assess`] inspects OS
//! disks straight from their snapshots, before anything moves.
//! `ARCHITECTURE.md` at the repository's root is the map.
//!
//! # Example
//!
//! Convert a sparse raw image to a fixed VHD ready for Azure:
//!
//! ```
//! use ebs2azure::convert::{convert, Input, Options};
//! # let dir = tempfile::tempdir()?;
//! # let raw = dir.path().join("disk.raw");
//! # let f = std::fs::File::create(&raw)?;
//! # f.set_len(30_000_000)?; // not a whole MiB
//! # std::os::unix::fs::FileExt::write_all_at(&f, b"data", 4096)?;
//! let vhd = dir.path().join("disk.vhd");
//! let report = convert(&Input::Image(raw), &vhd, &Options::default())?;
//! assert!(report.rounded_up);                       // 30 MB -> 29 MiB (whole MiB)
//! assert_eq!(report.virtual_size, 29 << 20);
//! assert_eq!(report.stats.bytes_written, 4096);     // only the non-zero page
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod assess;
pub mod azure;
pub mod convert;
pub mod cutover;
pub mod digest;
pub mod ec2;
pub mod fixup;
pub mod info;
pub mod interrupt;
pub mod kinds;
pub mod limits;
pub mod littles_law;
pub mod machines;
pub mod migrate;
pub mod os_disk;
pub mod pipeline;
pub mod plan;
pub mod retry;
pub mod sink;
pub mod source;
pub mod upload;
pub mod verify;

pub use diskformats;
