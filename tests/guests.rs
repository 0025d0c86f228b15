//! `inspect` on generated Linux guests (scripts/gen-linux-guest): needs root
//! and loop devices to mount them; without them the tests print why they did
//! not run. Every test also checks that no loop device is left attached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Runs the guest builder `scripts/NAME OUT ARGS...` and returns OUT.
fn build_guest(name: &str, out: &Path, args: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let st = Command::new(script)
        .arg(out)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{name}: {e}"));
    assert!(
        st.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    out.to_owned()
}

/// A data disk of `size` bytes holding XFS on the whole disk (as /dev/xvdf
/// is in the test guests' fstab); returns its path and filesystem UUID.
fn xfs_data_disk(dir: &Path, size: u64) -> (PathBuf, String) {
    let data = dir.join("data.raw");
    sparse_file(&data, size, &[]);
    tool_ok("mkfs.xfs", &["-q", "-f", path_str(&data)]);
    let uuid = ebs2azure::fixup::layout::partitions(&data).unwrap()[0]
        .fs
        .uuid
        .clone()
        .unwrap();
    (data, uuid)
}

fn guest(dir: &Path, flags: &[&str]) -> PathBuf {
    build_guest("gen-linux-guest", &dir.join("guest.raw"), flags)
}

/// Loop devices backed by `image`.
fn loops_of(image: &Path) -> String {
    let out = tool("losetup", &["-j", path_str(image)]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `inspect --json`: exit 0, or 3 exactly when it found blockers.
fn inspect(image: &Path) -> serde_json::Value {
    let out = ebs2azure(&["inspect", path_str(image), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let blockers = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["class"] == "blocker");
    if blockers {
        assert!(blocked(&out).contains("blocker"));
    } else {
        ok(&out);
    }
    assert_eq!(loops_of(image), "", "a loop device was left attached");
    v
}

fn has(report: &serde_json::Value, class: &str, needle: &str) -> bool {
    report["findings"].as_array().unwrap().iter().any(|f| {
        f["class"] == class
            && (f["message"].as_str().unwrap().contains(needle)
                || f["subject"].as_str().unwrap().contains(needle))
    })
}

#[test]
fn an_ec2_debian_guest_is_inspected() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &[]);
    let r = inspect(&raw);
    assert_eq!(r["os"]["id"], "debian");
    assert_eq!(r["os"]["version"], "12");
    assert_eq!(r["root_partition"], 3);
    assert_eq!(r["boot_mode"], "bios+uefi");
    assert_eq!(r["hyper_v_generation"], "V1");
    let root = &r["partitions"][2]["fs"];
    assert_eq!(root["kind"], "ext4");
    assert_eq!(root["label"], "root");
    let k = &r["kernels"][0];
    assert_eq!(k["version"], "6.1.0-28-cloud-amd64");
    assert_eq!(k["modules"].as_array().unwrap().len(), 3);
    // Read from the real cpio layout: an early uncompressed archive, then gzip.
    assert_eq!(k["in_initramfs"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["fstab"].as_array().unwrap().len(), 4);
    assert!(has(&r, "fixup", "/dev/nvme0n1p1"), "{r}");
    assert!(has(&r, "fixup", "/dev/xvdf"), "{r}");
    assert!(has(&r, "fixup", "instance-store"), "{r}");
    assert!(has(&r, "fixup", "console=ttyS0"), "{r}");
    assert!(has(&r, "fixup", "70-persistent-net.rules"), "{r}");
    assert!(has(&r, "fixup", "datasource_list"), "{r}");
    assert!(has(&r, "advice", "udf"), "{r}");
    assert!(has(&r, "fixup", "/etc/netplan/50-cloud-init.yaml"), "{r}");
    assert!(
        has(&r, "fixup", "/etc/network/interfaces.d/50-cloud-init"),
        "{r}"
    );
    // The ESP's grub.cfg is Debian's stub (no kernel line): nothing to change there.
    assert!(!has(&r, "fixup", "/boot/efi"), "{r}");
    assert!(!has(&r, "blocker", ""), "no blockers expected: {r}");

    // A fixed VHD of the same disk reads the same; the text form says the same things.
    let vhd = dir.path().join("guest.vhd");
    ok(&convert(&raw, &vhd, &[]));
    let text = ok(&ebs2azure(&["inspect", path_str(&vhd)]));
    assert!(text.contains("Debian GNU/Linux 12"), "{text}");
    assert!(text.contains("--hyper-v-generation V1"), "{text}");
    assert_eq!(loops_of(&vhd), "");
}

#[test]
fn amazon_linux_and_missing_hyper_v_drivers_are_blockers() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let r = inspect(&guest(dir.path(), &["--flavor", "amzn"]));
    assert_eq!(r["os"]["id"], "amzn");
    assert!(has(&r, "blocker", "runs only on AWS"), "{r}");
    let r = inspect(&guest(dir.path(), &["--flavor", "nohv"]));
    assert!(has(&r, "blocker", "Hyper-V drivers"), "{r}");
    assert_eq!(r["findings"][0]["class"], "blocker", "blockers come first");
    // Drivers as modules, but an (xz) initramfs without them: the disk would not be found.
    let r = inspect(&guest(dir.path(), &["--flavor", "bare-initramfs"]));
    assert!(has(&r, "blocker", "lacks hv_vmbus and hv_storvsc"), "{r}");
    assert_eq!(r["kernels"][0]["in_initramfs"].as_array().unwrap().len(), 0);
}

#[test]
fn hostile_guests_fail_safely() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    // /etc/fstab climbs out of the guest: it is resolved inside the guest, never on the host.
    let raw = guest(dir.path(), &["--hostile"]);
    let r = inspect(&raw);
    assert_eq!(r["fstab"].as_array().unwrap().len(), 0, "{r}");
    assert!(
        !r.to_string().contains("root:x:0:0"),
        "a host file was read"
    );
    assert!(has(&r, "advice", "no /etc/fstab"), "{r}");

    // A corrupt superblock: one sentence, no loop device left behind.
    let raw = guest(dir.path(), &[]);
    let root_start = root_partition(&raw).start;
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    // s_log_block_size = 40: no kernel mounts that.
    std::os::unix::fs::FileExt::write_all_at(&f, &40u32.to_le_bytes(), root_start + 1024 + 24)
        .unwrap();
    drop(f);
    let e = fails(&ebs2azure(&["inspect", path_str(&raw)]));
    assert!(e.contains("mount failed"), "{e}");
    assert_eq!(loops_of(&raw), "");

    // A FIFO where a guest file should be: inspect and fixup end at once,
    // neither waits for a writer that never comes.
    let raw = guest(dir.path(), &[]);
    let mut made = -1;
    with_root_mounted(&raw, |root| {
        let cfg = root.join("etc/cloud/cloud.cfg.d/90_dpkg.cfg");
        let _ = std::fs::remove_file(&cfg);
        let c = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        made = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    });
    assert_eq!(made, 0);
    let out = bounded(&["inspect", path_str(&raw), "--json"]);
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "{out:?}"
    );
    // ... and it is a finding, not a silence.
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        has(&r, "advice", "90_dpkg.cfg is a FIFO, not a regular file"),
        "{r}"
    );
    let out = bounded(&["fixup", path_str(&raw)]);
    assert!(out.status.code().is_some(), "{out:?}");
    assert_eq!(loops_of(&raw), "");

    // Not a disk at all.
    let junk = dir.path().join("junk.raw");
    sparse_file(&junk, 1 << 20, &[(0, noise(3, 4096))]);
    let r = inspect(&junk);
    assert!(has(&r, "blocker", "no partition holds a Linux root"), "{r}");
}

