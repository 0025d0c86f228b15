//! End-to-end runs of `ebs2azure convert`, with qemu-img as the oracle.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 512 * 1024;

/// A 100,000,000-byte disk (not a whole MiB): random blocks, a block that is
/// allocated but zero, a lone 4 KiB page, and a short last block.
fn sample_raw(path: &Path) -> u64 {
    let size = 100_000_000u64;
    sparse_file(
        path,
        size,
        &[
            (0, noise(1, 4096)),
            (3 * BLOCK, noise(2, BLOCK as usize)),
            (7 * BLOCK, vec![0u8; BLOCK as usize]), // allocated, all zero
            (20 * BLOCK + 8192, noise(3, 4096)),
            (size - 1000, noise(4, 1000)),
        ],
    );
    size
}

#[test]
fn raw_to_fixed_vhd_is_identical_sparse_private_and_rounded() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let vhd = dir.path().join("disk.vhd");
    sample_raw(&raw);
    let run = convert(&raw, &vhd, &[]);
    let out = ok(&run);
    // The result on stdout, the note on stderr.
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("rounded up from 100000000 to 100663296") && !out.contains("rounded up"),
        "{err}"
    );
    assert!(out.contains("wrote"), "{out}");

    let info = qemu_info(&vhd, "vpc");
    assert_eq!(info["virtual-size"], 100_663_296u64, "{info}");
    assert!(qemu_same(&raw, "raw", &vhd, "vpc"), "contents differ");
    assert_eq!(fs::metadata(&vhd).unwrap().len(), 100_663_296 + 512);
    assert_eq!(
        fs::metadata(&vhd).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Data written: 4 KiB + 512 KiB + 4 KiB + the tail page, never the zero block.
    let data = 4096 + BLOCK + 4096 + 4096 + 256;
    assert!(
        allocated(&vhd) <= data + 64 * 1024,
        "output not sparse: {} bytes allocated",
        allocated(&vhd)
    );
    assert!(!dir.path().join("disk.vhd.partial").exists());
}

#[test]
fn json_summary_counts_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let vhd = dir.path().join("disk.vhd");
    sample_raw(&raw);
    let out = ok(&convert(&raw, &vhd, &["--json"]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["virtual_size"], 100_663_296u64);
    assert_eq!(j["rounded_up"], true);
    assert_eq!(j["output_format"], "vhd-fixed");
    assert_eq!(j["input_format"], "raw");
    let read = j["bytes_read"].as_u64().unwrap();
    let written = j["bytes_written"].as_u64().unwrap();
    let zero = j["bytes_zero"].as_u64().unwrap();
    assert_eq!(read, written + zero);
    // Written at 4 KiB grain: the last 1000 bytes span a full page and the
    // 256-byte page that ends the disk (100,000,000 = 24414 pages + 256 bytes).
    assert_eq!(written, 4096 + BLOCK + 4096 + 4096 + 256);
    assert!(
        zero >= BLOCK,
        "the allocated zero block was not skipped: {j}"
    );
}

#[test]
fn dynamic_vhd_round_trips_through_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let dynamic = dir.path().join("disk-dyn.vhd");
    let back = dir.path().join("back.raw");
    sample_raw(&raw);
    let (r, d, b) = (
        raw.to_str().unwrap(),
        dynamic.to_str().unwrap(),
        back.to_str().unwrap(),
    );
    ok(&ebs2azure(&[
        "convert",
        r,
        "--out",
        d,
        "--output-format",
        "vhd-dynamic",
    ]));
    // qemu-img detects it as VHD by itself and reads the same bytes.
    let info: serde_json::Value =
        serde_json::from_str(&tool_ok("qemu-img", &["info", "--output=json", d])).unwrap();
    assert_eq!(info["format"], "vpc");
    assert_eq!(info["virtual-size"], 100_663_296u64);
    assert_eq!(info["cluster-size"], 2 * MIB);
    assert!(qemu_same(&raw, "raw", &dynamic, "vpc"));
    // And back to raw with our own reader.
    ok(&ebs2azure(&[
        "convert",
        d,
        "--out",
        b,
        "--output-format",
        "raw",
    ]));
    assert!(qemu_same(&raw, "raw", &back, "raw"));
    assert_eq!(fs::metadata(&back).unwrap().len(), 100_663_296);
}

