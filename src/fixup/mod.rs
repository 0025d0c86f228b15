//! Guest inspection and fix-ups for Linux guests, so that an EC2 image
//! boots on Azure: what will not boot, what fixup changes, what is advice.
//! Root filesystems are mounted through the host kernel (root and loop
//! devices needed), the EFI system partition is edited through a FAT
//! library; superblocks and partition tables are read directly. Both sit
//! behind [`guest::GuestFs`].

pub mod apply;
pub mod esp;
pub mod guest;
pub mod initramfs;
pub mod inspect;
pub mod lvm;
pub mod mount;
pub mod probe;

use serde::{Deserialize, Serialize};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// The guest will not boot on Azure as it is.
    Blocker,
    /// A change `fixup` makes.
    Fixup,
    /// Worth knowing; it boots either way.
    Advice,
}

/// One thing found in the guest, in one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
