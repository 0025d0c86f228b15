//! A fix-up plan: the edits one guest filesystem needs, each with why, and
//! what the planner saw but will not change (advice). The OS rules
//! ([`super::linux`]; Windows beside it) build plans; [`super::inspect`]
//! reports them as findings and [`super::apply`] carries them out, so a
//! fix-up finding exists if and only if the plan holds an edit for it.
//!
//! An edit enters a plan only when it would change the file: a plan of a
//! guest already fixed up is empty, which is what makes fix-ups idempotent.

use super::guest::GuestFs;
use super::{Class, Error, Finding};

/// Suffix of the originals kept in the guest.
pub const ORIG: &str = ".ebs2azure-orig";

/// Directories whose readers take every file name (or every `ifcfg-*`):
/// an original kept there as `NAME.ebs2azure-orig` would still be read, so
/// it is kept hidden, as `.NAME.ebs2azure-orig`.
const READ_WHOLE: [&str; 3] = [
    "/etc/sysconfig/network-scripts",
    "/etc/network/interfaces.d",
    "/etc/NetworkManager/system-connections",
];

/// Where the original of the guest file `path` is kept.
pub fn original_path(path: &str) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if READ_WHOLE.contains(&dir) {
        format!("{dir}/.{name}{ORIG}")
    } else {
        format!("{path}{ORIG}")
    }
}

/// What to do to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Make its contents this text (created 0644 if new).
    Write(String),
    /// The same, created owner-only if new (NetworkManager refuses others).
    WritePrivate(String),
    /// Make its contents these bytes (a binary-safe block such as grubenv).
    Bytes(Vec<u8>),
    /// Take it out of use, keeping it as the original.
    Remove,
}

impl Edit {
    /// The contents after the edit (`None`: removed) and the mode of a new file.
    pub fn contents(&self) -> (Option<&[u8]>, u32) {
        match self {
            Edit::Write(t) => (Some(t.as_bytes()), 0o644),
            Edit::WritePrivate(t) => (Some(t.as_bytes()), 0o600),
            Edit::Bytes(b) => (Some(&b[..]), 0o644),
            Edit::Remove => (None, 0),
        }
    }
}

/// One planned edit: the guest path, why, the changes in detail, and what.
#[derive(Clone, Debug)]
pub struct PlannedEdit {
    /// Guest path on the planned filesystem.
    pub path: String,
    /// Why the file changes, in one sentence.
    pub reason: String,
    /// Each change in the file, one sentence each (may be empty: the reason says it all).
    pub notes: Vec<String>,
    /// The edit.
    pub edit: Edit,
}

/// The edits and advice for one guest filesystem.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Where that filesystem is mounted in the guest ("" for the root).
    pub prefix: &'static str,
    /// The edits, in the order to make them.
    pub edits: Vec<PlannedEdit>,
    /// What the planner leaves alone but the user should know.
    pub advice: Vec<Finding>,
}

impl Plan {
    /// An empty plan for the filesystem mounted at `prefix` in the guest.
    pub fn new(prefix: &'static str) -> Plan {
        Plan {
            prefix,
            ..Plan::default()
        }
    }

    /// Adds the edit of `path` on `fs` when it would change the file;
    /// returns whether it was added.
    pub fn add(
        &mut self,
        fs: &dyn GuestFs,
        path: impl Into<String>,
        reason: impl Into<String>,
        edit: Edit,
        notes: Vec<String>,
    ) -> Result<bool, Error> {
        let path = path.into();
        let old = fs.read(&path)?;
        let changes = match edit.contents().0 {
            Some(new) => old.as_deref() != Some(new),
            None => old.is_some(),
        };
        if changes {
            self.edits.push(PlannedEdit {
                path,
                reason: reason.into(),
                notes,
                edit,
            });
        }
        Ok(changes)
    }

    /// Adds advice about `path` (shown with the plan's prefix).
    pub fn advise(&mut self, path: &str, message: impl Into<String>) {
        self.advice.push(Finding {
            class: Class::Advice,
            subject: format!("{}{path}", self.prefix),
            message: message.into(),
        });
    }

    /// The plan as findings: one fix-up finding per change of each edit
    /// (or one for the edit when its reason says it all), then the advice.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for e in &self.edits {
            let subject = format!("{}{}", self.prefix, e.path);
            if e.notes.is_empty() {
                out.push(Finding {
                    class: Class::Fixup,
                    subject,
                    message: format!("{} (fixup makes this change)", e.reason),
                });
            } else {
                out.extend(e.notes.iter().map(|n| Finding {
                    class: Class::Fixup,
                    subject: subject.clone(),
                    message: n.clone(),
                }));
            }
        }
        out.extend(self.advice.iter().cloned());
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The in-memory guest, as the tests here and in the fix-up modules name it.
    pub(crate) use crate::fixup::guest::MemGuest as MemFs;

    #[test]
    fn originals_are_hidden_where_every_name_is_read() {
        assert_eq!(original_path("/etc/fstab"), "/etc/fstab.ebs2azure-orig");
        assert_eq!(
            original_path("/etc/sysconfig/network-scripts/ifcfg-ens5"),
            "/etc/sysconfig/network-scripts/.ifcfg-ens5.ebs2azure-orig"
        );
        assert_eq!(
            original_path("/etc/network/interfaces.d/50-cloud-init"),
            "/etc/network/interfaces.d/.50-cloud-init.ebs2azure-orig"
        );
    }

    #[test]
    fn only_edits_that_change_a_file_enter_the_plan_and_each_is_a_finding() {
        let fs = MemFs::default();
        fs.write("/etc/a", b"same\n", 0o644).unwrap();
        fs.write("/etc/b", b"old\n", 0o644).unwrap();
        let mut plan = Plan::new("/boot/efi");
        assert!(!plan
            .add(&fs, "/etc/a", "r", Edit::Write("same\n".into()), vec![])
            .unwrap());
        assert!(!plan
            .add(&fs, "/etc/gone", "r", Edit::Remove, vec![])
            .unwrap());
        assert!(plan
            .add(
                &fs,
                "/etc/b",
                "r",
                Edit::Write("new\n".into()),
                vec!["one".into(), "two".into()]
            )
            .unwrap());
        let paths: Vec<&str> = plan.edits.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/etc/b"]);
        let f = plan.findings();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].subject, "/boot/efi/etc/b");
        assert_eq!(f[1].message, "two");
    }
}