#[test]
fn reads_fixed_and_dynamic_vhds_made_by_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let size = 64 * MIB;
    sparse_file(
        &raw,
        size,
        &[
            (5 * MIB + 512, noise(9, 70_000)),
            (63 * MIB, noise(10, 4096)),
        ],
    );
    let r = raw.to_str().unwrap();
    for sub in ["fixed", "dynamic"] {
        let q = dir.path().join(format!("qemu-{sub}.vhd"));
        let q = q.to_str().unwrap();
        tool_ok(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                &format!("subformat={sub},force_size=on"),
                r,
                q,
            ],
        );
        let info: serde_json::Value =
            serde_json::from_str(&ok(&ebs2azure(&["info", q, "--json"]))).unwrap();
        assert_eq!(info["format"], format!("vhd-{sub}"));
        assert_eq!(info["virtual_size"], size);
        assert_eq!(info["footer"]["creator_application"], "qem2");
        assert_eq!(info["footer"]["checksum_valid"], true);

        let ours = dir.path().join(format!("ours-{sub}.vhd"));
        let o = ours.to_str().unwrap();
        ok(&ebs2azure(&["convert", q, "--out", o]));
        assert!(
            qemu_same(&raw, "raw", &ours, "vpc"),
            "{sub}: contents differ"
        );
        // Only the two data ranges were written.
        assert!(
            allocated(&ours) < 256 * 1024,
            "{sub}: {} bytes allocated",
            allocated(&ours)
        );
    }
}

#[test]
fn gpt_backup_is_moved_when_the_size_rounds_up() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("gpt.raw");
    let r = raw.to_str().unwrap();
    sparse_file(&raw, 50_000_000, &[]);
    tool_ok(
        "sgdisk",
        &[
            "-n",
            "1:2048:+10M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            r,
        ],
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .write_all_at(&noise(5, 100_000), 30 * MIB)
        .unwrap();
    let vhd = dir.path().join("gpt.vhd");
    let v = vhd.to_str().unwrap();
    let run = ebs2azure(&["convert", r, "--out", v]);
    ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("backup GPT was moved"), "{err}");

    // The disk as Azure will see it: a valid GPT disk per sgdisk, same partitions.
    let back = dir.path().join("back.raw");
    ok(&ebs2azure(&[
        "convert",
        v,
        "--out",
        back.to_str().unwrap(),
        "--output-format",
        "raw",
    ]));
    let verify = tool_ok("sgdisk", &["-v", back.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let before = tool_ok("sgdisk", &["-p", r]);
    let after = tool_ok("sgdisk", &["-p", back.to_str().unwrap()]);
    let parts = |s: &str| {
        s.lines()
            .skip_while(|l| !l.starts_with("Number"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(parts(&before), parts(&after));
    // Partition data is where it was.
    let mut a = vec![0u8; 100_000];
    fs::File::open(&back)
        .unwrap()
        .read_exact_at(&mut a, 30 * MIB)
        .unwrap();
    assert_eq!(a, noise(5, 100_000));

    let info: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["info", v, "--json"]))).unwrap();
    assert_eq!(info["partition_table"], "gpt");
    assert_eq!(info["partitions"][0]["kind"], "EFI system");
    assert_eq!(info["partitions"][1]["name"], "root");
    assert_eq!(info["problems"].as_array().unwrap().len(), 0, "{info}");
    assert_eq!(
        info["azure_upload_problems"].as_array().unwrap().len(),
        0,
        "{info}"
    );
}

#[test]
fn disks_past_qemus_2040_gib_limit_convert_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    let size = 10u64 << 40; // 10 TiB: past VHD's CHS range and qemu's 2040 GiB
    sparse_file(
        &raw,
        size,
        &[(0, noise(1, 4096)), (size - 4096, noise(2, 4096))],
    );
    let vhd = dir.path().join("big.vhd");
    let j: serde_json::Value = convert_json(&raw, &vhd, &[]);
    assert_eq!(j["bytes_written"], 8192);
    assert_eq!(fs::metadata(&vhd).unwrap().len(), size + 512);
    assert!(allocated(&vhd) < MIB);
    let info: serde_json::Value = info_json(&vhd);
    assert_eq!(info["virtual_size"], size);
    assert_eq!(info["footer"]["cylinders"], 65535);
    assert_eq!(info["footer"]["heads"], 16);
    assert_eq!(info["footer"]["sectors_per_track"], 255);
    assert_eq!(info["azure_upload_problems"].as_array().unwrap().len(), 0);
    let mut tail = vec![0u8; 4096];
    fs::File::open(&vhd)
        .unwrap()
        .read_exact_at(&mut tail, size - 4096)
        .unwrap();
    assert_eq!(tail, noise(2, 4096));
}

