//! From disks to machines: Azure VMs for a plan's machines, made from their
//! finished disks, or written as ARM templates for review.

pub mod sizes;
pub mod test_run;
pub mod vm;
