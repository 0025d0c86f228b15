//! The Linux fix-ups as pure text transforms: each takes a guest file's
//! text and gives the text it should have on Azure, plus one sentence per
//! change for the report. No I/O here; [`super::linux`] reads the guest and
//! decides which files to give them. Every transform is idempotent: run on
//! its own output it changes nothing.
//!
//! The rules about EC2 (its device names, its instance-store volumes, Xen's
//! console arguments, its cloud-init datasource) live here once, and both
//! inspection and fix-up use them.

use super::layout::{DataDisk, PartInfo};

/// The Hyper-V drivers a guest needs, with the kernel options that build them in.
pub const HYPERV_DRIVERS: [(&str, &str); 3] = [
    ("hv_vmbus", "CONFIG_HYPERV"),
    ("hv_storvsc", "CONFIG_HYPERV_STORAGE"),
    ("hv_netvsc", "CONFIG_HYPERV_NET"),
];

/// The kernel arguments Azure's serial console and slow first attach need.
pub const AZURE_CMDLINE: [&str; 3] = [
    "console=ttyS0,115200n8",
    "earlyprintk=ttyS0",
    "rootdelay=300",
];
/// The prefixes of the device names EC2 gives disks (Xen, SCSI, NVMe,
/// IDE). None of them names the same disk on Azure.
pub const AWS_DEVICE_PREFIXES: [&str; 4] = ["/dev/xvd", "/dev/sd", "/dev/nvme", "/dev/hd"];

/// True when fstab's `spec` is an AWS device path rather than a stable name.
pub fn is_device_path(spec: &str) -> bool {
    AWS_DEVICE_PREFIXES.iter().any(|p| spec.starts_with(p))
}

/// The partition number of an AWS device path on the root disk, if it is one
/// (`/dev/xvda1`, `/dev/sda1`, `/dev/nvme0n1p1`).
pub fn root_disk_partition(spec: &str) -> Option<u32> {
    let rest = spec
        .strip_prefix("/dev/nvme0n1p")
        .or_else(|| spec.strip_prefix("/dev/xvda"))
        .or_else(|| spec.strip_prefix("/dev/sda"))?;
    rest.parse().ok()
}

/// True for an fstab entry that mounts an EC2 instance-store volume (the
/// `/media/ephemeralN` convention, or `/mnt` on `/dev/xvdb`, where EC2's
/// cloud-init puts the first one). Such volumes do not move.
pub fn is_instance_store(spec: &str, mount_point: &str) -> bool {
    is_device_path(spec)
        && (mount_point.starts_with("/media/ephemeral")
            || (mount_point == "/mnt" && spec.starts_with("/dev/xvdb")))
}

/// True for a cloud-init file written for EC2 only (its metadata service
/// or its NIC): such files are taken out of use, not edited.
pub fn ec2_only(name: &str) -> bool {
    name.to_ascii_lowercase().contains("ec2") || name == "50-curtin-networking.cfg"
}

/// True for a kernel argument that only Xen (EC2's older hypervisor) reads:
/// its consoles (`console=hvc*`, `console=xvc*`) and every `xen*` argument
/// (`xen_emul_unplug=`, `xencons=`, `xen_blkfront.*`). They do nothing on
/// Hyper-V, and a Xen console would take the kernel's messages away from
/// Azure's serial console.
pub fn is_xen_arg(arg: &str) -> bool {
    arg.starts_with("console=hvc") || arg.starts_with("console=xvc") || arg.starts_with("xen")
}

/// True when a cloud-init `datasource_list` value does not put Azure first,
/// so cloud-init asks other sources (EC2's metadata service first of all)
/// before Azure's.
pub fn datasources_need_azure_first(list: &str) -> bool {
    !list
        .trim()
        .trim_start_matches('[')
        .trim()
        .trim_start_matches(['"', '\''])
        .starts_with("Azure")
}

/// A transform's result: the new text, and one sentence per change made,
/// which inspection reports as a fix-up finding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edited {
    /// The text the file should have.
    pub text: String,
    /// What changed and why, one sentence each; empty when nothing did.
    pub notes: Vec<String>,
}