#[test]
fn a_missing_input_fails_in_one_sentence_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.vhd");
    let err = fails(&ebs2azure(&[
        "convert",
        "/nonexistent/disk.raw",
        "--out",
        out_path.to_str().unwrap(),
    ]));
    assert!(
        err.contains("/nonexistent/disk.raw") && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let vhd = dir.path().join("disk.vhd");
    sample_raw(&raw);
    fs::write(&vhd, b"precious").unwrap();
    let (r, v) = (raw.to_str().unwrap(), vhd.to_str().unwrap());
    let err = fails(&ebs2azure(&["convert", r, "--out", v]));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read(&vhd).unwrap(), b"precious");
    ok(&ebs2azure(&["convert", r, "--out", v, "--force"]));
    assert!(qemu_same(&raw, "raw", &vhd, "vpc"));
    let err = fails(&ebs2azure(&[
        "convert",
        r,
        "--out",
        r,
        "--force",
        "--output-format",
        "raw",
    ]));
    assert!(err.contains("is the input itself"), "{err}");
}

#[test]
fn a_corrupt_footer_is_refused_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let vhd = dir.path().join("disk.vhd");
    sample_raw(&raw);
    let (r, v) = (raw.to_str().unwrap(), vhd.to_str().unwrap());
    ok(&ebs2azure(&["convert", r, "--out", v]));
    let len = fs::metadata(&vhd).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&vhd).unwrap();
    f.write_all_at(&[0x42], len - 512 + 200).unwrap(); // a reserved byte
    let out = dir.path().join("again.vhd");
    let o = out.to_str().unwrap();
    let err = fails(&ebs2azure(&["convert", v, "--out", o]));
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!out.exists() && !dir.path().join("again.vhd.partial").exists());
    ok(&ebs2azure(&[
        "convert",
        v,
        "--out",
        o,
        "--accept-bad-checksum",
    ]));
    assert!(qemu_same(&raw, "raw", &out, "vpc"));
    let err = fails(&ebs2azure(&["info", v]));
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn a_truncated_dynamic_vhd_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let dynamic = dir.path().join("disk-dyn.vhd");
    sample_raw(&raw);
    let (r, d) = (raw.to_str().unwrap(), dynamic.to_str().unwrap());
    ok(&ebs2azure(&[
        "convert",
        r,
        "--out",
        d,
        "--output-format",
        "vhd-dynamic",
    ]));
    // Cut the file in the middle of its data but keep a footer at the end.
    let bytes = fs::read(&dynamic).unwrap();
    let footer = bytes[bytes.len() - 512..].to_vec();
    let mut cut = bytes[..bytes.len() / 2].to_vec();
    cut.truncate(cut.len() / 512 * 512);
    cut.extend_from_slice(&footer);
    fs::write(&dynamic, &cut).unwrap();
    let out = dir.path().join("out.vhd");
    let err = fails(&ebs2azure(&["convert", d, "--out", out.to_str().unwrap()]));
    assert!(err.contains("truncated"), "{err}");
    assert!(!out.exists() && !dir.path().join("out.vhd.partial").exists());
}

