//! End-to-end runs of `ebs2azure convert snap-...` and `info snap-...`
//! against the EBS emulator on loopback, with the faults the real service
//! shows: throttling, 5xx, dropped and stalled connections, expiring tokens,
//! bad checksums, missing snapshots, wrong credentials.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const BLOCK: u64 = 512 * 1024;
const GIB: u64 = 1 << 30;

/// A 1 GiB disk with 120 random blocks, plus one written all-zero block.
fn disk(dir: &Path) -> (PathBuf, u64) {
    let raw = dir.join("disk.raw");
    let mut writes = Vec::new();
    for i in 0..120u64 {
        let index = (i * 7919) % 2048;
        writes.push((index * BLOCK, noise(index + 1, BLOCK as usize)));
    }
    writes.push((2047 * BLOCK, vec![0u8; BLOCK as usize]));
    sparse_file(&raw, GIB, &writes);
    (raw, 120 * BLOCK)
}

struct Setup {
    emu: Emulator,
    dir: tempfile::TempDir,
    raw: PathBuf,
    data: u64,
    snap: String,
}

fn setup(flags: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = disk(dir.path());
    let emu = Emulator::start(flags);
    // --keep-zero: the all-zero block is listed, as on a real volume where zeros were written.
    let snap = emu.seed(&raw, &["--keep-zero"]);
    Setup {
        emu,
        dir,
        raw,
        data,
        snap,
    }
}

impl Setup {
    fn convert(&self, extra: &[&str]) -> (std::process::Output, PathBuf) {
        let out = self.dir.path().join("out.vhd");
        let mut args = vec![
            "convert",
            &self.snap,
            "--out",
            path_str(&out),
            "--json",
            "--force",
        ];
        args.extend_from_slice(extra);
        let o = self.emu.run(&args);
        no_secrets(&o);
        (o, out)
    }

    fn converts_identically(&self, extra: &[&str]) -> serde_json::Value {
        let (o, out) = self.convert(extra);
        let j: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        assert!(qemu_same(&self.raw, "raw", &out, "vpc"), "contents differ");
        assert_eq!(j["virtual_size"], GIB);
        assert_eq!(j["input_format"], "ebs-snapshot");
        assert_eq!(
            j["bytes_read"],
            self.data + BLOCK,
            "listed blocks only, the zero one included"
        );
        assert_eq!(
            j["bytes_written"], self.data,
            "the all-zero block is not written"
        );
        j
    }
}

#[test]
fn a_snapshot_converts_byte_identical_and_sparse() {
    let s = setup(&[]);
    let j = s.converts_identically(&[]);
    assert_eq!(j["ebs"]["retries"], 0);
    let out = s.dir.path().join("out.vhd");
    assert!(
        allocated(&out) <= s.data + (1 << 20),
        "not sparse: {}",
        allocated(&out)
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&s.emu.run(&["info", &s.snap, "--json"]))).unwrap();
    assert_eq!(info["volume_size"], GIB);
    assert_eq!(info["block_size"], BLOCK);
    assert_eq!(info["blocks"], 121);
}

#[test]
fn listings_of_many_pages_are_followed() {
    let s = setup(&["--max-page", "7"]);
    s.converts_identically(&[]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&s.emu.run(&["info", &s.snap, "--json"]))).unwrap();
    assert_eq!(info["blocks"], 121);
}

