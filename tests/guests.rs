//! `inspect` on generated Linux guests (scripts/gen-linux-guest): needs root
//! and loop devices to mount them; without them the tests print why they did
//! not run. Every test also checks that no loop device is left attached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn guest(dir: &Path, flags: &[&str]) -> PathBuf {
    let out = dir.join("guest.raw");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-linux-guest");
    let st = Command::new(script)
        .arg(&out)
        .args(flags)
        .output()
        .expect("run scripts/gen-linux-guest");
    assert!(
        st.status.success(),
        "gen-linux-guest failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// Loop devices backed by `image`.
fn loops_of(image: &Path) -> String {
    let out = tool("losetup", &["-j", path_str(image)]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect(image: &Path) -> serde_json::Value {
    let v = serde_json::from_str(&ok(&ebs2azure(&["inspect", path_str(image), "--json"]))).unwrap();
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
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("skipped: {why}");
        return;
    }
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
    assert!(has(&r, "advice", "ens5"), "{r}");
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
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("skipped: {why}");
        return;
    }
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
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("skipped: {why}");
        return;
    }
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
    let root_start = 35_651_584u64; // partition 3 (sgdisk's default alignment)
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    // s_log_block_size = 40: no kernel mounts that.
    std::os::unix::fs::FileExt::write_all_at(&f, &40u32.to_le_bytes(), root_start + 1024 + 24)
        .unwrap();
    drop(f);
    let e = fails(&ebs2azure(&["inspect", path_str(&raw)]));
    assert!(e.contains("mount failed"), "{e}");
    assert_eq!(loops_of(&raw), "");

    // Not a disk at all.
    let junk = dir.path().join("junk.raw");
    sparse_file(&junk, 1 << 20, &[(0, noise(3, 4096))]);
    let r = inspect(&junk);
    assert!(has(&r, "blocker", "no partition holds a Linux root"), "{r}");
}

/// Reads guest files of the root filesystem (partition 3) through the library's read-only mount.
fn guest_file(image: &Path, path: &str) -> Option<String> {
    let start = 35_651_584u64;
    let size = std::fs::metadata(image).unwrap().len() - start - 33 * 512;
    let m = ebs2azure::fixup::mount::Mounted::read_only(image, start, size, "ext4").unwrap();
    m.read_text(path).unwrap()
}

fn sha_file(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

#[test]
fn fixup_edits_once_keeps_originals_and_checks_clean() {
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("skipped: {why}");
        return;
    }
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
    assert_eq!(dry["changes"].as_array().unwrap().len(), 6, "{dry}");
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
    assert!(guest_file(&raw, "/etc/udev/rules.d/70-persistent-net.rules").is_none());
    assert!(guest_file(
        &raw,
        "/etc/udev/rules.d/70-persistent-net.rules.ebs2azure-orig"
    )
    .is_some());
    let mods = guest_file(&raw, "/etc/initramfs-tools/modules").unwrap();
    assert!(mods.contains("hv_vmbus\nhv_storvsc\nhv_netvsc\n"), "{mods}");

    // Idempotent: a second run changes nothing, and inspect has no fix-ups left.
    let again = ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert!(again.contains("nothing to change"), "{again}");
    let after = inspect(&raw);
    assert!(!has(&after, "fixup", ""), "fix-ups left: {after}");
    // And the filesystem checks clean by the oracle too.
    let start = 35_651_584u64;
    let loopdev = tool_ok(
        "losetup",
        &[
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &start.to_string(),
            path_str(&raw),
        ],
    );
    let fsck = tool("e2fsck", &["-f", "-n", loopdev.trim()]);
    let _ = tool("losetup", &["-d", loopdev.trim()]);
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn fixup_edits_what_a_bls_guest_boots_from() {
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = guest(dir.path(), &["--flavor", "rhel"]);
    let before = inspect(&raw);
    assert_eq!(before["os"]["id"], "rhel");
    assert!(has(&before, "fixup", "grubenv"), "{before}");
    assert!(has(&before, "advice", "HWADDR"), "{before}");
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
    let again = ok(&ebs2azure(&["fixup", path_str(&raw)]));
    assert!(again.contains("nothing to change"), "{again}");
    assert!(!has(&inspect(&raw), "fixup", ""));
}
