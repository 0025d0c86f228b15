//! `plan new --from-ec2`: a plan written from what EC2 says of instances,
//! for people to check and run. Each instance becomes a machine: its Name
//! tag (else its id) as the name, its platform, type, boot mode and tags;
//! its root volume as the OS disk and its other volumes as data disks with
//! LUNs in device order; each volume's newest completed snapshot, or new
//! crash-consistent ones taken now. An instance Azure cannot run is left
//! out of the plan with the reason, and the plan's head lists it.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::new::{header, quote, Defaults};
use crate::ec2::{self, Ec2, Instance, Selection};
use crate::limits::{AZURE_MAX_DISK_SIZE, AZURE_MAX_OS_DISK_SIZE};
use crate::machines::sizes;

/// Where the snapshots come from.
pub enum Snapshots<'a> {
    /// Each volume's newest completed snapshot.
    Latest,
    /// New ones, per instance at one instant (CreateSnapshots), waited for
    /// up to `wait` (or until `stop`).
    Take {
        /// Longest wait for them to complete.
        wait: Duration,
        /// Set from elsewhere (an interrupt) to stop waiting.
        stop: &'a AtomicBool,
    },
}

/// What a discovery found.
#[derive(Debug)]
pub struct Discovered {
    /// The region asked.
    pub region: String,
    /// The instances that go into the plan.
    pub machines: Vec<Machine>,
    /// The instances left out, and why.
    pub left_out: Vec<LeftOut>,
}

/// An instance that becomes a machine of the plan.
#[derive(Debug)]
pub struct Machine {
    /// The machine's name in the plan.
    pub name: String,
    /// The instance as EC2 told it.
    pub instance: Instance,
    /// Its disks, the OS disk first, then the data disks in device order.
    pub disks: Vec<Disk>,
}

/// One volume of a machine.
#[derive(Debug)]
pub struct Disk {
    /// The EC2 device name.
    pub device: String,
    /// The volume.
    pub volume: String,
    /// The snapshot the plan copies.
    pub snapshot: String,
    /// The volume's size.
    pub size_gib: u64,
    /// Encrypted with KMS.
    pub encrypted: bool,
}

/// An instance left out of the plan.
#[derive(Debug)]
pub struct LeftOut {
    /// Its id.
    pub instance: String,
    /// Its Name tag, if any.
    pub name: Option<String>,
    /// Why.
    pub why: Blocker,
}

/// Why Azure cannot take an instance as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// Its root is an instance store: no EBS snapshot holds it.
    InstanceStoreRoot,
    /// Arm64, and no Azure Arm64 size is known for its type.
    NoArmSize(String),
    /// An architecture Azure does not run.
    Architecture(String),
    /// A volume over Azure's size limit for its role.
    TooBig {
        /// The volume.
        volume: String,
        /// Its size.
        size_gib: u64,
        /// Azure's limit for it.
        limit_gib: u64,
    },
    /// A volume with no completed snapshot (without `--snapshot`).
    NoSnapshot(String),
    /// A volume DescribeVolumes did not return (deleted meanwhile?).
    VolumeGone(String),
    /// No EBS volume at all.
    NoVolumes,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::InstanceStoreRoot => f.write_str(
                "its root device is an instance store, which no EBS snapshot holds; move the root to EBS (or rebuild the machine) first",
            ),
            Blocker::NoArmSize(t) => write!(
                f,
                "it is an Arm64 instance ({t}) and no Azure Arm64 size is known for that type; pick an Arm64 size (Dpsv5, Epsv5) and plan it by hand"
            ),
            Blocker::Architecture(a) => write!(f, "its architecture {a} does not run on Azure"),
            Blocker::TooBig {
                volume,
                size_gib,
                limit_gib,
            } => write!(
                f,
                "volume {volume} has {size_gib} GiB, over Azure's {limit_gib} GiB for a disk in its role; shrink it or split its data first"
            ),
            Blocker::NoSnapshot(v) => write!(
                f,
                "volume {v} has no completed snapshot; take one (or discover with new snapshots)"
            ),
            Blocker::NoVolumes => f.write_str("it has no EBS volume"),
            Blocker::VolumeGone(v) => write!(
                f,
                "volume {v} is attached but EC2 does not describe it (deleted meanwhile?); discover again"
            ),
        }
    }
}

