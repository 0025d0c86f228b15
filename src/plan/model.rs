//! A plan as runs see it: every disk with its defaults applied, its name
//! derived, its kinds parsed and its values checked. [`Plan::parse`]
//! collects every problem of a file at once, each with its line, so that a
//! plan of a hundred disks is fixed in one pass.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::schema::{line_of, Common, DiskEntry, PlanFile, PLAN_VERSION};
use crate::azure::arm::{DataAccessAuthMode, DiskRef};
use crate::azure::names;
use crate::digest::hex;
use crate::kinds::{HyperVGeneration, OsType};
use crate::source::ebs::is_snapshot_id;
use crate::upload::Target;

/// The SKU of a disk when the plan names none (as `migrate`'s).
pub const DEFAULT_SKU: &str = "Premium_LRS";
/// Most data disks a VM takes (the largest sizes' limit), so LUNs are 0-63.
pub const MAX_LUN: u32 = 63;
/// Largest plan file read (a plan of thousands of disks is well under it).
pub const MAX_PLAN_BYTES: u64 = 16 << 20;

/// What a disk is to its machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskRole {
    /// The disk the machine boots from: fixed up unless told not to.
    Os,
    /// Any other disk: streamed as it is.
    Data,
}

/// The OS of a machine, or `Auto` to take it from the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsChoice {
    /// From inspection of the guest, when it is fixed up.
    Auto,
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

/// The Hyper-V generation of an OS disk, or `Auto` for the guest's boot mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GenerationChoice {
    /// From the guest's boot mode (fixed-up disks), else V1.
    #[serde(rename = "auto")]
    Auto,
    /// Generation 1 (BIOS).
    V1,
    /// Generation 2 (UEFI).
    V2,
}

macro_rules! text_kind {
    ($t:ty, $what:literal, $($v:path => $s:literal),+) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(match self { $($v => $s),+ })
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($s) { return Ok($v); })+
                Err(format!(concat!($what, " {:?} is not one of {}"), s, [$($s),+].join(", ")))
            }
        }
    };
}
text_kind!(DiskRole, "role", DiskRole::Os => "os", DiskRole::Data => "data");
text_kind!(OsChoice, "os_type", OsChoice::Auto => "auto", OsChoice::Linux => "linux", OsChoice::Windows => "windows");
text_kind!(GenerationChoice, "hyper_v_generation", GenerationChoice::Auto => "auto", GenerationChoice::V1 => "V1", GenerationChoice::V2 => "V2");

/// One disk of a plan, everything resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDisk {
    /// The managed disk's name (unique in the plan).
    pub name: String,
    /// The machine it belongs to, if any.
    pub machine: Option<String>,
    /// The EBS snapshot.
    pub snapshot: String,
    /// OS or data.
    pub role: DiskRole,
    /// LUN on the VM (data disks).
    pub lun: Option<u32>,
    /// The EC2 device the guest knows it by.
    pub device: Option<String>,
    /// Skipped by runs.
    pub exclude: bool,
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Azure region.
    pub location: String,
    /// Disk SKU.
    pub sku: String,
    /// Availability zone.
    pub zone: Option<String>,
    /// AWS region of the snapshot (otherwise the default chain's).
    pub region: Option<String>,
    /// OS (OS disks).
    pub os_type: OsChoice,
    /// Hyper-V generation (OS disks).
    pub hyper_v_generation: GenerationChoice,
    /// Fix the guest up (OS disks).
    pub fixup: bool,
    /// Leave the finished disk's network access open (the plan's
    /// `lock_network = false`); left out of the digest when locked, the
    /// default, so plans written before it keep their digests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network_open: bool,
    /// Customer-managed keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Whether the disk's upload and read URLs also want an Entra token;
    /// left out of the digest when not (the default), as `network_open`.
    #[serde(default, skip_serializing_if = "DataAccessAuthMode::is_none")]
    pub data_access: DataAccessAuthMode,
    /// Tags of the managed disk.
    pub tags: BTreeMap<String, String>,
    /// Line of the disk's table in the plan file.
    #[serde(skip)]
    pub line: usize,
}

impl PlannedDisk {
    /// This entry with another snapshot: the entry a pre-seeded disk was
    /// planned with, before its snapshot moved forward.
    pub fn with_snapshot(&self, snapshot: &str) -> PlannedDisk {
        PlannedDisk {
            snapshot: snapshot.to_owned(),
            ..self.clone()
        }
    }

