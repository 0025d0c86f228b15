//! The Windows rules, beside the Linux ones: what an EC2 Windows guest
//! needs to boot, come online and be reachable on Azure, as registry
//! changes in the current control set and the one `Select\Default` names
//! (never assumed to be ControlSet001), and in SOFTWARE.
//!
//! [`rules`] is pure: it takes the keys read from the hives and returns
//! the changes with their reasons, and the advice. [`plan`] reads the
//! hives from a mounted guest, makes the changes on host copies through
//! hivex, and returns a [`Plan`] whose edits are the changed hive files
//! (each original kept once as `<hive>.ebs2azure-orig`) and whose notes name
//! every key, its old and its new value; `inspect` reports that plan and
//! `fixup` carries it out, so the two agree. Nothing is planned when a
//! blocker says the hives or the volume cannot be edited safely.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::guest::GuestFs;
use super::hive::{self, HiveState, Keys, Set, Value};
use super::plan::{Edit, Plan};
use super::{Class, Error, Finding};

/// Where the hives are, from the volume's root (resolved without case).
pub const CONFIG_DIR: [&str; 3] = ["Windows", "System32", "config"];

/// Services on Azure's Hyper-V boot path: Generation 1 VMs boot the OS disk
/// through the emulated IDE controller (intelide, atapi), then the
/// synthetic storage path (vmbus, storvsc, storflt) takes over.
const BOOT_PATH: [&str; 5] = ["vmbus", "storvsc", "storflt", "intelide", "atapi"];
/// The Xen PV drivers of AWS and Citrix, and Red Hat's: they bind to Xen
/// devices Azure does not have, and their filters sit in storage stacks.
const PV_DRIVERS: [&str; 11] = [
    "xenbus",
    "xenfilt",
    "xenvbd",
    "xennet",
    "xenvif",
    "xeniface",
    "xenevtchn",
    "xensvc",
    "Xennet6",
    "rhelscsi",
    "rhelnet",
];
/// EC2's agents: they configure the instance from EC2's metadata, which
/// Azure does not serve, and some rewrite routes and passwords at boot.
const EC2_AGENTS: [&str; 6] = [
    "Ec2Config",
    "Amazon EC2Launch",
    "AmazonEC2Launch",
    "AmazonSSMAgent",
    "AWSLiteAgent",
    "AmazonCloudWatchAgent",
];
/// AWS drivers that are harmless on Azure (their hardware is absent).
const AWS_LEFT_ALONE: [(&str, &str); 2] = [
    ("ena", "the AWS ENA network driver"),
    ("AWSNVMe", "the AWS NVMe storage driver"),
];
/// Subjects of the blockers that make the hives or the volume unsafe to
/// edit: with any of them, nothing is written.
pub const UNSAFE_SUBJECTS: [&str; 4] = [
    "SYSTEM hive",
    "SOFTWARE hive",
    "hiberfil.sys",
    "NTFS volume",
];

/// True when a blocker among `findings` says the guest must not be edited.
pub fn unsafe_to_edit(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| f.class == Class::Blocker && UNSAFE_SUBJECTS.contains(&f.subject.as_str()))
}

/// AWS's KMS hosts for Windows activation, as EC2's agents set them.
const AWS_KMS: [&str; 2] = ["169.254.169.250", "169.254.169.251"];
/// Azure's KMS host for Windows activation, and its port.
pub const AZURE_KMS: (&str, &str) = ("azkms.core.windows.net", "1688");
/// The values of the Windows version key read.
const CURRENT_VERSION: &str = "\\Microsoft\\Windows NT\\CurrentVersion";
const SPP: &str = "\\Microsoft\\Windows NT\\CurrentVersion\\SoftwareProtectionPlatform";

/// Which hive a change is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HiveName {
    /// `config\SYSTEM` (HKLM\SYSTEM).
    #[serde(rename = "SYSTEM")]
    System,
    /// `config\SOFTWARE` (HKLM\SOFTWARE).
    #[serde(rename = "SOFTWARE")]
    Software,
}