#[test]
fn an_interrupt_unmounts_the_guest_and_detaches_its_loop_devices() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &[]);
    // Caught with its guest mounted (stopped there), then asked to end:
    // it unwinds, releasing what it holds, and says so. Tried a few
    // times, as a fast run can end before it is caught.
    let mut seen = Vec::new();
    for _ in 0..8 {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ebs2azure"))
            .args(["fixup", path_str(&raw), "--dry-run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut ended = false;
        while loops_of(&raw).is_empty() && std::time::Instant::now() < deadline {
            // Polled without reaping it: its pid stays ours to signal.
            ended = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |st| st.contains(") Z "));
            if ended {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if !ended {
            // SAFETY: signals to our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
                libc::kill(pid, libc::SIGTERM);
                libc::kill(pid, libc::SIGCONT);
            }
        }
        let out = output_within_child(child, 30);
        assert_eq!(loops_of(&raw), "", "a loop device was left: {out:?}");
        seen.push(out.status.code());
        if out.status.code() == Some(130) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.starts_with("error: interrupted:")
                    && err.contains("was unmounted and its loop devices detached"),
                "{err}"
            );
            return;
        }
    }
    panic!("never caught mid-work: exit codes {seen:?}");
}

/// Waits at most `secs` for `child` to end (then kills it and fails).
fn output_within_child(mut child: std::process::Child, secs: u64) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "did not end in {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Runs `change` on the root filesystem of guest `raw`, mounted read-write
/// at a temporary directory (a loop device over the root partition).
fn with_root_mounted(raw: &Path, change: impl FnOnce(&Path)) {
    let root = root_partition(raw);
    let dev = tool_ok(
        "losetup",
        &[
            "--find",
            "--show",
            "--offset",
            &root.start.to_string(),
            "--sizelimit",
            &root.size.to_string(),
            path_str(raw),
        ],
    );
    let dev = dev.trim();
    let mnt = tempfile::tempdir().unwrap();
    tool_ok("mount", &[dev, path_str(mnt.path())]);
    change(mnt.path());
    tool_ok("umount", &[path_str(mnt.path())]);
    tool_ok("losetup", &["-d", dev]);
}

