//! Block sources: where a disk's blocks come from (a local image now, EBS
//! snapshots next). A source lists the blocks that may hold data and reads
//! one block on demand; every block it does not list is zero.

pub mod image;

pub use image::ImageSource;

/// The block size of the whole flow: EBS's 512 KiB.
pub const BLOCK_SIZE: u32 = 512 * 1024;

/// A disk seen as numbered fixed-size blocks.
pub trait BlockSource: Send + Sync {
    /// Size of the disk in bytes.
    fn size(&self) -> u64;

    /// Size of one block in bytes (the last block of the disk may be shorter).
    fn block_size(&self) -> u32;

    /// Indexes of the blocks that may hold data, ascending and without repeats.
    /// Sources that track changes yield the changed blocks instead.
    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, Error>> + Send + '_>;

    /// The bytes of block `index`: read into the front of `buf` (which holds
    /// at least a block), or borrowed from the source where it holds them in
    /// memory already (a memory-mapped image), saving a copy.
    fn read_block<'a>(&'a self, index: u64, buf: &'a mut [u8]) -> Result<&'a [u8], Error>;

    /// Called once the bytes of block `index` are written, so that a source
    /// that lent them from memory can let them go (bounded memory).
    fn release_block(&self, _index: u64) {}
}

/// Why a source could not list or read blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local image could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Image {
        /// The image's path.
        path: String,
        /// What the format reader reported.
        source: diskformats::Error,
    },
}

impl Error {
    /// True when trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Image { source, .. } => matches!(
                source,
                diskformats::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::Interrupted
            ),
        }
    }
}
