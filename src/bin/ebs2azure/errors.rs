//! Library errors as the command line says them: the library's sentence,
//! then what to type to get past it. The library's messages never name a
//! flag; the flags are this binary's words, so the hints live here.

use std::error::Error as StdError;

use ebs2azure::{azure, convert, migrate, os_disk, pipeline, sink, source, upload, verify};

/// One sentence for `e`, with the flags that fix it.
pub fn explain(e: &(dyn StdError + 'static)) -> String {
    // Where the command line has its own words for the whole case.
    if let Some(os_disk::Error::NoStagedCopy { staged, disk }) = find::<os_disk::Error>(e) {
        return format!(
            "--resume needs the fixed-up copy {staged} (and its report) that the interrupted run left, and it is gone; delete disk {disk} (az disk delete) and start again without --resume"
        );
    }
    let mut hints = Vec::new();
    for err in levels(e) {
        visit(err, &mut hints);
    }
    let mut out = e.to_string();
    for h in hints {
        out.push_str("; ");
        out.push_str(h);
    }
    out
}

/// `e` and every error under it, outermost first (at most 32 levels: chains
/// are short, but a cycle must not hang the exit).
fn levels<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err: &&'a (dyn StdError + 'static)| {
        inner(err).or_else(|| err.source())
    })
    .take(32)
}

/// The first error of type `T` in `e` or under it.
fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    levels(e).find_map(|err| err.downcast_ref::<T>())
}

/// The error that `e` wraps, where `source()` does not give it as itself:
/// transparent variants (their `source()` skips the wrapped error) and
/// boxed causes (their `source()` is the `Box`, which no downcast sees through).
fn inner<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(c) = e.downcast_ref::<convert::Error>() {
        return match c {
            convert::Error::Source(x) => Some(x),
            convert::Error::Sink(x) => Some(x),
            convert::Error::Copy(x) => Some(x),
            _ => None,
        };
    }
    if let Some(u) = e.downcast_ref::<upload::Error>() {
        return match u {
            upload::Error::Source(x) => Some(x),
            upload::Error::Azure(x) => Some(x),
            upload::Error::Copy(x) => Some(x),
            upload::Error::Sink(x) => Some(x),
            upload::Error::Left { cause, .. }
            | upload::Error::CleanedUp { cause, .. }
            | upload::Error::DeleteFailed { cause, .. } => Some(cause.as_ref()),
            _ => None,
        };
    }
    if let Some(p) = e.downcast_ref::<pipeline::Error>() {
        return match p {
            pipeline::Error::Source(x) => Some(x),
            _ => None,
        };
    }
    if let Some(v) = e.downcast_ref::<verify::Error>() {
        return match v {
            verify::Error::Vhd(x) => Some(x),
            verify::Error::Source(x) => Some(x),
            verify::Error::Azure(x) => Some(x),
            verify::Error::Copy(x) => Some(x),
            _ => None,
        };
    }
    if let Some(o) = e.downcast_ref::<os_disk::Error>() {
        return match o {
            os_disk::Error::Upload { source, .. } => Some(source.as_ref()),
            os_disk::Error::CleanedUp(x) => Some(x.as_ref()),
            _ => None,
        };
    }
    if let Some(m) = e.downcast_ref::<migrate::Error>() {
        return match m {
            migrate::Error::Streamed(x) => Some(x),
            migrate::Error::FixedUp(x) => Some(x),
            _ => None,
        };
    }
    None
}

/// What to do about a stalled endpoint.
const STALL_HINT: &str =
    "check the network path to that endpoint; --stall-timeout sets how long a stall may last";

/// Adds the hints for `e` itself.
fn visit(e: &(dyn StdError + 'static), hints: &mut Vec<&'static str>) {
    let mut add = |h: &'static str| {
        if !hints.contains(&h) {
            hints.push(h);
        }
    };
    if let Some(u) = e.downcast_ref::<upload::Error>() {
        match u {
            upload::Error::Exists(_) => add("pass --resume to continue an interrupted upload into it, or choose another --disk-name"),
            upload::Error::NoLocation => add("pass --location, e.g. --location westeurope"),
            upload::Error::NothingToResume { .. } => add("run without --resume to create it"),
            upload::Error::Left { .. } => add("run the same command with --resume to continue, or with --cleanup to delete it"),
            _ => {}
        }
    }
    if let Some(o) = e.downcast_ref::<os_disk::Error>() {
        match o {
            os_disk::Error::Host(_) => add("or pass --no-fixup to upload the OS disk unchanged"),
            os_disk::Error::Fixup { .. } => {
                add("fix the cause, or pass --no-fixup to upload the snapshot unchanged")
            }
            os_disk::Error::Blockers { .. } => add("or pass --allow-blockers to upload it anyway"),
            os_disk::Error::StagingDir { .. } => add("choose another directory with --staging-dir"),
            _ => {}
        }
    }
    if let Some(sink::Error::Exists(_)) = e.downcast_ref::<sink::Error>() {
        add("pass --force to replace it or choose another output path");
    }
    match e.downcast_ref::<source::Error>() {
        Some(source::Error::SnapshotNotFound { .. }) => {
            add("pass the snapshot's region with --region")
        }
        Some(source::Error::NoRegion) => add("pass --region or set AWS_REGION"),
        Some(source::Error::Stalled { .. }) => add(STALL_HINT),
        _ => {}
    }
    match e.downcast_ref::<azure::Error>() {
        Some(azure::Error::Token(_)) => add("a token file can be given with --arm-token-file"),
        Some(azure::Error::Stalled { .. }) => add(STALL_HINT),
        _ => {}
    }
    if let Some(verify::Error::DiskNotFound { .. }) = e.downcast_ref::<verify::Error>() {
        add("check --disk-name and --resource-group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_come_from_every_level_boxed_or_transparent() {
        let left = upload::Error::Left {
            disk: "web01-os".into(),
            cause: Box::new(upload::Error::NoLocation),
        };
        let e = migrate::Error::FixedUp(os_disk::Error::Upload {
            staged: "/var/tmp/x.vhd".into(),
            source: Box::new(left),
        });
        let said = explain(&e);
        assert!(
            said.starts_with("a location (Azure region) is needed"),
            "{said}"
        );
        assert!(said.contains("stays at /var/tmp/x.vhd"), "{said}");
        assert!(said.contains("with --resume to continue"), "{said}");
        assert!(said.contains("pass --location"), "{said}");
        assert_eq!(said.matches("--resume").count(), 1, "once: {said}");

        let gone = os_disk::Error::NoStagedCopy {
            staged: "/var/tmp/x.vhd".into(),
            disk: "web01-os".into(),
        };
        assert!(
            explain(&migrate::Error::FixedUp(gone)).starts_with("--resume needs the fixed-up copy")
        );
        let exists = convert::Error::Sink(sink::Error::Exists("out.vhd".into()));
        assert_eq!(
            explain(&exists),
            "out.vhd already exists; pass --force to replace it or choose another output path"
        );
    }
}
