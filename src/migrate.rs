//! `migrate`: one EBS snapshot into one new managed disk, the way its role
//! asks. A data disk (or an OS disk to be sent unchanged) streams from EBS
//! to Azure with no local copy ([`upload::stream`]); an OS disk to be fixed
//! up is staged, fixed up and uploaded ([`os_disk::stage_and_upload`]).

use serde::Serialize;

use crate::azure::Session;
use crate::os_disk::{self, Staging};
use crate::upload::{self, Options, Target};

/// What a disk is for, and so how it moves.
#[derive(Clone, Debug)]
pub enum Role {
    /// A data disk, or an OS disk sent as it is: streamed, no local copy.
    Streamed,
    /// An OS disk to fix up so it boots on Azure: staged, fixed up, uploaded.
    FixedUp(Staging),
}

/// What a step of a migration is, for progress displays.
pub use os_disk::Progress;

/// What a migration did.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    /// A streamed disk's upload.
    Streamed(Box<upload::Report>),
    /// An OS disk's staging, fix-up and upload.
    FixedUp(Box<os_disk::Report>),
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Streaming failed.
    #[error(transparent)]
    Streamed(#[from] upload::Error),
    /// Staging, fixing up or uploading an OS disk failed.
    #[error(transparent)]
    FixedUp(#[from] os_disk::Error),
}

/// Moves `snapshot` into the new disk `target` in `session`, as `role` asks.
pub fn migrate(
    session: &Session,
    snapshot: &str,
    target: &Target,
    role: &Role,
    opts: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, Error> {
    match role {
        Role::Streamed => {
            let r = upload::stream(session, snapshot, target, opts, progress)?;
            Ok(Report::Streamed(Box::new(r)))
        }
        Role::FixedUp(staging) => {
            let r = os_disk::stage_and_upload(session, snapshot, target, opts, staging, progress)?;
            Ok(Report::FixedUp(Box::new(r)))
        }
    }
}