#[test]
fn guest_files_are_replaced_whole_and_hard_links_keep_the_old_content() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &[]);
    let before = guest_file(&raw, "/etc/fstab").unwrap();
    with_root_mounted(&raw, |root| {
        std::fs::hard_link(root.join("etc/fstab"), root.join("etc/fstab.other-name")).unwrap();
    });
    ok(&ebs2azure(&["fixup", path_str(&raw)]));
    let after = guest_file(&raw, "/etc/fstab").unwrap();
    assert_ne!(after, before, "fstab was fixed up");
    assert_eq!(guest_file(&raw, "/etc/fstab.other-name").unwrap(), before);
    with_root_mounted(&raw, |root| {
        let left: Vec<String> = std::fs::read_dir(root.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("ebs2azure-new"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let meta = std::fs::metadata(root.join("etc/fstab")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            0o644
        );
    });
    assert!(checks_clean(
        &raw,
        root_partition(&raw).number,
        &["e2fsck", "-fn"]
    ));
    assert_eq!(loops_of(&raw), "");
}

/// The root partition (3) of a generated guest, from the library's probe.
fn root_partition(image: &Path) -> ebs2azure::fixup::layout::PartInfo {
    ebs2azure::fixup::layout::partitions(image)
        .unwrap()
        .into_iter()
        .find(|p| p.number == 3)
        .unwrap()
}

/// Reads guest files of the root filesystem through the library's read-only mount.
fn guest_file(image: &Path, path: &str) -> Option<String> {
    use ebs2azure::fixup::guest::GuestFs;
    let p = root_partition(image);
    let m = ebs2azure::fixup::mount::Mounted::read_only(image, p.start, p.size, p.fs.kind).unwrap();
    m.read_text(path).unwrap()
}

/// Reads a file of the EFI system partition (2) through the library's FAT reader.
fn esp_file(image: &Path, path: &str) -> Option<String> {
    use ebs2azure::fixup::guest::GuestFs;
    let p = ebs2azure::fixup::layout::partitions(image)
        .unwrap()
        .into_iter()
        .find(|p| p.number == 2)
        .unwrap();
    let esp = ebs2azure::fixup::esp::Esp::open(image, p.start, p.size, false).unwrap();
    esp.read_text(path).unwrap()
}

/// Runs a filesystem checker that takes no offset on a read-only loop
/// device over one partition; true when it finds the filesystem clean.
fn checks_clean(image: &Path, number: u32, checker: &[&str]) -> bool {
    let p = ebs2azure::fixup::layout::partitions(image)
        .unwrap()
        .into_iter()
        .find(|p| p.number == number)
        .unwrap();
    let dev = attach_loop(image, p.start, p.size);
    let mut args: Vec<&str> = checker[1..].to_vec();
    args.push(&dev);
    let out = tool(checker[0], &args);
    detach_loop(&dev);
    if !out.status.success() {
        eprintln!(
            "{}: {}{}",
            checker[0],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Asserts that a guest file is gone and kept as its original; returns the original.
fn taken_out_of_use(image: &Path, path: &str) -> String {
    assert!(guest_file(image, path).is_none(), "{path} is still there");
    let orig = ebs2azure::fixup::plan::original_path(path);
    guest_file(image, &orig).unwrap_or_else(|| panic!("{orig} was not kept"))
}

fn sha_file(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

#[test]
fn fixup_edits_once_keeps_originals_and_checks_clean() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &[]);

    // --dry-run lists the changes and writes nothing.
    let before = sha_file(&raw);
    let dry: serde_json::Value = serde_json::from_str(&ok(&ebs2azure(&[
        "fixup",
        path_str(&raw),
        "--dry-run",
        "--json",
    ])))
    .unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["changes"].as_array().unwrap().len(), 8, "{dry}");
    assert_eq!(sha_file(&raw), before, "--dry-run wrote to the image");
    assert_eq!(loops_of(&raw), "");

    // The real run (it checks the filesystem clean with e2fsck -fn after unmounting).
    let r: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["fixup", path_str(&raw), "--json"]))).unwrap();
    let changed: Vec<&str> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        [
            "/etc/fstab",
            "/etc/default/grub",
            "/boot/grub/grub.cfg",
            "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
            "/etc/udev/rules.d/70-persistent-net.rules",
            "/etc/netplan/50-cloud-init.yaml",
            "/etc/network/interfaces.d/50-cloud-init",
            "/etc/initramfs-tools/modules"
        ]
    );
    assert!(r["changes"][4]["after"].is_null(), "the rule is removed");
    assert_eq!(loops_of(&raw), "");

    let fstab = guest_file(&raw, "/etc/fstab").unwrap();
    let active: Vec<&str> = fstab.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(active.iter().all(|l| !l.contains("/dev/")), "{fstab}");
    assert!(active[0].starts_with("UUID="), "{fstab}");
    assert!(fstab.contains("# /dev/xvdf"), "{fstab}");
    assert!(
        active
            .iter()
            .any(|l| l.contains("/var/log/x") && l.contains("nofail")),
        "{fstab}"
    );
    let orig = guest_file(&raw, "/etc/fstab.ebs2azure-orig").unwrap();
    assert!(orig.contains("/dev/nvme0n1p1"), "{orig}");
    let grub = guest_file(&raw, "/etc/default/grub").unwrap();
    assert!(
        grub.contains("console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300"),
        "{grub}"
    );
    assert!(!grub.contains("hvc0"), "{grub}");
    let cfg = guest_file(&raw, "/boot/grub/grub.cfg").unwrap();
    assert!(
        cfg.contains("ro console=tty0 console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\n"),
        "{cfg}"
    );
    let ci = guest_file(&raw, "/etc/cloud/cloud.cfg.d/90_dpkg.cfg").unwrap();
    assert!(ci.contains("datasource_list: [ Azure, None ]"), "{ci}");
    taken_out_of_use(&raw, "/etc/udev/rules.d/70-persistent-net.rules");
    let mods = guest_file(&raw, "/etc/initramfs-tools/modules").unwrap();
    assert!(mods.contains("hv_vmbus\nhv_storvsc\nhv_netvsc\n"), "{mods}");
    // The network: DHCP on Azure's NIC in netplan and in ifupdown; ifupdown's
    // original is hidden, since `source interfaces.d/*` would read it.
    let netplan = guest_file(&raw, "/etc/netplan/50-cloud-init.yaml").unwrap();
    assert!(
        netplan.contains("driver: hv_netvsc") && netplan.contains("dhcp4: true"),
        "{netplan}"
    );
    assert!(!netplan.contains("macaddress"), "{netplan}");
    let ifupdown = guest_file(&raw, "/etc/network/interfaces.d/50-cloud-init").unwrap();
    assert!(
        ifupdown.contains("iface eth0 inet dhcp") && !ifupdown.contains("ens5"),
        "{ifupdown}"
    );
    assert!(guest_file(
        &raw,
        "/etc/network/interfaces.d/.50-cloud-init.ebs2azure-orig"
    )
    .unwrap()
    .contains("ens5"));
    assert_eq!(
        r["changes"][6]["original"],
        "/etc/network/interfaces.d/.50-cloud-init.ebs2azure-orig"
    );
    // Debian's ESP holds a stub without kernel lines: left as it was.
    assert!(esp_file(&raw, "/EFI/debian/grub.cfg")
        .unwrap()
        .contains("configfile"));
    assert!(esp_file(&raw, "/EFI/debian/grub.cfg.ebs2azure-orig").is_none());

    // Idempotent: a second run changes nothing, and inspect has no fix-ups left.
    let again = ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert!(again.contains("nothing to change"), "{again}");
    let after = inspect(&raw);
    assert!(!has(&after, "fixup", ""), "fix-ups left: {after}");
    // And the filesystem checks clean by the oracle too.
    assert!(
        checks_clean(&raw, 3, &["e2fsck", "-f", "-n"]),
        "e2fsck found problems"
    );
}

#[test]
fn fixup_edits_what_a_bls_guest_boots_from() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &["--flavor", "rhel"]);
    let before = inspect(&raw);
    assert_eq!(before["os"]["id"], "rhel");
    assert_eq!(before["partitions"][2]["fs"]["kind"], "xfs");
    assert!(has(&before, "fixup", "grubenv"), "{before}");
    assert!(has(&before, "fixup", "ifcfg-ens5"), "{before}");
    assert!(
        has(&before, "fixup", "/boot/efi/EFI/redhat/grub.cfg"),
        "{before}"
    );
    ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert_eq!(loops_of(&raw), "");
    // grubenv keeps its fixed 1024 bytes; the BLS entry takes $kernelopts from it.
    let env = guest_file(&raw, "/boot/grub2/grubenv").unwrap();
    assert_eq!(env.len(), 1024);
    assert!(
        env.contains("kernelopts=root=UUID=x ro console=tty0 console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\n"),
        "{env}"
    );
    let bls = guest_file(
        &raw,
        "/boot/loader/entries/0123abcd-6.1.0-28-cloud-amd64.conf",
    )
    .unwrap();
    assert!(bls.contains("options $kernelopts"), "{bls}");
    let dracut = guest_file(&raw, "/etc/dracut.conf.d/90-ebs2azure-hyperv.conf").unwrap();
    assert!(
        dracut.contains("add_drivers+=\" hv_vmbus hv_storvsc hv_netvsc \""),
        "{dracut}"
    );
    // The network: the MAC-pinned ifcfg-ens5 is out of use (kept hidden, since
    // network-scripts reads every ifcfg-*), eth0 has DHCP, the NetworkManager
    // keyfile no longer names the MAC, cloud-init's EC2 network config is off.
    assert!(guest_file(&raw, "/etc/sysconfig/network-scripts/ifcfg-ens5").is_none());
    assert!(guest_file(
        &raw,
        "/etc/sysconfig/network-scripts/.ifcfg-ens5.ebs2azure-orig"
    )
    .unwrap()
    .contains("HWADDR"));
    let eth0 = guest_file(&raw, "/etc/sysconfig/network-scripts/ifcfg-eth0").unwrap();
    assert!(
        eth0.contains("DEVICE=eth0\nONBOOT=yes\nBOOTPROTO=dhcp"),
        "{eth0}"
    );
    let nm = guest_file(
        &raw,
        "/etc/NetworkManager/system-connections/cloud-init-ens5.nmconnection",
    )
    .unwrap();
    assert!(
        nm.contains("interface-name=eth0") && !nm.contains("mac-address"),
        "{nm}"
    );
    taken_out_of_use(&raw, "/etc/cloud/cloud.cfg.d/99-ec2-network.cfg");
    // The ESP's full grub.cfg (edited through the FAT library), original beside it.
    let efi = esp_file(&raw, "/EFI/redhat/grub.cfg").unwrap();
    assert!(
        efi.contains("linuxefi /vmlinuz-6.1.0-28-cloud-amd64 root=UUID=x ro console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300\n"),
        "{efi}"
    );
    assert!(esp_file(&raw, "/EFI/redhat/grub.cfg.ebs2azure-orig")
        .unwrap()
        .contains("console=hvc0"));

    let again = ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert!(again.contains("nothing to change"), "{again}");
    assert!(!has(&inspect(&raw), "fixup", ""));
    // The oracles: xfs_repair on the root, fsck.vfat on the ESP.
    assert!(
        checks_clean(&raw, 3, &["xfs_repair", "-n"]),
        "xfs_repair found problems"
    );
    assert!(
        checks_clean(&raw, 2, &["fsck.vfat", "-n"]),
        "fsck.vfat found problems"
    );
}

