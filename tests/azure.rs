//! End-to-end runs of `upload`, `migrate` and `verify` against the ARM disks
//! emulator and Azurite on loopback. What reached the blob is read back with
//! the storage SDK (through the emulator's admin calls), not with our client.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const MIB: u64 = 1 << 20;

/// A 40 MiB raw disk: random data in a few places, an explicit run of zeros
/// (allocated but zero: must not be sent), one lone 4 KiB page, and the last
/// MiB; then converted to a fixed VHD. Returns (raw, vhd).
fn disk(dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    sparse_file(
        &raw,
        40 * MIB,
        &[
            (0, noise(1, 3 * MIB as usize)),
            (5 * MIB, vec![0u8; 2 * MIB as usize]),
            (9 * MIB + 8192, noise(2, 4096)),
            (13 * MIB - 100, noise(3, 7 * MIB as usize)),
            (39 * MIB, noise(4, MIB as usize)),
        ],
    );
    let vhd = dir.join("disk.vhd");
    ok(&convert(&raw, &vhd, &[]));
    (raw, vhd)
}

/// The non-zero 4 KiB pages of `path`'s first `size` bytes, merged.
fn nonzero_pages(path: &Path, size: u64) -> Vec<std::ops::Range<u64>> {
    let data = std::fs::read(path).unwrap();
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for (i, page) in data[..size as usize].chunks(4096).enumerate() {
        if page.iter().any(|&b| b != 0) {
            let start = i as u64 * 4096;
            match out.last_mut() {
                Some(l) if l.end == start => l.end = start + 4096,
                _ => out.push(start..start + 4096),
            }
        }
    }
    out
}

fn upload(az: &Azure, vhd: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "upload",
        path_str(vhd),
        "-g",
        "rg1",
        "--disk-name",
        name,
        "--location",
        "westeurope",
        "--json",
    ];
    args.extend_from_slice(extra);
    az.run(&args)
}

/// `upload FILE` to disk d with a given ARM endpoint and token, in a clean environment.
fn upload_to(endpoint: &str, token: &str, file: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ebs2azure"))
        .env_clear()
        .env("EBS2AZURE_ARM_ENDPOINT", endpoint)
        .env("EBS2AZURE_ARM_TOKEN", token)
        .args(["upload", path_str(file), "--subscription", SUB, "-g", "rg"])
        .args(["--disk-name", "d", "--location", "westeurope"])
        .output()
        .unwrap()
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn an_upload_reads_back_identical_with_only_non_zero_pages_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let size = 40 * MIB;
    let az = Azure::start(&[]);
    let out = upload(
        &az,
        &vhd,
        "web01-os",
        &[
            "--os-type",
            "linux",
            "--hyper-v-generation",
            "V2",
            "--tag",
            "app=web",
        ],
    );
    no_azure_secrets(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["state"], "Unattached");
    assert_eq!(report["upload_size_bytes"], size + 512);
    assert!(report["credential"]
        .as_str()
        .unwrap()
        .contains("EBS2AZURE_ARM_TOKEN"));
    assert_eq!(az.state("web01-os").as_deref(), Some("Unattached"));

    // Byte for byte, the blob is the VHD file (data and footer).
    let back = dir.path().join("back.vhd");
    az.download("web01-os", &back);
    assert!(same_bytes(&back, &vhd), "the disk differs from the VHD");

    // Only non-zero pages (and the footer) were written, and nothing more was sent.
    let pages = nonzero_pages(&vhd, size);
    let nonzero: u64 = pages.iter().map(|r| r.end - r.start).sum();
    assert_eq!(report["upload"]["bytes_sent"], nonzero + 512);
    let mut expected = pages.clone();
    match expected.last_mut() {
        Some(l) if l.end == size => l.end += 512, // the footer touches the last data
        _ => expected.push(size..size + 512),
    }
    let written = az.ranges("web01-os");
    for r in &written {
        assert!(
            expected
                .iter()
                .any(|e| e.start <= r.start && r.end <= e.end),
            "range {r:?} written outside the non-zero pages"
        );
    }
    let written_bytes: u64 = written.iter().map(|r| r.end - r.start).sum();
    assert_eq!(written_bytes, nonzero + 512);

    // verify agrees, and finds a changed byte.
    let verify = [
        "verify",
        path_str(&vhd),
        "-g",
        "rg1",
        "--disk-name",
        "web01-os",
    ];
    let v = az.run(&verify);
    no_azure_secrets(&v);
    let text = ok(&v);
    assert!(text.contains("0 differ; footer ok"), "{text}");
    assert_eq!(az.state("web01-os").as_deref(), Some("Unattached"));
    let f = std::fs::OpenOptions::new().write(true).open(&vhd).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xAB], 13 * MIB).unwrap();
    let v = az.run(&verify);
    assert_eq!(v.status.code(), Some(1));
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("MISMATCH"), "{text}");
    assert_eq!(az.state("web01-os").as_deref(), Some("Unattached"));

    // The same name again is refused, with what to do.
    let again = fails(&upload(&az, &vhd, "web01-os", &[]));
    assert!(
        again.contains("already exists") && again.contains("--resume"),
        "{again}"
    );
}