impl HiveName {
    /// The hive file's name in `config`.
    pub fn file(self) -> &'static str {
        match self {
            HiveName::System => "SYSTEM",
            HiveName::Software => "SOFTWARE",
        }
    }
}

/// One registry change, with its old and new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The hive.
    pub hive: HiveName,
    /// The key's path from the hive's root.
    pub key: String,
    /// The value's name.
    pub name: String,
    /// The value before (`None`: absent).
    pub old: Option<Value>,
    /// The value after (`None`: deleted).
    pub new: Option<Value>,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl Change {
    /// `HKLM\SYSTEM\...\Key\Name`.
    pub fn path(&self) -> String {
        format!("HKLM\\{}{}\\{}", self.hive.file(), self.key, self.name)
    }

    /// One sentence: the key, the old and new value, why.
    pub fn note(&self) -> String {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), |v| v.to_string());
        format!(
            "{}: {} -> {}: {}",
            self.path(),
            show(&self.old),
            self.new
                .as_ref()
                .map_or("(deleted)".to_owned(), |v| v.to_string()),
            self.reason
        )
    }
}

/// What a Windows guest is, from its hives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsInfo {
    /// ProductName, e.g. "Windows Server 2019 Datacenter".
    pub product: String,
    /// CurrentVersion ("6.3"), or Major.Minor where the hive has them.
    pub version: String,
    /// CurrentBuildNumber.
    pub build: String,
    /// EditionID.
    pub edition: String,
    /// InstallationType ("Server", "Server Core", "Client").
    pub installation_type: String,
    /// Select\Current.
    pub current_control_set: u32,
    /// Select\Default.
    pub default_control_set: u32,
}

/// The control sets to change: the current one and the default one.
pub fn control_sets(system: &Keys) -> Result<(u32, u32), String> {
    let pick = |name: &str| {
        system
            .value("\\Select", name)
            .and_then(Value::as_dword)
            .filter(|n| (1..=999).contains(n))
    };
    let current = pick("Current").ok_or("SYSTEM has no Select\\Current naming a control set")?;
    Ok((current, pick("Default").unwrap_or(current)))
}

/// The guest's product and version from SOFTWARE, with its control sets.
pub fn info(system: &Keys, software: &Keys) -> Result<WindowsInfo, String> {
    let (current, default) = control_sets(system)?;
    let s = |name: &str| {
        software
            .value(CURRENT_VERSION, name)
            .and_then(Value::as_string)
            .unwrap_or_default()
    };
    let major = software
        .value(CURRENT_VERSION, "CurrentMajorVersionNumber")
        .and_then(Value::as_dword);
    let minor = software
        .value(CURRENT_VERSION, "CurrentMinorVersionNumber")
        .and_then(Value::as_dword);
    Ok(WindowsInfo {
        product: s("ProductName"),
        version: match (major, minor) {
            (Some(a), Some(b)) => format!("{a}.{b}"),
            _ => s("CurrentVersion"),
        },
        build: Some(s("CurrentBuildNumber"))
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| s("CurrentBuild")),
        edition: s("EditionID"),
        installation_type: s("InstallationType"),
        current_control_set: current,
        default_control_set: default,
    })
}

/// The keys of SYSTEM the rules read, for control set `n`.
pub fn system_keys_of(n: u32) -> Vec<String> {
    let cs = format!("\\ControlSet{n:03}");
    vec![
        format!("{cs}\\Services"),
        format!("{cs}\\Control\\Class"),
        format!("{cs}\\Control\\Terminal Server"),
        format!("{cs}\\Control\\TimeZoneInformation"),
    ]
}