#[test]
fn data_disks_given_to_fixup_are_mounted_by_uuid() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &[]);
    // /dev/xvdf in the guest's fstab: an XFS filesystem on the whole disk.
    let (data, uuid) = xfs_data_disk(dir.path(), 320 << 20);

    let bad = ebs2azure(&["fixup", path_str(&raw), "--data-disk", "xvdf"]);
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(
        e.contains("is not DEVICE=IMAGE, e.g. /dev/xvdf=data.vhd"),
        "{e}"
    );
    // Without the disk the entry is commented out; given it later, it comes back by UUID.
    ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert!(guest_file(&raw, "/etc/fstab")
        .unwrap()
        .contains("# /dev/xvdf"));
    let disk = format!("/dev/sdf={}", path_str(&data));
    let r: serde_json::Value = serde_json::from_str(&ok(&ebs2azure(&[
        "fixup",
        path_str(&raw),
        "--data-disk",
        &disk,
        "--json",
    ])))
    .unwrap();
    assert_eq!(r["changes"][0]["path"], "/etc/fstab", "{r}");
    let fstab = guest_file(&raw, "/etc/fstab").unwrap();
    assert!(
        fstab.contains(&format!("UUID={uuid}\t/data\txfs\tdefaults,nofail")),
        "{fstab}"
    );
    assert!(!fstab.contains("/dev/xvdf"), "{fstab}");
    assert_eq!(loops_of(&raw), "");
}

#[test]
fn convert_fixup_writes_a_fixed_up_vhd_or_nothing() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &[]);
    let before = sha_file(&raw);
    let vhd = dir.path().join("os.vhd");
    let r = convert_json(&raw, &vhd, &["--fixup"]);
    assert_eq!(r["output_format"], "vhd-fixed");
    assert_eq!(r["fixup"]["changes"].as_array().unwrap().len(), 8, "{r}");
    assert_eq!(sha_file(&raw), before, "the input was changed");
    assert!(!dir.path().join("os.vhd.partial").exists());
    assert_eq!(loops_of(&vhd), "");
    assert_eq!(qemu_info(&vhd, "vpc")["format"], "vpc");
    assert!(guest_file(&vhd, "/etc/fstab").unwrap().contains("UUID="));
    let dry = ok(&ebs2azure(&["fixup", path_str(&vhd), "--dry-run"]));
    assert!(
        dry.contains("nothing to change") && !dry.contains("would change"),
        "{dry}"
    );
    // The text summary carries the report.
    let text = ok(&convert(&raw, &dir.path().join("os2.vhd"), &["--fixup"]));
    assert!(
        text.contains("fix-up report:") && text.contains("changed /etc/fstab"),
        "{text}"
    );

    // Not an OS disk: refused after the copy, and neither OUTPUT nor a partial stays.
    let data = dir.path().join("data.raw");
    sparse_file(&data, 64 << 20, &[(0, noise(4, 1 << 20))]);
    let out = dir.path().join("data.vhd");
    let e = fails(&convert(&data, &out, &["--fixup"]));
    assert!(
        e.contains("no Linux root filesystem") || e.contains("no partition"),
        "{e}"
    );
    assert!(e.contains("nothing was written"), "{e}");
    assert!(!out.exists() && !dir.path().join("data.vhd.partial").exists());
    // A dynamic VHD cannot be edited in place: refused before the copy.
    let e = fails(&convert(
        &raw,
        &dir.path().join("d.vhd"),
        &["--fixup", "--output-format", "vhd-dynamic"],
    ));
    assert!(e.contains("fixed VHD"), "{e}");
}

/// `ebs2azure migrate SNAP --os-type linux` reaching both emulators, to disk
/// `name` of resource group rg1, staging in `staging`.
fn migrate_os(
    ebs: &Emulator,
    az: &Azure,
    snap: &str,
    name: &str,
    staging: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "migrate",
        snap,
        "--os-type",
        "linux",
        "--location",
        "westeurope",
    ];
    args.extend(["--staging-dir", path_str(staging)]);
    args.extend(extra);
    az.with_ebs(ebs, name, &args)
}

