//! `fixup`: makes the changes `inspect` announces, in the guest's root
//! filesystem (mounted read-write, so its journal replays), keeping each
//! original beside it as `FILE.ebs2azure-orig` and recording digests before
//! and after. A second run changes nothing; `--dry-run` writes nothing. The
//! filesystem must check clean after unmounting.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::esp::Esp;
use super::guest::GuestFs;
use super::inspect::{inspect, partitions, PartInfo, Report as Inspection};
use super::mount::Mounted;
use super::probe::FsKind;
use super::Error;

/// The kernel arguments Azure's serial console and slow first attach need.
pub const AZURE_CMDLINE: [&str; 3] = [
    "console=ttyS0,115200n8",
    "earlyprintk=ttyS0",
    "rootdelay=300",
];
/// Suffix of the originals kept in the guest.
pub const ORIG: &str = ".ebs2azure-orig";

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

/// What to do to one file.
enum Edit {
    /// Make its contents this (created 0644 if new).
    Write(String),
    /// The same, created owner-only if new (NetworkManager refuses others).
    WritePrivate(String),
    /// Make its contents these bytes (a binary-safe block such as grubenv).
    Bytes(Vec<u8>),
    /// Take it out of use, keeping it as the original.
    Remove,
}

/// One planned edit: the guest path, why, and what.
struct Planned {
    path: String,
    reason: String,
    edit: Edit,
}

fn planned(path: impl Into<String>, reason: impl Into<String>, edit: Edit) -> Planned {
    Planned {
        path: path.into(),
        reason: reason.into(),
        edit,
    }
}

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

/// The partition number of an AWS device path on the root disk, if it is one
/// (`/dev/xvda1`, `/dev/sda1`, `/dev/nvme0n1p1`).
pub(crate) fn root_disk_partition(spec: &str) -> Option<u32> {
    let rest = spec
        .strip_prefix("/dev/nvme0n1p")
        .or_else(|| spec.strip_prefix("/dev/xvda"))
        .or_else(|| spec.strip_prefix("/dev/sda"))?;
    rest.parse().ok()
}

fn is_device_path(spec: &str) -> bool {
    ["/dev/xvd", "/dev/sd", "/dev/nvme", "/dev/hd"]
        .iter()
        .any(|p| spec.starts_with(p))
}

/// Another disk of the same machine, so fstab entries naming its device can
/// be turned into UUIDs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataDisk {
    /// Its device on EC2, as fstab names it (`/dev/xvdf`, `/dev/sdf`, `/dev/nvme1n1`).
    pub device: String,
    /// Its partitions (number 0: a filesystem on the whole disk).
    pub partitions: Vec<PartInfo>,
}

impl DataDisk {
    /// Reads the partition table and filesystem UUIDs of the image at `path`.
    pub fn probe(device: &str, path: &Path) -> Result<DataDisk, Error> {
        Ok(DataDisk {
            device: device.to_owned(),
            partitions: partitions(path)?,
        })
    }

    /// The same from any disk, such as a snapshot read a few blocks at a time
    /// ([`crate::source::snapshot_disk::SnapshotDisk`]); `shown` names it in errors.
    pub fn probe_disk(
        device: &str,
        disk: &(impl diskformats::Disk + ?Sized),
        shown: &str,
    ) -> Result<DataDisk, Error> {
        Ok(DataDisk {
            device: device.to_owned(),
            partitions: super::inspect::partitions_of(disk, shown)?,
        })
    }

    /// The UUID of the filesystem `spec` names on this disk, if it is one.
    fn uuid_of(&self, spec: &str) -> Option<String> {
        let names = |d: &str| -> Vec<String> {
            let mut v = vec![d.to_owned()];
            // Xen and SCSI names of one EC2 device are interchangeable.
            if let Some(r) = d.strip_prefix("/dev/xvd") {
                v.push(format!("/dev/sd{r}"));
            } else if let Some(r) = d.strip_prefix("/dev/sd") {
                v.push(format!("/dev/xvd{r}"));
            }
            v
        };
        let number = names(&self.device).into_iter().find_map(|d| {
            let rest = spec.strip_prefix(d.as_str())?;
            if rest.is_empty() {
                return Some(0);
            }
            rest.strip_prefix('p').unwrap_or(rest).parse::<u32>().ok()
        })?;
        let found = self.partitions.iter().find(|p| p.number == number);
        // A bare device whose only filesystem is its first partition.
        let found = match (found, number) {
            (None, 0) if self.partitions.len() == 1 => self.partitions.first(),
            (f, _) => f,
        };
        found.and_then(|p| p.fs.uuid.clone())
    }
}

