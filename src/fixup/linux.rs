//! The Linux rules: what an EC2 Linux guest is (its OS, kernels and their
//! Hyper-V drivers, fstab, cloud-init, agent) with the blockers and advice
//! that follow, and the plan of edits that makes it boot and come online on
//! Azure. The Windows rules sit beside these, on the same [`Plan`] and report.

use super::edits::*;
use super::guest::GuestFs;
use super::initramfs;
use super::layout::DataDisk;
use super::plan::{Edit, Plan};
use super::report::{FstabEntry, Kernel, Os, Report};
use super::{Class, Error, Finding};

/// The value of KEY in an os-release or shell-style assignment file.
fn value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

/// True when the root filesystem `m` is a Linux root (it has os-release).
pub fn is_root(m: &dyn GuestFs) -> Result<bool, Error> {
    Ok(m.exists("/etc/os-release")? || m.exists("/usr/lib/os-release")?)
}

/// Reads what the Linux root `m` is into `r`, with the blockers and advice
/// that follow from it. The fix-up findings come from [`plan_root`].
pub fn facts(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let osr = match m.read_text("/etc/os-release")? {
        Some(t) => Some(t),
        None => m.read_text("/usr/lib/os-release")?,
    };
    if let Some(t) = osr {
        let id = value(&t, "ID").unwrap_or_default();
        let name = value(&t, "PRETTY_NAME")
            .or_else(|| value(&t, "NAME"))
            .unwrap_or_default();
        if id == "amzn" {
            r.findings.push(Finding::new(
                Class::Blocker,
                "/etc/os-release",
                format!("{name} runs only on AWS (its kernel, repositories and support are tied to EC2); move the workload to a distribution Azure supports"),
            ));
        }
        r.os = Some(Os {
            id,
            name,
            version: value(&t, "VERSION_ID").unwrap_or_default(),
        });
    }
    kernels(m, r)?;
    fstab(m, r)?;
    r.azure_agent = m.exists("/usr/sbin/waagent")?
        || m.exists("/usr/lib/systemd/system/walinuxagent.service")?
        || m.exists("/lib/systemd/system/walinuxagent.service")?
        || m.exists("/usr/lib/systemd/system/waagent.service")?;
    // After the agent: cloud-init is not needed where the agent provisions.
    cloud_init(m, r)?;
    if !r.azure_agent {
        r.findings.push(Finding::new(
            Class::Advice,
            "Azure Linux agent",
            "the Azure Linux agent (walinuxagent) is not installed; install it for extensions, password resets and boot diagnostics",
        ));
    }
    for f in m.list("/etc/modprobe.d")? {
        let path = format!("/etc/modprobe.d/{f}");
        let text = m.read_text(&path)?.unwrap_or_default();
        for module in ["udf", "vfat"] {
            let blacklisted = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.first() == Some(&"blacklist") && w.get(1) == Some(&module))
                    || (w.first() == Some(&"install")
                        && w.get(1) == Some(&module)
                        && l.contains("/bin/true"))
            });
            if blacklisted {
                r.findings.push(Finding::new(
                    Class::Advice,
                    &path,
                    format!("{module} is disabled; Azure provisioning reads its settings from a {module} disk, so allow it"),
                ));
            }
        }
    }
    Ok(())
}