#[test]
fn an_os_disk_migrates_staged_fixed_up_and_resumable() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let raw = guest(dir.path(), &["--size", "1G"]);
    let ebs = Emulator::start(&[]);
    let snap = ebs.seed(&raw, &[]);
    let az = Azure::start(&["--proxy", "1"]);

    // The machine's data disk (/dev/xvdf in its fstab) as a snapshot too:
    // only its superblock is read, to mount it by UUID.
    let (data, data_uuid) = xfs_data_disk(dir.path(), 320 << 20);
    let data_snap = ebs.seed(&data, &[]);
    let data_disk = format!("/dev/xvdf={data_snap}");

    // Staged, fixed up, uploaded; the staged copy is removed afterwards.
    let out = migrate_os(
        &ebs,
        &az,
        &snap,
        "web01-os",
        &staging,
        &["--json", "--data-disk", &data_disk],
    );
    no_azure_secrets(&out);
    no_secrets(&out);
    let r: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(r["upload"]["state"], "Unattached", "{r}");
    assert_eq!(r["fixup"]["changes"].as_array().unwrap().len(), 8, "{r}");
    assert_eq!(r["staged_kept"], false);
    assert_eq!(
        r["staged"],
        path_str(&staging.join(format!("ebs2azure-{snap}-web01-os.vhd")))
    );
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staged files left"
    );
    let disk = az.disk("web01-os").unwrap();
    assert_eq!(disk["osType"], "Linux");
    assert_eq!(
        disk["hyperVGeneration"], "V1",
        "from the guest's boot mode: {disk}"
    );
    // The disk's guest is fixed up, and its filesystem checks clean.
    let back = dir.path().join("back.vhd");
    az.download("web01-os", &back);
    let fstab = guest_file(&back, "/etc/fstab").unwrap();
    assert!(
        fstab.contains(&format!("UUID={data_uuid}\t/data\txfs\tdefaults,nofail")),
        "{fstab}"
    );
    assert!(checks_clean(&back, 3, &["e2fsck", "-f", "-n"]));
    assert_eq!(loops_of(&back), "");

    // An interrupted upload keeps the staged copy, and --resume sends that very
    // copy (kept here, to compare), not a new one.
    // (The proxy counts writes over the emulator's life: three more get through.)
    let so_far = az.stats()["put_page_requests"].as_u64().unwrap();
    az.faults(&format!(r#"{{"fail_writes_after": {}}}"#, so_far + 3));
    let out = migrate_os(
        &ebs,
        &az,
        &snap,
        "web02-os",
        &staging,
        &["--retry-budget", "2"],
    );
    no_azure_secrets(&out);
    let e = fails(&out);
    assert!(e.contains("--resume") && e.contains("stays at"), "{e}");
    let staged = staging.join(format!("ebs2azure-{snap}-web02-os.vhd"));
    assert!(staged.exists(), "{}", staged.display());
    az.faults(r#"{"fail_writes_after": 0}"#);
    let out = migrate_os(
        &ebs,
        &az,
        &snap,
        "web02-os",
        &staging,
        &["--resume", "--keep-staged", "--json"],
    );
    let r: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(r["upload"]["resumed"], true);
    assert!(
        r.get("staging").is_none(),
        "--resume must not stage again: {r}"
    );
    assert!(
        r["upload"]["upload"]["bytes_already_there"]
            .as_u64()
            .unwrap()
            > 0,
        "{r}"
    );
    az.download("web02-os", &back);
    assert_eq!(
        sha_file(&back),
        sha_file(&staged),
        "the disk is not the staged copy"
    );
    // Lost staged copy: --resume refuses rather than send other bytes.
    for f in std::fs::read_dir(&staging).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let e = fails(&migrate_os(
        &ebs,
        &az,
        &snap,
        "web02-os",
        &staging,
        &["--resume"],
    ));
    assert!(e.contains("--resume needs the fixed-up copy"), "{e}");

    // The text summary: staging, the fix-up report, the upload, the staged copy.
    let text = ok(&migrate_os(&ebs, &az, &snap, "web04-os", &staging, &[]));
    let staged_line = format!(
        "{snap} -> {}",
        path_str(&staging.join(format!("ebs2azure-{snap}-web04-os.vhd")))
    );
    for part in [
        staged_line.as_str(),
        "fix-up report (Debian GNU/Linux 12 (bookworm)):",
        "changed /etc/fstab: edited",
        "disk Unattached",
        "web04-os.vhd: removed",
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }

    // --no-fixup streams it unchanged: the disk is the snapshot.
    let out = migrate_os(&ebs, &az, &snap, "web03-os", &staging, &["--no-fixup"]);
    ok(&out);
    az.download("web03-os", &back);
    assert!(guest_file(&back, "/etc/fstab")
        .unwrap()
        .contains("/dev/nvme0n1p1"));

    // A guest that will not boot on Azure: nothing is created, nothing stays staged.
    let amzn_dir = dir.path().join("amzn");
    std::fs::create_dir(&amzn_dir).unwrap();
    let amzn = guest(&amzn_dir, &["--flavor", "amzn", "--size", "1G"]);
    let snap = ebs.seed(&amzn, &[]);
    let e = fails(&migrate_os(&ebs, &az, &snap, "al-os", &staging, &[]));
    assert!(
        e.contains("will not boot on Azure") && e.contains("--allow-blockers"),
        "{e}"
    );
    assert_eq!(az.state("al-os"), None);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

#[test]
fn a_plan_fixes_up_its_os_disks_and_mounts_their_data_disks_by_uuid() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let raw = guest(dir.path(), &["--size", "1G"]);
    let (data, data_uuid) = xfs_data_disk(dir.path(), 1 << 30);
    let ebs = Emulator::start(&[]);
    let az = Azure::start(&[]);
    let (os_snap, data_snap) = (ebs.seed(&raw, &[]), ebs.seed(&data, &[]));
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[defaults]\nresource_group = \"rg1\"\nlocation = \"westeurope\"\n\n[[machine]]\nname = \"web01\"\nos_type = \"auto\"\n  [[machine.disk]]\n  snapshot = \"{os_snap}\"\n  role = \"os\"\n  [[machine.disk]]\n  snapshot = \"{data_snap}\"\n  device = \"/dev/xvdf\"\n  lun = 0\n"
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut c = ebs.command(AWS_KEY_ID);
    az.env(&mut c).args([
        "migrate",
        "--plan",
        path_str(&plan),
        "--state-dir",
        path_str(&state),
    ]);
    c.args([
        "--staging-dir",
        path_str(&staging),
        "--endpoint-url",
        &ebs.endpoint,
    ]);
    let out = c.output().unwrap();
    no_azure_secrets(&out);
    ok(&out);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["complete"], true, "{r}");
    let os = &r["disks"][0];
    assert_eq!(os["name"], "web01-os");
    // One line per change (the 8 files' 13 changes).
    let fixups = os["fixups"].as_array().unwrap();
    assert_eq!(fixups.len(), 13, "{os}");
    assert!(
        fixups
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("/dev/xvdf for /data")),
        "{os}"
    );
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staged files left"
    );
    let disk = az.disk("web01-os").unwrap();
    assert_eq!(disk["osType"], "Linux");
    assert_eq!(disk["hyperVGeneration"], "V1", "{disk}");
    let back = dir.path().join("back.vhd");
    az.download("web01-os", &back);
    let fstab = guest_file(&back, "/etc/fstab").unwrap();
    assert!(
        fstab.contains(&format!("UUID={data_uuid}\t/data\txfs\tdefaults,nofail")),
        "{fstab}"
    );
    // The report's digest is the fixed-up disk's, as Azure holds it.
    let src = ebs2azure::source::ImageSource::open(&back, &Default::default()).unwrap();
    assert_eq!(
        os["digest"].as_str().unwrap(),
        ebs2azure::digest::of_source(&src, std::num::NonZeroUsize::new(4).unwrap()).unwrap()
    );
    assert_eq!(loops_of(&back), "");
}

/// A disk of the real Debian guest at `out`, from the root tree in `cache`.
fn debian_guest(cache: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--cache", path_str(cache)];
    args.extend_from_slice(extra);
    build_guest("gen-debootstrap-guest", out, &args)
}

/// The Debian root tree `scripts/gen-debootstrap-guest` keeps (scripts/test
/// fetches it before the tests; the tests themselves never download).
fn debootstrap_cache() -> Option<PathBuf> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guests/bookworm");
    cache.join("complete").exists().then_some(cache)
}

