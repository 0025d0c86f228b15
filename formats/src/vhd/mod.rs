//! The Microsoft VHD format: footer, fixed disks, dynamic disks.

pub mod dynamic;
pub mod fixed;
pub mod footer;

pub use dynamic::{DynamicHeader, DynamicVhd, DynamicVhdWriter};
pub use fixed::{FixedVhd, FixedVhdWriter};
pub use footer::{DiskType, Footer, Geometry, FOOTER_SIZE};

/// Largest virtual size of a dynamic VHD (2040 GiB, from the specification).
pub const MAX_DYNAMIC_SIZE: u64 = 2040 << 30;