#[test]
fn invalid_vhds_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, vhd) = disk(dir.path());
    // Nothing listens there: a request would fail with a connection error instead.
    let run = |file: &Path| {
        let out = upload_to("http://127.0.0.1:9", ARM_TOKEN, file);
        no_azure_secrets(&out);
        fails(&out)
    };
    let e = run(&raw);
    assert!(
        e.contains("not a fixed VHD") && e.contains("convert"),
        "{e}"
    );
    let dynamic = dir.path().join("disk-dyn.vhd");
    ok(&convert(
        &raw,
        &dynamic,
        &["--output-format", "vhd-dynamic"],
    ));
    let e = run(&dynamic);
    assert!(e.contains("not a fixed VHD"), "{e}");
    // A broken footer checksum.
    let bad = dir.path().join("bad.vhd");
    std::fs::copy(&vhd, &bad).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"xxxx", 40 * MIB + 28).unwrap(); // creator app
    let e = run(&bad);
    assert!(e.contains("cannot be uploaded"), "{e}");
    // Below Azure's 20 MiB minimum.
    let small_raw = dir.path().join("small.raw");
    sparse_file(&small_raw, 8 * MIB, &[(0, noise(5, 4096))]);
    let small = dir.path().join("small.vhd");
    ok(&convert(&small_raw, &small, &[]));
    let e = run(&small);
    assert!(e.contains("small.vhd"), "{e}");
    let e = run(&dir.path().join("missing.vhd"));
    assert!(e.contains("missing.vhd"), "{e}");
}

#[test]
fn an_interrupted_upload_resumes_and_cleanup_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&["--proxy", "1"]);
    // Every write after the 4th fails: the run spends its small budget and stops.
    az.faults(r#"{"fail_writes_after": 4}"#);
    let out = upload(&az, &vhd, "data01", &["--retry-budget", "3"]);
    no_azure_secrets(&out);
    let e = fails(&out);
    assert!(e.contains("--resume") && e.contains("data01"), "{e}");
    assert_eq!(az.state("data01").as_deref(), Some("ActiveUpload"));

    az.faults(r#"{"fail_writes_after": 0}"#);
    let out = upload(&az, &vhd, "data01", &["--resume"]);
    no_azure_secrets(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["resumed"], true);
    assert!(report["upload"]["bytes_already_there"].as_u64().unwrap() >= 4 * 4096);
    let back = dir.path().join("back.vhd");
    az.download("data01", &back);
    assert!(
        same_bytes(&back, &vhd),
        "the resumed disk differs from the VHD"
    );

    // Nothing to resume: said so.
    let e = fails(&upload(&az, &vhd, "nothere", &["--resume"]));
    assert!(e.contains("does not exist"), "{e}");

    // --cleanup deletes the disk of a failed upload.
    az.faults(r#"{"fail_writes_after": 1}"#);
    let e = fails(&upload(
        &az,
        &vhd,
        "data02",
        &["--retry-budget", "2", "--cleanup"],
    ));
    assert!(e.contains("was deleted"), "{e}");
    assert_eq!(az.state("data02"), None);
}

#[test]
fn sas_expiry_and_503_storms_are_ridden_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&["--proxy", "1"]);
    // Each SAS takes 2 writes, then is refused as expired; every 4th blob call is a 503.
    az.faults(r#"{"sas_writes": 2, "blob_503_every": 4}"#);
    let out = upload(&az, &vhd, "data03", &[]);
    no_azure_secrets(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(
        report["upload"]["sas_renewals"].as_u64().unwrap() >= 2,
        "{report}"
    );
    assert!(report["retries"].as_u64().unwrap() >= 2, "{report}");
    let back = dir.path().join("back.vhd");
    az.download("data03", &back);
    assert!(same_bytes(&back, &vhd));
    // The proxy refuses what Azure refuses (over 4 MiB, unaligned, past the end):
    // the upload passing through it shows we never send such requests.
    assert!(az.stats()["put_page_requests"].as_u64().unwrap() > 0);
}

#[test]
fn a_blob_endpoint_that_stops_answering_ends_the_upload_at_the_stall_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&["--proxy", "1"]);
    // Two blob requests get through, then every one hangs for a minute.
    az.faults(r#"{"blob_stall_after": 2, "blob_stall_seconds": 60}"#);
    let args = [
        "upload",
        path_str(&vhd),
        "-g",
        "rg1",
        "--disk-name",
        "stalled",
        "--location",
        "westeurope",
        "--stall-timeout",
        "2",
    ];
    let out = output_within(&mut az.command(&args), 60);
    no_azure_secrets(&out);
    let e = fails(&out);
    let named = format!("no request to {} has got through for ", az.endpoint);
    assert!(e.contains(&named), "{e}");
    assert!(e.contains("--stall-timeout sets how long"), "{e}");
    // What was written stays, and the run says how to go on.
    assert!(e.contains("--resume"), "{e}");
    assert_eq!(az.state("stalled").as_deref(), Some("ActiveUpload"));
}

#[test]
fn a_wrong_token_or_endpoint_is_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&[]);
    let out = upload_to(&az.endpoint, "wrong-token-never-print", &vhd);
    let e = fails(&out);
    assert!(e.contains("InvalidAuthenticationToken"), "{e}");
    assert!(!e.contains("wrong-token-never-print"), "{e}");
    // Plain http off loopback would send the token in clear: refused.
    let out = upload_to("http://management.example.com", ARM_TOKEN, &vhd);
    no_azure_secrets(&out);
    let e = fails(&out);
    assert!(e.contains("https"), "{e}");
}

