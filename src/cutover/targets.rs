//! The new snapshot of each disk for a sync: from a file of pairs (`DISK
//! SNAPSHOT` or `OLD-SNAPSHOT SNAPSHOT` per line), or from the plan itself
//! when its snapshot moved past the disk's base.

use std::collections::BTreeMap;

use crate::plan::model::Plan;
use crate::source::ebs::is_snapshot_id;

/// Why a targets file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}, line {line}: {message}")]
pub struct Error {
    /// The file.
    pub file: String,
    /// Its line (1-based).
    pub line: usize,
    /// What is wrong, and what to write instead.
    pub message: String,
}

/// Reads `text` (the file `file`): one pair per line, separated by spaces,
/// a tab or a comma; `#` starts a comment. The first word names a disk of
/// `plan` or the snapshot it was planned with; the second is the snapshot
/// to sync it to. Returns disk name -> snapshot.
pub fn parse(text: &str, file: &str, plan: &Plan) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let err = |message: String| Error {
            file: file.to_owned(),
            line: n + 1,
            message,
        };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let [who, to] = words.as_slice() else {
            return Err(err(format!(
                "{line:?} is not a pair; write a disk name (or its old snapshot id) and the new snapshot id"
            )));
        };
        if !is_snapshot_id(to) {
            return Err(err(format!(
                "{to:?} is not a snapshot id (snap- followed by 8 or 17 lower-case hex digits)"
            )));
        }
        let disk = plan
            .disks
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(who) || d.snapshot == *who)
            .ok_or_else(|| {
                err(format!(
                    "no disk of the plan is named {who:?} or planned with that snapshot"
                ))
            })?;
        if let Some(prev) = out.insert(disk.name.clone(), (*to).to_owned()) {
            if prev != *to {
                return Err(err(format!(
                    "disk {} is given two snapshots ({prev} and {to})",
                    disk.name
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::schema::Common;

    #[test]
    fn pairs_name_disks_by_name_or_old_snapshot() {
        let text = "[defaults]\nsubscription = \"00000000-0000-0000-0000-000000000001\"\nresource_group = \"rg\"\nlocation = \"westeurope\"\n[[disk]]\nname = \"a\"\nsnapshot = \"snap-00000001\"\n[[disk]]\nname = \"b\"\nsnapshot = \"snap-00000002\"\n";
        let plan = Plan::parse(text, "p", &Common::default()).unwrap();
        let t = parse(
            "# new ones\nA snap-0000000a\nsnap-00000002,snap-0000000b\n",
            "f",
            &plan,
        )
        .unwrap();
        assert_eq!(t["a"], "snap-0000000a");
        assert_eq!(t["b"], "snap-0000000b");
        let e = parse("a\n", "f", &plan).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(parse("c snap-0000000a\n", "f", &plan)
            .unwrap_err()
            .message
            .contains("no disk"));
        assert!(parse("a snap-0000000a\na snap-0000000b\n", "f", &plan).is_err());
        assert!(parse("a vol-1\n", "f", &plan)
            .unwrap_err()
            .message
            .contains("not a snapshot id"));
    }
}