#[test]
fn a_real_debian_guest_from_debootstrap_is_fixed_up() {
    need_loop_devices!();
    let Some(cache) = debootstrap_cache() else {
        eprintln!("skipped: no Debian root tree; run scripts/gen-debootstrap-guest --fetch-only (scripts/test does)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, extra: &[&str]| debian_guest(&cache, &dir.path().join(name), extra);
    let raw = make("debian.raw", &[]);
    // Debian's cloud layout (root 1, BIOS boot 14, ESP 15), its real kernel
    // and the zstd initramfs Debian built, read here; while the host mounts
    // and unmounts all the time, which makes the kernel ask lookups through
    // a guest's relative symlink (/etc/os-release -> ../usr/lib/os-release)
    // to retry.
    let r = {
        let churn_dir = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            let target = std::ffi::CString::new(path_str(churn_dir.path())).unwrap();
            std::thread::spawn(move || {
                let (src, fs) = (c"none", c"tmpfs");
                for _ in 0..200_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    // SAFETY: valid C strings; results are not needed.
                    unsafe {
                        libc::mount(
                            src.as_ptr(),
                            target.as_ptr(),
                            fs.as_ptr(),
                            0,
                            std::ptr::null(),
                        );
                        libc::umount(target.as_ptr());
                    }
                }
            })
        };
        let mut r = serde_json::Value::Null;
        for _ in 0..3 {
            r = inspect(&raw);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        r
    };
    assert_eq!(r["os"]["id"], "debian", "{r}");
    assert_eq!(r["root_partition"], 1);
    let k = &r["kernels"][0];
    assert!(
        k["version"].as_str().unwrap().ends_with("-cloud-amd64"),
        "{k}"
    );
    assert_eq!(k["modules"].as_array().unwrap().len(), 3, "{k}");
    assert_eq!(k["in_initramfs"].as_array().unwrap().len(), 3, "{k}");
    assert!(!has(&r, "blocker", ""), "{r}");

    let fixed: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["fixup", path_str(&raw), "--json"]))).unwrap();
    assert_eq!(fixed["changes"].as_array().unwrap().len(), 6, "{fixed}");
    let parts = ebs2azure::fixup::layout::partitions(&raw).unwrap();
    let uuid = |n: u32| {
        parts
            .iter()
            .find(|p| p.number == n)
            .unwrap()
            .fs
            .uuid
            .clone()
            .unwrap()
    };
    let root = parts.iter().find(|p| p.number == 1).unwrap();
    let m = ebs2azure::fixup::mount::Mounted::read_only(&raw, root.start, root.size, root.fs.kind)
        .unwrap();
    let fstab = {
        use ebs2azure::fixup::guest::GuestFs;
        m.read_text("/etc/fstab").unwrap().unwrap()
    };
    drop(m);
    assert!(fstab.contains(&format!("UUID={}\t/\t", uuid(1))), "{fstab}");
    assert!(
        fstab.contains(&format!("UUID={}\t/boot/efi\t", uuid(15))),
        "{fstab}"
    );
    assert!(fstab.contains("# /dev/xvdf"), "{fstab}");
    assert!(checks_clean(&raw, 1, &["e2fsck", "-f", "-n"]));
    assert!(ok(&ebs2azure(&["fixup", path_str(&raw)])).contains("nothing to change"));
    assert!(!has(&inspect(&raw), "fixup", ""));

    // Rebuilt with MODULES=list, Debian's initramfs has no Hyper-V drivers: a blocker.
    let list = make("list.raw", &["--modules-list"]);
    let r = inspect(&list);
    assert!(has(&r, "blocker", "lacks hv_vmbus and hv_storvsc"), "{r}");
    assert_eq!(
        r["kernels"][0]["in_initramfs"].as_array().unwrap().len(),
        0,
        "{r}"
    );
}

#[test]
fn a_root_on_a_linear_lvm_volume_is_found_and_fixed_up() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &["--lvm"]);
    let r = inspect(&raw);
    assert_eq!(r["root_partition"], 1001, "{r}");
    let lv = r["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == 1001)
        .unwrap()
        .clone();
    assert_eq!(lv["kind"], "LVM volume ebs2azure_vg/root");
    assert_eq!(lv["fs"]["kind"], "ext4");
    assert!(has(&r, "advice", "ebs2azure_vg/home"), "{r}");

    // The oracle: lvm2's own tools say where the volume's extents are.
    let pv = &r["partitions"][2];
    let (start, size) = (pv["start"].as_u64().unwrap(), pv["size"].as_u64().unwrap());
    let dev = tool_ok(
        "losetup",
        &[
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &start.to_string(),
            "--sizelimit",
            &size.to_string(),
            path_str(&raw),
        ],
    );
    let dev = dev.trim();
    let cfg = "devices { obtain_device_list_from_udev=0 } backup { backup=0 archive=0 }";
    let lvm = |cmd: &str, args: &[&str]| {
        let mut a = vec![
            "--config",
            cfg,
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
        ];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&tool(cmd, &a).stdout)
            .trim()
            .to_owned()
    };
    let pe_start: u64 = lvm("pvs", &["-o", "pe_start", dev]).parse().unwrap();
    let extent: u64 = lvm("vgs", &["-o", "vg_extent_size", "ebs2azure_vg"])
        .parse()
        .unwrap();
    let ranges = lvm("lvs", &["-o", "seg_pe_ranges", "ebs2azure_vg/root"]);
    let _ = tool("losetup", &["-d", dev]);
    let (first, last) = ranges.rsplit(':').next().unwrap().split_once('-').unwrap();
    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
    assert_eq!(
        lv["start"].as_u64().unwrap(),
        start + pe_start + first * extent,
        "{ranges}"
    );
    assert_eq!(
        lv["size"].as_u64().unwrap(),
        (last - first + 1) * extent,
        "{ranges}"
    );

    // fixup edits the guest on the volume; /dev/mapper names are stable on Azure and stay.
    ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert_eq!(loops_of(&raw), "");
    let p = ebs2azure::fixup::layout::partitions(&raw).unwrap();
    let root = p.iter().find(|p| p.number == 1001).unwrap();
    let fstab = {
        use ebs2azure::fixup::guest::GuestFs;
        let m =
            ebs2azure::fixup::mount::Mounted::read_only(&raw, root.start, root.size, root.fs.kind)
                .unwrap();
        m.read_text("/etc/fstab").unwrap().unwrap()
    };
    assert!(fstab.contains("/dev/mapper/ebs2azure_vg-root"), "{fstab}");
    assert!(checks_clean(&raw, 1001, &["e2fsck", "-f", "-n"]));
    assert!(ok(&ebs2azure(&["fixup", path_str(&raw)])).contains("nothing to change"));
}