#[test]
fn a_snapshot_streams_to_a_managed_disk_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("vol.raw");
    sparse_file(
        &raw,
        1 << 30,
        &[
            (0, noise(7, 2 * MIB as usize)),
            (300 * MIB + 4096, noise(8, 100_000)),
            (1023 * MIB, noise(9, MIB as usize)),
        ],
    );
    let ebs = Emulator::start(&[]);
    let snap = ebs.seed(&raw, &[]);
    let az = Azure::start(&[]);
    let out = az.with_ebs(
        &ebs,
        "vol01",
        &[
            "migrate",
            &snap,
            "--location",
            "westeurope",
            "--json",
            "-vv",
        ],
    );
    no_azure_secrets(&out);
    // -vv: the phases on standard error, never a secret (checked above).
    let log = String::from_utf8_lossy(&out.stderr);
    for phase in [
        "creating the disk",
        "granting write access",
        "copying",
        "ending the upload",
    ] {
        assert!(log.contains(phase), "{phase} not logged: {log}");
    }
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["virtual_size"], 1u64 << 30);
    let pages = nonzero_pages(&raw, 1 << 30);
    let nonzero: u64 = pages.iter().map(|r| r.end - r.start).sum();
    assert_eq!(report["upload"]["bytes_sent"], nonzero + 512);
    let written: u64 = az.ranges("vol01").iter().map(|r| r.end - r.start).sum();
    assert_eq!(written, nonzero + 512);

    let out = az.with_ebs(&ebs, "vol01", &["verify", &snap]);
    no_azure_secrets(&out);
    let text = ok(&out);
    assert!(text.contains("0 differ; footer ok"), "{text}");
}