fn kernels(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let boot = m.list("/boot")?;
    let mut versions: Vec<String> = boot
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .collect();
    for v in m.list("/lib/modules")? {
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    versions.sort();
    for v in versions {
        let config = m
            .read_text(&format!("/boot/config-{v}"))?
            .unwrap_or_default();
        let builtin_list = m
            .read_text(&format!("/lib/modules/{v}/modules.builtin"))?
            .unwrap_or_default();
        let modules_dep = m
            .read_text(&format!("/lib/modules/{v}/modules.dep"))?
            .unwrap_or_default();
        let mut built_in = Vec::new();
        let mut modules = Vec::new();
        for (driver, option) in HYPERV_DRIVERS {
            let file = format!("/{driver}.ko");
            if config.lines().any(|l| l.trim() == format!("{option}=y"))
                || builtin_list.lines().any(|l| l.trim().ends_with(&file))
            {
                built_in.push(driver.to_owned());
            } else if modules_dep.lines().any(|l| {
                l.split(':').next().is_some_and(|p| {
                    p.ends_with(&file)
                        || p.ends_with(&format!("{file}.xz"))
                        || p.ends_with(&format!("{file}.zst"))
                })
            }) {
                modules.push(driver.to_owned());
            }
        }
        let initramfs = [
            format!("initrd.img-{v}"),
            format!("initramfs-{v}.img"),
            format!("initrd-{v}"),
        ]
        .into_iter()
        .find(|n| boot.contains(n))
        .map(|n| format!("/boot/{n}"));
        let missing: Vec<&str> = HYPERV_DRIVERS
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| !built_in.iter().any(|b| b == d) && !modules.iter().any(|b| b == d))
            .collect();
        if !missing.is_empty() {
            r.findings.push(Finding::new(
                Class::Blocker,
                &format!("kernel {v}"),
                format!("kernel {v} has neither built in nor as modules the Hyper-V drivers {}; install a kernel with them (e.g. the distribution's generic or Azure kernel) on the source before the final snapshot", missing.join(", ")),
            ));
        } else if !modules.is_empty() && !initramfs_configurable(m)? {
            // Where it can be configured, the plan does it (and says so).
            r.findings.push(Finding::new(
                Class::Advice,
                &format!("kernel {v}"),
                format!("{} are modules of kernel {v}; make sure whatever builds its initramfs keeps them (no dracut or initramfs-tools configuration was found)", modules.join(", ")),
            ));
        }
        let in_initramfs = if missing.is_empty() && !modules.is_empty() {
            initramfs_drivers(m, r, &v, initramfs.as_deref(), &modules)?
        } else {
            None
        };
        r.kernels.push(Kernel {
            version: v,
            built_in,
            modules,
            initramfs,
            in_initramfs,
        });
    }
    if r.kernels.is_empty() {
        r.findings.push(Finding::new(
            Class::Blocker,
            "/boot",
            "no kernel was found in /boot or /lib/modules; /boot may be a separate partition this image lacks",
        ));
    }
    Ok(())
}

/// True when the guest builds its initramfs with initramfs-tools or dracut,
/// whose configuration the plan can give the Hyper-V drivers.
fn initramfs_configurable(m: &dyn GuestFs) -> Result<bool, Error> {
    Ok(m.exists("/etc/initramfs-tools")? || m.exists("/etc/dracut.conf.d")?)
}