/// Why a discovery could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An EC2 call failed.
    #[error(transparent)]
    Ec2(#[from] ec2::Error),
    /// Waiting for new snapshots ended without them.
    #[error(transparent)]
    Wait(#[from] ec2::WaitError),
    /// Instances asked for by id that EC2 does not have.
    #[error("EC2 has no instance {0} in region {1} (or it is terminated)")]
    Missing(String, String),
    /// Nothing matched.
    #[error("no instance in region {0} matches; check the ids, tags and region")]
    Nothing(String),
}

/// Lists the instances `select` names and what the plan needs of them.
pub fn discover(
    ec2: &Ec2,
    select: &Selection,
    snapshots: &Snapshots<'_>,
    progress: &dyn Fn(&str),
) -> Result<Discovered, Error> {
    let region = ec2.region().to_owned();
    let found = ec2.instances(select)?;
    if let Selection::Ids(ids) = select {
        if let Some(id) = ids.iter().find(|id| !found.iter().any(|i| &i.id == *id)) {
            return Err(Error::Missing(id.clone(), region));
        }
    }
    if found.is_empty() {
        return Err(Error::Nothing(region));
    }
    progress(&format!("{} instances found", found.len()));
    let volume_ids: Vec<String> = found
        .iter()
        .flat_map(|i| i.volumes.iter().map(|(_, v)| v.clone()))
        .collect();
    let volumes: BTreeMap<String, ec2::Volume> = ec2
        .volumes(&volume_ids)?
        .into_iter()
        .map(|v| (v.id.clone(), v))
        .collect();
    let mut left_out = Vec::new();
    let mut kept = Vec::new();
    for inst in found {
        match blocker(&inst, &volumes) {
            Some(why) => left_out.push(LeftOut {
                instance: inst.id.clone(),
                name: inst.name().map(str::to_owned),
                why,
            }),
            None => kept.push(inst),
        }
    }
    let snaps = match snapshots {
        Snapshots::Latest => {
            let ids: Vec<String> = kept
                .iter()
                .flat_map(|i| i.volumes.iter().map(|(_, v)| v.clone()))
                .collect();
            ec2.latest_snapshots(&ids)?
                .into_iter()
                .map(|(v, s)| (v, s.id))
                .collect()
        }
        Snapshots::Take { wait, stop } => take(ec2, &kept, *wait, stop, progress)?,
    };
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut machines = Vec::new();
    for inst in kept {
        let problem = inst.volumes.iter().find_map(|(_, v)| {
            if !volumes.contains_key(v) {
                Some(Blocker::VolumeGone(v.clone()))
            } else if !snaps.contains_key(v) {
                Some(Blocker::NoSnapshot(v.clone()))
            } else {
                None
            }
        });
        if let Some(why) = problem {
            left_out.push(LeftOut {
                instance: inst.id.clone(),
                name: inst.name().map(str::to_owned),
                why,
            });
            continue;
        }
        let mut name = machine_name(&inst);
        let seen = names.entry(name.to_ascii_lowercase()).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            // Two instances with one Name tag: the id tells them apart.
            name = format!("{name}-{}", inst.id.trim_start_matches("i-"));
        }
        let disks = ordered(&inst)
            .into_iter()
            .map(|(device, volume)| {
                let v = &volumes[&volume];
                Disk {
                    snapshot: snaps[&volume].clone(),
                    size_gib: v.size_gib,
                    encrypted: v.encrypted,
                    device,
                    volume,
                }
            })
            .collect();
        machines.push(Machine {
            name,
            instance: inst,
            disks,
        });
    }
    Ok(Discovered {
        region,
        machines,
        left_out,
    })
}