#[test]
fn a_btrfs_root_is_fixed_up_and_checks_clean() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &["--btrfs"]);
    let r = inspect(&raw);
    assert_eq!(r["partitions"][2]["fs"]["kind"], "btrfs", "{r}");
    assert_eq!(r["root_partition"], 3);
    let fixed: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["fixup", path_str(&raw), "--json"]))).unwrap();
    assert_eq!(fixed["changes"].as_array().unwrap().len(), 8, "{fixed}");
    assert_eq!(loops_of(&raw), "");
    assert!(guest_file(&raw, "/etc/fstab").unwrap().contains("UUID="));
    assert!(checks_clean(&raw, 3, &["btrfs", "check", "--readonly"]));
    assert!(ok(&ebs2azure(&["fixup", path_str(&raw)])).contains("nothing to change"));
    assert!(!has(&inspect(&raw), "fixup", ""));
}

/// What the booted guest runs as init: mount everything fstab lists, say
/// how that went and what is mounted where, then reset (qemu exits).
const BOOT_CHECK: &str = "#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -o remount,rw /
mount -a
echo \"EBS2AZURE-BOOT mount-a=$?\"
sed 's/^/EBS2AZURE-MOUNT /' /proc/mounts
echo b > /proc/sysrq-trigger
";

/// Boots `disk` (and `more` disks) in qemu (software emulation) with the
/// guest's own kernel and initramfs, root by UUID, and BOOT_CHECK as init;
/// returns the serial console's output. Bounded to three minutes.
fn boot(disk: &Path, more: &[&Path], dir: &Path) -> String {
    use ebs2azure::fixup::guest::GuestFs;
    let root = ebs2azure::fixup::layout::partitions(disk)
        .unwrap()
        .into_iter()
        .find(|p| p.number == 1)
        .unwrap();
    let m = ebs2azure::fixup::mount::Mounted::read_write(disk, root.start, root.size, root.fs.kind)
        .unwrap();
    m.write("/ebs2azure-boot-check", BOOT_CHECK.as_bytes(), 0o755)
        .unwrap();
    let boot_files = m.list("/boot").unwrap();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd"));
    for (prefix, out) in [("vmlinuz-", &kernel), ("initrd.img-", &initrd)] {
        let name = boot_files.iter().find(|n| n.starts_with(prefix)).unwrap();
        std::fs::write(out, m.read(&format!("/boot/{name}")).unwrap().unwrap()).unwrap();
    }
    m.finish().unwrap();
    let append = format!(
        "root=UUID={} ro console=ttyS0 init=/ebs2azure-boot-check panic=-1",
        root.fs.uuid.unwrap()
    );
    let log = dir.join("console.log");
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
    ])
    .args(["-serial", &format!("file:{}", path_str(&log))])
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", &append]);
    for d in std::iter::once(&disk).chain(more) {
        c.args([
            "-drive",
            &format!("file={},format=raw,if=virtio", path_str(d)),
        ]);
    }
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned()
}

#[test]
fn a_fixed_up_debian_guest_boots_and_mounts_its_fstab() {
    need_loop_devices!();
    let Some(cache) = debootstrap_cache() else {
        eprintln!("skipped: no Debian root tree; run scripts/gen-debootstrap-guest --fetch-only (scripts/test does)");
        return;
    };
    if tool("sh", &["-c", "command -v qemu-system-x86_64"])
        .stdout
        .is_empty()
    {
        eprintln!("skipped: qemu-system-x86_64 is missing (apt-get install qemu-system-x86; scripts/test does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| debian_guest(&cache, &dir.path().join(name), &[]);
    // The machine's data disk, /dev/xvdf in its fstab: XFS on the whole disk.
    let (data, _) = xfs_data_disk(dir.path(), 320 << 20);

    // As it came from EC2: the kernel finds its root by UUID, but fstab's
    // AWS device names do not exist on this (virtio) machine.
    let unfixed = make("unfixed.raw");
    let console = boot(&unfixed, &[&data], dir.path());
    assert!(
        console.contains("EBS2AZURE-MOUNT /dev/vda1 / ext4"),
        "{console}"
    );
    assert!(!console.contains("EBS2AZURE-BOOT mount-a=0"), "{console}");
    assert!(
        console.contains("/dev/nvme0n1p15"),
        "mount names the missing device: {console}"
    );

    // Fixed up (with the data disk known): every fstab entry mounts, by UUID.
    let fixed = make("fixed.raw");
    let disk = format!("/dev/xvdf={}", path_str(&data));
    ok(&ebs2azure(&[
        "fixup",
        path_str(&fixed),
        "--data-disk",
        &disk,
    ]));
    let console = boot(&fixed, &[&data], dir.path());
    assert!(console.contains("EBS2AZURE-BOOT mount-a=0"), "{console}");
    assert!(
        console.contains("EBS2AZURE-MOUNT /dev/vda1 / ext4"),
        "{console}"
    );
    assert!(
        console.contains("EBS2AZURE-MOUNT /dev/vda15 /boot/efi vfat"),
        "{console}"
    );
    assert!(
        console.contains("EBS2AZURE-MOUNT /dev/vdb /data xfs"),
        "{console}"
    );
    assert_eq!(loops_of(&fixed), "");
}

#[test]
fn a_pre_seeded_os_disk_is_fixed_up_again_after_a_delta_and_only_changes_are_sent() {
    need_loop_devices!();
    use ebs2azure::fixup::guest::GuestFs;
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let raw = guest(dir.path(), &["--size", "1G"]);
    // Data the window must not send again: 24 MiB of an application's files.
    {
        let p = root_partition(&raw);
        let m =
            ebs2azure::fixup::mount::Mounted::read_write(&raw, p.start, p.size, p.fs.kind).unwrap();
        m.write("/etc/app.bin", &noise(77, 24 << 20), 0o644)
            .unwrap();
        m.finish().unwrap();
    }
    let ebs = Emulator::start(&["--snapshot-seconds", "0.2", "--instance-seconds", "0.2"]);
    let az = Azure::start(&["--proxy", "1"]);
    let (instance, vols) = ebs.instance("web01", &[("/dev/xvda", &raw)]);
    let first = ebs.snapshot_instance(&instance);
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[defaults]\nresource_group = \"rg1\"\nlocation = \"westeurope\"\n\n[[machine]]\nname = \"web01\"\ninstance_id = \"{instance}\"\nos_type = \"auto\"\n  [[machine.disk]]\n  snapshot = \"{}\"\n  role = \"os\"\n",
            first[&vols[0]]
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = ebs.command(AWS_KEY_ID);
        az.env(&mut c).args(args).args([
            "--plan",
            path_str(&plan),
            "--endpoint-url",
            &ebs.endpoint,
        ]);
        let out = c.output().unwrap();
        no_azure_secrets(&out);
        out
    };
    ok(&run(&[
        "migrate",
        "--pre-seed",
        "--staging-dir",
        path_str(&staging),
    ]));
    assert_eq!(az.state("web01-os").as_deref(), Some("ActiveUpload"));
    // Only the copy of the snapshot before its fix-ups stays, for the syncs.
    let kept: Vec<String> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.len() == 1 && kept[0].ends_with(".base.vhd"),
        "{kept:?}"
    );
    let seeded = az.stats()["put_page_bytes"].as_u64().unwrap();
    az.reset_stats();

    // The source rewrites /etc/fstab (a file the fix-ups edited): the delta
    // carries its un-fixed version.
    {
        let p = root_partition(&raw);
        let m =
            ebs2azure::fixup::mount::Mounted::read_write(&raw, p.start, p.size, p.fs.kind).unwrap();
        let fstab = m.read_text("/etc/fstab").unwrap().unwrap();
        m.write(
            "/etc/fstab",
            format!("{fstab}# changed on the source\n").as_bytes(),
            0o644,
        )
        .unwrap();
        m.finish().unwrap();
    }
    assert_eq!(loops_of(&raw), "");
    let out = run(&["cutover", "--stop-instances"]);
    let text = ok(&out);
    assert!(text.contains("Window timeline"), "{text}");
    let sent = az.stats()["put_page_bytes"].as_u64().unwrap();
    assert!(
        seeded > 24 << 20 && sent * 4 < seeded,
        "the window sent {sent} bytes of a disk seeded with {seeded}"
    );
    assert_eq!(az.state("web01-os").as_deref(), Some("Unattached"));
    let back = dir.path().join("back.vhd");
    az.download("web01-os", &back);
    let fstab = guest_file(&back, "/etc/fstab").unwrap();
    assert!(fstab.contains("# changed on the source"), "{fstab}");
    // The fix-ups hold: nothing is left to fix, and the file system is clean.
    let r = inspect(&back);
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["class"] != "fixup"),
        "{r}"
    );
    assert!(checks_clean(&back, 3, &["e2fsck", "-fn"]));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plan.state/report.json")).unwrap())
            .unwrap();
    let os = &state["disks"][0];
    assert!(!os["fixups"].as_array().unwrap().is_empty(), "{os}");
    let src = ebs2azure::source::ImageSource::open(&back, &Default::default()).unwrap();
    assert_eq!(
        os["digest"].as_str().unwrap(),
        ebs2azure::digest::of_source(&src, std::num::NonZeroUsize::new(4).unwrap()).unwrap()
    );
    // The scratch copy that was fixed up is gone; the base stays for later syncs.
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1);
    assert_eq!(loops_of(&back), "");
}

