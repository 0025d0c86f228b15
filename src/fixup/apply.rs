//! `fixup`: carries out the plan [`super::linux`] makes for a guest, in its
//! root filesystem (mounted read-write, so its journal replays) and on its
//! EFI system partition, keeping each original beside it (see
//! [`original_path`]) and recording digests before and after. A second run
//! changes nothing; a dry run writes nothing. The filesystem must check
//! clean after unmounting.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::esp::Esp;
use super::guest::GuestFs;
use super::inspect::inspect;
use super::layout::{self, DataDisk};
use super::linux;
use super::mount::Mounted;
use super::plan::{original_path, Plan};
use super::report::Report as Inspection;
use super::windows;
use super::Error;

/// One change made (or, with `--dry-run`, to be made).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// Guest path.
    pub path: String,
    /// Why.
    pub reason: String,
    /// SHA-256 of the file before (none: it did not exist).
    pub before: Option<String>,
    /// SHA-256 after (none: removed, kept as the original).
    pub after: Option<String>,
    /// Where the original is kept in the guest (none: the file is new).
    #[serde(default)]
    pub original: Option<String>,
    /// Each change inside the file (a hive: every registry value, with its
    /// key, old and new value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What `fixup` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// True when nothing was written.
    pub dry_run: bool,
    /// The changes, in the order made.
    pub changes: Vec<Change>,
    /// The inspection before the changes.
    pub inspection: Inspection,
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Makes (or with `dry_run` only records) the edits of `plan` on `fs`; the
/// report shows each path under the plan's prefix (where that filesystem
/// is mounted in the guest).
pub fn apply(fs: &dyn GuestFs, plan: &Plan, dry_run: bool) -> Result<Vec<Change>, Error> {
    let prefix = plan.prefix;
    let mut changes = Vec::new();
    for p in &plan.edits {
        let file = &p.path;
        let old = fs.read(file)?;
        let (new, mode) = p.edit.contents();
        if old.as_deref() == new || (old.is_none() && new.is_none()) {
            continue;
        }
        let orig = original_path(file);
        if !dry_run {
            match (&old, new) {
                (Some(_), None) => {
                    let name = orig.rsplit('/').next().unwrap_or(&orig);
                    fs.rename(file, name)?;
                }
                (Some(o), Some(n)) => {
                    // The first run's original is the one kept.
                    if !fs.exists(&orig)? {
                        fs.write(&orig, o, 0o600)?;
                    }
                    fs.write(file, n, mode)?;
                }
                (None, Some(n)) => fs.write(file, n, mode)?,
                (None, None) => continue,
            }
        }
        changes.push(Change {
            path: format!("{prefix}{file}"),
            reason: p.reason.clone(),
            before: old.as_deref().map(sha),
            after: new.map(sha),
            original: old.is_some().then(|| format!("{prefix}{orig}")),
            notes: p.notes.clone(),
        });
    }
    Ok(changes)
}

/// How to fix a guest up.
#[derive(Clone, Debug, Default)]
pub struct FixOptions {
    /// Say what would change; write nothing.
    pub dry_run: bool,
    /// The machine's other disks, so fstab can mount them by UUID.
    pub data_disks: Vec<DataDisk>,
}

/// Fixes up the OS disk at `path` (raw or fixed VHD).
///
/// The plan is made again on the read-write mount, after its journal
/// replayed, so that it edits what the guest would boot with.
pub fn fixup(path: &Path, opts: &FixOptions) -> Result<Report, Error> {
    let dry_run = opts.dry_run;
    let ins = inspect(path)?;
    if ins.windows.is_some() {
        return fix_windows(path, ins, dry_run);
    }
    let root = ins.root().cloned().ok_or_else(|| {
        Error::Guest(format!(
            "{} has no Linux root filesystem to fix up; is it an OS disk?",
            path.display()
        ))
    })?;
    let m = if dry_run {
        Mounted::read_only(path, root.start, root.size, root.fs.kind)?
    } else {
        Mounted::read_write(path, root.start, root.size, root.fs.kind)?
    };
    let plan = linux::plan_root(&m, &ins, &opts.data_disks)?;
    let mut changes = apply(&m, &plan, dry_run)?;
    if dry_run {
        drop(m);
    } else {
        m.finish()?;
    }
    if let Some(p) = layout::esp(&ins.partitions) {
        let esp = Esp::open(path, p.start, p.size, !dry_run)?;
        changes.extend(apply(&esp, &linux::plan_esp(&esp)?, dry_run)?);
        esp.finish()?;
    }
    Ok(Report {
        dry_run,
        changes,
        inspection: ins,
    })
}

