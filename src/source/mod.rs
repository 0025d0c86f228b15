//! Block sources: where a disk's blocks come from (a local image, an EBS
//! snapshot). A source lists the blocks that may hold data and reads
//! one block on demand; every block it does not list is zero.

pub mod ebs;
pub mod ebs_http;
pub mod image;
pub mod snapshot_disk;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

pub use ebs::EbsSource;
pub use image::{ImageSource, InputMapping};

/// How much of its listing a source has read so far: the blocks to read,
/// and whether the listing is complete (then the bytes to read are known).
#[derive(Debug, Default)]
pub struct Listing {
    /// Blocks listed so far (to be read).
    pub blocks: AtomicU64,
    /// Bytes of those blocks.
    pub bytes: AtomicU64,
    /// True once the last page was listed.
    pub complete: AtomicBool,
}

/// The block size of the whole flow: EBS's 512 KiB.
pub const BLOCK_SIZE: u32 = 512 * 1024;

/// A disk seen as numbered fixed-size blocks.
pub trait BlockSource: Send + Sync {
    /// Size of the disk in bytes.
    fn size(&self) -> u64;

    /// Size of one block in bytes (the last block of the disk may be shorter).
    fn block_size(&self) -> u32;

    /// Indexes of the blocks that may hold data, without repeats: ascending
    /// for local images, in arrival order for network sources, which fetch
    /// ahead as they list. Sources that track changes yield the changed
    /// blocks instead.
    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, Error>> + Send + '_>;

    /// The bytes of block `index`: read into the front of `buf` (which holds
    /// at least a block), or borrowed from the source where it holds them in
    /// memory already (a memory-mapped image), saving a copy. A source that
    /// lends must answer a second read of the block before its release
    /// with the same bytes (lent again, or read into `buf`).
    fn read_block<'a>(&'a self, index: u64, buf: &'a mut [u8]) -> Result<&'a [u8], Error>;

    /// Called once the bytes of block `index` are written, or once the copy
    /// gives up on it, so that a source holding them in memory (lent, or
    /// fetched ahead) can let them go (bounded memory).
    fn release_block(&self, _index: u64) {}

    /// The SHA-256 of block `index` as [`BlockSource::read_block`] last
    /// read it, when the source computed it anyway (EBS checks every
    /// block's); taken once, and forgotten at [`BlockSource::release_block`].
    fn take_sha256(&self, _index: u64) -> Option<[u8; 32]> {
        None
    }

    /// The bytes [`BlockSource::blocks`] will list, when the source knows
    /// them up front (a local image does; a snapshot lists as it goes).
    fn bytes_to_read(&self) -> Option<u64> {
        None
    }

    /// Blocks per second the source is held to (a service quota it paces
    /// itself to), so that a sink can size its writes in flight to keep up;
    /// `None` for a source without one (a local image).
    fn pace(&self) -> Option<f64> {
        None
    }

    /// How far a source that lists as it goes has got, for progress.
    fn listing(&self) -> Option<Arc<Listing>> {
        None
    }
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

    /// The input looks like a snapshot id but is not one.
    #[error("{0} is not a snapshot id: snap- followed by 8 or 17 lower-case hex digits, such as snap-0123456789abcdef0")]
    BadSnapshotId(String),

    /// The snapshot does not exist where we looked.
    #[error("snapshot {snapshot} was not found in region {region}: check the id and the region")]
    SnapshotNotFound {
        /// Snapshot id.
        snapshot: String,
        /// Region asked.
        region: String,
    },

    /// The caller may not read the snapshot.
    #[error("reading snapshot {snapshot} was denied ({message}): the caller needs ebs:ListSnapshotBlocks and ebs:GetSnapshotBlock, and kms:Decrypt for encrypted snapshots")]
    AccessDenied {
        /// Snapshot id.
        snapshot: String,
        /// The service's message.
        message: String,
    },

    /// AWS did not accept the credentials, or there were none.
    #[error("AWS credentials are missing or were refused ({message}): check AWS_PROFILE or AWS_ACCESS_KEY_ID, or run `aws sso login`")]
    Credentials {
        /// What AWS or the SDK said (never the keys).
        message: String,
    },