/// Why `inst` cannot go into the plan, if it cannot.
fn blocker(inst: &Instance, volumes: &BTreeMap<String, ec2::Volume>) -> Option<Blocker> {
    if inst.root_device_type == "instance-store" {
        return Some(Blocker::InstanceStoreRoot);
    }
    match inst.architecture.as_str() {
        "arm64" => {
            let arm = sizes::propose(&inst.instance_type).is_some_and(|s| s.arm64);
            if !arm {
                return Some(Blocker::NoArmSize(inst.instance_type.clone()));
            }
        }
        "x86_64" | "i386" | "" => {}
        other => return Some(Blocker::Architecture(other.to_owned())),
    }
    if inst.volumes.is_empty() {
        return Some(Blocker::NoVolumes);
    }
    for (device, vid) in &inst.volumes {
        let size_gib = volumes.get(vid).map_or(0, |v| v.size_gib);
        let limit = if *device == inst.root_device {
            AZURE_MAX_OS_DISK_SIZE
        } else {
            AZURE_MAX_DISK_SIZE
        };
        if size_gib << 30 > limit {
            return Some(Blocker::TooBig {
                volume: vid.clone(),
                size_gib,
                limit_gib: limit >> 30,
            });
        }
    }
    None
}

/// New snapshots of every volume of `instances`, one CreateSnapshots per
/// instance (crash-consistent across its volumes), waited for together.
fn take(
    ec2: &Ec2,
    instances: &[Instance],
    wait: Duration,
    stop: &AtomicBool,
    progress: &dyn Fn(&str),
) -> Result<BTreeMap<String, String>, Error> {
    let mut taken = Vec::new();
    for inst in instances {
        let s = ec2.create_snapshots(&inst.id, &format!("ebs2azure discovery of {}", inst.id))?;
        taken.extend(s);
    }
    let ids: Vec<String> = taken.iter().map(|s| s.id.clone()).collect();
    progress(&format!(
        "{} snapshots started; waiting for them to complete",
        ids.len()
    ));
    let done = ec2::wait_completed(ec2, &ids, Duration::from_secs(5), wait, stop, &|_| {})?;
    Ok(done.into_iter().map(|s| (s.volume, s.id)).collect())
}

/// The root volume first, then the others in device order (`/dev/sdf`
/// before `/dev/sdg`, `/dev/xvdz` before `/dev/xvdaa`).
fn ordered(inst: &Instance) -> Vec<(String, String)> {
    let mut v = inst.volumes.clone();
    v.sort_by(|(a, _), (b, _)| {
        let root = |d: &str| d != inst.root_device;
        (root(a), a.len(), a).cmp(&(root(b), b.len(), b))
    });
    v
}

/// The plan's name for `inst`: its Name tag made a valid Azure resource
/// name (letters, digits, `-`, `_`, `.`; at most 50 characters, leaving room
/// for the disks' suffixes), else its id.
fn machine_name(inst: &Instance) -> String {
    let tag = inst.name().unwrap_or("");
    let mut name: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_matches(|c| c == '-' || c == '.' || c == '_')
        .to_owned();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    name.truncate(50);
    let name = name.trim_end_matches(['-', '.', '_']).to_owned();
    if name.is_empty() {
        inst.id.clone()
    } else {
        name
    }
}

/// Tags Azure takes: not AWS's own (`aws:`), no `<>%&\?/` in the key, a
/// key of at most 512 characters and a value of at most 256.
fn azure_tags(tags: &[(String, String)]) -> (Vec<(String, String)>, Vec<String>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (k, v) in tags {
        let bad = k.starts_with("aws:")
            || k.chars().any(|c| "<>%&\\?/".contains(c))
            || k.len() > 512
            || v.len() > 256
            || k.is_empty();
        if bad {
            dropped.push(k.clone());
        } else {
            kept.push((k.clone(), v.clone()));
        }
    }
    (kept, dropped)
}