/// /etc/fstab with device paths made UUID=, foreign and instance-store
/// entries commented out, and nofail on non-root data mounts.
pub fn fix_fstab(
    text: &str,
    root_uuid: Option<&str>,
    parts: &[PartInfo],
    data_disks: &[DataDisk],
) -> Edited {
    let mut out = String::new();
    let mut notes = Vec::new();
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
                    notes.push(format!(
                        "{spec} was commented out by an earlier run; its disk is known now, so fixup mounts it by UUID again"
                    ));
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
            let instance_store = is_instance_store(spec, mp);
            match uuid {
                Some(u) if !instance_store => {
                    fields[0] = format!("UUID={u}");
                    notes.push(format!(
                        "{spec} for {mp} is an AWS device name that will not exist on Azure (disks are sd* there); fixup mounts it by UUID"
                    ));
                }
                _ => {
                    // The comment written into the guest stays as it is:
                    // later runs find commented entries by it.
                    let why = if instance_store {
                        notes.push(format!(
                            "{spec} on {mp} looks like an EC2 instance-store volume, which does not move; fixup comments it out"
                        ));
                        "an EC2 instance-store volume, which does not move to Azure"
                    } else {
                        notes.push(format!(
                            "{spec} for {mp} is an AWS device name on another disk of the machine; fixup mounts it by UUID when that disk is given as a data disk, and otherwise comments it out with a note"
                        ));
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
                notes.push(format!(
                    "{mp} has no nofail: if that disk is not attached on Azure the VM stops at boot; fixup adds nofail"
                ));
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
    Edited { text: out, notes }
}

/// What [`cmdline_edit`] did to a kernel command line.
struct CmdlineEdit<'a> {
    text: String,
    added: Vec<&'a str>,
    dropped: Vec<&'a str>,
}

/// Kernel arguments `args` with Azure's console arguments added (unless
/// they or `elsewhere`, arguments the kernel also gets, have them) and
/// Xen's dropped.
fn cmdline_edit<'a>(args: &'a str, elsewhere: &[&str]) -> CmdlineEdit<'a> {
    let (dropped, mut kept): (Vec<&str>, Vec<&str>) =
        args.split_whitespace().partition(|a| is_xen_arg(a));
    let mut added = Vec::new();
    for a in AZURE_CMDLINE {
        // console= may repeat (several consoles); other keys are set once.
        let key = a.split('=').next().unwrap_or(a);
        let has = |x: &&str| *x == a || (key != "console" && x.starts_with(&format!("{key}=")));
        if !kept.iter().any(has) && !elsewhere.iter().any(has) {
            kept.push(a);
            added.push(a);
        }
    }
    CmdlineEdit {
        text: kept.join(" "),
        added,
        dropped,
    }
}

/// Kernel arguments with Azure's console arguments and without Xen's.
pub fn fix_cmdline(args: &str) -> String {
    cmdline_edit(args, &[]).text
}