    /// No AWS region was given or configured.
    #[error("no AWS region is set (in AWS_REGION or the profile)")]
    NoRegion,

    /// The AWS client could not be set up.
    #[error("AWS client setup failed: {0}")]
    Config(String),

    /// The endpoint's TLS certificate was refused: asking again would get
    /// the same certificate.
    #[error("{endpoint} presented a certificate this machine does not trust ({detail}); add its issuer to the trusted roots (SSL_CERT_FILE may name a PEM bundle) or check the endpoint")]
    Certificate {
        /// The endpoint, by its origin.
        endpoint: String,
        /// What the TLS handshake said.
        detail: String,
    },

    /// A block kept failing its SHA-256 check.
    #[error("snapshot {snapshot}: block {block} failed its SHA-256 check {attempts} times; the data is corrupt on the way or at the source")]
    Checksum {
        /// Snapshot id.
        snapshot: String,
        /// Block index.
        block: u64,
        /// Attempts made.
        attempts: u32,
    },

    /// The run's retries are used up.
    #[error("snapshot {snapshot}: gave up after the run's {retries} retries{}; last error: {last}", block.map(|b| format!(" (at block {b})")).unwrap_or_default())]
    RetryBudget {
        /// Snapshot id.
        snapshot: String,
        /// The block being read, if any.
        block: Option<u64>,
        /// The budget.
        retries: u64,
        /// The last failure.
        last: String,
    },

    /// One call failed as many times as a call may.
    #[error("snapshot {snapshot}: a request failed {attempts} times in a row{}; last error: {last}", block.map(|b| format!(" (at block {b})")).unwrap_or_default())]
    Attempts {
        /// Snapshot id.
        snapshot: String,
        /// The block being read, if any.
        block: Option<u64>,
        /// The attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },

    /// Every request to the service failed for the stall rule's limit.
    #[error("no request to {endpoint} has got through for {seconds} s; stopped, as nothing moves (last error: {last})")]
    Stalled {
        /// The service's endpoint (no credentials in it).
        endpoint: String,
        /// How long every request failed.
        seconds: u64,
        /// The last failure.
        last: String,
    },

    /// A page token expired (handled inside the listing).
    #[error("the listing's page token expired")]
    PageTokenExpired,
    /// ListChangedBlocks refused two snapshots of different volumes.
    #[error("snapshot {second} is not of the same volume as snapshot {first}, so their changed blocks cannot be listed; take the new snapshot from the volume the disk was seeded from, or copy the new snapshot whole")]
    UnrelatedSnapshots {
        /// The base.
        first: String,
        /// The newer snapshot.
        second: String,
    },

    /// The service's answers contradict each other.
    #[error("snapshot {snapshot}: the service's answer contradicts itself: {detail}")]
    Inconsistent {
        /// Snapshot id.
        snapshot: String,
        /// What contradicts what.
        detail: String,
    },

    /// A source defined outside this module (a disk read back from Azure)
    /// could not read block `block`.
    #[error("cannot read block {block} of {what}: {source}")]
    Elsewhere {
        /// What was read.
        what: String,
        /// The block.
        block: u64,
        /// Why not.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Any other service error.
    #[error("snapshot {snapshot}{}: {code}: {message}", block.map(|b| format!(", block {b}")).unwrap_or_default())]
    Service {
        /// Snapshot id.
        snapshot: String,
        /// The block being read, if any.
        block: Option<u64>,
        /// Error code.
        code: String,
        /// The service's message.
        message: String,
    },
}

impl Error {
    /// True when trying the same call again may succeed.
    /// (Sources retry what can be retried themselves; this says whether a
    /// caller may try the whole operation again later.)
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Image { source, .. } => matches!(
                source,
                diskformats::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::Interrupted
            ),
            Error::RetryBudget { .. }
            | Error::Attempts { .. }
            | Error::Stalled { .. }
            | Error::PageTokenExpired => true,
            _ => false,
        }
    }
}
