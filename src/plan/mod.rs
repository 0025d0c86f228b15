//! Fleets: plans of many machines and disks, run under one budget, resumed
//! after any crash, reported, and split across hosts.
//!
//! * [`schema`]: the plan file as written (TOML); [`model`]: the plan
//!   resolved and checked, every problem with its line; [`new`]: a plan
//!   written from a snapshot list; [`discover`]: one written from EC2's
//!   instances; [`check`]: the snapshots behind a plan.
//! * [`run`]: moves the disks; [`state`]: the state directory; [`journal`]:
//!   a disk's record of what is durably done; each disk is reported with
//!   its content digest ([`crate::digest`]).
//! * [`report`]: what a run did; [`shard`]: a plan split across hosts.

pub mod check;
pub mod discover;
pub mod journal;
pub mod model;
pub mod new;
pub mod report;
pub mod run;
pub mod schema;
pub mod shard;
pub mod state;

pub use model::{DiskRole, Plan, PlannedDisk};
pub use report::RunReport;
pub use run::{run, Event, RunOptions};
pub use shard::Shard;
pub use state::StateDir;