/// True when a dracut configuration file already adds the Hyper-V storage drivers.
fn dracut_configured(m: &dyn GuestFs) -> Result<bool, Error> {
    for f in m.list("/etc/dracut.conf.d")? {
        let t = m
            .read_text(&format!("/etc/dracut.conf.d/{f}"))?
            .unwrap_or_default();
        if t.contains("hv_storvsc") && t.contains("hv_vmbus") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Which of `modules` the kernel's initramfs holds; adds a finding when
/// boot-critical ones are missing or the image cannot be read.
fn initramfs_drivers(
    m: &dyn GuestFs,
    r: &mut Report,
    version: &str,
    path: Option<&str>,
    modules: &[String],
) -> Result<Option<Vec<String>>, Error> {
    let subject = format!("kernel {version}");
    let rebuild = "on the source, add them (dracut: add_drivers+=\" hv_vmbus hv_storvsc \" in /etc/dracut.conf.d/; initramfs-tools: /etc/initramfs-tools/modules), rebuild the initramfs (dracut -f, update-initramfs -u) and take the snapshot again";
    let Some(path) = path else {
        r.findings.push(Finding::new(
            Class::Blocker,
            &subject,
            format!("kernel {version} loads its Hyper-V storage drivers as modules but has no initramfs in /boot; {rebuild}"),
        ));
        return Ok(None);
    };
    let Some(data) = m.read(path)? else {
        return Ok(None);
    };
    let files = match initramfs::list(&data) {
        Ok(initramfs::Contents::Files(f)) => f,
        Ok(initramfs::Contents::Unsupported(kind)) => {
            r.findings.push(Finding::new(
                Class::Advice,
                path,
                format!("{path} is compressed with {kind}, which is not read here; check by hand that it holds hv_vmbus and hv_storvsc"),
            ));
            return Ok(None);
        }
        Err(why) => {
            r.findings.push(Finding::new(
                Class::Advice,
                path,
                format!("{path} could not be read ({why}); check by hand that it holds hv_vmbus and hv_storvsc"),
            ));
            return Ok(None);
        }
    };
    let names: Vec<&str> = modules.iter().map(String::as_str).collect();
    let present = initramfs::drivers_in(&files, &names);
    let lacking: Vec<&str> = ["hv_vmbus", "hv_storvsc"]
        .into_iter()
        .filter(|d| modules.iter().any(|x| x == d) && !present.iter().any(|p| p == d))
        .collect();
    if !lacking.is_empty() {
        r.findings.push(Finding::new(
            Class::Blocker,
            path,
            format!(
                "{path} lacks {}, so the kernel will not find its disk on Azure; {rebuild}",
                lacking.join(" and ")
            ),
        ));
    }
    Ok(Some(present))
}

fn fstab(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let Some(text) = m.read_text("/etc/fstab")? else {
        r.findings.push(Finding::new(
            Class::Advice,
            "/etc/fstab",
            "there is no /etc/fstab (or it is a link out of the guest); the root filesystem comes from the kernel command line",
        ));
        return Ok(());
    };
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 3 {
            continue;
        }
        let e = FstabEntry {
            spec: w[0].to_owned(),
            mount_point: w[1].to_owned(),
            fstype: w[2].to_owned(),
            options: w.get(3).copied().unwrap_or("defaults").to_owned(),
        };
        if e.fstype == "swap" {
            r.findings.push(Finding::new(
                Class::Advice,
                "/etc/fstab",
                format!("swap on {} is on the disk; Azure puts swap on the VM's resource disk (cloud-init or waagent settings)", e.spec),
            ));
        }
        r.fstab.push(e);
    }
    Ok(())
}

/// The files cloud-init reads its configuration from.
fn cloud_init_files(m: &dyn GuestFs) -> Result<Vec<String>, Error> {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_owned()];
    files.extend(
        m.list("/etc/cloud/cloud.cfg.d")?
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}")),
    );
    Ok(files)
}

fn cloud_init(m: &dyn GuestFs, r: &mut Report) -> Result<(), Error> {
    let files = cloud_init_files(m)?;
    let mut installed = false;
    for f in files {
        let Some(text) = m.read_text(&f)? else {
            continue;
        };
        installed = true;
        for l in text.lines() {
            if let Some(v) = l.trim().strip_prefix("datasource_list:") {
                r.cloud_init_datasources = Some(v.trim().to_owned());
            }
        }
    }
    if !installed && !r.azure_agent {
        r.findings.push(Finding::new(
            Class::Advice,
            "cloud-init",
            "cloud-init is not installed; Azure provisioning needs cloud-init or the Azure Linux agent",
        ));
    }
    Ok(())
}

/// Where the EFI system partition is mounted in the guest, for reports.
pub const ESP_MOUNT: &str = "/boot/efi";

/// The plan for the Linux root filesystem `m`, inspected as `ins`, with the
/// machine's other disks `data_disks` (so fstab can name them by UUID).
pub fn plan_root(m: &dyn GuestFs, ins: &Report, data_disks: &[DataDisk]) -> Result<Plan, Error> {
    let mut plan = Plan::new("");
    let root_uuid = ins.root().and_then(|p| p.fs.uuid.as_deref());
    if let Some(t) = m.read_text("/etc/fstab")? {
        let e = fix_fstab(&t, root_uuid, &ins.partitions, data_disks);
        plan.add(
            m,
            "/etc/fstab",
            "AWS device names do not exist on Azure: mount by UUID, comment out volumes that do not move, nofail on data disks",
            Edit::Write(e.text),
            e.notes,
        )?;
    }
    if let Some(t) = m.read_text("/etc/default/grub")? {
        let e = fix_grub(&t);
        plan.add(
            m,
            "/etc/default/grub",
            "Azure's serial console and boot diagnostics need console=ttyS0; Xen console settings do nothing on Hyper-V",
            Edit::Write(e.text),
            e.notes,
        )?;
    }
    boot_plan(m, &mut plan)?;
    cloud_init_plan(m, &mut plan)?;
    for f in [
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/etc/udev/rules.d/75-persistent-net-generator.rules",
    ] {
        plan.add(
            m,
            f,
            "persistent-net rules pin interface names to the AWS NIC's MAC address, so Azure's NIC would get another name; fixup takes them out of use",
            Edit::Remove,
            vec![],
        )?;
    }
    network_plan(m, &mut plan)?;
    initramfs_plan(m, ins, &mut plan)?;
    Ok(plan)
}