#[test]
fn adjacent_snapshot_blocks_go_out_in_large_put_pages_and_a_capped_disk_is_held_to_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("vol.raw");
    // 64 MiB of data in a row (128 EBS blocks of 512 KiB), and a lone page.
    let run = 64 * MIB;
    sparse_file(
        &raw,
        1 << 30,
        &[
            (100 * MIB, noise(21, run as usize)),
            (700 * MIB, noise(22, 4096)),
        ],
    );
    let ebs = Emulator::start(&[]);
    let snap = ebs.seed(&raw, &[]);
    // A disk that takes 12 MiB/s, 20 ms away.
    let az = Azure::start(&[
        "--proxy",
        "1",
        "--disk-mbps",
        "12",
        "--blob-latency-ms",
        "20",
    ]);
    let started = std::time::Instant::now();
    // Four writes in flight: blocks wait for the capped disk, as they do
    // whenever Azure is the slower side, and go out in runs.
    let out = az.with_ebs(
        &ebs,
        "vol02",
        &[
            "migrate",
            &snap,
            "--location",
            "westeurope",
            "--concurrency",
            "4",
            "--json",
        ],
    );
    let took = started.elapsed();
    no_azure_secrets(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["upload"]["bytes_sent"], run + 4096 + 512);
    let stats = az.stats();
    let (puts, bytes) = (
        stats["put_page_requests"].as_u64().unwrap(),
        stats["put_page_bytes"].as_u64().unwrap(),
    );
    assert_eq!(bytes, run + 4096 + 512);
    // One Put Page per block would be 130; runs of up to 8 blocks (4 MiB)
    // go out whole once blocks wait for the capped disk: 17 at best, about
    // 24 here, and 52 on a machine so busy that the emulators lag the cap.
    assert!(puts <= 65, "{puts} Put Page requests for {bytes} bytes");
    assert_eq!(report["upload"]["put_requests"], puts);
    // The cap holds (the emulator's own check): 64 MiB at 12 MiB/s.
    assert!(took.as_secs_f64() >= 5.0, "{took:?}");
    let out = az.with_ebs(&ebs, "vol02", &["verify", &snap]);
    let text = ok(&out);
    assert!(text.contains("0 differ; footer ok"), "{text}");
}

