//! What `plan validate` checks beyond the file: that each snapshot exists,
//! is completed and readable, and that its volume fits Azure's limits; and
//! that each disk encryption set the plan names exists in its disks' region.
//! Only
//! the first page of each snapshot's listing is read (no block data), a few
//! snapshots at a time under the account's list quota.

use std::sync::{Arc, Mutex, PoisonError};

use super::model::{Plan, Problem};
use crate::limits;
use crate::source::ebs::{EbsSource, Quotas, Settings};
use crate::source::BlockSource;

/// Snapshots looked at in parallel.
const AT_ONCE: usize = 8;

/// Every problem the snapshots of `plan`'s disks that are not excluded have,
/// each at its disk's line, in plan order.
pub fn snapshots(plan: &Plan, settings: &Settings, quotas: &Arc<Quotas>) -> Vec<Problem> {
    let todo: Vec<usize> = (0..plan.disks.len())
        .filter(|&i| !plan.disks[i].exclude)
        .collect();
    let next = Mutex::new(todo.into_iter());
    let found = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..AT_ONCE {
            scope.spawn(|| loop {
                let Some(i) = next.lock().unwrap_or_else(PoisonError::into_inner).next() else {
                    return;
                };
                let d = &plan.disks[i];
                let settings = Settings {
                    region: d.region.clone().or_else(|| settings.region.clone()),
                    ..settings.clone()
                };
                let mut problems = Vec::new();
                match EbsSource::open(&d.snapshot, &settings, quotas.clone()) {
                    Ok(src) => {
                        for p in limits::azure_size_problems(src.size()) {
                            problems.push(format!("disk {}: snapshot {}: {p}", d.name, d.snapshot));
                        }
                    }
                    Err(e) => problems.push(format!(
                        "disk {}: {e} (a snapshot still pending is not found either; wait until it is completed)",
                        d.name
                    )),
                }
                let mut f = found.lock().unwrap_or_else(PoisonError::into_inner);
                f.extend(problems.into_iter().map(|message| (i, Problem { line: d.line, message })));
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_else(PoisonError::into_inner);
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, p)| p).collect()
}

/// Every problem the disk encryption sets of `plan`'s disks that are not
/// excluded have: a set that cannot be read, or that is in another region
/// than the disk (Azure refuses both when the disk is created).
pub fn encryption_sets(plan: &Plan, session: &crate::azure::Session) -> Vec<Problem> {
    let mut found = Vec::new();
    let mut seen: std::collections::HashMap<String, Option<String>> = Default::default();
    for d in plan.disks.iter().filter(|d| !d.exclude) {
        let Some(e) = &d.encryption else { continue };
        let location = seen
            .entry(e.set.to_ascii_lowercase())
            .or_insert_with(|| {
                let what = format!("reading disk encryption set {}", e.set);
                session
                    .block_on(session.arm().get_resource(
                        &what,
                        &e.set,
                        crate::azure::COMPUTE_API_VERSION,
                    ))
                    .ok()
                    .flatten()
                    .and_then(|v| {
                        v.get("location")
                            .and_then(|l| l.as_str())
                            .map(str::to_owned)
                    })
            })
            .clone();
        match location {
            None => found.push(Problem {
                line: d.line,
                message: format!(
                    "disk {}: disk encryption set {} cannot be read (it does not exist, or this identity may not read it)",
                    d.name, e.set
                ),
            }),
            Some(l) if !l.eq_ignore_ascii_case(&d.location) => found.push(Problem {
                line: d.line,
                message: format!(
                    "disk {}: disk encryption set {} is in {l}, and the disk in {}; a set serves its own region only",
                    d.name, e.set, d.location
                ),
            }),
            Some(_) => {}
        }
    }
    found
}