/// The plan for the bootloader files on the EFI system partition `esp`: a
/// full grub.cfg (RHEL 8 keeps one there) and grubenv's kernelopts.
pub fn plan_esp(esp: &dyn GuestFs) -> Result<Plan, Error> {
    let mut plan = Plan::new(ESP_MOUNT);
    for vendor in esp.list("/EFI")? {
        let cfg = format!("/EFI/{vendor}/grub.cfg");
        if let Some(t) = esp.read_text(&cfg)? {
            plan.add(
                esp,
                cfg,
                "UEFI firmware starts the GRUB on the EFI system partition, which reads this grub.cfg: its kernel lines need the serial console too",
                Edit::Write(fix_grub_cfg(&t)),
                vec![],
            )?;
        }
        grubenv_plan(esp, &format!("/EFI/{vendor}/grubenv"), &mut plan)?;
    }
    Ok(plan)
}

/// cloud-init: Azure first in every datasource_list; EC2-only files out of use.
fn cloud_init_plan(m: &dyn GuestFs, plan: &mut Plan) -> Result<(), Error> {
    for f in cloud_init_files(m)? {
        let name = f.rsplit('/').next().unwrap_or_default();
        if f.starts_with("/etc/cloud/cloud.cfg.d/") && ec2_only(name) {
            plan.add(
                m,
                f,
                "this cloud-init configuration was written for EC2 (its metadata service or its NIC); fixup renames it away from *.cfg, so cloud-init no longer reads it",
                Edit::Remove,
                vec![],
            )?;
        } else if let Some(t) = m.read_text(&f)? {
            let e = fix_cloud_init(&t);
            plan.add(
                m,
                f,
                "cloud-init must ask Azure, not the EC2 metadata service",
                Edit::Write(e.text),
                e.notes,
            )?;
        }
    }
    Ok(())
}

/// The Hyper-V drivers in the configuration that builds the initramfs, so
/// that every rebuilt initramfs keeps them.
fn initramfs_plan(m: &dyn GuestFs, ins: &Report, plan: &mut Plan) -> Result<(), Error> {
    let reason = "every rebuilt initramfs must keep the Hyper-V drivers";
    let notes: Vec<String> = ins
        .kernels
        .iter()
        .filter(|k| !k.modules.is_empty())
        .map(|k| {
            format!(
                "{} are modules of kernel {}; fixup lists them in the initramfs configuration so that every rebuilt initramfs keeps them",
                k.modules.join(", "),
                k.version
            )
        })
        .collect();
    if m.exists("/etc/initramfs-tools")? {
        let t = m
            .read_text("/etc/initramfs-tools/modules")?
            .unwrap_or_default();
        plan.add(
            m,
            "/etc/initramfs-tools/modules",
            reason,
            Edit::Write(fix_initramfs_modules(&t)),
            notes.clone(),
        )?;
    }
    let ours = "/etc/dracut.conf.d/90-ebs2azure-hyperv.conf";
    if m.exists("/etc/dracut.conf.d")? && (m.exists(ours)? || !dracut_configured(m)?) {
        plan.add(
            m,
            ours,
            reason,
            Edit::Write("# Added by ebs2azure for Azure (Hyper-V)\nadd_drivers+=\" hv_vmbus hv_storvsc hv_netvsc \"\n".into()),
            notes,
        )?;
    }
    Ok(())
}

/// Why a pinned network file is rewritten, naming what it pins.
fn pinned(text: &str) -> String {
    format!(
        "it pins the network to the AWS NIC ({}), so Azure's NIC would get no address; fixup configures DHCP on eth0 instead",
        nic_pinning(text)
    )
}

