//! Guest inspection and fix-ups, so that an EC2 image boots on Azure: what
//! will not boot, what fixup changes, what is advice.
//!
//! The flow: [`layout`] reads the partitions and filesystems without
//! mounting; [`inspect`] mounts the root read-only and asks the OS rules
//! ([`linux`]) for facts and for a [`plan::Plan`] of edits, built from the
//! pure text transforms in [`edits`]; [`apply`] carries the same plan out on
//! a read-write mount. Root filesystems are mounted through the host kernel
//! ([`mount`]: root and loop devices needed), the EFI system partition is
//! edited through a FAT library ([`esp`]); both sit behind [`guest::GuestFs`].

pub mod apply;
pub mod edits;
pub mod esp;
pub mod guest;
pub mod hive;
pub mod initramfs;
pub mod inspect;
pub mod layout;
pub mod linux;
pub mod lvm;
pub mod mount;
pub mod ntfs;
pub mod plan;
pub mod probe;
pub mod report;
pub mod windows;

use serde::{Deserialize, Serialize};

/// Where a [`Error::GuestIo`] happened: the mounted guest filesystem.
pub const IN_GUEST: &str = "in the guest";
/// Where a [`Error::GuestIo`] happened: the EFI system partition.
pub const ON_ESP: &str = "on the EFI system partition";

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

impl Finding {
    /// A finding of `class` about `subject`.
    pub fn new(class: Class, subject: &str, message: impl Into<String>) -> Finding {
        Finding {
            class,
            subject: subject.to_owned(),
            message: message.into(),
        }
    }
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
    /// A dynamic VHD cannot be mounted in place.
    #[error("{path} is a dynamic VHD, which cannot be mounted in place; convert it to a fixed VHD or raw image first (ebs2azure convert)")]
    DynamicVhd {
        /// The image.
        path: String,
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
    /// A file operation in the guest failed.
    #[error("cannot {action} {path} {place}: {source}")]
    GuestIo {
        /// What was being done (read, write, list, ...).
        action: &'static str,
        /// The guest path.
        path: String,
        /// Which guest filesystem: [`IN_GUEST`] or [`ON_ESP`].
        place: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// An interrupt stopped the work between two steps.
    #[error("interrupted; the guest was left as it was before the step under way")]
    Interrupted,
    /// A host tool could not be started.
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A file operation on the host failed.
    #[error("cannot {action}: {source}")]
    HostIo {
        /// What was being done.
        action: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The EFI system partition holds no FAT filesystem that can be read.
    #[error("the EFI system partition of {image} is not a readable FAT filesystem: {source}")]
    NotFat {
        /// The image.
        image: String,
        /// What the FAT reader said.
        source: std::io::Error,
    },
}