/// /etc/default/grub with Azure's console arguments in GRUB_CMDLINE_LINUX
/// (unless GRUB_CMDLINE_LINUX_DEFAULT has them) and Xen's dropped from both.
pub fn fix_grub(text: &str) -> Edited {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_owned())
        })
    };
    let default = value("GRUB_CMDLINE_LINUX_DEFAULT=").unwrap_or_default();
    let default_args: Vec<&str> = default.split_whitespace().collect();
    let mut out = String::new();
    let mut seen = false;
    let (mut added, mut dropped) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let t = line.trim();
        let (key, elsewhere) = if t.starts_with("GRUB_CMDLINE_LINUX=") {
            seen = true;
            ("GRUB_CMDLINE_LINUX=", &default_args[..])
        } else if t.starts_with("GRUB_CMDLINE_LINUX_DEFAULT=") {
            // Only Xen's arguments go; Azure's are added to the other line.
            ("GRUB_CMDLINE_LINUX_DEFAULT=", &AZURE_CMDLINE[..])
        } else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let v = t[key.len()..].trim().trim_matches('"');
        let e = cmdline_edit(v, elsewhere);
        if e.added.is_empty() && e.dropped.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&format!("{key}\"{}\"", e.text));
        }
        out.push('\n');
        added.extend(e.added.iter().map(|a| (*a).to_owned()));
        dropped.extend(e.dropped.iter().map(|a| (*a).to_owned()));
    }
    if !seen {
        let e = cmdline_edit("", &default_args);
        if !e.added.is_empty() {
            out.push_str(&format!("GRUB_CMDLINE_LINUX=\"{}\"\n", e.text));
            added.extend(e.added.iter().map(|a| (*a).to_owned()));
        }
    }
    let mut notes = Vec::new();
    if !added.is_empty() {
        notes.push(format!(
            "the kernel command line has no console=ttyS0, so Azure's serial console and boot diagnostics stay blank; fixup adds {}",
            added.join(" ")
        ));
    }
    if !dropped.is_empty() {
        notes.push(format!(
            "the kernel command line has Xen console settings ({}), which do nothing on Hyper-V; fixup drops them",
            dropped.join(" ")
        ));
    }
    Edited { text: out, notes }
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
pub fn fix_cloud_init(text: &str) -> Edited {
    let mut out = String::new();
    let mut notes = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("datasource_list:") {
            if datasources_need_azure_first(v) {
                notes.push(format!(
                    "cloud-init's datasource_list {} does not put Azure first, so it asks other sources (the EC2 metadata service) before Azure; fixup lists Azure first",
                    v.trim()
                ));
                out.push_str("datasource_list: [ Azure, None ]\n");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    Edited { text: out, notes }
}

/// initramfs-tools' modules list with the Hyper-V drivers.
pub fn fix_initramfs_modules(text: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (d, _) in HYPERV_DRIVERS {
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
pub fn names_other_interface(text: &str) -> bool {
    text.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"iface") && !matches!(w.get(1), Some(&"lo") | Some(&"eth0"))
    })
}

/// True when an ifupdown file configures eth0.
pub fn declares_eth0(text: &str) -> bool {
    text.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"iface") && w.get(1) == Some(&"eth0")
    })
}