/// The changes Azure needs in `system` and `software`, and the advice.
pub fn rules(system: &Keys, software: &Keys) -> Result<(Vec<Change>, Vec<Finding>), String> {
    let (current, default) = control_sets(system)?;
    let mut changes = Vec::new();
    let mut advice = Vec::new();
    let sets: BTreeSet<u32> = [current, default].into();
    for n in sets {
        let cs = format!("\\ControlSet{n:03}");
        if !system.has(&cs) {
            return Err(format!(
                "Select names ControlSet{n:03}, which SYSTEM does not have"
            ));
        }
        control_set(system, &cs, &mut changes, &mut advice);
    }
    // Volume activation: from AWS's KMS hosts to Azure's.
    let kms = software
        .value(SPP, "KeyManagementServiceName")
        .and_then(Value::as_string);
    if kms.is_some_and(|h| AWS_KMS.contains(&h.as_str()) || h.contains("amazonaws")) {
        set_if(
            &mut changes,
            HiveName::Software,
            software,
            SPP,
            "KeyManagementServiceName",
            Value::string(AZURE_KMS.0),
            "activation goes to Azure's KMS, not AWS's",
        );
        set_if(
            &mut changes,
            HiveName::Software,
            software,
            SPP,
            "KeyManagementServicePort",
            Value::string(AZURE_KMS.1),
            "Azure's KMS port",
        );
    }
    for (subject, text) in [
        ("Azure VM agent", "install the Azure VM agent after the first boot (it is not installed offline): extensions, password reset and health reports need it"),
        ("page file", "keep the page file on the OS disk unless the VM size has a temporary disk (D:); move it there only for sizes that have one"),
        ("crash dumps", "set crash dumps as Azure recommends (a kernel memory dump, CrashControl\\CrashDumpEnabled = 2, with room on the OS disk) if you want dumps collected"),
        ("license", "choose the license when the VM is created: Windows_Server (Azure Hybrid Benefit, with your own licenses) or none (pay as you go)"),
        ("activation", "check activation after the first boot (slmgr /dlv); a KMS client reaches azkms.core.windows.net:1688 from Azure only"),
    ] {
        advice.push(Finding::new(Class::Advice, subject, text));
    }
    Ok((changes, advice))
}

