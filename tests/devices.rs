//! End-to-end runs that need root and loop devices: a block device as input,
//! and a 32 TiB fixed VHD (Azure's largest) on an XFS scratch file system.
//! Without root or loop devices they print why they did not run.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Detaches a loop device or unmounts a scratch file system, even on panic.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cmd in self.0.iter().rev() {
            let mut parts = cmd.split(' ');
            if let Some(prog) = parts.next() {
                let _ = Command::new(prog).args(parts).status();
            }
        }
    }
}

fn attach(image: &Path) -> Option<String> {
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only", image.to_str().unwrap()])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_block_device_converts_like_its_image() {
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("SKIPPED a_block_device_converts_like_its_image: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    sparse_file(
        &raw,
        48 << 20,
        &[(1 << 20, noise(1, 300_000)), (40 << 20, noise(2, 4096))],
    );
    let Some(dev) = attach(&raw) else {
        eprintln!("SKIPPED a_block_device_converts_like_its_image: losetup could not attach a loop device");
        return;
    };
    let _guard = Cleanup(vec![format!("losetup -d {dev}")]);
    let vhd = dir.path().join("dev.vhd");
    let j: serde_json::Value = serde_json::from_str(&ok(&ebs2azure(&[
        "convert",
        &dev,
        "--out",
        vhd.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(j["virtual_size"], 48u64 << 20);
    assert!(qemu_same(&raw, "raw", &vhd, "vpc"));
    // A device shows no holes: every block is read, zeros are still not written.
    assert!(j["bytes_written"].as_u64().unwrap() <= 300_000 + 2 * 4096 + 4096);
    assert!(allocated(&vhd) < 1 << 20);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["info", &dev, "--json"]))).unwrap();
    assert_eq!(info["virtual_size"], 48u64 << 20);
    assert_eq!(info["format"], "raw");
    // A block device's own metadata says 0 bytes; its size is the device's.
    assert_eq!(info["file_size"], 48u64 << 20);
}

#[test]
fn a_32_tib_fixed_vhd_is_written_and_read() {
    if let Some(why) = cannot_use_loop_devices() {
        eprintln!("SKIPPED a_32_tib_fixed_vhd_is_written_and_read: {why}");
        return;
    }
    if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        panic!("mkfs.xfs is needed by this test; .ci/run installs it (apt-get install xfsprogs)");
    }
    let dir = tempfile::tempdir().unwrap();
    let fs_image = dir.path().join("xfs.img");
    sparse_file(&fs_image, 1 << 30, &[]);
    tool_ok("mkfs.xfs", &["-q", fs_image.to_str().unwrap()]);
    let mnt: PathBuf = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-o",
            "loop",
            fs_image.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED a_32_tib_fixed_vhd_is_written_and_read: this kernel cannot mount XFS from a loop device");
        return;
    }
    let _guard = Cleanup(vec![format!("umount {}", mnt.display())]);

    let size = 32u64 << 40;
    let raw = mnt.join("big.raw");
    sparse_file(
        &raw,
        size,
        &[(0, noise(1, 4096)), (size - 8192, noise(2, 8192))],
    );
    let vhd = mnt.join("big.vhd");
    ok(&convert(&raw, &vhd, &[]));
    assert_eq!(fs::metadata(&vhd).unwrap().len(), size + 512);
    let info: serde_json::Value = info_json(&vhd);
    assert_eq!(info["virtual_size"], size);
    assert_eq!(info["footer"]["current_size"], size);
    assert_eq!(info["allocated_bytes"].as_u64().unwrap() % 4096, 0);
    assert!(info["allocated_bytes"].as_u64().unwrap() <= 1 << 20);
    assert_eq!(
        info["azure_upload_problems"].as_array().unwrap().len(),
        0,
        "{info}"
    );
    let mut tail = vec![0u8; 8192];
    fs::File::open(&vhd)
        .unwrap()
        .read_exact_at(&mut tail, size - 8192)
        .unwrap();
    assert_eq!(tail, noise(2, 8192));
    // One MiB more is past Azure's limit, and info says so.
    let bigger = mnt.join("bigger.raw");
    sparse_file(&bigger, size + (1 << 20), &[]);
    let out = ok(&ebs2azure(&["info", bigger.to_str().unwrap()]));
    assert!(out.contains("at most 32 TiB"), "{out}");
}