/// The AWS NIC a network file pins, as "interface ens5, MAC
/// 0a:1b:2c:3d:4e:5f": the EC2-style interface names (`ens5`, `eth1`,
/// `enX0`; not Azure's `eth0`) and MAC addresses it names.
pub fn nic_pinning(text: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut macs: Vec<String> = Vec::new();
    for token in text.split(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == '\'') {
        let t = token.trim_end_matches(':');
        let mac = t.len() == 17
            && t.split(':').count() == 6
            && t.split(':')
                .all(|h| h.len() == 2 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if mac {
            let m = t.to_ascii_lowercase();
            if !macs.contains(&m) {
                macs.push(m);
            }
            continue;
        }
        let nic = ["ens", "enp", "eno", "enX", "eth"].iter().any(|p| {
            t.strip_prefix(p).is_some_and(|r| {
                r.starts_with(|c: char| c.is_ascii_digit())
                    && r.chars().all(|c| c.is_ascii_alphanumeric())
            })
        });
        if nic && t != "eth0" && !names.contains(&t) {
            names.push(t);
        }
    }
    let mut parts = Vec::new();
    if !names.is_empty() {
        parts.push(format!(
            "interface{} {}",
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        ));
    }
    if !macs.is_empty() {
        parts.push(format!("MAC {}", macs.join(", ")));
    }
    if parts.is_empty() {
        "as EC2's cloud-init wrote it".to_owned()
    } else {
        parts.join(", ")
    }
}

/// True when an ifcfg file pins its interface to a MAC address.
pub fn ifcfg_pinned(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("HWADDR=") || l.starts_with("MACADDR=")) && l.len() > 7
    })
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
            kind: crate::fixup::layout::VolumeKind::Partition(
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
        let once = fix_fstab(t, Some("r"), &parts, &[]).text;
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
            fix_fstab(&once, Some("r"), &parts, &[]).text,
            once,
            "a second run changes nothing"
        );
    }

    #[test]
    fn grub_gets_the_serial_console_once() {
        let t = "GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX=\"console=tty0 console=hvc0 xen_emul_unplug=never quiet\"\n";
        let once = fix_grub(t).text;
        assert!(once.contains("GRUB_CMDLINE_LINUX=\"console=tty0 quiet console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\""), "{once}");
        assert_eq!(fix_grub(&once).text, once);
        assert!(fix_grub("GRUB_TIMEOUT=0\n")
            .text
            .contains("GRUB_CMDLINE_LINUX=\"console=ttyS0"));
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
        let once = fix_cloud_init("users: [default]\ndatasource_list: [ Ec2, None ]\n").text;
        assert_eq!(once, "users: [default]\ndatasource_list: [ Azure, None ]\n");
        assert_eq!(fix_cloud_init(&once).text, once);
        let m = fix_initramfs_modules("# list\nnvme");
        assert_eq!(m, "# list\nnvme\nhv_vmbus\nhv_storvsc\nhv_netvsc\n");
        assert_eq!(fix_initramfs_modules(&m), m);
    }

    #[test]
    fn data_disks_turn_device_paths_into_uuids_and_restore_commented_entries() {
        let t = "/dev/nvme0n1p1 / ext4 defaults 0 1\n/dev/xvdf /data xfs defaults 0 2\n/dev/sdg1 /logs ext4 defaults 0 2\n";
        let parts = [part(1, "r")];
        let unknown = fix_fstab(t, Some("r"), &parts, &[]).text;
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
        let known = fix_fstab(&unknown, Some("r"), &parts, &disks).text;
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
            fix_fstab(t, Some("r"), &parts, &disks).text,
            known,
            "same result in one run"
        );
        assert_eq!(fix_fstab(&known, Some("r"), &parts, &disks).text, known);
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

    #[test]
    fn one_rule_for_cloud_init_announces_every_change() {
        // Azure second is changed, and said so (inspect and fixup once disagreed).
        let e = fix_cloud_init("datasource_list: [ NoCloud, Azure ]\n");
        assert_eq!(e.text, "datasource_list: [ Azure, None ]\n");
        assert_eq!(e.notes.len(), 1, "{e:?}");
        assert!(e.notes[0].contains("[ NoCloud, Azure ]"), "{e:?}");
        let e = fix_cloud_init("datasource_list: [ Azure ]\n");
        assert!(e.notes.is_empty());
        assert!(datasources_need_azure_first("['Ec2', 'Azure']"));
        assert!(!datasources_need_azure_first(" [ 'Azure' ]"));
    }

    #[test]
    fn every_xen_argument_goes_and_is_named() {
        assert_eq!(
            fix_cmdline("xencons=tty console=tty0 xen_blkfront.sda_is_xvda=1 console=xvc0"),
            "console=tty0 console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300"
        );
        let e = fix_grub("GRUB_CMDLINE_LINUX=\"xencons=tty console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\"\n");
        assert_eq!(e.notes.len(), 1, "{e:?}");
        assert!(e.notes[0].contains("xencons=tty"), "{e:?}");
        // Console arguments on the _DEFAULT line count; Xen's go from it too.
        let t = "GRUB_CMDLINE_LINUX=\"\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=hvc0 console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\"\n";
        let e = fix_grub(t);
        assert_eq!(
            e.text,
            "GRUB_CMDLINE_LINUX=\"\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\"\n"
        );
        assert_eq!(e.notes.len(), 1, "only the Xen console is news: {e:?}");
        assert!(fix_grub(&e.text).notes.is_empty());
    }

    #[test]
    fn device_rules_and_notes_name_each_entry() {
        assert!(is_instance_store("/dev/xvdb", "/mnt"));
        assert!(is_instance_store("/dev/nvme1n1", "/media/ephemeral0"));
        assert!(!is_instance_store("UUID=x", "/media/ephemeral0"));
        assert!(!is_instance_store("/dev/xvdf", "/mnt"));
        let t = "/dev/xvda1 / ext4 defaults 0 1\n/dev/xvdb /mnt auto defaults 0 2\nUUID=d /data xfs defaults 0 2\n";
        let e = fix_fstab(t, Some("r"), &[], &[]);
        assert_eq!(e.notes.len(), 3, "{e:?}");
        assert!(e.notes[0].starts_with("/dev/xvda1 for /"), "{e:?}");
        assert!(e.notes[1].contains("instance-store"), "{e:?}");
        assert!(e.notes[2].starts_with("/data has no nofail"), "{e:?}");
        assert!(fix_fstab(&e.text, Some("r"), &[], &[]).notes.is_empty());
    }

    #[test]
    fn pinning_names_the_interface_and_the_mac() {
        let netplan = "network:\n  ethernets:\n    ens5:\n      match:\n        macaddress: 0A:1b:2c:3d:4e:5f\n      set-name: ens5\n";
        assert_eq!(
            nic_pinning(netplan),
            "interface ens5, MAC 0a:1b:2c:3d:4e:5f"
        );
        assert_eq!(
            nic_pinning("DEVICE=eth1\nHWADDR=\"0a:1b:2c:3d:4e:5f\"\n"),
            "interface eth1, MAC 0a:1b:2c:3d:4e:5f"
        );
        assert_eq!(
            nic_pinning("[ethernet]\nmac-address=0A:1B:2C:3D:4E:5F\n"),
            "MAC 0a:1b:2c:3d:4e:5f"
        );
        assert_eq!(nic_pinning("auto eth0\n"), "as EC2's cloud-init wrote it");
    }

    /// A guest file sample from testdata/guest (see testdata/README.md).
    fn sample(name: &str) -> String {
        let path = format!("{}/testdata/guest/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn ec2_samples_are_fixed_once_with_a_note_per_change() {
        let mut esp = part(15, "ABCD-1234");
        esp.fs.kind = crate::fixup::probe::FsKind::Vfat;
        let parts = [part(1, "r"), esp];
        let e = fix_fstab(&sample("fstab-debian12-ec2"), Some("r"), &parts, &[]);
        assert!(e.text.contains("UUID=r\t/\text4"), "{}", e.text);
        assert!(
            e.text.contains("UUID=ABCD-1234\t/boot/efi\tvfat"),
            "{}",
            e.text
        );
        assert!(e.text.contains("# /dev/xvdf /data"), "{}", e.text);
        assert!(e.text.contains("instance-store"), "{}", e.text);
        assert!(e.text.contains("/srv\text4\tdefaults,nofail"), "{}", e.text);
        assert!(
            e.text.contains("/swapfile none swap sw 0 0"),
            "swap is left: {}",
            e.text
        );
        // root, ESP, the other disk, the instance store, nofail on /srv.
        assert_eq!(e.notes.len(), 5, "{:?}", e.notes);
        assert!(fix_fstab(&e.text, Some("r"), &parts, &[]).notes.is_empty());

        let e = fix_grub(&sample("grub-default-rhel8-ec2"));
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(
            e.notes[0].ends_with("adds earlyprintk=ttyS0 rootdelay=300"),
            "{:?}",
            e.notes
        );
        assert!(fix_grub(&e.text).notes.is_empty());

        let e = fix_grub(&sample("grub-default-xen-pv"));
        assert!(
            !e.text.contains("xen") && !e.text.contains("hvc0"),
            "{}",
            e.text
        );
        assert!(
            e.text
                .contains("GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1\""),
            "{}",
            e.text
        );
        let dropped = e.notes.iter().find(|n| n.contains("Xen")).unwrap();
        for a in [
            "console=hvc0",
            "xencons=tty",
            "xen_blkfront.sda_is_xvda=1",
            "xen_emul_unplug=unnecessary",
        ] {
            assert!(dropped.contains(a), "{a}: {dropped}");
        }
        assert!(fix_grub(&e.text).notes.is_empty());

        for f in ["cloud-init-90_dpkg.cfg", "cloud-init-nocloud-first.cfg"] {
            let e = fix_cloud_init(&sample(f));
            assert_eq!(e.notes.len(), 1, "{f}");
            assert!(e.text.contains("datasource_list: [ Azure, None ]"), "{f}");
        }
        assert_eq!(
            nic_pinning(&sample("netplan-50-cloud-init.yaml")),
            "interface ens5, MAC 0a:1b:2c:3d:4e:5f"
        );
        let ifcfg = sample("ifcfg-eth0-rhel-ec2");
        assert!(ifcfg_pinned(&ifcfg));
        assert_eq!(nic_pinning(&ifcfg), "MAC 0a:1b:2c:3d:4e:5f");
    }
}
