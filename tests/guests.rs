//! `inspect` on generated Linux guests (scripts/gen-linux-guest): needs root
//! and loop devices to mount them; without them the tests print why they did
//! not run. Every test also checks that no loop device is left attached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Why this host cannot mount guests, if it cannot.
fn cannot_mount() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (kernel without loop devices)".into());
    }
    None
}

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
    if let Some(why) = cannot_mount() {
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
    if let Some(why) = cannot_mount() {
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
    if let Some(why) = cannot_mount() {
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
