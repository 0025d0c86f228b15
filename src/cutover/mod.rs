//! Cold cutovers: disks pre-seeded days before the window (copied whole
//! and left open in their upload state), brought forward by delta syncs
//! (ListChangedBlocks), and finished in the window from a final
//! crash-consistent snapshot of each machine, with a timeline of the
//! window in the report.
//!
//! Why a managed disk can wait days open: Azure's direct upload keeps a
//! disk in `ReadyToUpload`/`ActiveUpload` until `endGetAccess`, and a new
//! write SAS is granted (`beginGetAccess`, access Write) as long as the
//! upload has not ended, so each sync asks for its own SAS. The disk ends
//! its upload only at the cutover (or a plain migrate of the same plan).

pub mod sync;
pub mod targets;
pub mod window;

pub use sync::{sync_disk, SyncOptions};