    /// The managed disk to create.
    pub fn target(&self) -> Target {
        let os = self.role == DiskRole::Os;
        Target {
            disk: DiskRef {
                subscription: self.subscription.clone(),
                resource_group: self.resource_group.clone(),
                name: self.name.clone(),
            },
            location: Some(self.location.clone()),
            sku: self.sku.clone(),
            os_type: match (os, self.os_type) {
                (false, _) => None,
                (true, OsChoice::Windows) => Some(OsType::Windows),
                (true, OsChoice::Linux) => Some(OsType::Linux),
                // Auto: the fix-up's inspection says which (os_disk).
                (true, OsChoice::Auto) => None,
            },
            hyper_v_generation: match (os, self.hyper_v_generation) {
                (true, GenerationChoice::V1) => Some(HyperVGeneration::V1),
                (true, GenerationChoice::V2) => Some(HyperVGeneration::V2),
                _ => None,
            },
            zone: self.zone.clone(),
            tags: self.tags.clone().into_iter().collect(),
            encryption: self.encryption.clone(),
            data_access: self.data_access,
        }
    }

    /// A digest of everything that decides what this disk becomes, so a
    /// resumed run can tell whether the plan changed under it.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(json))
    }

    /// True when the guest is fixed up before the upload.
    pub fn fixed_up(&self) -> bool {
        self.role == DiskRole::Os && self.fixup
    }
}

/// A machine of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Its name.
    pub name: String,
    /// Skipped by runs (with its disks).
    pub exclude: bool,
    /// Indexes of its disks in [`Plan::disks`].
    pub disks: Vec<usize>,
    /// Its EC2 instance, for cutovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// What its Azure VM is to be.
    #[serde(default)]
    pub vm: VmChoice,
}

/// A machine's Azure VM, as its plan entry says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmChoice {
    /// The VM size: the plan's, or proposed from `instance_type`.
    pub size: Option<String>,
    /// True when `size` is a proposal from the EC2 instance type.
    pub proposed: bool,
    /// The EC2 instance type, when given.
    pub instance_type: Option<String>,
    /// The subnet the NIC joins.
    pub subnet_id: Option<String>,
    /// The isolated subnet of test migrations.
    pub test_subnet_id: Option<String>,
    /// A public IP address for the VM.
    pub public_ip: bool,
    /// Azure Hybrid Benefit.
    pub license_type: Option<String>,
}

pub use crate::azure::arm::DiskEncryption as Encryption;

/// True for a disk encryption set's resource id.
pub fn is_encryption_set_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case("Microsoft.Compute")
        && parts[7].eq_ignore_ascii_case("diskEncryptionSets")
        && [2, 4, 8].iter().all(|&i| !parts[i].is_empty())
}

/// License types a VM takes (the Compute API's `licenseType` values).
pub const LICENSE_TYPES: [&str; 5] = [
    "Windows_Server",
    "Windows_Client",
    "RHEL_BYOS",
    "SLES_BYOS",
    "None",
];

/// True for a subnet's resource id:
/// `/subscriptions/S/resourceGroups/G/providers/Microsoft.Network/virtualNetworks/V/subnets/N`.
pub fn is_subnet_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 11
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case("Microsoft.Network")
        && parts[7].eq_ignore_ascii_case("virtualNetworks")
        && parts[9].eq_ignore_ascii_case("subnets")
        && [2, 4, 8, 10].iter().all(|&i| !parts[i].is_empty())
}

/// EC2's rule for instance ids: `i-` followed by 8 or 17 lower-case hex digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A unit that stays together on one shard: a machine and its disks, or a
/// disk of no machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit<'a> {
    /// A machine.
    Machine(&'a Machine),
    /// A disk of no machine (its index in [`Plan::disks`]).
    Disk(usize),
}

/// A plan, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Machines, in file order.
    pub machines: Vec<Machine>,
    /// Every disk, machines' first (in file order), then the lone ones.
    pub disks: Vec<PlannedDisk>,
    /// Digest of the resolved plan (all disks and machines).
    pub digest: String,
}