fn control_set(system: &Keys, cs: &str, changes: &mut Vec<Change>, advice: &mut Vec<Finding>) {
    let sys = HiveName::System;
    let svc = |name: &str| format!("{cs}\\Services\\{name}");
    let exists = |name: &str| system.key(&svc(name)).is_some();
    for s in BOOT_PATH {
        if exists(s) {
            set_if(
                changes,
                sys,
                system,
                &svc(s),
                "Start",
                Value::dword(0),
                "starts at boot: Azure boots the OS disk through it",
            );
        }
    }
    if !exists("netvsc") {
        advice.push(Finding::new(
            Class::Blocker,
            &format!("HKLM\\SYSTEM{}", svc("netvsc")),
            "the Hyper-V network driver (netvsc) is not installed, so the VM will have no network on Azure; install the Hyper-V integration components before the snapshot",
        ));
    }
    if exists("Dhcp") {
        set_if(
            changes,
            sys,
            system,
            &svc("Dhcp"),
            "Start",
            Value::dword(2),
            "the DHCP client starts automatically: Azure gives addresses by DHCP",
        );
    }
    for d in PV_DRIVERS {
        if exists(d) {
            set_if(
                changes,
                sys,
                system,
                &svc(d),
                "Start",
                Value::dword(4),
                "disabled: a Xen PV driver, for devices Azure does not have",
            );
        }
    }
    for (d, what) in AWS_LEFT_ALONE {
        if exists(d) {
            advice.push(Finding::new(Class::Advice, &format!("HKLM\\SYSTEM{}", svc(d)),
                format!("{what} is left installed: it does not load on Azure, where its hardware is absent; uninstall it after the cut-over if you like")));
        }
    }
    // Filter lists: the PV filters out, every other entry kept in its order.
    let class = format!("{cs}\\Control\\Class");
    for key in system.children(&class) {
        for list in ["UpperFilters", "LowerFilters"] {
            let Some((name, value)) = key.get(list) else {
                continue;
            };
            let Some(items) = value.as_multi() else {
                continue;
            };
            let kept: Vec<String> = items
                .iter()
                .filter(|i| !PV_DRIVERS.iter().any(|d| d.eq_ignore_ascii_case(i)))
                .cloned()
                .collect();
            if kept.len() != items.len() {
                changes.push(Change {
                    hive: sys,
                    key: key.path.clone(),
                    name: name.clone(),
                    old: Some(value.clone()),
                    new: (!kept.is_empty()).then(|| Value::multi(&kept)),
                    reason: "the Xen PV filters leave the device class's filter list; the other filters stay",
                });
            }
        }
    }
    // Values set outright: (key, value, what it must hold, why).
    let ts = format!("{cs}\\Control\\Terminal Server");
    let rdp = format!("{ts}\\WinStations\\RDP-Tcp");
    for (key, name, want, reason) in [
        (
            format!("{}\\Parameters", svc("partmgr")),
            "SanPolicy",
            1,
            "SAN policy Online All, so data disks come online on Azure",
        ),
        (
            ts,
            "fDenyTSConnections",
            0,
            "Remote Desktop connections allowed",
        ),
        (
            rdp.clone(),
            "PortNumber",
            3389,
            "Remote Desktop on its standard port, as Azure's network rules expect",
        ),
        (
            rdp,
            "LanAdapter",
            0,
            "Remote Desktop listens on every adapter (the EC2 adapter is gone)",
        ),
        (
            format!("{cs}\\Control\\TimeZoneInformation"),
            "RealTimeIsUniversal",
            1,
            "the hardware clock is UTC, as Azure's hosts keep it",
        ),
    ] {
        set_if(changes, sys, system, &key, name, Value::dword(want), reason);
    }
    let rules = format!(
        "{}\\Parameters\\FirewallPolicy\\FirewallRules",
        svc("SharedAccess")
    );
    if let Some(key) = system.key(&rules) {
        for (name, value) in &key.values {
            let is_rdp_in = name.starts_with("RemoteDesktop-") && name.contains("-In-");
            let Some(text) = value.as_string().filter(|_| is_rdp_in) else {
                continue;
            };
            if text.contains("|Active=FALSE|") {
                let new = Value {
                    kind: value.kind,
                    data: Value::string(&text.replace("|Active=FALSE|", "|Active=TRUE|")).data,
                };
                changes.push(Change {
                    hive: sys,
                    key: key.path.clone(),
                    name: name.clone(),
                    old: Some(value.clone()),
                    new: Some(new),
                    reason: "the built-in Remote Desktop inbound rule is active (the rest of the rule unchanged)",
                });
            }
        }
    }
    for a in EC2_AGENTS {
        if exists(a) {
            set_if(changes, sys, system, &svc(a), "Start", Value::dword(4),
                "disabled: an EC2 agent, which expects EC2's metadata and may rewrite routes and passwords");
        }
    }
    let routes = format!("{}\\Parameters\\PersistentRoutes", svc("Tcpip"));
    if let Some(key) = system.key(&routes) {
        for (name, value) in &key.values {
            if name.starts_with("169.254.169.") {
                changes.push(Change {
                    hive: sys,
                    key: key.path.clone(),
                    name: name.clone(),
                    old: Some(value.clone()),
                    new: None,
                    reason: "a route an EC2 agent left to EC2's link-local services; 169.254.169.254 is Azure's metadata service too and must go through Azure's gateway",
                });
            }
        }
    }
}

/// Adds the change of `key\name` to `new` unless it holds that already.
fn set_if(
    changes: &mut Vec<Change>,
    hive: HiveName,
    keys: &Keys,
    key: &str,
    name: &str,
    new: Value,
    reason: &'static str,
) {
    let (found_name, old) = match keys.key(key).and_then(|k| k.get(name)) {
        Some((n, v)) => (n.clone(), Some(v.clone())),
        None => (name.to_owned(), None),
    };
    if old.as_ref() == Some(&new) {
        return;
    }
    let path = keys.key(key).map_or(key.to_owned(), |k| k.path.clone());
    changes.push(Change {
        hive,
        key: path,
        name: found_name,
        old,
        new: Some(new),
        reason,
    });
}