/// The edits that give the guest DHCP on eth0 where its network
/// configuration is pinned to the AWS NIC (by MAC address, or generated by
/// cloud-init for EC2's ens5), in the distribution's own format.
fn network_plan(m: &dyn GuestFs, plan: &mut Plan) -> Result<(), Error> {
    for n in m.list("/etc/netplan")? {
        if !n.ends_with(".yaml") {
            continue;
        }
        let f = format!("/etc/netplan/{n}");
        let t = m.read_text(&f)?.unwrap_or_default();
        let generated = n == "50-cloud-init.yaml" && !t.contains("hv_netvsc");
        if t.contains("macaddress") || generated {
            plan.add(m, &f, pinned(&t), Edit::Write(NETPLAN_ETH0.into()), vec![])?;
        } else if t.contains("ens5") && !t.contains("Written by ebs2azure") {
            plan.advise(
                &f,
                "the interface is named ens5, EC2's name; on Azure it has another name (net.ifnames=0 and DHCP on eth0 is the safe form)",
            );
        }
    }
    let dir = "/etc/sysconfig/network-scripts";
    let mut eth0_needed = false;
    for n in m.list(dir)? {
        if !n.starts_with("ifcfg-") || n == "ifcfg-lo" || n.contains(super::plan::ORIG) {
            continue;
        }
        let f = format!("{dir}/{n}");
        let t = m.read_text(&f)?.unwrap_or_default();
        if !ifcfg_pinned(&t) {
            continue;
        }
        if n == "ifcfg-eth0" {
            plan.add(m, f, pinned(&t), Edit::Write(IFCFG_ETH0.into()), vec![])?;
        } else {
            plan.add(m, f, pinned(&t), Edit::Remove, vec![])?;
            eth0_needed = true;
        }
    }
    if eth0_needed && !m.exists(&format!("{dir}/ifcfg-eth0"))? {
        plan.add(
            m,
            format!("{dir}/ifcfg-eth0"),
            "Azure's NIC is eth0: DHCP on it replaces the pinned configuration",
            Edit::Write(IFCFG_ETH0.into()),
            vec![],
        )?;
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
        let edit = if f == "/etc/network/interfaces" {
            // Its loopback and `source` lines stay; eth0 comes with them.
            eth0_declared = true;
            Edit::Write(fix_interfaces(t))
        } else if eth0_declared {
            Edit::Remove
        } else {
            eth0_declared = true;
            Edit::Write(INTERFACES_ETH0.into())
        };
        plan.add(m, f.clone(), pinned(t), edit, vec![])?;
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
            let edit = if profile_written {
                Edit::Remove
            } else {
                profile_written = true;
                Edit::WritePrivate(NM_ETH0.into())
            };
            plan.add(m, f, pinned(&t), edit, vec![])?;
        }
    }
    Ok(())
}

/// The edit to a grubenv block whose kernelopts (which BLS entries use)
/// lack the serial console; advice instead when the longer line would not
/// fit the block (the guest boots, without the serial console).
fn grubenv_plan(fs: &dyn GuestFs, path: &str, plan: &mut Plan) -> Result<(), Error> {
    let Some(d) = fs.read(path)? else {
        return Ok(());
    };
    if !String::from_utf8_lossy(&d).contains("kernelopts=") {
        return Ok(());
    }
    match fix_grubenv(&d) {
        Some(new) => {
            plan.add(
                fs,
                path,
                "BLS entries take the kernel command line from grubenv's kernelopts",
                Edit::Bytes(new),
                vec![],
            )?;
        }
        None => plan.advise(
            path,
            "kernelopts with the serial console would not fit grubenv's 1024 bytes, so fixup leaves it and the serial console stays off; shorten kernelopts on the source (grub2-editenv - set kernelopts=...)",
        ),
    }
    Ok(())
}

/// The grubenv blocks of the root filesystem.
const GRUBENVS: [&str; 2] = ["/boot/grub2/grubenv", "/boot/grub/grubenv"];