#[test]
fn odd_sized_and_tiny_inputs_convert() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.raw");
    sparse_file(&empty, 0, &[]);
    let err = fails(&ebs2azure(&[
        "convert",
        empty.to_str().unwrap(),
        "--out",
        "/tmp/never.vhd",
    ]));
    assert!(err.contains("empty"), "{err}");
    for (name, size) in [("one-byte", 1u64), ("odd", 777_777)] {
        let raw = dir.path().join(format!("{name}.raw"));
        let data = if size > 0 {
            vec![(0, noise(size, size.min(1000) as usize))]
        } else {
            vec![]
        };
        sparse_file(&raw, size, &data);
        let vhd = dir.path().join(format!("{name}.vhd"));
        let run = convert(&raw, &vhd, &[]);
        let out = ok(&run);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            err.contains("at least 20 MiB") && !out.contains("at least 20 MiB"),
            "{name}: tiny disks get Azure's minimum as a warning, on stderr: {err}"
        );
        assert!(qemu_same(&raw, "raw", &vhd, "vpc"), "{name}");
        let expect = diskformats::round_up_to_mib(size);
        assert_eq!(fs::metadata(&vhd).unwrap().len(), expect + 512, "{name}");
    }
}

#[test]
fn help_describes_every_command() {
    for cmd in [&["--help"][..], &["convert", "--help"], &["info", "--help"]] {
        let out = ok(&ebs2azure(cmd));
        assert!(out.contains("Usage:"), "{out}");
    }
    let out = ok(&ebs2azure(&["convert", "--help"]));
    for flag in [
        "--out",
        "--output-format",
        "--force",
        "--json",
        "--concurrency",
        "vhd-dynamic",
    ] {
        assert!(out.contains(flag), "{flag} missing from: {out}");
    }
}

#[test]
fn a_disk_whose_gpts_are_both_damaged_converts_as_is_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("bad-gpt.raw");
    let r = raw.to_str().unwrap();
    let size = 50_000_000u64;
    sparse_file(&raw, size, &[]);
    tool_ok("sgdisk", &["-n", "1:2048:+10M", "-t", "1:8300", r]);
    // Flip a byte in both partition entry arrays: no table's CRC matches any more.
    let f = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&[0xff], 1024 + 100).unwrap();
    f.write_all_at(&[0xff], size / 512 * 512 - 33 * 512 + 100)
        .unwrap();
    let vhd = dir.path().join("bad-gpt.vhd");
    let run = ebs2azure(&["convert", r, "--out", vhd.to_str().unwrap()]);
    ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("warning: partition table") && err.contains("damaged"),
        "{err}"
    );
    assert!(!err.contains("backup GPT was moved"), "{err}");
    assert!(
        qemu_same(&raw, "raw", &vhd, "vpc"),
        "a damaged table must be copied unchanged"
    );
    let info = ok(&ebs2azure(&["info", vhd.to_str().unwrap()]));
    assert!(info.contains("partition table: gpt (damaged)"), "{info}");
}

