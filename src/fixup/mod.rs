//! Guest inspection (and, to come, fix-ups) for Linux guests, so that an
//! EC2 image boots on Azure: what will not boot, what fixup will change,
//! what is advice. Filesystems are mounted through the host kernel (root and
//! loop devices needed); superblocks and partition tables are read directly.

pub mod apply;
pub mod initramfs;
pub mod inspect;
pub mod mount;
pub mod probe;

use serde::Serialize;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// The guest will not boot on Azure as it is.
    Blocker,
    /// A change `fixup` makes (until it exists: make it on the source).
    Fixup,
    /// Worth knowing; it boots either way.
    Advice,
}

/// One thing found in the guest, in one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub class: Class,
    /// The guest file or area concerned.
    pub subject: String,
    /// What was found and what to do.
    pub message: String,
}

/// Why a guest could not be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image could not be read.
    #[error("cannot read {path}: {source}")]
    Image {
        /// The image.
        path: String,
        /// What the reader said.
        source: diskformats::Error,
    },
    /// This host cannot mount guests.
    #[error("{0}")]
    Host(String),
    /// Attaching or mounting failed.
    #[error("{0}")]
    Mount(String),
    /// A guest file could not be read.
    #[error("{0}")]
    Guest(String),
}