/// The edits to what the bootloader reads from the root filesystem now:
/// grub.cfg's kernel lines, BLS entries and grubenv's kernelopts.
fn boot_plan(m: &dyn GuestFs, plan: &mut Plan) -> Result<(), Error> {
    for f in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if let Some(t) = m.read_text(f)? {
            plan.add(
                m,
                f,
                "the bootloader reads grub.cfg, not /etc/default/grub, until it is regenerated: its kernel lines need the serial console too",
                Edit::Write(fix_grub_cfg(&t)),
                vec![],
            )?;
        }
    }
    for n in m.list("/boot/loader/entries")? {
        if !n.ends_with(".conf") {
            continue;
        }
        let f = format!("/boot/loader/entries/{n}");
        if let Some(t) = m.read_text(&f)? {
            plan.add(
                m,
                f,
                "BLS entries carry the kernel command line the bootloader uses",
                Edit::Write(fix_bls(&t)),
                vec![],
            )?;
        }
    }
    for f in GRUBENVS {
        grubenv_plan(m, f, plan)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixup::plan::tests::MemFs;

    #[test]
    fn shell_values_are_read() {
        let t = "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID='12'\n";
        assert_eq!(value(t, "ID").as_deref(), Some("debian"));
        assert_eq!(value(t, "NAME").as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(value(t, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(value(t, "MISSING"), None);
    }

    /// The findings of the bootloader and network plans of `fs`.
    fn pending(fs: &dyn GuestFs) -> Vec<Finding> {
        let mut plan = Plan::new("");
        boot_plan(fs, &mut plan).unwrap();
        network_plan(fs, &mut plan).unwrap();
        plan.findings()
    }

    #[test]
    fn a_grubenv_that_cannot_take_the_console_is_advice_not_an_edit() {
        let fs = MemFs::default();
        let mut full = format!("kernelopts={}\n", "x".repeat(1000)).into_bytes();
        full.resize(1024, b'#');
        fs.write("/boot/grub2/grubenv", &full, 0o644).unwrap();
        let mut plan = Plan::new("");
        boot_plan(&fs, &mut plan).unwrap();
        assert!(plan.edits.is_empty());
        let found = pending(&fs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].class, Class::Advice);
        assert_eq!(found[0].subject, "/boot/grub2/grubenv");
    }

    #[test]
    fn a_network_finding_names_the_interface_and_the_mac() {
        let fs = MemFs::default();
        fs.write(
            "/etc/sysconfig/network-scripts/ifcfg-ens5",
            b"DEVICE=ens5\nHWADDR=0a:1b:2c:3d:4e:5f\nBOOTPROTO=dhcp\n",
            0o644,
        )
        .unwrap();
        let found = pending(&fs);
        let f = found
            .iter()
            .find(|f| f.subject.ends_with("ifcfg-ens5"))
            .unwrap();
        assert_eq!(f.class, Class::Fixup);
        assert!(
            f.message.contains("interface ens5, MAC 0a:1b:2c:3d:4e:5f"),
            "{f:?}"
        );
    }

    #[test]
    fn initramfs_configuration_is_planned_once_and_announced() {
        let fs = MemFs::default();
        fs.write(
            "/etc/dracut.conf.d/10-site.conf",
            b"add_drivers+=\" hv_vmbus hv_storvsc \"\n",
            0o644,
        )
        .unwrap();
        let ins: Report = serde_json::from_value(serde_json::json!({
            "image": "x", "table": "gpt", "partitions": [], "root_partition": null, "os": null,
            "boot_mode": "uefi", "hyper_v_generation": "V2", "kernels": [], "fstab": [],
            "cloud_init_datasources": null, "azure_agent": false, "findings": []
        }))
        .unwrap();
        // Already configured by the guest's own file: nothing to add.
        assert!(plan_root(&fs, &ins, &[]).unwrap().edits.is_empty());
        let fs = MemFs::default();
        fs.write("/etc/initramfs-tools/modules", b"# list\n", 0o644)
            .unwrap();
        let plan = plan_root(&fs, &ins, &[]).unwrap();
        assert_eq!(plan.edits.len(), 1);
        assert_eq!(plan.findings().len(), 1);
    }
}