#[test]
fn one_503_on_a_read_or_a_page_listing_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&["--proxy", "1"]);
    // An upload that stops after 3 writes leaves the disk to resume.
    az.faults(r#"{"fail_writes_after": 3}"#);
    fails(&upload(&az, &vhd, "data06", &["--retry-budget", "2"]));
    // --resume: the page listing (the first blob call after access is granted) gets a 503.
    az.faults(r#"{"fail_writes_after": 0, "blob_503_next": 1}"#);
    let out = upload(&az, &vhd, "data06", &["--resume"]);
    no_azure_secrets(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(az.faults_now()["blob_503_next"], 0, "the 503 was served");
    assert_eq!(report["resumed"], true);
    assert!(
        report["upload"]["bytes_already_there"].as_u64().unwrap() > 0,
        "the listing was read: {report}"
    );
    let back = dir.path().join("back.vhd");
    az.download("data06", &back);
    assert!(same_bytes(&back, &vhd));

    // verify: its first blob read is answered 503 ServerBusy.
    az.faults(r#"{"blob_503_next": 1}"#);
    let out = az.run(&[
        "verify",
        path_str(&vhd),
        "-g",
        "rg1",
        "--disk-name",
        "data06",
    ]);
    no_azure_secrets(&out);
    let text = ok(&out);
    assert!(text.contains("0 differ; footer ok"), "{text}");
    assert_eq!(az.faults_now()["blob_503_next"], 0, "the 503 was served");
}

/// Runs `verify SOURCE` against disk `name` with `extra` flags.
fn verify_disk(az: &Azure, source: &str, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["verify", source, "-g", "rg1", "--disk-name", name];
    args.extend_from_slice(extra);
    let out = az.run(&args);
    no_azure_secrets(&out);
    out
}

/// The differences a `verify --json` report lists: (offset, length, what the source holds there).
fn differences(out: &std::process::Output) -> Vec<(u64, u64, String)> {
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    r["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["matches"] == false)
        .map(|c| {
            (
                c["offset"].as_u64().unwrap(),
                c["len"].as_u64().unwrap(),
                c["source_holds"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn verify_proves_the_whole_disk_from_a_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let vhd_s = path_str(&vhd);
    // Two pages of results at most per listing page: the listing spans many pages.
    let az = Azure::start(&["--proxy", "1", "--page-list-max", "2"]);
    for name in ["clean", "in-data", "in-zeros", "footer"] {
        ok(&upload(&az, &vhd, name, &[]));
    }
    // A disk that is not there: one sentence naming the flags that choose
    // it, never --resume (verify creates nothing).
    let e = fails(&verify_disk(&az, vhd_s, "nothere", &[]));
    assert!(
        e.contains("does not exist") && e.contains("--disk-name") && !e.contains("--resume"),
        "{e}"
    );
    // Clean: every written page is the source's, and nothing else is written.
    let out = verify_disk(&az, vhd_s, "clean", &[]);
    let text = ok(&out);
    assert!(
        text.contains("0 differ; footer ok; 0 B written outside the source's data, all zero"),
        "{text}"
    );

    // Inside the source's data (its first MiB is noise).
    az.tamper("in-data", MIB, &noise(11, 512));
    let out = verify_disk(&az, vhd_s, "in-data", &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let d = differences(&out);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].2, "data");
    assert!(d[0].0 <= MIB && MIB < d[0].0 + d[0].1, "{d:?}");

    // Where the source is zero (between its data at 3 MiB and 9 MiB): found, with its offsets.
    let at = 7 * MIB + 4096;
    az.tamper("in-zeros", at, &noise(12, 1024));
    let out = verify_disk(&az, vhd_s, "in-zeros", &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(differences(&out), [(at, 1024, "zeros".to_owned())]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["bytes_outside_data"], 1024);
    let text =
        String::from_utf8_lossy(&verify_disk(&az, vhd_s, "in-zeros", &[]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "MISMATCH {at}..{} (1.00 KiB) where the source is zero",
            at + 1024
        )),
        "{text}"
    );
    // Pages cleared there (as a delta sync clears a block no longer written) read as zero again.
    az.clear("in-zeros", at, 1024);
    let text = ok(&verify_disk(&az, vhd_s, "in-zeros", &[]));
    assert!(
        text.contains("0 differ; footer ok; 0 B written outside"),
        "{text}"
    );
    // Zeros written where the source is zero are no difference: read back, listed with -v.
    az.tamper("clean", at, &[0u8; 4096]);
    let out = verify_disk(&az, vhd_s, "clean", &["--all-ranges"]);
    let text = ok(&out);
    assert!(
        text.contains("4.00 KiB written outside the source's data, all zero"),
        "{text}"
    );
    assert!(
        text.contains(&format!("match    {at}..{}", at + 4096)),
        "{text}"
    );

    // The footer.
    az.tamper("footer", 40 * MIB, &[0xffu8; 512]);
    let out = verify_disk(&az, vhd_s, "footer", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("footer WRONG"));
}

#[test]
fn verify_proves_the_whole_disk_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("vol.raw");
    sparse_file(
        &raw,
        64 * MIB,
        &[
            (0, noise(21, MIB as usize)),
            (40 * MIB, noise(22, 3 * MIB as usize)),
        ],
    );
    let ebs = Emulator::start(&[]);
    let snap = ebs.seed(&raw, &[]);
    let az = Azure::start(&["--proxy", "1", "--page-list-max", "3"]);
    for name in ["snap-clean", "snap-zeros"] {
        ok(&az.with_ebs(&ebs, name, &["migrate", &snap, "--location", "westeurope"]));
    }
    let out = az.with_ebs(&ebs, "snap-clean", &["verify", &snap]);
    no_azure_secrets(&out);
    assert!(ok(&out).contains("0 differ; footer ok"));
    // Inside the snapshot's data, then in a block the snapshot never wrote.
    az.tamper("snap-clean", 41 * MIB, &noise(23, 512));
    let out = az.with_ebs(&ebs, "snap-clean", &["verify", &snap, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(differences(&out)[0].2, "data");
    az.tamper("snap-zeros", 20 * MIB, &noise(24, 512));
    let out = az.with_ebs(&ebs, "snap-zeros", &["verify", &snap, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(differences(&out), [(20 * MIB, 512, "zeros".to_owned())]);
}

#[test]
fn names_and_skus_azure_refuses_are_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&[]);
    for (name, extra, said) in [
        (
            "bad.name?x=1",
            &[][..],
            "disk name \"bad.name?x=1\" may hold only",
        ),
        (
            "ok",
            &["--sku", "premium_lrs"][..],
            "sku \"premium_lrs\" is not one",
        ),
    ] {
        let e = fails(&upload(&az, &vhd, name, extra));
        assert!(e.contains(said), "{e}");
    }
    let e = fails(&az.run(&[
        "upload",
        path_str(&vhd),
        "-g",
        "rg/../other",
        "--disk-name",
        "ok",
        "--location",
        "westeurope",
    ]));
    assert!(
        e.contains("resource group \"rg/../other\" may hold only"),
        "{e}"
    );
    assert_eq!(
        az.requests(),
        Vec::<serde_json::Value>::new(),
        "no call reached Resource Manager"
    );
}

/// A disk PUT body Azure accepts, for the emulator's checks to break one field at a time.
fn disk_body() -> serde_json::Value {
    serde_json::json!({
        "location": "westeurope",
        "sku": {"name": "Premium_LRS"},
        "tags": {"app": "web"},
        "properties": {
            "osType": "Linux",
            "hyperVGeneration": "V2",
            "creationData": {"createOption": "Upload", "uploadSizeBytes": 20 * MIB + 512}
        }
    })
}

#[test]
fn the_arm_emulator_refuses_what_the_disks_spec_refuses() {
    let az = Azure::start(&[]);
    let disk = |name: &str| {
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/disks/{name}?api-version=2024-03-02")
    };
    let put = |name: &str, body: &serde_json::Value| az.arm("PUT", &disk(name), &body.to_string());
    // The control: a valid body is taken, and its operation ends with the Disk.
    let (status, created) = put("good", &disk_body());
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["properties"]["diskState"], "ReadyToUpload");

    let broken: Vec<(&str, serde_json::Value, &str, &str)> = vec![
        (
            "/sku/name",
            "premium_lrs".into(),
            "InvalidParameter",
            "sku.name",
        ),
        (
            "/properties/encryption",
            serde_json::json!({"type": "CustomerKey"}),
            "InvalidParameter",
            "properties.encryption.type",
        ),
        (
            "/properties/networkAccessPolicy",
            "Private".into(),
            "InvalidParameter",
            "properties.networkAccessPolicy",
        ),
        (
            "/properties/diskState",
            "Unattached".into(),
            "InvalidParameter",
            "properties.diskState",
        ),
        ("/tags/app", 7.into(), "InvalidRequestContent", "tags.app"),
        ("/zones", "1".into(), "InvalidRequestContent", "zones"),
        (
            "/properties/diskSizeGB",
            (1u64 << 31).into(),
            "InvalidRequestContent",
            "properties.diskSizeGB",
        ),
        (
            "/properties/osType",
            "linux".into(),
            "InvalidParameter",
            "properties.osType",
        ),
    ];
    for (at, value, code, target) in broken {
        let mut body = disk_body();
        let (parent, key) = at.rsplit_once('/').unwrap();
        body.pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), value);
        let (status, answer) = put("bad", &body);
        assert_eq!(status, 400, "{at}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{at}: {answer}");
        assert_eq!(answer["error"]["target"], target, "{at}: {answer}");
    }
    let (status, answer) = put(&"d".repeat(81), &disk_body());
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("InvalidResourceName"))
    );
    assert_eq!(put(&"d".repeat(80), &disk_body()).0, 202);

    let grant = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/disks/good/beginGetAccess?api-version=2024-03-02");
    let (status, answer) = az.arm(
        "POST",
        &grant,
        r#"{"access": "Write", "durationInSeconds": 2147483648}"#,
    );
    assert_eq!(
        (status, answer["error"]["target"].as_str()),
        (400, Some("durationInSeconds")),
        "{answer}"
    );
    assert_eq!(az.state("bad"), None, "no refused body made a disk");
}

#[test]
fn failed_and_canceled_operations_and_wrapped_errors_end_in_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vhd) = disk(dir.path());
    let az = Azure::start(&[]);
    az.faults(r#"{"lro_fail": 1}"#);
    let e = fails(&upload(&az, &vhd, "failed", &[]));
    assert!(
        e.contains("creating disk failed: the operation ended Failed (InjectedFailure): The operation failed. The disk service could not complete the operation (injected)."),
        "{e}"
    );
    az.faults(r#"{"lro_cancel": 1}"#);
    let e = fails(&upload(&az, &vhd, "canceled", &[]));
    assert!(e.contains("ended Canceled (Canceled)"), "{e}");
    assert!(e.contains("A newer request canceled this operation"), "{e}");

    // Without Azure-AsyncOperation the operations are followed through Location alone.
    az.faults(r#"{"location_only": 1}"#);
    let out = upload(&az, &vhd, "located", &[]);
    ok(&out);
    let back = dir.path().join("back.vhd");
    az.download("located", &back);
    assert!(same_bytes(&back, &vhd));
    az.faults(r#"{"location_only": 1, "lro_fail": 1}"#);
    let e = fails(&upload(&az, &vhd, "located-failed", &[]));
    assert!(e.contains("InjectedFailure (HTTP 400)"), "{e}");
    assert!(e.contains("could not complete the operation"), "{e}");

    // The real cause, in details, is what is said.
    az.faults(r#"{"location_only": 0, "error_details": 1}"#);
    let out = upload_to(&az.endpoint, "wrong-token-never-print", &vhd);
    let e = fails(&out);
    assert!(
        e.contains("InvalidAuthenticationToken (HTTP 401): The request failed; see details. The access token is missing or invalid."),
        "{e}"
    );
}
