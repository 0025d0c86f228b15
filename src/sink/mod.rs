//! Block sinks: where a disk's blocks go (a local image file, an Azure
//! managed disk). Writes arrive in any order and from many threads.

pub mod in_place;
pub mod managed_disk;
pub mod vhd_file;

pub use managed_disk::ManagedDiskSink;
pub use vhd_file::VhdFileSink;

/// Alignment of the buffers the pipeline hands to [`BlockSink::write_at`]:
/// the page size, so that a sink can pass whole pages to direct I/O.
pub const BUFFER_ALIGN: usize = 4096;

/// A destination that takes positional writes.
pub trait BlockSink: Send + Sync {
    /// Writes `data` at byte `offset` of the disk.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error>;

    /// [`BlockSink::write_at`] with the bytes shared: a sink that sends
    /// owned bytes (an HTTP body) takes them as they are instead of copying.
    fn write_bytes(&self, offset: u64, data: bytes::Bytes) -> Result<(), Error> {
        self.write_at(offset, &data)
    }

    /// Makes `len` bytes at `offset` read as zeros. The pipeline calls it
    /// only when told the target holds older data (a delta sync); a sink
    /// that starts as zeros (a new file, a new disk) has nothing to do.
    fn clear_at(&self, offset: u64, len: u64) -> Result<(), Error> {
        let _ = (offset, len);
        Ok(())
    }
}

/// Why a sink could not be prepared, written or finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The output exists and replacing it was not asked for.
    #[error("{0} already exists")]
    Exists(String),

    /// The output path names something that is not a regular file.
    #[error("{0} is not a regular file; the output must be a file path")]
    NotAFile(String),

    /// A file operation on the output failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file concerned.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },

    /// Azure refused a write or could not finish the upload.
    #[error("disk {disk}: {source}")]
    Azure {
        /// The managed disk's name.
        disk: String,
        /// What Azure or the transport reported.
        source: crate::azure::Error,
    },

    /// A write does not fit the page blob's 512-byte pages.
    #[error("disk {disk}: a write of {len} bytes at offset {offset} is not 512-byte aligned")]
    Unaligned {
        /// The managed disk's name.
        disk: String,
        /// Offset of the write.
        offset: u64,
        /// Its length.
        len: usize,
    },

    /// The image writer refused a write or could not finish the image.
    #[error("cannot write {path}: {source}")]
    Format {
        /// The file concerned.
        path: String,
        /// What the format writer reported.
        source: diskformats::Error,
    },
}

impl Error {
    /// True when trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::Interrupted,
            Error::Azure { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}
