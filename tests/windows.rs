//! Windows guests built by scripts/gen-windows-guest (NTFS through ntfs-3g,
//! hives built with hivex from an empty hive), inspected, fixed up and
//! migrated. Every hive is read back after the fact with hivex's own Python
//! bindings (Debian's python3-hivex), not with our code: the test dumps
//! every value of the hive before and after and checks that exactly the
//! planned values changed. Needs root, loop devices, ntfs-3g and hivex;
//! without them the tests say why they did not run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Dumps every value of a hive as JSON: {"\\Key\\Path": {"Name": [type, "hex"]}}.
const DUMP: &str = r#"
import hivex, json, sys
h = hivex.Hivex(sys.argv[1])
out = {}
def walk(node, path):
    vals = {}
    for v in h.node_values(node):
        t, data = h.value_value(v)
        vals[h.value_key(v)] = [t, data.hex()]
    out[path or "\\"] = vals
    for c in h.node_children(node):
        walk(c, path + "\\" + h.node_name(c))
walk(h.root(), "")
json.dump(out, sys.stdout)
"#;

type Dump = BTreeMap<String, BTreeMap<String, (u32, String)>>;

/// Why these tests cannot run here, if they cannot.
fn cannot_run() -> Option<String> {
    if let Some(why) = cannot_use_loop_devices() {
        return Some(why);
    }
    for tool in ["mkntfs", "ntfs-3g", "hivexregedit"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!("{tool} is missing (scripts/test installs it)"));
        }
    }
    None
}