/// The guest path of `name` in the config directory, found without case
/// (NTFS keeps case; Windows ignores it).
pub fn config_path(fs: &dyn GuestFs, name: &str) -> Result<Option<String>, Error> {
    let mut dir = String::new();
    for part in CONFIG_DIR.iter().chain([&name]) {
        let listed = fs.list(if dir.is_empty() { "/" } else { &dir })?;
        let Some(found) = listed.iter().find(|n| n.eq_ignore_ascii_case(part)) else {
            return Ok(None);
        };
        dir = format!("{dir}/{found}");
    }
    Ok(Some(dir))
}

/// True when the volume holds a Windows installation (config\SYSTEM).
pub fn is_windows(fs: &dyn GuestFs) -> Result<bool, Error> {
    Ok(config_path(fs, "SYSTEM")?.is_some())
}

/// A hive read from the guest, with its host copy (which hivex reads and edits).
struct HostHive {
    guest: String,
    bytes: Vec<u8>,
    copy: tempfile::NamedTempFile,
}

fn read_hive(fs: &dyn GuestFs, name: HiveName) -> Result<HostHive, Error> {
    let missing = || Error::Guest(format!("the Windows volume has no {} hive", name.file()));
    let guest = config_path(fs, name.file())?.ok_or_else(missing)?;
    let bytes = fs.read(&guest)?.ok_or_else(missing)?;
    let mut copy = tempfile::NamedTempFile::new().map_err(|source| Error::HostIo {
        action: "make a host copy of a hive".into(),
        source,
    })?;
    std::io::Write::write_all(&mut copy, &bytes).map_err(|source| Error::HostIo {
        action: "write a host copy of a hive".into(),
        source,
    })?;
    Ok(HostHive { guest, bytes, copy })
}

/// What the hives say before anything is planned: blockers for a hive
/// that is torn or has unapplied log entries.
fn hive_blockers(fs: &dyn GuestFs, hive: &HostHive, name: HiveName) -> Result<Vec<Finding>, Error> {
    let mut logs = Vec::new();
    for ext in ["LOG1", "LOG2", "LOG"] {
        if let Some(p) = config_path(fs, &format!("{}.{ext}", name.file()))? {
            logs.push(fs.read(&p)?.unwrap_or_default());
        }
    }
    let refs: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
    let subject = format!("{} hive", name.file());
    let fix =
        "shut the instance down cleanly (not a crash or a forced stop) and take the snapshot after";
    Ok(match hive::state(&hive.bytes, &refs) {
        Ok(HiveState::Clean) => Vec::new(),
        Ok(HiveState::Torn { primary, secondary }) => vec![Finding::new(
            Class::Blocker,
            &subject,
            format!("the hive is dirty (sequence numbers {primary} and {secondary} differ: Windows was writing it), so it is not edited; {fix}"),
        )],
        Ok(HiveState::LogPending) => vec![Finding::new(
            Class::Blocker,
            &subject,
            format!("the hive's transaction logs hold changes not yet in it, so it is not edited; {fix}"),
        )],
        Err(e) => vec![Finding::new(Class::Blocker, &subject, format!("the hive cannot be read: {e}"))],
    })
}