#[test]
fn the_command_line_conventions_hold() {
    // Each command shows its own flags: verify creates nothing.
    let help = ok(&ebs2azure(&["verify", "--help"]));
    for upload_only in [
        "--location",
        "--sku",
        "--os-type",
        "--zone",
        "--tag",
        "--resume",
        "--cleanup",
    ] {
        assert!(
            !help.contains(upload_only),
            "{upload_only} in verify --help"
        );
    }
    assert!(
        help.contains("--disk-name") && help.contains("--digest"),
        "{help}"
    );
    // Completions and the manual page come from the same definitions.
    let bash = ok(&ebs2azure(&["completions", "bash"]));
    assert!(
        bash.contains("_ebs2azure") && bash.contains("migrate"),
        "{bash}"
    );
    let man = ok(&ebs2azure(&["man"]));
    assert!(man.contains(".TH ebs2azure 1"), "{man}");
    // Usage mistakes: exit 2 with a sentence, nothing on stdout.
    for (args, words) in [
        (&["convert", "a.raw", "b.vhd"][..], "--out b.vhd"),
        (
            &["convert", "a.raw", "--out", "b.vhd", "--concurrency", "0"],
            "at least 1",
        ),
        (
            &[
                "convert",
                "a.raw",
                "--out",
                "b.vhd",
                "--data-disk",
                "/dev/xvdf=d.raw",
            ],
            "add --fixup",
        ),
        (
            &["migrate", "--plan", "p.toml", "--disks-at-once", "0"],
            "at least 1",
        ),
    ] {
        let out = ebs2azure(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{args:?}: {err}");
    }
    // A failure: exit 1, one line on stderr.
    let e = fails(&ebs2azure(&["info", "/nonexistent/disk.raw"]));
    assert!(e.contains("/nonexistent/disk.raw"), "{e}");
    // info --json never prints a number JSON cannot carry exactly.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("d.raw");
    sparse_file(&raw, 30 << 20, &[]);
    let vhd = dir.path().join("d.vhd");
    ok(&convert(&raw, &vhd, &[]));
    let text = ok(&ebs2azure(&["info", path_str(&vhd), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["footer"]["data_offset"], "0xffffffffffffffff");
    assert!(!text.contains("18446744073709551615"), "{text}");
    // -q: the result only; the rounding note is not said.
    let odd = dir.path().join("odd.raw");
    sparse_file(&odd, 30_000_000, &[]);
    let quiet = ebs2azure(&[
        "convert",
        path_str(&odd),
        "--out",
        path_str(&dir.path().join("q.vhd")),
        "-q",
    ]);
    ok(&quiet);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let loud = ebs2azure(&[
        "convert",
        path_str(&odd),
        "--out",
        path_str(&dir.path().join("l.vhd")),
    ]);
    assert!(String::from_utf8_lossy(&loud.stderr).contains("rounded up"));
}

#[test]
fn one_snapshot_id_rule_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.vhd");
    // A near miss is a sentence with the rule, whatever the command.
    for args in [
        vec!["convert", "snap-0123456789ABCDEFG", "--out", path_str(&out)],
        vec!["info", "snap-123"],
        vec![
            "migrate",
            "small.raw",
            "-g",
            "rg",
            "--disk-name",
            "d",
            "--subscription",
            "00000000-0000-0000-0000-000000000001",
        ],
    ] {
        let e = fails(&ebs2azure(&args));
        assert!(e.contains("8 or 17 lower-case hex digits"), "{args:?}: {e}");
    }
    assert!(!out.exists());
    // A file named like a near miss is a file, and ./snap-... always is.
    let odd = dir.path().join("snap-123");
    sparse_file(&odd, 30 << 20, &[]);
    let text = ok(&ebs2azure(&["info", path_str(&odd)]));
    assert!(text.contains("format:          raw"), "{text}");
}

#[test]
fn json_carries_its_schema_version_and_errors_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("d.raw");
    sparse_file(&raw, 30 << 20, &[]);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&ebs2azure(&["info", path_str(&raw), "--json"]))).unwrap();
    assert_eq!(v["schema_version"], 1, "{v}");
    let out = ebs2azure(&["info", "/nonexistent/d.raw", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["schema_version"], 1);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/d.raw"),
        "{err}"
    );
}

#[test]
fn a_fifo_given_as_the_input_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("input");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out_vhd = dir.path().join("out.vhd");
    let f = path_str(&fifo);
    for args in [
        vec!["info", f],
        vec!["convert", f, "--out", path_str(&out_vhd)],
        vec!["inspect", f],
    ] {
        let out = bounded(&args);
        let e = fails(&out);
        assert!(
            e.contains("not a regular file or a block device"),
            "{args:?}: {e}"
        );
    }
    assert!(!out_vhd.exists(), "nothing is written");
}