/// Fixes up a Windows guest: its hives, through hivex, on a read-write
/// ntfs-3g mount. Nothing is mounted read-write, and nothing changes, when
/// inspection found the hives or the volume unsafe to edit.
fn fix_windows(path: &Path, ins: Inspection, dry_run: bool) -> Result<Report, Error> {
    if windows::unsafe_to_edit(&ins.findings) {
        return Ok(Report {
            dry_run,
            changes: Vec::new(),
            inspection: ins,
        });
    }
    let root = ins
        .root()
        .cloned()
        .ok_or_else(|| Error::Guest("the Windows volume went missing".into()))?;
    let m = if dry_run {
        Mounted::read_only(path, root.start, root.size, root.fs.kind)?
    } else {
        Mounted::read_write(path, root.start, root.size, root.fs.kind)?
    };
    let (_, plan, _) = windows::plan(&m)?;
    let changes = apply(&m, &plan, dry_run)?;
    if dry_run {
        drop(m);
    } else {
        m.finish()?;
    }
    Ok(Report {
        dry_run,
        changes,
        inspection: ins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixup::edits::*;
    use crate::fixup::plan::tests::MemFs;

    /// The network part of the root plan of `fs`.
    fn network(fs: &MemFs) -> Plan {
        let ins: Inspection = serde_json::from_value(serde_json::json!({
            "image": "x", "table": "gpt", "partitions": [], "root_partition": null, "os": null,
            "boot_mode": "uefi", "hyper_v_generation": "V2", "kernels": [], "fstab": [],
            "cloud_init_datasources": null, "azure_agent": false, "findings": []
        }))
        .unwrap();
        linux::plan_root(fs, &ins, &[]).unwrap()
    }

    #[test]
    fn network_edits_keep_originals_where_they_are_not_read_and_run_once() {
        let fs = MemFs::default();
        let dir = "/etc/sysconfig/network-scripts";
        fs.write(
            &format!("{dir}/ifcfg-ens5"),
            b"DEVICE=ens5\nHWADDR=0a:1b:2c:3d:4e:5f\nBOOTPROTO=dhcp\n",
            0o644,
        )
        .unwrap();
        fs.write(&format!("{dir}/ifcfg-lo"), b"DEVICE=lo\n", 0o644)
            .unwrap();
        let custom = b"network:\n  ethernets:\n    ens5:\n      match:\n        macaddress: 0a:1b:2c:3d:4e:5f\n";
        fs.write("/etc/netplan/60-custom.yaml", custom, 0o644)
            .unwrap();
        let found = network(&fs).findings();
        assert_eq!(found.len(), 3, "{found:?}");
        let changes = apply(&fs, &network(&fs), false).unwrap();
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/netplan/60-custom.yaml",
                "/etc/sysconfig/network-scripts/ifcfg-ens5",
                "/etc/sysconfig/network-scripts/ifcfg-eth0"
            ]
        );
        assert_eq!(
            changes[1].original.as_deref(),
            Some("/etc/sysconfig/network-scripts/.ifcfg-ens5.ebs2azure-orig")
        );
        assert_eq!(changes[2].original, None, "ifcfg-eth0 is new");
        assert_eq!(
            fs.read(&format!("{dir}/ifcfg-eth0")).unwrap().as_deref(),
            Some(IFCFG_ETH0.as_bytes())
        );
        assert_eq!(
            fs.read("/etc/netplan/60-custom.yaml.ebs2azure-orig")
                .unwrap()
                .as_deref(),
            Some(&custom[..])
        );
        assert!(
            network(&fs).findings().is_empty(),
            "a second look finds nothing"
        );
        assert!(apply(&fs, &network(&fs), false).unwrap().is_empty());
    }

    #[test]
    fn ifupdown_and_networkmanager_get_one_eth0_each() {
        let fs = MemFs::default();
        let d = "/etc/network/interfaces.d";
        fs.write(
            "/etc/network/interfaces",
            b"auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n",
            0o644,
        )
        .unwrap();
        fs.write(
            &format!("{d}/50-cloud-init"),
            b"auto ens5\niface ens5 inet dhcp\n",
            0o644,
        )
        .unwrap();
        fs.write(
            &format!("{d}/60-ens6"),
            b"auto ens6\niface ens6 inet dhcp\n",
            0o644,
        )
        .unwrap();
        let nm = "/etc/NetworkManager/system-connections";
        for n in ["a.nmconnection", "b.nmconnection"] {
            fs.write(
                &format!("{nm}/{n}"),
                b"[ethernet]\nmac-address=0A:1B:2C:3D:4E:5F\n",
                0o600,
            )
            .unwrap();
        }
        apply(&fs, &network(&fs), false).unwrap();
        let eth0_stanzas: usize = [
            "/etc/network/interfaces".to_owned(),
            format!("{d}/50-cloud-init"),
            format!("{d}/60-ens6"),
        ]
        .iter()
        .filter_map(|f| fs.read_text(f).unwrap())
        .filter(|t| declares_eth0(t))
        .count();
        assert_eq!(eth0_stanzas, 1);
        assert!(fs.read(&format!("{d}/60-ens6")).unwrap().is_none());
        assert!(fs
            .read(&format!("{d}/.60-ens6.ebs2azure-orig"))
            .unwrap()
            .is_some());
        assert_eq!(
            fs.read_text(&format!("{nm}/a.nmconnection"))
                .unwrap()
                .as_deref(),
            Some(NM_ETH0)
        );
        assert!(fs.read(&format!("{nm}/b.nmconnection")).unwrap().is_none());
        assert!(apply(&fs, &network(&fs), false).unwrap().is_empty());
    }
}