macro_rules! need_windows_tools {
    () => {
        if let Some(why) = cannot_run() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn windows_guest(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-windows-guest");
    let st = Command::new(script).arg(&out).args(args).output().unwrap();
    assert!(
        st.status.success(),
        "gen-windows-guest failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// A file of the image's NTFS volume, read through ntfs-3g read-only.
fn ntfs_file(image: &Path, path: &str) -> Option<Vec<u8>> {
    let part = ebs2azure::fixup::layout::partitions(image)
        .unwrap()
        .into_iter()
        .find(|p| p.fs.kind == ebs2azure::fixup::probe::FsKind::Ntfs)
        .unwrap();
    let dev = attach_loop(image, part.start, part.size);
    let dev = dev.as_str();
    let mnt = tempfile::tempdir().unwrap();
    tool_ok("ntfs-3g", &["-o", "ro", dev, path_str(mnt.path())]);
    let data = std::fs::read(mnt.path().join(path.trim_start_matches('/'))).ok();
    tool_ok("umount", &[path_str(mnt.path())]);
    detach_loop(dev);
    data
}

/// Every value of a hive of the image, read with hivex.
fn dump(image: &Path, hive: &str) -> Dump {
    let bytes = ntfs_file(image, &format!("Windows/System32/config/{hive}")).unwrap();
    dump_bytes(&bytes)
}

fn dump_bytes(bytes: &[u8]) -> Dump {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", DUMP, path_str(f.path())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The (key, value) pairs that differ between two dumps.
fn differences(a: &Dump, b: &Dump) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let empty = BTreeMap::new();
        let (va, vb) = (a.get(k).unwrap_or(&empty), b.get(k).unwrap_or(&empty));
        let names: std::collections::BTreeSet<&String> = va.keys().chain(vb.keys()).collect();
        for n in names {
            if va.get(n) != vb.get(n) {
                out.push((k.clone(), n.clone()));
            }
        }
    }
    out
}

fn dword(d: &Dump, key: &str, name: &str) -> Option<u32> {
    let (t, hex) = d.get(key)?.get(name)?;
    assert_eq!(*t, 4, "{key}\\{name} is not a DWORD");
    let b: Vec<u8> = (0..8)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn utf16(d: &Dump, key: &str, name: &str) -> Vec<String> {
    let (_, hex) = &d[key][name];
    let b: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let u: Vec<u16> = b
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&u)
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn sha(path: &Path) -> String {
    tool_ok("sha256sum", &[path_str(path)])
}

/// `inspect --json`: exit 0, or 3 exactly when it found blockers.
fn inspect_json(image: &Path) -> serde_json::Value {
    let out = ebs2azure(&["inspect", path_str(image), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["class"] == "blocker")
    {
        blocked(&out);
    } else {
        ok(&out);
    }
    v
}

const CS2: &str = "\\ControlSet002";

#[test]
fn a_2019_uefi_guest_is_inspected_and_fixed_up_exactly_once() {
    need_windows_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = windows_guest(
        dir.path(),
        "w2019.raw",
        &["--flavor", "2019", "--layout", "gpt"],
    );
    let r = inspect_json(&image);
    assert_eq!(r["os"]["id"], "windows", "{r}");
    assert_eq!(r["windows"]["product"], "Windows Server 2019 Datacenter");
    assert_eq!(r["windows"]["build"], "17763");
    assert_eq!(r["windows"]["version"], "10.0");
    assert_eq!(r["windows"]["edition"], "ServerDatacenter");
    assert_eq!(r["windows"]["installation_type"], "Server");
    assert_eq!(r["windows"]["current_control_set"], 2);
    assert_eq!(r["boot_mode"], "uefi");
    assert_eq!(r["hyper_v_generation"], "V2");
    let findings = r["findings"].as_array().unwrap();
    let fixups: Vec<&str> = findings
        .iter()
        .filter(|f| f["class"] == "fixup")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(
        fixups
            .iter()
            .any(|m| m.contains("ControlSet002\\Services\\vmbus\\Start: 3 -> 0")),
        "{fixups:#?}"
    );
    assert!(
        fixups.iter().all(|m| !m.contains("ControlSet001")),
        "{fixups:#?}"
    );
    assert!(
        findings.iter().all(|f| f["class"] != "blocker"),
        "{findings:#?}"
    );
    assert!(findings
        .iter()
        .any(|f| f["class"] == "advice" && f["message"].as_str().unwrap().contains("ENA")));

    let before_sys = dump(&image, "SYSTEM");
    let before_soft = dump(&image, "SOFTWARE");
    let before_hive = ntfs_file(&image, "Windows/System32/config/SYSTEM").unwrap();

    // --dry-run: the same changes listed, not a byte written.
    let hash = sha(&image);
    let dry: serde_json::Value = serde_json::from_str(&ok(&ebs2azure(&[
        "fixup",
        path_str(&image),
        "--dry-run",
        "--json",
    ])))
    .unwrap();
    assert_eq!(dry["changes"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(sha(&image), hash);

    let fix: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["fixup", path_str(&image), "--json"]))).unwrap();
    let changes = fix["changes"].as_array().unwrap();
    assert_eq!(changes[0]["path"], "/Windows/System32/config/SYSTEM");
    assert_eq!(
        changes[0]["original"],
        "/Windows/System32/config/SYSTEM.ebs2azure-orig"
    );
    let notes = changes[0]["notes"].as_array().unwrap().len()
        + changes[1]["notes"].as_array().unwrap().len();
    assert_eq!(notes, fixups.len(), "the fix-up made what inspect planned");

    // Read back with hivex: exactly the planned values changed.
    let after_sys = dump(&image, "SYSTEM");
    let after_soft = dump(&image, "SOFTWARE");
    let mut changed: Vec<String> = differences(&before_sys, &after_sys)
        .into_iter()
        .map(|(k, n)| format!("{k}\\{n}"))
        .collect();
    changed.sort();
    let svc = |s: &str| format!("{CS2}\\Services\\{s}\\Start");
    let mut want: Vec<String> = [
        "vmbus", "storvsc", "storflt", "intelide", "atapi", "Dhcp", "xenbus", "xenfilt", "xenvbd", "xennet", "xenvif",
        "xeniface", "xensvc", "Amazon EC2Launch", "AmazonSSMAgent", "AmazonCloudWatchAgent",
    ]
    .iter()
    .map(|s| svc(s))
    .chain(
        [
            "\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}\\UpperFilters",
            "\\Control\\Class\\{4d36e97b-e325-11ce-bfc1-08002be10318}\\LowerFilters",
            "\\Services\\partmgr\\Parameters\\SanPolicy",
            "\\Control\\Terminal Server\\fDenyTSConnections",
            "\\Control\\Terminal Server\\WinStations\\RDP-Tcp\\PortNumber",
            "\\Control\\Terminal Server\\WinStations\\RDP-Tcp\\LanAdapter",
            "\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules\\RemoteDesktop-UserMode-In-TCP",
            "\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules\\RemoteDesktop-UserMode-In-UDP",
            "\\Control\\TimeZoneInformation\\RealTimeIsUniversal",
            "\\Services\\Tcpip\\Parameters\\PersistentRoutes\\169.254.169.254,255.255.255.255,10.0.0.1,1",
            "\\Services\\Tcpip\\Parameters\\PersistentRoutes\\169.254.169.250,255.255.255.255,10.0.0.1,1",
        ]
        .iter()
        .map(|s| format!("{CS2}{s}")),
    )
    .collect();
    want.sort();
    assert_eq!(changed, want);
    assert_eq!(
        dword(&after_sys, &format!("{CS2}\\Services\\vmbus"), "Start"),
        Some(0)
    );
    assert_eq!(
        dword(&after_sys, &format!("{CS2}\\Services\\xenvbd"), "Start"),
        Some(4)
    );
    assert_eq!(
        dword(&after_sys, &format!("{CS2}\\Services\\ena"), "Start"),
        Some(0),
        "ENA left alone"
    );
    assert_eq!(
        dword(
            &after_sys,
            &format!("{CS2}\\Services\\partmgr\\Parameters"),
            "SanPolicy"
        ),
        Some(1)
    );
    assert_eq!(
        dword(
            &after_sys,
            &format!("{CS2}\\Control\\Terminal Server\\WinStations\\RDP-Tcp"),
            "PortNumber"
        ),
        Some(3389)
    );
    assert_eq!(
        utf16(
            &after_sys,
            &format!("{CS2}\\Control\\Class\\{{4d36e967-e325-11ce-bfc1-08002be10318}}"),
            "UpperFilters"
        ),
        ["PartMgr"]
    );
    assert_eq!(
        utf16(
            &after_sys,
            &format!("{CS2}\\Control\\Class\\{{4d36e97b-e325-11ce-bfc1-08002be10318}}"),
            "LowerFilters"
        ),
        ["iaStorF"]
    );
    let rule = utf16(
        &after_sys,
        &format!("{CS2}\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules"),
        "RemoteDesktop-UserMode-In-TCP",
    );
    assert_eq!(
        rule[0],
        "v2.28|Action=Allow|Active=TRUE|Dir=In|Protocol=6|LPort=3389|App=%SystemRoot%\\system32\\svchost.exe|Svc=termservice|Name=@FirewallAPI.dll,-28775|Desc=@FirewallAPI.dll,-28756|EmbedCtxt=@FirewallAPI.dll,-28752|"
    );
    // ControlSet001 (last known good) is as it was.
    assert_eq!(
        dword(&after_sys, "\\ControlSet001\\Services\\vmbus", "Start"),
        Some(3)
    );
    let soft = differences(&before_soft, &after_soft);
    assert_eq!(
        soft,
        [(
            "\\Microsoft\\Windows NT\\CurrentVersion\\SoftwareProtectionPlatform".to_owned(),
            "KeyManagementServiceName".to_owned()
        )]
    );
    assert_eq!(
        utf16(
            &after_soft,
            "\\Microsoft\\Windows NT\\CurrentVersion\\SoftwareProtectionPlatform",
            "KeyManagementServiceName"
        ),
        ["azkms.core.windows.net"]
    );
    // The original hive is kept once, as it was.
    assert_eq!(
        ntfs_file(&image, "Windows/System32/config/SYSTEM.ebs2azure-orig").unwrap(),
        before_hive
    );
    // A second run changes nothing, and keeps the first original.
    let again = ok(&ebs2azure(&["fixup", path_str(&image)]));
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(dump(&image, "SYSTEM"), after_sys);
    assert_eq!(
        ntfs_file(&image, "Windows/System32/config/SYSTEM.ebs2azure-orig").unwrap(),
        before_hive
    );
    assert!(inspect_json(&image)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["class"] != "fixup"));
    // The volume checks clean (ntfsfix --no-action ran after the edit), no loop is left.
    assert!(tool_ok("losetup", &["-a"])
        .lines()
        .all(|l| !l.contains(path_str(&image))));
}

#[test]
fn a_2012_r2_bios_guest_with_citrix_drivers_and_ec2config() {
    need_windows_tools!();
    let dir = tempfile::tempdir().unwrap();
    let image = windows_guest(
        dir.path(),
        "w2012.raw",
        &["--flavor", "2012r2", "--layout", "mbr"],
    );
    let r = inspect_json(&image);
    assert_eq!(r["windows"]["product"], "Windows Server 2012 R2 Datacenter");
    assert_eq!(r["windows"]["version"], "6.3");
    assert_eq!(r["windows"]["build"], "9600");
    assert_eq!(
        (r["boot_mode"].as_str(), r["hyper_v_generation"].as_str()),
        (Some("bios"), Some("V1"))
    );
    ok(&ebs2azure(&["fixup", path_str(&image)]));
    let sys = dump(&image, "SYSTEM");
    for d in ["Ec2Config", "xenevtchn", "rhelscsi", "xenbus"] {
        assert_eq!(
            dword(&sys, &format!("{CS2}\\Services\\{d}"), "Start"),
            Some(4),
            "{d}"
        );
    }
    assert_eq!(
        utf16(
            &sys,
            &format!("{CS2}\\Control\\Class\\{{4d36e965-e325-11ce-bfc1-08002be10318}}"),
            "UpperFilters"
        ),
        ["GenericFilter"],
        "a list without PV filters is untouched"
    );
}

#[test]
fn a_dirty_hive_a_hibernated_or_dirty_volume_is_a_blocker_and_nothing_changes() {
    need_windows_tools!();
    let dir = tempfile::tempdir().unwrap();
    for (flag, subject, words) in [
        (
            "--dirty-hive",
            "SYSTEM hive",
            "sequence numbers 7 and 6 differ",
        ),
        ("--hibernated", "hiberfil.sys", "Fast Startup"),
        ("--ntfs-dirty", "NTFS volume", "marked dirty"),
    ] {
        let image = windows_guest(
            dir.path(),
            &format!("{}.raw", &flag[2..]),
            &["--layout", "mbr", flag],
        );
        let r = inspect_json(&image);
        let blockers: Vec<&serde_json::Value> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["class"] == "blocker")
            .collect();
        assert!(
            blockers
                .iter()
                .any(|b| b["subject"] == subject && b["message"].as_str().unwrap().contains(words)),
            "{flag}: {blockers:#?}"
        );
        assert!(
            r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["class"] != "fixup"),
            "{flag}: planned anyway"
        );
        let hash = sha(&image);
        let e = blocked(&ebs2azure(&["fixup", path_str(&image)]));
        assert!(e.contains("nothing was changed"), "{flag}: {e}");
        assert_eq!(sha(&image), hash, "{flag}: the image changed");
    }
    // Windows Server 2008 R2 boots only from BIOS on Azure.
    let image = windows_guest(
        dir.path(),
        "w2008.raw",
        &["--flavor", "2008r2", "--layout", "gpt"],
    );
    let r = inspect_json(&image);
    assert_eq!(r["windows"]["version"], "6.1");
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["class"] == "blocker"
                && f["message"]
                    .as_str()
                    .unwrap()
                    .contains("2008 R2 boots only from BIOS")),
        "{r}"
    );
}

