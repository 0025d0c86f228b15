//! The one error type of `diskformats`: every parser and reader returns it.

use std::io;

/// What went wrong while reading, parsing or writing a disk image.
///
/// Each variant's message is one sentence a user can act on; the variants carry
/// the offsets and values needed to find the problem in the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call on the image failed.
    #[error("{context} failed: {source}")]
    Io {
        /// What was being done when it failed.
        context: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The VHD footer's checksum does not match its contents.
    #[error("VHD footer checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt or not a VHD; accept it only if you know why")]
    FooterChecksum {
        /// Checksum stored in the footer.
        stored: u32,
        /// Checksum computed over the footer bytes.
        computed: u32,
    },

    /// The dynamic disk header's checksum does not match its contents.
    #[error("VHD dynamic header checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt")]
    HeaderChecksum {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the header bytes.
        computed: u32,
    },

    /// The bytes are not a VHD footer (the cookie is not `conectix`).
    #[error("no VHD footer (cookie `conectix`) at the expected place: the file is not a VHD")]
    NotVhd,

    /// The VHD is of a type this crate does not read.
    #[error("unsupported VHD disk type {0}: only fixed (2) and dynamic (3) disks are supported; merge a differencing disk into its parent first")]
    UnsupportedDiskType(u32),

    /// A field holds a value the format does not allow.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The structure or field that is wrong.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },

    /// The file is shorter than its own metadata says.
    #[error("the image is truncated: {detail}")]
    Truncated {
        /// What is missing.
        detail: String,
    },

    /// A read or write falls outside the virtual disk.
    #[error("access at offset {offset} of length {len} is outside the disk of {size} bytes")]
    OutOfRange {
        /// Offset requested.
        offset: u64,
        /// Length requested.
        len: u64,
        /// Virtual size of the disk.
        size: u64,
    },

    /// A size that the format or Azure cannot hold.
    #[error("unsupported disk size {size} bytes: {reason}")]
    UnsupportedSize {
        /// The size asked for.
        size: u64,
        /// Why it cannot be used.
        reason: &'static str,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::Truncated`].
    pub(crate) fn truncated(detail: impl Into<String>) -> Self {
        Error::Truncated {
            detail: detail.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