/// The findings of an `inspect --json` report as `assess` words them.
fn findings_of(report: &serde_json::Value, class: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["class"] == class)
        .map(|f| {
            format!(
                "{}: {}",
                f["subject"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn assess_reads_a_guest_from_its_snapshot_as_inspect_reads_the_copy() {
    need_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    // A real Debian guest when the root tree is here, else the generated one;
    // and a guest whose initramfs lacks the Hyper-V drivers (a blocker).
    let real = debootstrap_cache().is_some();
    let debian = match debootstrap_cache() {
        Some(cache) => debian_guest(&cache, &dir.path().join("debian.raw"), &[]),
        None => build_guest("gen-linux-guest", &dir.path().join("debian.raw"), &[]),
    };
    let blocked_guest = build_guest(
        "gen-linux-guest",
        &dir.path().join("nohv.raw"),
        &["--flavor", "bare-initramfs"],
    );
    let ebs = Emulator::start(&[]);
    let (s_deb, s_blk) = (ebs.seed(&debian, &[]), ebs.seed(&blocked_guest, &[]));
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[defaults]\nsubscription = \"00000000-0000-0000-0000-000000000001\"\nresource_group = \"rg1\"\nlocation = \"westeurope\"\n\n\
             [[machine]]\nname = \"deb\"\ninstance_type = \"m5.large\"\n  [[machine.disk]]\n  role = \"os\"\n  snapshot = \"{s_deb}\"\n\n\
             [[machine]]\nname = \"nohv\"\nvm_size = \"Standard_D2s_v5\"\n  [[machine.disk]]\n  role = \"os\"\n  snapshot = \"{s_blk}\"\n"
        ),
    )
    .unwrap();
    let out = ebs
        .command(AWS_KEY_ID)
        .args([
            "assess",
            "--plan",
            path_str(&plan),
            "--json",
            "--endpoint-url",
            &ebs.endpoint,
        ])
        .output()
        .unwrap();
    no_secrets(&out);
    // One machine is blocked: exit 3, one sentence.
    assert!(
        blocked(&out).contains("1 of 2 machines are not ready"),
        "{out:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let machines = v["machines"].as_array().unwrap();
    for (name, image, readiness) in [
        ("deb", &debian, "ready_with_fixups"),
        ("nohv", &blocked_guest, "blocked"),
    ] {
        let a = machines.iter().find(|m| m["machine"] == name).unwrap();
        assert_eq!(a["readiness"], readiness, "{a}");
        // The same findings as inspect of the whole copied image.
        let copy = inspect(image);
        for (class, key) in [
            ("blocker", "blockers"),
            ("fixup", "fixups"),
            ("advice", "advice"),
        ] {
            let from_snapshot: Vec<String> = a[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(from_snapshot, findings_of(&copy, class), "{name} {class}");
        }
        assert_eq!(a["generation"], copy["hyper_v_generation"], "{name}");
        // Only what the inspection touched was read: a small part of the data.
        let r = &a["reads"];
        let (read, written) = (
            r["bytes_read"].as_u64().unwrap(),
            r["written_blocks"].as_u64().unwrap() * r["block_size"].as_u64().unwrap(),
        );
        eprintln!(
            "{name}: read {read} bytes of {written} written ({:.2}%)",
            100.0 * read as f64 / written as f64
        );
        assert!(read > 0 && read <= written, "{name}: {r}");
        if name == "deb" && real {
            // A real system's root: the inspection reads a small part of it.
            assert!(read * 10 < written, "{name}: {r}");
        }
    }
    let deb = machines.iter().find(|m| m["machine"] == "deb").unwrap();
    assert_eq!(
        (deb["vm_size"].as_str(), deb["vm_size_proposed"].as_bool()),
        (Some("Standard_D2s_v5"), Some(true))
    );
    // Nothing left mounted or attached.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains("ebs2azure:"), "{mounts}");
    let loops = String::from_utf8_lossy(&tool("losetup", &["-a"]).stdout).into_owned();
    assert!(!loops.contains("ebs2azure-snapshot-"), "{loops}");
}