/// A Windows guest of `flavor` and `layout` seeded as a snapshot, with
/// both emulators and a staging directory: (dir, staging, ebs, azure, snapshot).
fn on_emulators(
    flavor: &str,
    layout: &str,
) -> (tempfile::TempDir, PathBuf, Emulator, Azure, String) {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let image = windows_guest(
        dir.path(),
        "w.raw",
        &["--flavor", flavor, "--layout", layout],
    );
    let ebs = Emulator::start(&[]);
    let az = Azure::start(&[]);
    let snap = ebs.seed(&image, &[]);
    (dir, staging, ebs, az, snap)
}

#[test]
fn migrate_os_type_windows_fixes_up_and_uploads_and_refuses_a_hibernated_guest() {
    need_windows_tools!();
    let (dir, staging, ebs, az, snap) = on_emulators("2019", "gpt");
    let out = az.with_ebs(
        &ebs,
        "win01-os",
        &[
            "migrate",
            &snap,
            "--os-type",
            "windows",
            "--location",
            "westeurope",
            "--staging-dir",
            path_str(&staging),
            "--json",
        ],
    );
    no_azure_secrets(&out);
    let r: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(r["fixup"]["inspection"]["windows"]["build"], "17763", "{r}");
    assert_eq!(r["upload"]["state"], "Unattached");
    let disk = az.disk("win01-os").unwrap();
    assert_eq!(disk["osType"], "Windows");
    assert_eq!(
        disk["hyperVGeneration"], "V2",
        "from the guest's UEFI boot: {disk}"
    );
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    let back = dir.path().join("back.vhd");
    az.download("win01-os", &back);
    let sys = dump(&back, "SYSTEM");
    assert_eq!(
        dword(&sys, &format!("{CS2}\\Services\\vmbus"), "Start"),
        Some(0)
    );
    assert_eq!(
        dword(&sys, "\\ControlSet001\\Services\\vmbus", "Start"),
        Some(3)
    );

    // A hibernated guest is not uploaded.
    let hib = windows_guest(dir.path(), "hib.raw", &["--layout", "mbr", "--hibernated"]);
    let snap = ebs.seed(&hib, &[]);
    let e = fails(&az.with_ebs(
        &ebs,
        "win02-os",
        &[
            "migrate",
            &snap,
            "--os-type",
            "windows",
            "--location",
            "westeurope",
            "--staging-dir",
            path_str(&staging),
        ],
    ));
    assert!(
        e.contains("will not boot on Azure") || e.contains("hibernated"),
        "{e}"
    );
    assert_eq!(az.state("win02-os"), None);
}