/// A problem with a plan, at a line of its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line (0 when it concerns the whole file).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.message),
            n => write!(f, "line {n}: {}", self.message),
        }
    }
}

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read plan {file}: {source}")]
    Read {
        /// The plan file.
        file: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The file is too big to be a plan.
    #[error("plan {file} has {size} bytes, more than the {MAX_PLAN_BYTES} a plan may have")]
    TooBig {
        /// The plan file.
        file: String,
        /// Its size.
        size: u64,
    },
    /// The file is not TOML of the plan's shape.
    #[error("plan {file}, line {line}, column {column}: {message}")]
    Syntax {
        /// The plan file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the TOML reader said.
        message: String,
    },
    /// The plan's contents are wrong, in these places.
    #[error("plan {file} has {} problem{}:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The plan file.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl Plan {
    /// The disks of `machine` that are not excluded, in the plan's order.
    pub fn disks_of<'a>(&'a self, machine: &'a Machine) -> impl Iterator<Item = &'a PlannedDisk> {
        machine
            .disks
            .iter()
            .map(|&i| &self.disks[i])
            .filter(|d| !d.exclude)
    }

    /// Reads and resolves the plan at `path`; `fallback` fills keys that no
    /// level sets (such as a subscription from the environment).
    pub fn load(path: &Path, fallback: &Common) -> Result<Plan, Error> {
        let file = path.display().to_string();
        let read = |source| Error::Read {
            file: file.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_PLAN_BYTES {
            return Err(Error::TooBig { file, size });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Plan::parse(&text, &file, fallback)
    }

    /// Resolves the plan in `text` (named `file` in messages).
    pub fn parse(text: &str, file: &str, fallback: &Common) -> Result<Plan, Error> {
        let raw: PlanFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let line = line_of(text, at);
            let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
            Error::Syntax {
                file: file.to_owned(),
                line,
                column: text[line_start..at.min(text.len())].chars().count() + 1,
                message: e.message().trim().to_owned(),
            }
        })?;
        let mut r = Resolver {
            text,
            problems: Vec::new(),
            disks: Vec::new(),
        };
        if let Some(v) = raw.version.filter(|&v| v == 0 || v > PLAN_VERSION) {
            r.problem(
                0,
                format!("plan version {v} is not one this ebs2azure reads (1 to {PLAN_VERSION}); upgrade ebs2azure"),
            );
        }
        let base = fallback.over(&raw.defaults.common());
        let mut machines = Vec::new();
        let mut machine_lines: HashMap<String, usize> = HashMap::new();
        for entry in &raw.machine {
            let line = line_of(text, entry.span().start);
            let m = entry.get_ref();
            let name = match &m.name {
                Some(n) => n.clone(),
                None => {
                    r.problem(line, "a machine needs a name".into());
                    format!("machine-at-line-{line}")
                }
            };
            if let Some(first) = machine_lines.insert(name.to_lowercase(), line) {
                r.problem(
                    line,
                    format!("machine {name:?} is named twice (first at line {first})"),
                );
            }
            let common = base.over(&m.common());
            let first = r.disks.len();
            let mut data = 0;
            let mut os_lines = Vec::new();
            for d in &m.disk {
                let dline = line_of(text, d.span().start);
                let role = r.role(dline, d.get_ref());
                let default_name = match role {
                    DiskRole::Os => {
                        os_lines.push(dline);
                        format!("{name}-os")
                    }
                    DiskRole::Data => {
                        data += 1;
                        format!("{name}-data{}", data - 1)
                    }
                };
                r.disk(
                    dline,
                    d.get_ref(),
                    &common,
                    Some(&name),
                    role,
                    Some(default_name),
                    m.exclude,
                );
            }
            match os_lines.as_slice() {
                [_] => {}
                [] => r.problem(
                    line,
                    format!("machine {name:?} has no OS disk; give one of its disks role = \"os\""),
                ),
                [_, more @ ..] => r.problem(
                    more[0],
                    format!(
                        "machine {name:?} has more than one OS disk (lines {})",
                        os_lines
                            .iter()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
            let mut luns: HashMap<u32, usize> = HashMap::new();
            for d in &r.disks[first..] {
                if let Some(lun) = d.lun {
                    if let Some(prev) = luns.insert(lun, d.line) {
                        r.problems.push(Problem {
                            line: d.line,
                            message: format!(
                                "LUN {lun} of machine {name:?} is taken already (line {prev})"
                            ),
                        });
                    }
                }
            }
            if let Some(id) = m.instance_id.as_deref().filter(|id| !is_instance_id(id)) {
                r.problem(
                    line,
                    format!("instance_id {id:?} of machine {name:?} is not an EC2 instance id (i- followed by 8 or 17 lower-case hex digits)"),
                );
            }
            let vm = r.vm_choice(line, &name, m, first);
            machines.push(Machine {
                name,
                exclude: m.exclude,
                disks: (first..r.disks.len()).collect(),
                instance_id: m.instance_id.clone(),
                vm,
            });
        }
        for d in &raw.disk {
            let dline = line_of(text, d.span().start);
            let role = r.role(dline, d.get_ref());
            if d.get_ref().name.is_none() {
                r.problem(dline, "a disk of no machine needs a name".into());
            }
            r.disk(dline, d.get_ref(), &base, None, role, None, false);
        }
        if r.disks.is_empty() && r.problems.is_empty() {
            r.problem(0, "the plan has no disks; add [[machine]] tables with [[machine.disk]] entries, or [[disk]] tables".into());
        }
        r.check_unique();
        if !r.problems.is_empty() {
            r.problems.sort_by_key(|p| p.line);
            return Err(Error::Invalid {
                file: file.to_owned(),
                problems: r.problems,
            });
        }
        let digest = {
            let json = serde_json::to_vec(&(&machines, &r.disks)).unwrap_or_default();
            hex(&Sha256::digest(json))
        };
        Ok(Plan {
            machines,
            disks: r.disks,
            digest,
        })
    }

    /// The units that stay together on a shard, in plan order: machines,
    /// then the disks of no machine.
    pub fn units(&self) -> Vec<Unit<'_>> {
        let lone = self
            .disks
            .iter()
            .enumerate()
            .filter(|(_, d)| d.machine.is_none())
            .map(|(i, _)| Unit::Disk(i));
        self.machines
            .iter()
            .map(Unit::Machine)
            .chain(lone)
            .collect()
    }

    /// The disk named `name`.
    pub fn disk(&self, name: &str) -> Option<&PlannedDisk> {
        self.disks.iter().find(|d| d.name == name)
    }
}

struct Resolver<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    disks: Vec<PlannedDisk>,
}

impl Resolver<'_> {
    /// The VM a machine entry asks for, its problems recorded: the size's
    /// limits against the machine's disks (`self.disks[first..]`).
    fn vm_choice(
        &mut self,
        line: usize,
        name: &str,
        m: &super::schema::MachineEntry,
        first: usize,
    ) -> VmChoice {
        let proposal = m
            .instance_type
            .as_deref()
            .and_then(crate::machines::sizes::propose);
        let size = m
            .vm_size
            .clone()
            .or_else(|| proposal.map(|s| s.name.to_owned()));
        for (key, id) in [
            ("subnet_id", &m.subnet_id),
            ("test_subnet_id", &m.test_subnet_id),
        ] {
            if let Some(id) = id.as_deref().filter(|id| !is_subnet_id(id)) {
                self.problem(line, format!("{key} {id:?} of machine {name:?} is not a subnet's resource id (/subscriptions/.../resourceGroups/.../providers/Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET)"));
            }
        }
        if let (Some(a), Some(b)) = (&m.subnet_id, &m.test_subnet_id) {
            if a.eq_ignore_ascii_case(b) {
                self.problem(line, format!("machine {name:?}: test_subnet_id is its subnet_id; a test migration needs an isolated subnet of its own"));
            }
        }
        if let Some(l) = m
            .license_type
            .as_deref()
            .filter(|l| !LICENSE_TYPES.contains(l))
        {
            self.problem(
                line,
                format!(
                    "license_type {l:?} of machine {name:?} is not one of {}",
                    LICENSE_TYPES.join(", ")
                ),
            );
        }
        if let Some(known) = size.as_deref().and_then(crate::machines::sizes::find) {
            let disks = &self.disks[first..];
            let data = disks
                .iter()
                .filter(|d| d.role == DiskRole::Data && !d.exclude)
                .count();
            let premium = disks.iter().any(|d| d.sku.starts_with("Premium"));
            let generation = disks.iter().find(|d| d.role == DiskRole::Os).and_then(|d| {
                match d.hyper_v_generation {
                    GenerationChoice::V1 => Some(crate::kinds::HyperVGeneration::V1),
                    GenerationChoice::V2 => Some(crate::kinds::HyperVGeneration::V2),
                    GenerationChoice::Auto => None,
                }
            });
            for p in crate::machines::sizes::problems(known, data, premium, generation) {
                self.problem(line, format!("machine {name:?}: {p}"));
            }
        }
        VmChoice {
            proposed: m.vm_size.is_none() && size.is_some(),
            size,
            instance_type: m.instance_type.clone(),
            subnet_id: m.subnet_id.clone(),
            test_subnet_id: m.test_subnet_id.clone(),
            public_ip: m.public_ip.unwrap_or(false),
            license_type: m.license_type.clone(),
        }
    }

    fn problem(&mut self, line: usize, message: String) {
        self.problems.push(Problem { line, message });
    }

    fn role(&mut self, line: usize, d: &DiskEntry) -> DiskRole {
        match d.role.as_deref().map(str::parse::<DiskRole>) {
            None => DiskRole::Data,
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.problem(line, e);
                DiskRole::Data
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn disk(
        &mut self,
        line: usize,
        d: &DiskEntry,
        above: &Common,
        machine: Option<&str>,
        role: DiskRole,
        default_name: Option<String>,
        machine_excluded: bool,
    ) {
        let c = above.over(&d.common());
        let name = d
            .name
            .clone()
            .or(default_name)
            .unwrap_or_else(|| format!("disk-at-line-{line}"));
        let snapshot = match &d.snapshot {
            Some(s) if is_snapshot_id(s) => s.clone(),
            Some(s) => {
                self.problem(
                    line,
                    format!("{s:?} is not a snapshot id (snap- followed by 8 or 17 lower-case hex digits)"),
                );
                s.clone()
            }
            None => {
                self.problem(line, format!("disk {name:?} needs a snapshot"));
                String::new()
            }
        };
        if let Some(p) = names::disk_name_problem(&name) {
            self.problem(line, p);
        }
        let mut need = |key: &str,
                        v: &Option<String>,
                        check: fn(&str) -> Option<String>|
         -> String {
            match v {
                Some(v) => {
                    if let Some(p) = check(v) {
                        self.problems.push(Problem { line, message: p });
                    }
                    v.clone()
                }
                None => {
                    self.problems.push(Problem {
                        line,
                        message: format!("disk {name:?} has no {key}; set it in [defaults], on its machine or on the disk"),
                    });
                    String::new()
                }
            }
        };
        let subscription = need("subscription", &c.subscription, names::subscription_problem);
        let resource_group = need(
            "resource_group",
            &c.resource_group,
            names::resource_group_problem,
        );
        let location = need("location", &c.location, names::location_problem);
        let sku = c.sku.clone().unwrap_or_else(|| DEFAULT_SKU.to_owned());
        if let Some(p) = names::sku_problem(&sku) {
            self.problem(line, p);
        }
        if let Some(z) = c.zone.as_deref().filter(|z| !["1", "2", "3"].contains(z)) {
            self.problem(
                line,
                format!("zone {z:?} is not an availability zone (1, 2 or 3)"),
            );
        }
        let os_type = self.parsed(line, c.os_type.as_deref(), OsChoice::Auto);
        let hyper_v_generation = self.parsed(
            line,
            c.hyper_v_generation.as_deref(),
            GenerationChoice::Auto,
        );
        if let Some(lun) = d.lun.filter(|&l| l > MAX_LUN) {
            self.problem(
                line,
                format!("LUN {lun} is past the last one a VM has ({MAX_LUN})"),
            );
        }
        if role == DiskRole::Os && d.lun.is_some() {
            self.problem(line, "an OS disk has no LUN; LUNs number data disks".into());
        }
        if let Some(dev) = d.device.as_deref().filter(|d| !d.starts_with("/dev/")) {
            self.problem(
                line,
                format!("device {dev:?} is not a device path such as /dev/xvdf"),
            );
        }
        if role == DiskRole::Os && c.fixup == Some(false) && os_type == OsChoice::Auto {
            self.problem(
                line,
                format!("disk {name:?}: with fixup = false nothing looks at the guest, so os_type must say linux or windows"),
            );
        }
        let encryption = match (&c.disk_encryption_set, c.encryption.as_deref()) {
            (None, None) => None,
            (None, Some(_)) => {
                self.problem(line, "encryption is set but no disk_encryption_set names the keys; give disk_encryption_set (a resource id)".into());
                None
            }
            (Some(set), kind) => {
                if !is_encryption_set_id(set) {
                    self.problem(line, format!("disk_encryption_set {set:?} is not a disk encryption set's resource id (/subscriptions/.../resourceGroups/.../providers/Microsoft.Compute/diskEncryptionSets/NAME)"));
                }
                let double = match kind {
                    None | Some("customer-key") => false,
                    Some("double") => true,
                    Some(other) => {
                        self.problem(
                            line,
                            format!("encryption {other:?} is not customer-key or double"),
                        );
                        false
                    }
                };
                Some(Encryption {
                    set: set.clone(),
                    double,
                })
            }
        };
        let data_access = self.parsed(
            line,
            c.data_access_auth_mode.as_deref(),
            DataAccessAuthMode::None,
        );
        self.disks.push(PlannedDisk {
            name,
            machine: machine.map(str::to_owned),
            snapshot,
            role,
            lun: d.lun,
            device: d.device.clone(),
            exclude: d.exclude || machine_excluded,
            subscription,
            resource_group,
            location,
            sku,
            zone: c.zone.clone(),
            region: c.region.clone(),
            os_type,
            hyper_v_generation,
            fixup: c.fixup.unwrap_or(true),
            network_open: !c.lock_network.unwrap_or(true),
            encryption,
            data_access,
            tags: c.tags.clone(),
            line,
        });
    }

    fn parsed<T: FromStr<Err = String>>(&mut self, line: usize, v: Option<&str>, default: T) -> T {
        match v.map(str::parse) {
            None => default,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.problem(line, e);
                default
            }
        }
    }

    /// Disk names are unique per resource group (Azure compares them
    /// without case); a snapshot is moved once.
    fn check_unique(&mut self) {
        let mut names: HashMap<(String, String, String), usize> = HashMap::new();
        let mut snaps: HashMap<&str, usize> = HashMap::new();
        let mut found = Vec::new();
        for d in &self.disks {
            let key = (
                d.subscription.to_lowercase(),
                d.resource_group.to_lowercase(),
                d.name.to_lowercase(),
            );
            if let Some(first) = names.insert(key, d.line) {
                found.push(Problem {
                    line: d.line,
                    message: format!("disk name {:?} is used twice in resource group {:?} (first at line {first})", d.name, d.resource_group),
                });
            }
            if d.snapshot.is_empty() || d.exclude {
                continue;
            }
            if let Some(first) = snaps.insert(&d.snapshot, d.line) {
                found.push(Problem {
                    line: d.line,
                    message: format!(
                        "snapshot {} is planned twice (first at line {first}); exclude one of them",
                        d.snapshot
                    ),
                });
            }
        }
        let _ = self.text;
        self.problems.extend(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn plan(body: &str) -> Result<Plan, Error> {
        let text = format!("[defaults]\nsubscription = \"{SUB}\"\nresource_group = \"rg\"\nlocation = \"westeurope\"\n\n{body}");
        Plan::parse(&text, "plan.toml", &Common::default())
    }

    #[test]
    fn names_derive_from_machines_and_defaults_apply() {
        let p = plan(
            "[[machine]]\nname = \"web01\"\ntags = { app = \"web\" }\n  [[machine.disk]]\n  snapshot = \"snap-00000001\"\n  role = \"os\"\n  [[machine.disk]]\n  snapshot = \"snap-00000002\"\n  lun = 0\n  sku = \"StandardSSD_LRS\"\n  [[machine.disk]]\n  snapshot = \"snap-00000003\"\n\n[[disk]]\nsnapshot = \"snap-00000004\"\nname = \"archive-01\"\nexclude = true\n",
        )
        .unwrap();
        let names: Vec<&str> = p.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["web01-os", "web01-data0", "web01-data1", "archive-01"]
        );
        assert_eq!(p.disks[0].role, DiskRole::Os);
        assert_eq!(p.disks[0].sku, DEFAULT_SKU);
        assert_eq!(p.disks[1].sku, "StandardSSD_LRS");
        assert_eq!(p.disks[1].tags["app"], "web");
        assert!(p.disks[3].exclude && p.disks[3].machine.is_none());
        let t = p.disks[0].target();
        assert_eq!(t.os_type, None, "auto: inspection decides");
        assert_eq!(t.location.as_deref(), Some("westeurope"));
        assert_eq!(p.disks[1].target().os_type, None);
        assert_eq!(p.units().len(), 2);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line() {
        let e = plan(
            "[[machine]]\nname = \"web01\"\n  [[machine.disk]]\n  snapshot = \"snap-XYZ\"\n  [[machine.disk]]\n  snapshot = \"snap-00000001\"\n  sku = \"Ultra\"\n\n[[machine]]\nname = \"web01\"\n  [[machine.disk]]\n  snapshot = \"snap-00000001\"\n  role = \"os\"\n",
        )
        .unwrap_err();
        let Error::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        let text = e.to_string();
        let at: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        for (line, what) in [
            (6, "has no OS disk"),
            (8, "not a snapshot id"),
            (10, "sku \"Ultra\""),
            (14, "named twice (first at line 6)"),
            (16, "planned twice (first at line 10)"),
        ] {
            assert!(
                at.iter().any(|(l, m)| *l == line && m.contains(what)),
                "{what} at line {line} missing from:\n{text}"
            );
        }
        assert_eq!(problems.len(), 5, "{text}");
    }

    #[test]
    fn an_os_disk_sent_unchanged_must_say_its_os() {
        let e = plan(
            "[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\nrole = \"os\"\nfixup = false\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("os_type must say linux or windows"),
            "{e}"
        );
        let p = plan("[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\nrole = \"os\"\nfixup = false\nos_type = \"windows\"\n").unwrap();
        assert_eq!(p.disks[0].target().os_type, Some(OsType::Windows));
        assert!(!p.disks[0].fixed_up());
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = Plan::parse(
            "[defaults]\nlocation = westeurope\n",
            "p.toml",
            &Common::default(),
        )
        .unwrap_err();
        let Error::Syntax { line, column, .. } = e else {
            panic!("{e}")
        };
        assert_eq!((line, column), (2, 12));
    }

    #[test]
    fn a_missing_subscription_comes_from_the_fallback() {
        let text = "[defaults]\nresource_group = \"rg\"\nlocation = \"westeurope\"\n[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\n";
        assert!(Plan::parse(text, "p", &Common::default()).is_err());
        let fallback = Common {
            subscription: Some(SUB.into()),
            ..Default::default()
        };
        let p = Plan::parse(text, "p", &fallback).unwrap();
        assert_eq!(p.disks[0].subscription, SUB);
    }

    #[test]
    fn digests_follow_what_a_disk_becomes() {
        let a = plan("[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\n").unwrap();
        let b = plan("\n\n[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\n").unwrap();
        let c =
            plan("[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\nsku = \"Standard_LRS\"\n")
                .unwrap();
        assert_eq!(
            a.disks[0].digest(),
            b.disks[0].digest(),
            "lines do not count"
        );
        assert_ne!(a.disks[0].digest(), c.disks[0].digest());
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn entra_uploads_are_asked_per_level_and_spelled_as_azure_does() {
        let p = plan("[[machine]]\nname = \"m\"\ndata_access_auth_mode = \"AzureActiveDirectory\"\n  [[machine.disk]]\n  role = \"os\"\n  snapshot = \"snap-00000001\"\n  [[machine.disk]]\n  snapshot = \"snap-00000002\"\n  data_access_auth_mode = \"None\"\n").unwrap();
        assert_eq!(
            p.disks[0].data_access,
            DataAccessAuthMode::AzureActiveDirectory
        );
        assert_eq!(
            p.disks[0].target().data_access,
            DataAccessAuthMode::AzureActiveDirectory
        );
        assert_eq!(p.disks[1].data_access, DataAccessAuthMode::None);
        // The default leaves digests as they were before the key existed.
        let plain = plan("[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\n").unwrap();
        assert!(!serde_json::to_string(&plain.disks[0])
            .unwrap()
            .contains("data_access"));
        let e = plan("[[disk]]\nname = \"d\"\nsnapshot = \"snap-00000001\"\ndata_access_auth_mode = \"Entra ID\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("is not AzureActiveDirectory or None"),
            "{e}"
        );
    }
}