#[test]
fn empty_pages_with_a_next_token_are_followed() {
    let s = setup(&["--max-page", "50"]);
    s.emu.faults(r#"{"empty_pages": 6}"#);
    s.converts_identically(&[]);
}

#[test]
fn expired_tokens_are_refreshed_mid_run() {
    // One block at a time, at least 10 ms each, 40 blocks a page: each page takes at least
    // 0.4 s, twice its tokens' 0.2 s life, while a refreshed token outlives 20 requests.
    let s = setup(&["--max-page", "40"]);
    s.emu
        .faults(r#"{"block_token_ttl": 0.2, "page_token_ttl": 0.2, "latency_ms": 10}"#);
    let j = s.converts_identically(&["--concurrency", "1"]);
    assert!(j["ebs"]["tokens_refreshed"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn throttling_5xx_and_dropped_connections_are_ridden_out() {
    let s = setup(&[]);
    // 64 in flight against a 40 requests/s quota: throttled until the client backs off.
    s.emu
        .faults(r#"{"get_rate": 40, "error_5xx_every": 9, "drop_every": 13, "quota_every": 29}"#);
    let j = s.converts_identically(&[]);
    assert!(j["ebs"]["throttled"].as_u64().unwrap() > 0, "{j}");
    assert!(j["ebs"]["retries"].as_u64().unwrap() >= j["ebs"]["throttled"].as_u64().unwrap());
}

#[test]
fn stalled_requests_time_out_and_are_retried() {
    let s = setup(&[]);
    s.emu.faults(r#"{"stall_every": 25, "stall_seconds": 20}"#);
    let j = s.converts_identically(&["--request-timeout", "1"]);
    assert!(j["ebs"]["retries"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn an_endpoint_that_never_answers_ends_the_run_at_the_stall_limit() {
    let s = setup(&[]);
    // Every request hangs for a minute: without the stall rule the run
    // would retry each block for minutes before giving up.
    s.emu.faults(r#"{"stall_every": 1, "stall_seconds": 60}"#);
    let out = s.dir.path().join("out.vhd");
    let o = output_within(
        s.emu
            .command(AWS_KEY_ID)
            .args(["convert", &s.snap, "--out", path_str(&out)])
            .args(["--endpoint-url", &s.emu.endpoint, "--stall-timeout", "2"]),
        40,
    );
    no_secrets(&o);
    let e = fails(&o);
    let named = format!("no request to {} has got through for ", s.emu.endpoint);
    assert!(e.contains(&named), "{e}");
    assert!(e.contains("the request timed out"), "{e}");
    assert!(e.contains("--stall-timeout sets how long"), "{e}");
    assert!(!out.exists() && !s.dir.path().join("out.vhd.partial").exists());
}

#[test]
fn a_checksum_mismatch_is_retried_then_fails_with_the_block() {
    let s = setup(&[]);
    // Every 5th block index comes with a wrong checksum twice, then right: retried, identical.
    s.emu
        .faults(r#"{"corrupt_checksum_every": 5, "corrupt_checksum_times": 2}"#);
    let j = s.converts_identically(&[]);
    let corrupted = (0..120u64)
        .map(|i| (i * 7919) % 2048)
        .filter(|b| b % 5 == 0)
        .count() as u64;
    assert_eq!(j["ebs"]["checksum_mismatches"], 2 * corrupted, "{j}");

    // Block 0 always comes corrupted: the run stops and names it.
    s.emu
        .faults(r#"{"corrupt_checksum_every": 2048, "corrupt_checksum_times": 1000}"#);
    std::fs::remove_file(s.dir.path().join("out.vhd")).unwrap();
    let (o, out) = s.convert(&[]);
    let err = fails(&o);
    assert!(
        err.contains("block 0 failed its SHA-256 check 3 times"),
        "{err}"
    );
    assert!(!out.exists() && !s.dir.path().join("out.vhd.partial").exists());
}

#[test]
fn a_block_of_the_wrong_length_is_retried_a_bounded_number_of_times() {
    let s = setup(&[]);
    // Block 7919 % 2048 (listed) always comes as half a block whose checksum
    // matches: retried as a call may be, then the run stops naming it.
    let block = 7919 % 2048;
    s.emu.faults(&format!(r#"{{"short_block": {block}}}"#));
    let (o, out) = s.convert(&[]);
    let e = fails(&o);
    assert!(
        e.contains(&format!(
            "a request failed 10 times in a row (at block {block})"
        )),
        "{e}"
    );
    assert!(e.contains("came with 262144 bytes, not 524288"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_spent_retry_budget_stops_the_run() {
    let s = setup(&[]);
    s.emu.faults(r#"{"error_5xx_every": 1}"#);
    let (o, out) = s.convert(&["--retry-budget", "3"]);
    let err = fails(&o);
    assert!(err.contains("gave up after the run's 3 retries"), "{err}");
    assert!(!out.exists());
}

#[test]
fn missing_snapshots_bad_ids_and_wrong_credentials_say_so() {
    let s = setup(&[]);
    let out = s.dir.path().join("x.vhd");
    let o = s
        .emu
        .run(&["convert", "snap-0123456789abcdef0", "--out", path_str(&out)]);
    no_secrets(&o);
    let err = fails(&o);
    assert!(
        err.contains("snap-0123456789abcdef0 was not found in region us-east-1"),
        "{err}"
    );
    assert!(!out.exists());

    let o = s.emu.run(&["info", "snap-0123456789abcdef0"]);
    assert!(fails(&o).contains("not found"));

    let o = s
        .emu
        .command("AKIDNOTTHEEMULATORS")
        .args([
            "convert",
            &s.snap,
            "--out",
            path_str(&out),
            "--endpoint-url",
            &s.emu.endpoint,
        ])
        .output()
        .unwrap();
    no_secrets(&o);
    let err = fails(&o);
    assert!(err.contains("credentials"), "{err}");
    assert!(!out.exists());
}

#[test]
fn an_answer_the_sdk_cannot_read_is_not_retried() {
    let s = setup(&[]);
    s.emu.faults(r#"{"unreadable_lists": 50}"#);
    let o = s.emu.run(&["info", &s.snap]);
    no_secrets(&o);
    let e = fails(&o);
    assert!(
        e.contains("cannot read") && e.contains("not retried"),
        "{e}"
    );
    assert!(!e.contains("SdkBody"), "the raw answer is not dumped: {e}");
    // One list request was answered so, not ten: a contract break is not retried.
    assert_eq!(s.emu.fault_state()["unreadable_lists"], 49);
}

/// Runs openssl in `dir`; panics with its message when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn snapshots_read_over_https_and_an_untrusted_certificate_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    // A CA, and a certificate for 127.0.0.1 it signed (TLS clients refuse a CA
    // certificate as a server's own); another CA that signed nothing here.
    for ca in ["ca", "other"] {
        let subject = format!("/CN=ebs2azure test {ca}");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &subject,
            ],
        );
    }
    openssl(
        dir.path(),
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        at("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "cert.pem",
            "-extfile",
            "ext.cnf",
        ],
    );
    let raw = at("vol.raw");
    sparse_file(&raw, 1 << 30, &[(5 << 20, noise(31, 3_000_000))]);
    let ebs = Emulator::start(&[
        "--tls-cert",
        path_str(&at("cert.pem")),
        "--tls-key",
        path_str(&at("key.pem")),
    ]);
    let https = ebs.endpoint.replacen("http://", "https://", 1);
    // The seeding script trusts the CA the same way (Python's ssl reads SSL_CERT_FILE).
    let seeded = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ebs-emulator"))
        .args(["seed", "--endpoint", &https, path_str(&raw)])
        .env("SSL_CERT_FILE", at("ca.pem"))
        .output()
        .unwrap();
    assert!(seeded.status.success(), "{seeded:?}");
    let snap = String::from_utf8_lossy(&seeded.stdout).trim().to_owned();
    let out = at("out.raw");
    let convert = |roots: &str| {
        ebs.command(AWS_KEY_ID)
            .args([
                "convert",
                &snap,
                "--out",
                path_str(&out),
                "--output-format",
                "raw",
            ])
            .args(["--force", "--endpoint-url", &https])
            .env("SSL_CERT_FILE", at(roots))
            .output()
            .unwrap()
    };
    // Trusting the CA, the snapshot comes over TLS whole.
    ok(&convert("ca.pem"));
    assert!(qemu_same(&raw, "raw", &out, "raw"));
    // Trusting another: one sentence, at once (a certificate is not retried).
    std::fs::remove_file(&out).unwrap();
    let started = std::time::Instant::now();
    let refused = convert("other.pem");
    let line = fails(&refused);
    assert!(
        line.contains(&format!(
            "{https} presented a certificate this machine does not trust"
        )),
        "{line}"
    );
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(!out.exists());
}
