//! `fixup`: makes the changes `inspect` announces, in the guest's root
//! filesystem (mounted read-write, so its journal replays), keeping each
//! original beside it as `FILE.ebs2azure-orig` and recording digests before
//! and after. A second run changes nothing; `--dry-run` writes nothing. The
//! filesystem must check clean after unmounting.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::inspect::{inspect, PartInfo, Report as Inspection};
use super::mount::Mounted;
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
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Guest path.
    pub path: String,
    /// Why.
    pub reason: String,
    /// SHA-256 of the file before (none: it did not exist).
    pub before: Option<String>,
    /// SHA-256 after (none: removed, kept as the original).
    pub after: Option<String>,
}

/// What `fixup` did.
#[derive(Clone, Debug, Serialize)]
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
    Write(String),
    Remove,
}

/// The partition number of an AWS device path on the root disk, if it is one
/// (`/dev/xvda1`, `/dev/sda1`, `/dev/nvme0n1p1`).
fn root_disk_partition(spec: &str) -> Option<u32> {
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

/// /etc/fstab with device paths made UUID=, foreign and instance-store
/// entries commented out, and nofail on non-root data mounts.
pub fn fix_fstab(text: &str, root_uuid: Option<&str>, parts: &[PartInfo]) -> String {
    let mut out = String::new();
    for line in text.lines() {
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
                root_disk_partition(spec).and_then(|n| {
                    parts
                        .iter()
                        .find(|p| p.number == n)
                        .and_then(|p| p.fs.uuid.clone())
                })
            };
            let instance_store = mp.starts_with("/media/ephemeral")
                || (mp == "/mnt" && spec.starts_with("/dev/xvdb"));
            match uuid {
                Some(u) if !instance_store => fields[0] = format!("UUID={u}"),
                _ => {
                    let why = if instance_store {
                        "an EC2 instance-store volume, which does not move to Azure"
                    } else {
                        "another EBS volume: migrate it too and mount it here by UUID"
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

/// The planned edits for the guest mounted at `m`.
fn plan(m: &Mounted, ins: &Inspection) -> Result<Vec<(String, String, Edit)>, Error> {
    let mut edits = Vec::new();
    let root_part = ins
        .partitions
        .iter()
        .find(|p| Some(p.number) == ins.root_partition);
    let root_uuid = root_part.and_then(|p| p.fs.uuid.as_deref());
    if let Some(t) = m.read_text("/etc/fstab")? {
        edits.push((
            "/etc/fstab".into(),
            "AWS device names do not exist on Azure: mount by UUID, comment out volumes that do not move, nofail on data disks".into(),
            Edit::Write(fix_fstab(&t, root_uuid, &ins.partitions)),
        ));
    }
    if let Some(t) = m.read_text("/etc/default/grub")? {
        edits.push((
            "/etc/default/grub".into(),
            "Azure's serial console and boot diagnostics need console=ttyS0; Xen console settings do nothing on Hyper-V".into(),
            Edit::Write(fix_grub(&t)),
        ));
    }
    for f in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if let Some(t) = m.read_text(f)? {
            edits.push((
                f.into(),
                "the bootloader reads grub.cfg, not /etc/default/grub, until it is regenerated: its kernel lines need the serial console too".into(),
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
            edits.push((
                f,
                "BLS entries carry the kernel command line the bootloader uses".into(),
                Edit::Write(fix_bls(&t)),
            ));
        }
    }
    for f in ["/boot/grub2/grubenv", "/boot/grub/grubenv"] {
        if let Some(d) = m.read(f)? {
            if String::from_utf8_lossy(&d).contains("kernelopts=") {
                let Some(new) = fix_grubenv(&d) else {
                    return Err(Error::Guest(format!(
                        "{f}: kernelopts with the serial console would not fit its 1024 bytes; shorten it on the source"
                    )));
                };
                edits.push((
                    f.into(),
                    "BLS entries take the kernel command line from grubenv's kernelopts".into(),
                    Edit::Write(String::from_utf8_lossy(&new).into_owned()),
                ));
            }
        }
    }
    let mut cloud = vec!["/etc/cloud/cloud.cfg".to_owned()];
    cloud.extend(
        m.list("/etc/cloud/cloud.cfg.d")?
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
    );
    for f in cloud {
        if let Some(t) = m.read_text(&f)? {
            edits.push((
                f,
                "cloud-init must ask Azure, not the EC2 metadata service".into(),
                Edit::Write(fix_cloud_init(&t)),
            ));
        }
    }
    for f in [
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/etc/udev/rules.d/75-persistent-net-generator.rules",
    ] {
        if m.exists(f)? {
            edits.push((
                f.into(),
                "persistent-net rules pin interface names to the AWS NIC".into(),
                Edit::Remove,
            ));
        }
    }
    if m.exists("/etc/initramfs-tools")? {
        let t = m
            .read_text("/etc/initramfs-tools/modules")?
            .unwrap_or_default();
        edits.push((
            "/etc/initramfs-tools/modules".into(),
            "every rebuilt initramfs must keep the Hyper-V drivers".into(),
            Edit::Write(fix_initramfs_modules(&t)),
        ));
    }
    if m.exists("/etc/dracut.conf.d")? {
        edits.push((
            "/etc/dracut.conf.d/90-ebs2azure-hyperv.conf".into(),
            "every rebuilt initramfs must keep the Hyper-V drivers".into(),
            Edit::Write("# Added by ebs2azure for Azure (Hyper-V)\nadd_drivers+=\" hv_vmbus hv_storvsc hv_netvsc \"\n".into()),
        ));
    }
    Ok(edits)
}

/// Fixes up the OS disk at `path` (raw or fixed VHD); `dry_run` writes nothing.
pub fn fixup(path: &Path, dry_run: bool) -> Result<Report, Error> {
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
        Mounted::read_only(path, root.start, root.size, &root.fs.kind)?
    } else {
        Mounted::read_write(path, root.start, root.size, &root.fs.kind)?
    };
    let mut changes = Vec::new();
    for (file, reason, edit) in plan(&m, &ins)? {
        let old = m.read(&file)?;
        let new = match &edit {
            Edit::Write(t) => Some(t.as_bytes()),
            Edit::Remove => None,
        };
        if old.as_deref() == new {
            continue;
        }
        if !dry_run {
            let orig = format!("{file}{ORIG}");
            let name = orig.rsplit('/').next().unwrap_or(&orig).to_owned();
            match (&old, new) {
                (Some(_), None) => m.rename(&file, &name)?,
                (Some(o), Some(n)) => {
                    if !m.exists(&orig)? {
                        m.write(&orig, o)?;
                    }
                    m.write(&file, n)?;
                }
                (None, Some(n)) => m.write(&file, n)?,
                (None, None) => continue,
            }
        }
        changes.push(Change {
            path: file,
            reason,
            before: old.as_deref().map(sha),
            after: new.map(sha),
        });
    }
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
    use crate::fixup::probe::Probe;

    fn part(n: u32, uuid: &str) -> PartInfo {
        PartInfo {
            number: n,
            start: 0,
            size: 0,
            kind: "Linux filesystem".into(),
            fs: Probe {
                kind: "ext4".into(),
                uuid: Some(uuid.into()),
                label: None,
            },
        }
    }

    #[test]
    fn fstab_loses_every_device_path_and_is_stable() {
        let t = "# c\n/dev/nvme0n1p1 / ext4 defaults 0 1\n/dev/nvme0n1p2 /home ext4 defaults 0 2\n/dev/xvdf /data xfs defaults 0 2\n/dev/xvdb /mnt auto defaults 0 2\nLABEL=x /x ext4 defaults,nofail 0 2\n";
        let parts = [part(1, "r"), part(2, "h")];
        let once = fix_fstab(t, Some("r"), &parts);
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
            fix_fstab(&once, Some("r"), &parts),
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
}