/// /etc/fstab with device paths made UUID=, foreign and instance-store
/// entries commented out, and nofail on non-root data mounts.
pub fn fix_fstab(
    text: &str,
    root_uuid: Option<&str>,
    parts: &[PartInfo],
    data_disks: &[DataDisk],
) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let mut line = lines[i];
        i += 1;
        // An entry an earlier run commented out comes back once its disk is known.
        if line.starts_with("# ebs2azure: ") && line.contains("another EBS volume") {
            if let Some(orig) = lines.get(i).and_then(|l| l.strip_prefix("# ")) {
                let spec = orig.split_whitespace().next().unwrap_or_default();
                if data_disks.iter().any(|d| d.uuid_of(spec).is_some()) {
                    line = orig;
                    i += 1;
                }
            }
        }
        let t = line.trim();
        let w: Vec<&str> = t.split_whitespace().collect();
        if t.starts_with('#') || w.len() < 3 {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let (spec, mp, fstype) = (w[0], w[1], w[2]);
        let mut fields: Vec<String> = w.iter().map(|s| (*s).to_owned()).collect();
        if is_device_path(spec) {
            let uuid = if mp == "/" {
                root_uuid.map(str::to_owned)
            } else {
                root_disk_partition(spec)
                    .and_then(|n| {
                        parts
                            .iter()
                            .find(|p| p.number == n)
                            .and_then(|p| p.fs.uuid.clone())
                    })
                    .or_else(|| data_disks.iter().find_map(|d| d.uuid_of(spec)))
            };
            let instance_store = mp.starts_with("/media/ephemeral")
                || (mp == "/mnt" && spec.starts_with("/dev/xvdb"));
            match uuid {
                Some(u) if !instance_store => fields[0] = format!("UUID={u}"),
                _ => {
                    let why = if instance_store {
                        "an EC2 instance-store volume, which does not move to Azure"
                    } else {
                        "another EBS volume: migrate it too and mount it by UUID (or pass it with --data-disk DEVICE=IMAGE)"
                    };
                    out.push_str(&format!("# ebs2azure: {spec} is {why}\n# {line}\n"));
                    continue;
                }
            }
        }
        let data_mount = !matches!(mp, "/" | "/boot" | "/boot/efi") && fstype != "swap";
        if data_mount {
            if fields.len() < 4 {
                fields.push("defaults".into());
            }
            if !fields[3].split(',').any(|o| o == "nofail") {
                fields[3].push_str(",nofail");
            }
        }
        let new = fields.join("\t");
        if new.split_whitespace().eq(line.split_whitespace()) {
            out.push_str(line);
        } else {
            out.push_str(&new);
        }
        out.push('\n');
    }
    out
}

/// Kernel arguments with Azure's console arguments and without Xen's.
pub fn fix_cmdline(args: &str) -> String {
    let mut out: Vec<&str> = args
        .split_whitespace()
        .filter(|a| {
            !a.starts_with("console=hvc") && !a.starts_with("xen_") && !a.starts_with("console=xvc")
        })
        .collect();
    for a in AZURE_CMDLINE {
        // console= may repeat (several consoles); other keys are set once.
        let key = a.split('=').next().unwrap_or(a);
        if !out
            .iter()
            .any(|x| *x == a || (key != "console" && x.starts_with(&format!("{key}="))))
        {
            out.push(a);
        }
    }
    out.join(" ")
}

/// /etc/default/grub with Azure's console arguments and without Xen's.
pub fn fix_grub(text: &str) -> String {
    let mut out = String::new();
    let mut seen = false;
    for line in text.lines() {
        let Some(v) = line.trim().strip_prefix("GRUB_CMDLINE_LINUX=") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        seen = true;
        let v = fix_cmdline(v.trim().trim_matches('"'));
        out.push_str(&format!("GRUB_CMDLINE_LINUX=\"{v}\"\n"));
    }
    if !seen {
        out.push_str(&format!("GRUB_CMDLINE_LINUX=\"{}\"\n", fix_cmdline("")));
    }
    out
}