/// The plan text for what was discovered.
pub fn write(d: &Discovered, defaults: &Defaults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# ebs2azure plan from EC2 (region {}): {} machines; check it with `ebs2azure plan validate`, run it with `ebs2azure migrate --plan`.",
        d.region,
        d.machines.len()
    );
    let _ = writeln!(
        s,
        "# Each machine's VM also needs subnet_id (the subnet its NIC joins) before `vm create`."
    );
    if !d.left_out.is_empty() {
        let _ = writeln!(s, "#\n# Left out ({}):", d.left_out.len());
        for l in &d.left_out {
            let name = l
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(s, "#   {}{name}: {}", l.instance, l.why);
        }
    }
    let _ = writeln!(s);
    let mut defaults = defaults.clone();
    defaults.region.get_or_insert_with(|| d.region.clone());
    header(&mut s, &defaults);
    for m in &d.machines {
        let i = &m.instance;
        let _ = writeln!(s, "\n[[machine]]\nname = {}", quote(&m.name));
        let _ = writeln!(s, "instance_id = {}", quote(&i.id));
        let _ = writeln!(s, "instance_type = {}", quote(&i.instance_type));
        if i.architecture == "arm64" {
            let _ = writeln!(
                s,
                "# architecture arm64: the VM size must be an Arm64 one (Dpsv5, Epsv5)"
            );
        }
        match sizes::propose(&i.instance_type) {
            Some(size) => {
                let _ = writeln!(
                    s,
                    "vm_size = {}   # a proposal for {} ({} vCPU, {} GiB): check it",
                    quote(size.name),
                    i.instance_type,
                    size.vcpus,
                    size.memory_gib
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "# vm_size = \"...\"   # no proposal for {}: choose one",
                    i.instance_type
                );
            }
        }
        let _ = writeln!(
            s,
            "os_type = {}",
            quote(if i.windows { "windows" } else { "linux" })
        );
        match i.boot_mode.as_str() {
            "uefi" => {
                let _ = writeln!(s, "hyper_v_generation = \"V2\"   # EC2 boots it with UEFI");
            }
            "legacy-bios" => {
                let _ = writeln!(s, "hyper_v_generation = \"V1\"   # EC2 boots it with BIOS");
            }
            _ => {}
        }
        if i.windows {
            let _ = writeln!(s, "# license_type = \"Windows_Server\"   # Azure Hybrid Benefit, if you hold the licences");
        }
        let _ = writeln!(s, "# subnet_id = \"/subscriptions/.../resourceGroups/.../providers/Microsoft.Network/virtualNetworks/.../subnets/...\"");
        let (tags, dropped) = azure_tags(&i.tags);
        if !tags.is_empty() {
            let inner: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                .collect();
            let _ = writeln!(s, "tags = {{ {} }}", inner.join(", "));
        }
        if !dropped.is_empty() {
            let _ = writeln!(
                s,
                "# tags Azure does not take, left out: {}",
                dropped.join(", ")
            );
        }
        let mut lun = 0;
        for (k, disk) in m.disks.iter().enumerate() {
            let _ = writeln!(s, "  [[machine.disk]]");
            let _ = writeln!(s, "  snapshot = {}", quote(&disk.snapshot));
            if k == 0 {
                let _ = writeln!(s, "  role = \"os\"");
            } else {
                let _ = writeln!(s, "  role = \"data\"\n  lun = {lun}");
                lun += 1;
            }
            let enc = if disk.encrypted {
                ", encrypted with KMS (reading it needs kms:Decrypt)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  device = {}   # {}, {} GiB{enc}",
                quote(&disk.device),
                disk.volume,
                disk.size_gib
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{DiskRole, Plan};
    use crate::plan::schema::Common;

    fn inst(id: &str, name: &str, vols: &[(&str, &str)]) -> Instance {
        Instance {
            id: id.into(),
            state: "running".into(),
            volumes: vols
                .iter()
                .map(|(d, v)| ((*d).into(), (*v).into()))
                .collect(),
            instance_type: "m5.large".into(),
            windows: false,
            architecture: "x86_64".into(),
            boot_mode: "uefi".into(),
            root_device_type: "ebs".into(),
            root_device: vols[0].0.into(),
            tags: vec![
                ("Name".into(), name.into()),
                ("aws:cloudformation:stack-name".into(), "s".into()),
                ("app".into(), "web".into()),
            ],
        }
    }

    #[test]
    fn volumes_go_root_first_then_in_device_order() {
        let i = inst(
            "i-1",
            "x",
            &[
                ("/dev/xvdaa", "v3"),
                ("/dev/xvda", "v0"),
                ("/dev/xvdz", "v2"),
                ("/dev/xvdf", "v1"),
            ],
        );
        let i = Instance {
            root_device: "/dev/xvda".into(),
            ..i
        };
        let order: Vec<String> = ordered(&i).into_iter().map(|(_, v)| v).collect();
        assert_eq!(order, ["v0", "v1", "v2", "v3"]);
    }

    #[test]
    fn names_become_azure_names() {
        assert_eq!(
            machine_name(&inst("i-1", "Web Server #1", &[("/dev/xvda", "v")])),
            "Web-Server-1"
        );
        assert_eq!(
            machine_name(&inst("i-0abc", "  ", &[("/dev/xvda", "v")])),
            "i-0abc"
        );
        assert_eq!(
            machine_name(&inst("i-1", &"n".repeat(80), &[("/dev/xvda", "v")])).len(),
            50
        );
    }

    #[test]
    fn blockers_are_found_before_any_copy() {
        let vols: BTreeMap<String, ec2::Volume> = [
            ("v0", 8, false),
            ("big", 40_000, false),
            ("bigroot", 5_000, false),
        ]
        .into_iter()
        .map(|(id, size_gib, encrypted)| {
            (
                id.to_owned(),
                ec2::Volume {
                    id: id.into(),
                    size_gib,
                    encrypted,
                },
            )
        })
        .collect();
        let ok = inst("i-1", "a", &[("/dev/xvda", "v0")]);
        assert_eq!(blocker(&ok, &vols), None);
        let store = Instance {
            root_device_type: "instance-store".into(),
            ..ok.clone()
        };
        assert_eq!(blocker(&store, &vols), Some(Blocker::InstanceStoreRoot));
        let graviton = Instance {
            architecture: "arm64".into(),
            instance_type: "c7g.large".into(),
            ..ok.clone()
        };
        assert_eq!(
            blocker(&graviton, &vols),
            Some(Blocker::NoArmSize("c7g.large".into()))
        );
        let known_arm = Instance {
            architecture: "arm64".into(),
            instance_type: "m6g.large".into(),
            ..ok.clone()
        };
        assert_eq!(blocker(&known_arm, &vols), None);
        let big = inst("i-2", "b", &[("/dev/xvda", "v0"), ("/dev/xvdf", "big")]);
        assert!(matches!(
            blocker(&big, &vols),
            Some(Blocker::TooBig {
                limit_gib: 32768,
                ..
            })
        ));
        let bigroot = inst("i-3", "c", &[("/dev/xvda", "bigroot")]);
        assert!(matches!(
            blocker(&bigroot, &vols),
            Some(Blocker::TooBig {
                limit_gib: 4095,
                ..
            })
        ));
    }

    #[test]
    fn the_plan_written_validates_and_keeps_what_ec2_said() {
        let d = Discovered {
            region: "us-east-1".into(),
            machines: vec![Machine {
                name: "web01".into(),
                instance: Instance {
                    windows: true,
                    ..inst(
                        "i-0123456789abcdef0",
                        "web01",
                        &[("/dev/sda1", "vol-1"), ("/dev/xvdf", "vol-2")],
                    )
                },
                disks: vec![
                    Disk {
                        device: "/dev/sda1".into(),
                        volume: "vol-1".into(),
                        snapshot: "snap-00000001".into(),
                        size_gib: 30,
                        encrypted: false,
                    },
                    Disk {
                        device: "/dev/xvdf".into(),
                        volume: "vol-2".into(),
                        snapshot: "snap-00000002".into(),
                        size_gib: 100,
                        encrypted: true,
                    },
                ],
            }],
            left_out: vec![LeftOut {
                instance: "i-2".into(),
                name: None,
                why: Blocker::InstanceStoreRoot,
            }],
        };
        let defaults = Defaults {
            subscription: Some("00000000-0000-0000-0000-000000000001".into()),
            resource_group: Some("rg".into()),
            location: Some("westeurope".into()),
            ..Defaults::default()
        };
        let text = write(&d, &defaults);
        assert!(
            text.contains("#   i-2: its root device is an instance store"),
            "{text}"
        );
        assert!(text.contains("kms:Decrypt"), "{text}");
        let plan = Plan::parse(&text, "new", &Common::default()).unwrap();
        assert_eq!(plan.disks.len(), 2);
        let (os, data) = (&plan.disks[0], &plan.disks[1]);
        assert_eq!((os.role, data.role), (DiskRole::Os, DiskRole::Data));
        assert_eq!(
            (data.lun, data.device.as_deref()),
            (Some(0), Some("/dev/xvdf"))
        );
        assert_eq!(os.tags.get("app").map(String::as_str), Some("web"));
        assert!(!os.tags.keys().any(|k| k.starts_with("aws:")));
        assert_eq!(os.region.as_deref(), Some("us-east-1"));
        let m = &plan.machines[0];
        assert_eq!(m.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    }
}