/// The Windows plan of a mounted guest: its facts, its blockers, and (when
/// there are none) the hive edits with a note per registry change.
pub fn plan(fs: &dyn GuestFs) -> Result<(Option<WindowsInfo>, Plan, Vec<Finding>), Error> {
    let mut plan = Plan::new("");
    let mut blockers = Vec::new();
    let system = read_hive(fs, HiveName::System)?;
    let software = read_hive(fs, HiveName::Software)?;
    blockers.extend(hive_blockers(fs, &system, HiveName::System)?);
    blockers.extend(hive_blockers(fs, &software, HiveName::Software)?);
    if let Some(p) = find_root_file(fs, "hiberfil.sys")? {
        let head = fs.read(&p)?.unwrap_or_default();
        if super::ntfs::hibernated(&head) {
            blockers.push(Finding::new(
                Class::Blocker,
                "hiberfil.sys",
                "Windows was hibernated or shut down with Fast Startup, so it would resume over any change: disable Fast Startup (powercfg /h off), shut the instance down, and take the snapshot after",
            ));
        }
    }
    let mut keys = hive::export(system.copy.path(), "\\Select")?;
    let (current, default) = match control_sets(&keys) {
        Ok(c) => c,
        Err(e) => {
            blockers.push(Finding::new(Class::Blocker, "SYSTEM hive", e));
            return Ok((None, plan, blockers));
        }
    };
    let sets: BTreeSet<u32> = [current, default].into();
    for n in sets {
        for k in system_keys_of(n) {
            keys.extend(hive::export(system.copy.path(), &k)?);
        }
    }
    let soft = hive::export(software.copy.path(), CURRENT_VERSION)?;
    let info = info(&keys, &soft).map_err(Error::Guest)?;
    if !blockers.is_empty() {
        // Never edited blind: the plan stays empty.
        return Ok((Some(info), plan, blockers));
    }
    let (changes, advice) = rules(&keys, &soft).map_err(Error::Guest)?;
    for (name, hive) in [(HiveName::System, &system), (HiveName::Software, &software)] {
        let mine: Vec<&Change> = changes.iter().filter(|c| c.hive == name).collect();
        if mine.is_empty() {
            continue;
        }
        let sets: Vec<Set> = mine
            .iter()
            .map(|c| Set {
                key: c.key.clone(),
                name: c.name.clone(),
                value: c.new.clone(),
            })
            .collect();
        hive::merge(hive.copy.path(), &sets)?;
        let new = std::fs::read(hive.copy.path()).map_err(|source| Error::HostIo {
            action: "read back the changed hive".into(),
            source,
        })?;
        plan.add(
            fs,
            hive.guest.clone(),
            format!("{} registry values change for Azure", mine.len()),
            Edit::Bytes(new),
            mine.iter().map(|c| c.note()).collect(),
        )?;
    }
    let (blocking, advice): (Vec<Finding>, Vec<Finding>) =
        advice.into_iter().partition(|f| f.class == Class::Blocker);
    blockers.extend(blocking);
    plan.advice = advice;
    Ok((Some(info), plan, blockers))
}