#[test]
fn a_plan_with_os_type_auto_finds_a_windows_guest() {
    need_windows_tools!();
    let (dir, staging, ebs, az, snap) = on_emulators("2012r2", "mbr");
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!("[defaults]\nresource_group = \"rg1\"\nlocation = \"westeurope\"\n[[machine]]\nname = \"dc01\"\n  [[machine.disk]]\n  snapshot = \"{snap}\"\n  role = \"os\"\n"),
    )
    .unwrap();
    let mut c = ebs.command(AWS_KEY_ID);
    az.env(&mut c)
        .args([
            "migrate",
            "--plan",
            path_str(&plan),
            "--staging-dir",
            path_str(&staging),
        ])
        .args(["--endpoint-url", &ebs.endpoint]);
    let out = c.output().unwrap();
    no_azure_secrets(&out);
    ok(&out);
    let disk = az.disk("dc01-os").unwrap();
    assert_eq!(disk["osType"], "Windows", "{disk}");
    assert_eq!(disk["hyperVGeneration"], "V1");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plan.state/report.json")).unwrap())
            .unwrap();
    let fixups: Vec<&str> = r["disks"][0]["fixups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        fixups
            .iter()
            .any(|f| f.contains("ControlSet002\\Services\\Ec2Config\\Start: 2 -> 4")),
        "{fixups:#?}"
    );
}