/// A grub.cfg whose kernel lines (`linux`, `linux16`, `linuxefi`) carry
/// Azure's console arguments: what the bootloader reads until grub.cfg is
/// next generated from /etc/default/grub.
pub fn fix_grub_cfg(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let mut w = t.splitn(3, char::is_whitespace);
        match (w.next(), w.next(), w.next()) {
            (Some(cmd @ ("linux" | "linux16" | "linuxefi")), Some(kernel), rest) => {
                let args = fix_cmdline(rest.unwrap_or(""));
                out.push_str(&format!("{indent}{cmd} {kernel} {args}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A BLS entry (/boot/loader/entries/*.conf) whose `options` carry Azure's
/// console arguments (an options line naming `$kernelopts` takes them from grubenv).
pub fn fix_bls(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.trim().strip_prefix("options") {
            Some(v) if v.starts_with(char::is_whitespace) && !v.contains("$kernelopts") => {
                out.push_str(&format!("options {}", fix_cmdline(v)));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A grubenv block with `kernelopts` carrying Azure's console arguments;
/// kept at its fixed 1024 bytes (`#` padding). `None` when it would not fit.
pub fn fix_grubenv(data: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('#') && line.chars().all(|c| c == '#') {
            continue;
        }
        match line.strip_prefix("kernelopts=") {
            Some(v) => out.push_str(&format!("kernelopts={}\n", fix_cmdline(v))),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let size = data.len().max(1024);
    if out.len() > size {
        return None;
    }
    let mut bytes = out.into_bytes();
    bytes.resize(size, b'#');
    Some(bytes)
}

/// A cloud-init file with datasource_list putting Azure first.
pub fn fix_cloud_init(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("datasource_list:") {
            let azure_first = v.trim().trim_start_matches('[').trim().starts_with("Azure");
            if !azure_first {
                out.push_str("datasource_list: [ Azure, None ]\n");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// initramfs-tools' modules list with the Hyper-V drivers.
pub fn fix_initramfs_modules(text: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (d, _) in super::inspect::HYPERV_DRIVERS {
        if !text.lines().any(|l| l.split_whitespace().next() == Some(d)) {
            out.push_str(d);
            out.push('\n');
        }
    }
    out
}

/// netplan for DHCP on Azure's NIC: the synthetic (hv_netvsc) one, named
/// eth0, as Azure's own images have it; the accelerated-networking VF that
/// shares its MAC is left alone.
pub const NETPLAN_ETH0: &str = "# Written by ebs2azure: DHCP on Azure's network interface (the EC2 original is kept beside this file)
network:
  version: 2
  ethernets:
    eth0:
      match:
        driver: hv_netvsc
      set-name: eth0
      dhcp4: true
";

/// An ifcfg file for DHCP on eth0 (RHEL-family network-scripts).
pub const IFCFG_ETH0: &str = "# Written by ebs2azure: DHCP on Azure's network interface
DEVICE=eth0
ONBOOT=yes
BOOTPROTO=dhcp
TYPE=Ethernet
USERCTL=no
PEERDNS=yes
IPV6INIT=no
";

/// An ifupdown stanza for DHCP on eth0.
pub const INTERFACES_ETH0: &str = "# Written by ebs2azure: DHCP on Azure's network interface
auto eth0
iface eth0 inet dhcp
";

/// A NetworkManager keyfile for DHCP on eth0.
pub const NM_ETH0: &str = "# Written by ebs2azure: DHCP on Azure's network interface
[connection]
id=eth0
type=ethernet
interface-name=eth0

[ipv4]
method=auto

[ipv6]
method=auto
";

/// /etc/network/interfaces keeping loopback and `source` lines, with DHCP on eth0.
pub fn fix_interfaces(text: &str) -> String {
    let mut out = String::from("# Written by ebs2azure: DHCP on Azure's network interface\n");
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let keep = matches!(w.first(), Some(&"source") | Some(&"source-directory"))
            || w.get(1) == Some(&"lo") && matches!(w[0], "auto" | "iface" | "allow-hotplug");
        if keep {
            out.push_str(l.trim());
            out.push('\n');
        }
    }
    out.push_str("auto eth0\niface eth0 inet dhcp\n");
    out
}

/// True when an ifupdown file configures an interface other than lo and eth0.
fn names_other_interface(text: &str) -> bool {
    text.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"iface") && !matches!(w.get(1), Some(&"lo") | Some(&"eth0"))
    })
}

/// True when an ifupdown file configures eth0.
fn declares_eth0(text: &str) -> bool {
    text.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"iface") && w.get(1) == Some(&"eth0")
    })
}

/// True when an ifcfg file pins its interface to a MAC address.
fn ifcfg_pinned(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("HWADDR=") || l.starts_with("MACADDR=")) && l.len() > 7
    })
}

/// The edits that give the guest DHCP on eth0 where its network
/// configuration is pinned to the AWS NIC (by MAC address, or generated by
/// cloud-init for EC2's ens5), in the distribution's own format.
fn network_plan(m: &dyn GuestFs) -> Result<Vec<Planned>, Error> {
    let mut edits = Vec::new();
    const PINNED: &str = "it pins the network to the AWS NIC (its MAC address or EC2's interface name), so Azure's NIC would get no address; DHCP on eth0 instead";
    for n in m.list("/etc/netplan")? {
        if !n.ends_with(".yaml") {
            continue;
        }
        let f = format!("/etc/netplan/{n}");
        let t = m.read_text(&f)?.unwrap_or_default();
        let generated = n == "50-cloud-init.yaml" && !t.contains("hv_netvsc");
        if t.contains("macaddress") || generated {
            edits.push(planned(f, PINNED, Edit::Write(NETPLAN_ETH0.into())));
        }
    }
    let dir = "/etc/sysconfig/network-scripts";
    let mut eth0_needed = false;
    for n in m.list(dir)? {
        if !n.starts_with("ifcfg-") || n == "ifcfg-lo" || n.contains(ORIG) {
            continue;
        }
        let f = format!("{dir}/{n}");
        let t = m.read_text(&f)?.unwrap_or_default();
        if !ifcfg_pinned(&t) {
            continue;
        }
        if n == "ifcfg-eth0" {
            edits.push(planned(f, PINNED, Edit::Write(IFCFG_ETH0.into())));
        } else {
            edits.push(planned(f, PINNED, Edit::Remove));
            eth0_needed = true;
        }
    }
    if eth0_needed && !m.exists(&format!("{dir}/ifcfg-eth0"))? {
        edits.push(planned(
            format!("{dir}/ifcfg-eth0"),
            "Azure's NIC is eth0: DHCP on it replaces the pinned configuration",
            Edit::Write(IFCFG_ETH0.into()),
        ));
    }
    // ifupdown: eth0 declared once in all; a second pinned file is taken
    // out of use rather than declaring eth0 again (ifupdown refuses that).
    let pinned_ifupdown = |t: &str| t.contains("hwaddress") || names_other_interface(t);
    let mut files = vec!["/etc/network/interfaces".to_owned()];
    files.extend(
        m.list("/etc/network/interfaces.d")?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .map(|n| format!("/etc/network/interfaces.d/{n}")),
    );
    let mut texts = Vec::new();
    for f in files {
        if let Some(t) = m.read_text(&f)? {
            texts.push((f, t));
        }
    }
    let mut eth0_declared = texts
        .iter()
        .any(|(_, t)| !pinned_ifupdown(t) && declares_eth0(t));
    for (f, t) in texts.iter().filter(|(_, t)| pinned_ifupdown(t)) {
        if f == "/etc/network/interfaces" {
            // Its loopback and `source` lines stay; eth0 comes with them.
            edits.push(planned(f.clone(), PINNED, Edit::Write(fix_interfaces(t))));
            eth0_declared = true;
        } else if eth0_declared {
            edits.push(planned(f.clone(), PINNED, Edit::Remove));
        } else {
            edits.push(planned(
                f.clone(),
                PINNED,
                Edit::Write(INTERFACES_ETH0.into()),
            ));
            eth0_declared = true;
        }
    }
    // NetworkManager: one eth0 profile; further pinned profiles are taken out of use.
    let dir = "/etc/NetworkManager/system-connections";
    let mut profile_written = false;
    for n in m.list(dir)? {
        if n.starts_with('.') {
            continue;
        }
        let f = format!("{dir}/{n}");
        let t = m.read_text(&f)?.unwrap_or_default();
        if t.lines().any(|l| l.trim().starts_with("mac-address=")) {
            if profile_written {
                edits.push(planned(f, PINNED, Edit::Remove));
            } else {
                edits.push(planned(f, PINNED, Edit::WritePrivate(NM_ETH0.into())));
                profile_written = true;
            }
        }
    }
    Ok(edits)
}

/// True for a cloud-init file written for EC2 only.
pub(crate) fn ec2_only(name: &str) -> bool {
    name.to_ascii_lowercase().contains("ec2") || name == "50-curtin-networking.cfg"
}

/// The edit to a grubenv block whose kernelopts (which BLS entries use)
/// lack the serial console; none when the longer line would not fit the
/// block (inspect says so: the guest boots, without the serial console).
fn grubenv_plan(fs: &dyn GuestFs, path: &str) -> Result<Option<Planned>, Error> {
    let Some(d) = fs.read(path)? else {
        return Ok(None);
    };
    if !String::from_utf8_lossy(&d).contains("kernelopts=") {
        return Ok(None);
    }
    let Some(new) = fix_grubenv(&d) else {
        return Ok(None);
    };
    Ok(Some(planned(
        path,
        "BLS entries take the kernel command line from grubenv's kernelopts",
        Edit::Bytes(new),
    )))
}

/// The grubenv blocks of the root filesystem.
const GRUBENVS: [&str; 2] = ["/boot/grub2/grubenv", "/boot/grub/grubenv"];

/// The edits to what the bootloader reads from the root filesystem now:
/// grub.cfg's kernel lines, BLS entries and grubenv's kernelopts.
fn boot_plan(m: &dyn GuestFs) -> Result<Vec<Planned>, Error> {
    let mut edits = Vec::new();
    for f in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if let Some(t) = m.read_text(f)? {
            edits.push(planned(
                f,
                "the bootloader reads grub.cfg, not /etc/default/grub, until it is regenerated: its kernel lines need the serial console too",
                Edit::Write(fix_grub_cfg(&t)),
            ));
        }
    }
    for n in m.list("/boot/loader/entries")? {
        if !n.ends_with(".conf") {
            continue;
        }
        let f = format!("/boot/loader/entries/{n}");
        if let Some(t) = m.read_text(&f)? {
            edits.push(planned(
                f,
                "BLS entries carry the kernel command line the bootloader uses",
                Edit::Write(fix_bls(&t)),
            ));
        }
    }
    for f in GRUBENVS {
        edits.extend(grubenv_plan(m, f)?);
    }
    Ok(edits)
}

/// The edits to the bootloader files on the EFI system partition: a full
/// grub.cfg (RHEL 8 keeps one there) and grubenv's kernelopts.
fn esp_plan(esp: &dyn GuestFs) -> Result<Vec<Planned>, Error> {
    let mut edits = Vec::new();
    for vendor in esp.list("/EFI")? {
        let cfg = format!("/EFI/{vendor}/grub.cfg");
        if let Some(t) = esp.read_text(&cfg)? {
            edits.push(planned(
                cfg,
                "UEFI firmware starts the GRUB on the EFI system partition, which reads this grub.cfg: its kernel lines need the serial console too",
                Edit::Write(fix_grub_cfg(&t)),
            ));
        }
        edits.extend(grubenv_plan(esp, &format!("/EFI/{vendor}/grubenv"))?);
    }
    Ok(edits)
}

/// The planned edits for the guest root filesystem `m`.
fn plan(m: &dyn GuestFs, ins: &Inspection, data_disks: &[DataDisk]) -> Result<Vec<Planned>, Error> {
    let mut edits = Vec::new();
    let root_part = ins
        .partitions
        .iter()
        .find(|p| Some(p.number) == ins.root_partition);
    let root_uuid = root_part.and_then(|p| p.fs.uuid.as_deref());
    if let Some(t) = m.read_text("/etc/fstab")? {
        edits.push(planned(
            "/etc/fstab",
            "AWS device names do not exist on Azure: mount by UUID, comment out volumes that do not move, nofail on data disks",
            Edit::Write(fix_fstab(&t, root_uuid, &ins.partitions, data_disks)),
        ));
    }
    if let Some(t) = m.read_text("/etc/default/grub")? {
        edits.push(planned(
            "/etc/default/grub",
            "Azure's serial console and boot diagnostics need console=ttyS0; Xen console settings do nothing on Hyper-V",
            Edit::Write(fix_grub(&t)),
        ));
    }
    edits.extend(boot_plan(m)?);
    let mut cloud = vec!["/etc/cloud/cloud.cfg".to_owned()];
    cloud.extend(
        m.list("/etc/cloud/cloud.cfg.d")?
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
    );
    for f in cloud {
        let name = f.rsplit('/').next().unwrap_or_default();
        if f.starts_with("/etc/cloud/cloud.cfg.d/") && ec2_only(name) {
            edits.push(planned(
                f,
                "this cloud-init configuration was written for EC2 (its metadata service or its NIC); renamed away from *.cfg, cloud-init no longer reads it",
                Edit::Remove,
            ));
        } else if let Some(t) = m.read_text(&f)? {
            edits.push(planned(
                f,
                "cloud-init must ask Azure, not the EC2 metadata service",
                Edit::Write(fix_cloud_init(&t)),
            ));
        }
    }
    for f in [
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/etc/udev/rules.d/75-persistent-net-generator.rules",
    ] {
        if m.exists(f)? {
            edits.push(planned(
                f,
                "persistent-net rules pin interface names to the AWS NIC",
                Edit::Remove,
            ));
        }
    }
    edits.extend(network_plan(m)?);
    if m.exists("/etc/initramfs-tools")? {
        let t = m
            .read_text("/etc/initramfs-tools/modules")?
            .unwrap_or_default();
        edits.push(planned(
            "/etc/initramfs-tools/modules",
            "every rebuilt initramfs must keep the Hyper-V drivers",
            Edit::Write(fix_initramfs_modules(&t)),
        ));
    }
    if m.exists("/etc/dracut.conf.d")? {
        edits.push(planned(
            "/etc/dracut.conf.d/90-ebs2azure-hyperv.conf",
            "every rebuilt initramfs must keep the Hyper-V drivers",
            Edit::Write("# Added by ebs2azure for Azure (Hyper-V)\nadd_drivers+=\" hv_vmbus hv_storvsc hv_netvsc \"\n".into()),
        ));
    }
    Ok(edits)
}

/// What `fixup` would change in the bootloader and network files (root
/// and EFI system partition) as `inspect`'s findings: one planner serves
/// both, so they agree. A grubenv whose kernelopts cannot take the serial
/// console is advice.
pub(crate) fn pending(
    m: &dyn GuestFs,
    esp: Option<&dyn GuestFs>,
) -> Result<Vec<super::Finding>, Error> {
    let finding = |class, subject: String, message: String| super::Finding {
        class,
        subject,
        message,
    };
    let mut out = Vec::new();
    let mut envs: Vec<(&dyn GuestFs, String, &str)> =
        GRUBENVS.iter().map(|f| (m, (*f).to_owned(), "")).collect();
    let mut plans = vec![("", m, boot_plan(m)?), ("", m, network_plan(m)?)];
    if let Some(esp) = esp {
        plans.push((ESP_MOUNT, esp, esp_plan(esp)?));
        for vendor in esp.list("/EFI")? {
            envs.push((esp, format!("/EFI/{vendor}/grubenv"), ESP_MOUNT));
        }
    }
    for (prefix, fs, edits) in plans {
        for p in edits {
            if changes(fs, &p)? {
                let why = format!("{} (fixup makes this change)", p.reason);
                out.push(finding(
                    super::Class::Fixup,
                    format!("{prefix}{}", p.path),
                    why,
                ));
            }
        }
    }
    for (fs, path, prefix) in envs {
        if let Some(d) = fs.read(&path)? {
            if String::from_utf8_lossy(&d).contains("kernelopts=") && fix_grubenv(&d).is_none() {
                out.push(finding(
                    super::Class::Advice,
                    format!("{prefix}{path}"),
                    "kernelopts with the serial console would not fit grubenv's 1024 bytes, so fixup leaves it and the serial console stays off; shorten kernelopts on the source (grub2-editenv - set kernelopts=...)".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// Where the EFI system partition is mounted in the guest, for reports.
pub const ESP_MOUNT: &str = "/boot/efi";

/// True when the planned edit would change the guest.
fn changes(fs: &dyn GuestFs, p: &Planned) -> Result<bool, Error> {
    let old = fs.read(&p.path)?;
    Ok(match &p.edit {
        Edit::Write(t) | Edit::WritePrivate(t) => old.as_deref() != Some(t.as_bytes()),
        Edit::Bytes(b) => old.as_deref() != Some(&b[..]),
        Edit::Remove => old.is_some(),
    })
}

/// Makes (or with `dry_run` only records) the planned edits on `fs`; the
/// report shows each path with `prefix` (where that filesystem is mounted).
fn apply(
    fs: &dyn GuestFs,
    prefix: &str,
    edits: Vec<Planned>,
    dry_run: bool,
) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    for p in edits {
        let file = p.path;
        let old = fs.read(&file)?;
        let (new, mode) = match &p.edit {
            Edit::Write(t) => (Some(t.as_bytes()), 0o644),
            Edit::WritePrivate(t) => (Some(t.as_bytes()), 0o600),
            Edit::Bytes(b) => (Some(&b[..]), 0o644),
            Edit::Remove => (None, 0),
        };
        if old.as_deref() == new || (old.is_none() && new.is_none()) {
            continue;
        }
        let orig = original_path(&file);
        if !dry_run {
            match (&old, new) {
                (Some(_), None) => {
                    let name = orig.rsplit('/').next().unwrap_or(&orig);
                    fs.rename(&file, name)?;
                }
                (Some(o), Some(n)) => {
                    // The first run's original is the one kept.
                    if !fs.exists(&orig)? {
                        fs.write(&orig, o, 0o600)?;
                    }
                    fs.write(&file, n, mode)?;
                }
                (None, Some(n)) => fs.write(&file, n, mode)?,
                (None, None) => continue,
            }
        }
        changes.push(Change {
            path: format!("{prefix}{file}"),
            reason: p.reason,
            before: old.as_deref().map(sha),
            after: new.map(sha),
            original: old.is_some().then(|| format!("{prefix}{orig}")),
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
pub fn fixup(path: &Path, opts: &FixOptions) -> Result<Report, Error> {
    let dry_run = opts.dry_run;
    let ins = inspect(path)?;
    let root = ins
        .partitions
        .iter()
        .find(|p| Some(p.number) == ins.root_partition)
        .cloned()
        .ok_or_else(|| {
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
    let mut changes = apply(&m, "", plan(&m, &ins, &opts.data_disks)?, dry_run)?;
    if dry_run {
        drop(m);
    } else {
        m.finish()?;
    }
    if let Some(p) = esp_partition(&ins) {
        let esp = Esp::open(path, p.start, p.size, !dry_run)?;
        changes.extend(apply(&esp, ESP_MOUNT, esp_plan(&esp)?, dry_run)?);
        esp.finish()?;
    }
    Ok(Report {
        dry_run,
        changes,
        inspection: ins,
    })
}

/// The EFI system partition, when it holds a FAT filesystem.
pub(crate) fn esp_partition(ins: &Inspection) -> Option<&PartInfo> {
    ins.partitions
        .iter()
        .find(|p| p.kind.is_efi_system() && p.fs.kind == FsKind::Vfat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixup::probe::Probe;

    fn part(n: u32, uuid: &str) -> PartInfo {
        PartInfo {
            number: n,
            start: 0,
            size: 0,
            kind: super::super::inspect::VolumeKind::Partition(
                diskformats::PartitionKind::LinuxFilesystem,
            ),
            fs: Probe {
                kind: crate::fixup::probe::FsKind::Ext4,
                uuid: Some(uuid.into()),
                label: None,
            },
        }
    }

    #[test]
    fn fstab_loses_every_device_path_and_is_stable() {
        let t = "# c\n/dev/nvme0n1p1 / ext4 defaults 0 1\n/dev/nvme0n1p2 /home ext4 defaults 0 2\n/dev/xvdf /data xfs defaults 0 2\n/dev/xvdb /mnt auto defaults 0 2\nLABEL=x /x ext4 defaults,nofail 0 2\n";
        let parts = [part(1, "r"), part(2, "h")];
        let once = fix_fstab(t, Some("r"), &parts, &[]);
        assert!(once.contains("UUID=r\t/\text4\tdefaults\t0\t1"), "{once}");
        assert!(
            once.contains("UUID=h\t/home\text4\tdefaults,nofail"),
            "{once}"
        );
        assert!(once.contains("# /dev/xvdf /data"), "{once}");
        assert!(once.contains("instance-store"), "{once}");
        assert!(
            once.contains("LABEL=x /x ext4 defaults,nofail 0 2"),
            "{once}"
        );
        let active: Vec<&str> = once.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(active.iter().all(|l| !l.contains("/dev/")), "{once}");
        assert_eq!(
            fix_fstab(&once, Some("r"), &parts, &[]),
            once,
            "a second run changes nothing"
        );
    }

    #[test]
    fn grub_gets_the_serial_console_once() {
        let t = "GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX=\"console=tty0 console=hvc0 xen_emul_unplug=never quiet\"\n";
        let once = fix_grub(t);
        assert!(once.contains("GRUB_CMDLINE_LINUX=\"console=tty0 quiet console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\""), "{once}");
        assert_eq!(fix_grub(&once), once);
        assert!(fix_grub("GRUB_TIMEOUT=0\n").contains("GRUB_CMDLINE_LINUX=\"console=ttyS0"));
    }

    #[test]
    fn bootloader_files_get_the_console_once() {
        let cfg = "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1 root=UUID=r ro console=hvc0 quiet\n\tinitrd /boot/initrd.img-6.1\n}\n";
        let once = fix_grub_cfg(cfg);
        assert!(once.contains("\tlinux /boot/vmlinuz-6.1 root=UUID=r ro quiet console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\n"), "{once}");
        assert_eq!(fix_grub_cfg(&once), once);
        let bls =
            "title RHEL\nlinux /vmlinuz-5.14\noptions root=/dev/mapper/r ro crashkernel=auto\n";
        let once = fix_bls(bls);
        assert!(
            once.contains("options root=/dev/mapper/r ro crashkernel=auto console=ttyS0,115200n8"),
            "{once}"
        );
        assert_eq!(fix_bls(&once), once);
        assert_eq!(fix_bls("options $kernelopts\n"), "options $kernelopts\n");
        let mut env =
            b"# GRUB Environment Block\nkernelopts=root=UUID=r ro console=hvc0\nsaved_entry=x\n"
                .to_vec();
        env.resize(1024, b'#');
        let once = fix_grubenv(&env).unwrap();
        assert_eq!(once.len(), 1024);
        let t = String::from_utf8_lossy(&once);
        assert!(t.contains("kernelopts=root=UUID=r ro console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\nsaved_entry=x\n"), "{t}");
        assert_eq!(fix_grubenv(&once).unwrap(), once);
        let mut full = format!("kernelopts={}\n", "x".repeat(1000)).into_bytes();
        full.resize(1024, b'#');
        assert!(
            fix_grubenv(&full).is_none(),
            "a block that would overflow is refused"
        );
    }

    #[test]
    fn cloud_init_and_modules() {
        let once = fix_cloud_init("users: [default]\ndatasource_list: [ Ec2, None ]\n");
        assert_eq!(once, "users: [default]\ndatasource_list: [ Azure, None ]\n");
        assert_eq!(fix_cloud_init(&once), once);
        let m = fix_initramfs_modules("# list\nnvme");
        assert_eq!(m, "# list\nnvme\nhv_vmbus\nhv_storvsc\nhv_netvsc\n");
        assert_eq!(fix_initramfs_modules(&m), m);
    }

    #[test]
    fn data_disks_turn_device_paths_into_uuids_and_restore_commented_entries() {
        let t = "/dev/nvme0n1p1 / ext4 defaults 0 1\n/dev/xvdf /data xfs defaults 0 2\n/dev/sdg1 /logs ext4 defaults 0 2\n";
        let parts = [part(1, "r")];
        let unknown = fix_fstab(t, Some("r"), &parts, &[]);
        assert!(unknown.contains("# /dev/xvdf /data"), "{unknown}");
        let disks = [
            DataDisk {
                device: "/dev/sdf".into(),
                partitions: vec![part(0, "d")],
            },
            DataDisk {
                device: "/dev/xvdg".into(),
                partitions: vec![part(1, "g1")],
            },
        ];
        let known = fix_fstab(&unknown, Some("r"), &parts, &disks);
        assert!(
            known.contains("UUID=d\t/data\txfs\tdefaults,nofail"),
            "{known}"
        );
        assert!(
            known.contains("UUID=g1\t/logs\text4\tdefaults,nofail"),
            "{known}"
        );
        assert!(
            !known.contains("ebs2azure:"),
            "restored, not left commented: {known}"
        );
        assert_eq!(
            fix_fstab(t, Some("r"), &parts, &disks),
            known,
            "same result in one run"
        );
        assert_eq!(fix_fstab(&known, Some("r"), &parts, &disks), known);
    }

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
    fn interfaces_keep_loopback_and_sources_and_get_eth0() {
        let t = "auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\nauto ens5\niface ens5 inet dhcp\n    hwaddress ether 0a:1b:2c:3d:4e:5f\n";
        assert!(names_other_interface(t));
        let once = fix_interfaces(t);
        assert!(once.contains("iface lo inet loopback\nsource /etc/network/interfaces.d/*\nauto eth0\niface eth0 inet dhcp\n"), "{once}");
        assert!(
            !once.contains("ens5") && !once.contains("hwaddress"),
            "{once}"
        );
        assert!(!names_other_interface(&once));
        assert!(ifcfg_pinned("DEVICE=eth0\nHWADDR=0a:1b:2c:3d:4e:5f\n"));
        assert!(!ifcfg_pinned(IFCFG_ETH0));
    }

    /// A guest filesystem in memory: files by path, directories implied.
    #[derive(Default)]
    struct MemFs(std::cell::RefCell<std::collections::BTreeMap<String, Vec<u8>>>);

    impl GuestFs for MemFs {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
            Ok(self.0.borrow().get(path).cloned())
        }
        fn list(&self, path: &str) -> Result<Vec<String>, Error> {
            let dir = format!("{path}/");
            let mut names: Vec<String> = self
                .0
                .borrow()
                .keys()
                .filter_map(|k| k.strip_prefix(&dir))
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
                .collect();
            names.dedup();
            Ok(names)
        }
        fn exists(&self, path: &str) -> Result<bool, Error> {
            Ok(self.read(path)?.is_some() || !self.list(path)?.is_empty())
        }
        fn write(&self, path: &str, data: &[u8], _mode: u32) -> Result<(), Error> {
            self.0.borrow_mut().insert(path.to_owned(), data.to_vec());
            Ok(())
        }
        fn rename(&self, from: &str, to_name: &str) -> Result<(), Error> {
            let (dir, _) = from.rsplit_once('/').unwrap();
            let data = self.0.borrow_mut().remove(from).unwrap();
            self.0.borrow_mut().insert(format!("{dir}/{to_name}"), data);
            Ok(())
        }
    }

    #[test]
    fn a_grubenv_that_cannot_take_the_console_is_advice_not_an_edit() {
        let fs = MemFs::default();
        let mut full = format!("kernelopts={}\n", "x".repeat(1000)).into_bytes();
        full.resize(1024, b'#');
        fs.write("/boot/grub2/grubenv", &full, 0o644).unwrap();
        assert!(boot_plan(&fs).unwrap().is_empty());
        let found = pending(&fs, None).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].class, super::super::Class::Advice);
        assert_eq!(found[0].subject, "/boot/grub2/grubenv");
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
        let found = pending(&fs, None).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        let changes = apply(&fs, "", network_plan(&fs).unwrap(), false).unwrap();
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
            pending(&fs, None).unwrap().is_empty(),
            "a second look finds nothing"
        );
        assert!(apply(&fs, "", network_plan(&fs).unwrap(), false)
            .unwrap()
            .is_empty());
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
        apply(&fs, "", network_plan(&fs).unwrap(), false).unwrap();
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
        assert!(apply(&fs, "", network_plan(&fs).unwrap(), false)
            .unwrap()
            .is_empty());
    }
}