fn find_root_file(fs: &dyn GuestFs, name: &str) -> Result<Option<String>, Error> {
    Ok(fs
        .list("/")?
        .into_iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .map(|n| format!("/{n}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixup::hive::parse_reg;

    fn hex(v: &Value) -> String {
        v.data
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn system() -> Keys {
        let upper = Value::multi(&["xenfilt".into(), "PartMgr".into()]);
        let lower = Value::multi(&["xenfilt".into()]);
        let rule = Value::string("v2.28|Action=Allow|Active=FALSE|Dir=In|Protocol=6|LPort=3389|");
        let text = format!(
            r#"[\Select]
"Current"=dword:00000002
"Default"=dword:00000002
[\ControlSet002\Services\vmbus]
"Start"=dword:00000003
[\ControlSet002\Services\netvsc]
"Start"=dword:00000003
[\ControlSet002\Services\xenvbd]
"Start"=dword:00000000
[\ControlSet002\Services\Ec2Config]
"Start"=dword:00000002
[\ControlSet002\Services\ena]
"Start"=dword:00000000
[\ControlSet002\Services\Tcpip\Parameters\PersistentRoutes]
"169.254.169.254,255.255.255.255,10.0.0.1,1"=hex(1):00,00
"10.1.0.0,255.255.0.0,10.0.0.1,1"=hex(1):00,00
[\ControlSet002\Services\SharedAccess\Parameters\FirewallPolicy\FirewallRules]
"RemoteDesktop-UserMode-In-TCP"=hex(1):{r}
"CoreNet-Other-In"=hex(1):{r}
[\ControlSet002\Control\Class\{{a}}]
"UpperFilters"=hex(7):{u}
[\ControlSet002\Control\Class\{{b}}]
"LowerFilters"=hex(7):{l}
[\ControlSet002\Control\Terminal Server]
"fDenyTSConnections"=dword:00000001
"#,
            r = hex(&rule),
            u = hex(&upper),
            l = hex(&lower)
        );
        parse_reg(&text).unwrap()
    }

    #[test]
    fn rules_change_only_what_azure_needs_in_the_current_control_set() {
        let (changes, advice) = rules(&system(), &Keys::default()).unwrap();
        let notes: Vec<String> = changes.iter().map(Change::note).collect();
        let has = |p: &str| changes.iter().find(|c| c.path() == p);
        let vm = has("HKLM\\SYSTEM\\ControlSet002\\Services\\vmbus\\Start").unwrap();
        assert_eq!(
            (
                vm.old.as_ref().unwrap().as_dword(),
                vm.new.as_ref().unwrap().as_dword()
            ),
            (Some(3), Some(0))
        );
        assert_eq!(
            has("HKLM\\SYSTEM\\ControlSet002\\Services\\xenvbd\\Start")
                .unwrap()
                .new,
            Some(Value::dword(4))
        );
        assert_eq!(
            has("HKLM\\SYSTEM\\ControlSet002\\Services\\Ec2Config\\Start")
                .unwrap()
                .new,
            Some(Value::dword(4))
        );
        assert!(
            has("HKLM\\SYSTEM\\ControlSet002\\Services\\ena\\Start").is_none(),
            "ENA is left alone"
        );
        assert!(advice.iter().any(|a| a.message.contains("ENA")));
        let up = has("HKLM\\SYSTEM\\ControlSet002\\Control\\Class\\{a}\\UpperFilters").unwrap();
        assert_eq!(up.new.as_ref().unwrap().as_multi().unwrap(), ["PartMgr"]);
        let low = has("HKLM\\SYSTEM\\ControlSet002\\Control\\Class\\{b}\\LowerFilters").unwrap();
        assert_eq!(low.new, None, "an emptied list is deleted");
        let fw = has("HKLM\\SYSTEM\\ControlSet002\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules\\RemoteDesktop-UserMode-In-TCP").unwrap();
        assert_eq!(
            fw.new.as_ref().unwrap().as_string().unwrap(),
            "v2.28|Action=Allow|Active=TRUE|Dir=In|Protocol=6|LPort=3389|"
        );
        assert!(notes.iter().all(|n| !n.contains("CoreNet")), "{notes:#?}");
        let routes: Vec<&Change> = changes
            .iter()
            .filter(|c| c.key.ends_with("PersistentRoutes"))
            .collect();
        assert_eq!(routes.len(), 1);
        assert!(routes[0].name.starts_with("169.254.169.254") && routes[0].new.is_none());
        assert!(
            has("HKLM\\SYSTEM\\ControlSet002\\Services\\partmgr\\Parameters\\SanPolicy").is_some()
        );
        assert!(has(
            "HKLM\\SYSTEM\\ControlSet002\\Control\\TimeZoneInformation\\RealTimeIsUniversal"
        )
        .is_some());
        assert!(
            changes.iter().all(|c| c.key.starts_with("\\ControlSet002")),
            "{notes:#?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("vmbus\\Start: 3 -> 0")),
            "{notes:#?}"
        );
    }

    #[test]
    fn a_missing_control_set_or_netvsc_is_said() {
        let keys = parse_reg("[\\Select]\n\"Current\"=dword:00000003\n").unwrap();
        assert!(rules(&keys, &Keys::default())
            .unwrap_err()
            .contains("ControlSet003"));
        let keys = parse_reg("[\\Select]\n\"Current\"=dword:00000001\n[\\ControlSet001\\Services\\vmbus]\n\"Start\"=dword:00000000\n").unwrap();
        let (_, advice) = rules(&keys, &Keys::default()).unwrap();
        assert!(advice
            .iter()
            .any(|a| a.class == Class::Blocker && a.message.contains("netvsc")));
        assert!(control_sets(&parse_reg("[\\Select]\n").unwrap()).is_err());
    }
}
