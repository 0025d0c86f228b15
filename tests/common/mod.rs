//! Helpers for end-to-end tests: run the binary, make images, ask qemu-img.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `ebs2azure` with `args`.
pub fn ebs2azure(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebs2azure"))
        .args(args)
        .output()
        .expect("run ebs2azure")
}

/// Why this host cannot attach loop devices (root and /dev/loop-control needed), if it cannot.
/// Returns from the test, saying why, when this host cannot attach loop devices.
#[macro_export]
macro_rules! need_loop_devices {
    () => {
        if let Some(why) = cannot_use_loop_devices() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

pub fn cannot_use_loop_devices() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (kernel without loop devices)".into());
    }
    None
}

/// Runs a tool that the test needs; a missing tool fails the test with how to get it.
pub fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is needed by this test ({e}); .ci/run installs it (apt-get install qemu-utils gdisk xfsprogs)")
    })
}

/// Runs a tool and asserts it succeeded; returns stdout.
pub fn tool_ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that the binary succeeded; returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ebs2azure failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that the binary exited 3 (the input has blockers or problems)
/// with one error line; returns it as `error: ...`.
pub fn blocked(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(3), "expected exit 3, got {out:?}");
    one_error(out)
}

/// Runs ebs2azure with `args`, waiting at most 20 s (then kills it and fails).
pub fn bounded(args: &[&str]) -> std::process::Output {
    output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_ebs2azure")).args(args),
        20,
    )
}

/// Runs `c` to its end with its output captured, waiting at most `secs`
/// (then kills it and fails the test).
pub fn output_within(c: &mut Command, secs: u64) -> Output {
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not end in {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts that the binary failed with one `error:` line (or, under
/// `--json`, one JSON error object); returns it as `error: ...`.
pub fn fails(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected failure, got {out:?}");
    one_error(out)
}

/// The one error line on standard error (text, or a JSON error object with
/// its schema version), as `error: ...`.
fn one_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error expected: {err}");
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(lines[0]) {
        assert_eq!(v["schema_version"], 1, "{err}");
        return format!("error: {}", v["error"].as_str().expect("an error message"));
    }
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Creates a sparse file of `size` bytes with `writes` (offset, bytes) applied.
pub fn sparse_file(path: &Path, size: u64, writes: &[(u64, Vec<u8>)]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in writes {
        f.write_all_at(data, *off).unwrap();
    }
    f.sync_all().unwrap();
}

/// Bytes the file system allocated for `path`.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// `qemu-img info --output=json` of `path` read as `format`.
pub fn qemu_info(path: &Path, format: &str) -> serde_json::Value {
    let out = tool_ok(
        "qemu-img",
        &[
            "info",
            "-f",
            format,
            "--output=json",
            path.to_str().unwrap(),
        ],
    );
    serde_json::from_str(&out).unwrap()
}

/// `qemu-img compare` of two images; true when their contents are identical
/// (a larger image must be zero past the smaller one's end).
pub fn qemu_same(a: &Path, a_fmt: &str, b: &Path, b_fmt: &str) -> bool {
    let out = tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            a_fmt,
            "-F",
            b_fmt,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("qemu-img compare failed: {out:?}"),
    }
}

/// Runs `ebs2azure convert INPUT --out OUTPUT EXTRA...`.
pub fn convert(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["convert", path_str(input), "--out", path_str(output)];
    args.extend_from_slice(extra);
    ebs2azure(&args)
}

/// Runs a successful `convert ... --json` and returns its summary.
pub fn convert_json(input: &Path, output: &Path, extra: &[&str]) -> serde_json::Value {
    let mut all = extra.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(&convert(input, output, &all))).unwrap()
}

/// Runs a successful `info PATH --json` and returns it.
pub fn info_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&ebs2azure(&["info", path_str(path), "--json"]))).unwrap()
}

/// A path as the `&str` a command line takes.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Starts `scripts/NAME serve` with its data in `dir`, and waits (up to 30 s)
/// for the port file it writes once listening; returns the child and that file.
fn serve(name: &str, dir: &Path, fixed: &[&str], flags: &[&str]) -> (std::process::Child, String) {
    let port_file = dir.join("port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let child = Command::new("python3")
        .arg(&script)
        .arg("serve")
        .args(fixed)
        .args(["--data", path_str(&dir.join("data"))])
        .args(["--port-file", path_str(&port_file)])
        .args(flags)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 runs scripts/{name} ({e})"));
    for _ in 0..600 {
        if port_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&port_file).unwrap_or_else(|e| {
        panic!("scripts/{name} did not start ({e}); scripts/test installs what it needs (azure-storage-blob, Azurite)")
    });
    (child, text)
}

/// The EBS emulator (`scripts/ebs-emulator`) on a free loopback port, killed on drop.
pub struct Emulator {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// Credentials the emulator accepts; the secret must never show up in any output.
pub const AWS_KEY_ID: &str = "AKIDEMULATOR";
pub const AWS_SECRET: &str = "secret-9f8e7d6c5b4a-never-print";
pub const AWS_SESSION_TOKEN: &str = "session-token-0a1b2c3d-never-print";

impl Emulator {
    /// Starts the emulator with extra `serve` flags.
    pub fn start(flags: &[&str]) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = serve("ebs-emulator", dir.path(), &[], flags);
        let port = port.trim().to_owned();
        Emulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Uploads `image` as a snapshot and returns its id.
    pub fn seed(&self, image: &Path, extra: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ebs-emulator");
        let out = Command::new("python3")
            .arg(&script)
            .args(["seed", "--endpoint", &self.endpoint])
            .args(extra)
            .arg(image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "seeding failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Registers an EC2 instance whose volumes are `volumes` (device, image
    /// file; the root first); returns its id and its volumes' ids.
    pub fn instance(&self, name: &str, volumes: &[(&str, &Path)]) -> (String, Vec<String>) {
        let volumes: Vec<serde_json::Value> = volumes
            .iter()
            .map(
                |(dev, img)| serde_json::json!({"device": dev, "image": img.display().to_string()}),
            )
            .collect();
        self.register(&serde_json::json!({"volumes": volumes, "name": name}))
    }

    /// Registers an EC2 instance from a whole specification (see the
    /// emulator's `instance --spec`); returns its id and its volumes' ids.
    pub fn register(&self, spec: &serde_json::Value) -> (String, Vec<String>) {
        let args = [
            "instance".to_owned(),
            "--endpoint".into(),
            self.endpoint.clone(),
            "--spec".into(),
            spec.to_string(),
        ];
        let v: serde_json::Value = serde_json::from_str(&self.script(&args)).unwrap();
        let vols = v["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["VolumeId"].as_str().unwrap().to_owned())
            .collect();
        (v["InstanceId"].as_str().unwrap().to_owned(), vols)
    }

    /// Takes crash-consistent snapshots of `instance`'s volumes through the
    /// EC2 API and waits for them; returns volume id -> snapshot id.
    pub fn snapshot_instance(&self, instance: &str) -> std::collections::BTreeMap<String, String> {
        let out = self.script(&[
            "snapshot".into(),
            "--endpoint".into(),
            self.endpoint.clone(),
            "--instance".into(),
            instance.into(),
        ]);
        serde_json::from_str(&out).unwrap()
    }

    fn script(&self, args: &[String]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ebs-emulator");
        let out = Command::new("python3")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ebs-emulator {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Sets fault switches at run time (`{"throttle_every": 3}`).
    pub fn faults(&self, json: &str) {
        admin(&self.endpoint, "POST", "/__admin/faults", json);
    }

    /// The fault switches as they stand (counters count down as used).
    pub fn fault_state(&self) -> serde_json::Value {
        admin(&self.endpoint, "GET", "/__admin/faults", "")
    }

    /// Runs `ebs2azure` against this emulator with the test credentials.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(AWS_KEY_ID)
            .args(args)
            .args(["--endpoint-url", &self.endpoint])
            .output()
            .unwrap()
    }

    /// `ebs2azure` with a clean environment holding only test credentials
    /// (access key id `key_id`), so no host AWS configuration leaks in.
    pub fn command(&self, key_id: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ebs2azure"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("AWS_ACCESS_KEY_ID", key_id)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin call to an emulator at `endpoint` (`http://127.0.0.1:PORT`);
/// asserts a 200 and returns the JSON answer.
fn admin(endpoint: &str, method: &str, path: &str, body: &str) -> serde_json::Value {
    admin_bytes(endpoint, method, path, body.as_bytes())
}

fn admin_bytes(endpoint: &str, method: &str, path: &str, body: &[u8]) -> serde_json::Value {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let json = reply.split("\r\n\r\n").nth(1).unwrap_or("null");
    serde_json::from_str(json).unwrap()
}

/// Asserts that no secret appears in a command's output.
pub fn no_secrets(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(AWS_SECRET) && !text.contains(AWS_SESSION_TOKEN),
            "a secret was printed: {text}"
        );
    }
}

/// The ARM bearer token the Azure emulator expects; must never be printed.
pub const ARM_TOKEN: &str = "arm-token-5e4d3c2b-never-print";
/// The Entra token for disks' URLs the Azure emulator expects from disks
/// created with dataAccessAuthMode AzureActiveDirectory; never printed either.
pub const DISK_TOKEN: &str = "disk-token-9a8b7c6d-never-print";

/// The ARM disks emulator (`scripts/arm-emulator`) with its own Azurite, on
/// free loopback ports; stopped (Azurite too) on drop.
pub struct Azure {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT` of the ARM emulator.
    pub endpoint: String,
    /// Azurite's blob endpoint.
    pub blob_endpoint: String,
    _dir: tempfile::TempDir,
}

impl Azure {
    /// Starts the emulator (and Azurite) with extra `serve` flags.
    pub fn start(flags: &[&str]) -> Azure {
        let dir = tempfile::tempdir().unwrap();
        let fixed = [
            "--azurite",
            "--retry-after",
            "0",
            "--token",
            ARM_TOKEN,
            "--disk-token",
            DISK_TOKEN,
        ];
        let (child, port_file) = serve("arm-emulator", dir.path(), &fixed, flags);
        let info: serde_json::Value = serde_json::from_str(&port_file).unwrap();
        Azure {
            child,
            endpoint: format!("http://127.0.0.1:{}", info["port"]),
            blob_endpoint: info["blob_endpoint"].as_str().unwrap().to_owned(),
            _dir: dir,
        }
    }

    fn admin(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        admin(&self.endpoint, method, path, body)
    }

    /// Sets fault switches (`{"proxy": 1, "blob_503_every": 3}`).
    pub fn faults(&self, json: &str) {
        self.admin("POST", "/__admin/faults", json);
    }

    /// The fault switches as they are now (a `_next` count goes down as it is served).
    pub fn faults_now(&self) -> serde_json::Value {
        self.admin("GET", "/__admin/faults", "")
    }

    /// Writes `data` (whole 512-byte pages) at `offset` of disk `name`'s blob
    /// through the storage SDK, behind ebs2azure's back.
    pub fn tamper(&self, name: &str, offset: u64, data: &[u8]) {
        admin_bytes(
            &self.endpoint,
            "POST",
            &format!("/__admin/pages?disk={name}&offset={offset}"),
            data,
        );
    }

    /// Clears `len` bytes of pages at `offset` of disk `name`'s blob (as a
    /// delta sync clears a block no longer written).
    pub fn clear(&self, name: &str, offset: u64, len: u64) {
        admin_bytes(
            &self.endpoint,
            "POST",
            &format!("/__admin/pages?disk={name}&offset={offset}&clear={len}"),
            b"",
        );
    }

    /// A Resource Manager call as a client makes it (bearer token):
    /// returns the HTTP status and the JSON body (null when empty).
    pub fn arm(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ARM_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let json = reply.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Ends disk `name`'s upload (endGetAccess) behind ebs2azure's back,
    /// as a run killed right after ending it would leave it; returns the
    /// HTTP status line's code.
    pub fn end_upload(&self, name: &str) -> String {
        let path = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/disks/{name}/endGetAccess?api-version=2024-03-02");
        self.arm("POST", &path, "").0.to_string()
    }

    /// Makes virtual network `vnet` in resource group `rg` with subnet `subnet`; returns the subnet's id.
    pub fn subnet(&self, rg: &str, vnet: &str, subnet: &str) -> String {
        let path = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}");
        let body = format!(
            r#"{{"location": "westeurope", "properties": {{"addressSpace": {{"addressPrefixes": ["10.0.0.0/16"]}}, "subnets": [{{"name": "{subnet}", "properties": {{"addressPrefix": "10.0.1.0/24"}}}}]}}}}"#
        );
        let (status, _) = self.arm("PUT", &format!("{path}?api-version=2024-05-01"), &body);
        assert!(status == 200 || status == 201, "{status}");
        format!("{path}/subnets/{subnet}")
    }

    /// Counters of the blob proxy.
    pub fn stats(&self) -> serde_json::Value {
        self.admin("GET", "/__admin/stats", "")
    }

    /// Sets the blob proxy's counters to zero.
    pub fn reset_stats(&self) {
        self.admin("POST", "/__admin/stats", "");
    }

    /// The state of disk `name`, or None.
    pub fn state(&self, name: &str) -> Option<String> {
        self.disk(name)
            .map(|d| d["state"].as_str().unwrap().to_owned())
    }

    /// What the emulator holds of disk `name` (state, osType, hyperVGeneration, ...).
    pub fn disk(&self, name: &str) -> Option<serde_json::Value> {
        let disks = self.admin("GET", "/__admin/disks", "");
        disks
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
    }

    /// The written page ranges of disk `name`, merged, as read by the storage SDK.
    pub fn ranges(&self, name: &str) -> Vec<std::ops::Range<u64>> {
        let v = self.admin("GET", &format!("/__admin/ranges?disk={name}"), "");
        let mut r: Vec<std::ops::Range<u64>> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap()..p[1].as_u64().unwrap())
            .collect();
        r.sort_by_key(|x| x.start);
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        for x in r {
            match out.last_mut() {
                Some(l) if x.start <= l.end => l.end = l.end.max(x.end),
                _ => out.push(x),
            }
        }
        out
    }

    /// The Resource Manager requests the emulator has served, oldest first.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.admin("GET", "/__admin/requests", "")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Copies disk `name`'s blob to `out` (through the storage SDK).
    pub fn download(&self, name: &str, out: &Path) {
        self.admin(
            "GET",
            &format!("/__admin/blob?disk={name}&out={}", path_str(out)),
            "",
        );
    }

    /// Adds what `ebs2azure` needs to reach this emulator to `c`.
    pub fn env<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env("EBS2AZURE_ARM_ENDPOINT", &self.endpoint)
            .env("EBS2AZURE_ARM_TOKEN", ARM_TOKEN)
            .env(
                "AZURE_SUBSCRIPTION_ID",
                "00000000-0000-0000-0000-000000000001",
            )
    }

    /// `ebs2azure ARGS` reaching both emulators (EBS and this one), on disk
    /// `disk` of resource group rg1.
    pub fn with_ebs(&self, ebs: &Emulator, disk: &str, args: &[&str]) -> Output {
        let mut c = ebs.command(AWS_KEY_ID);
        self.env(&mut c)
            .args(args)
            .args([
                "--endpoint-url",
                &ebs.endpoint,
                "-g",
                "rg1",
                "--disk-name",
                disk,
            ])
            .output()
            .unwrap()
    }

    /// `ebs2azure ARGS` in a clean environment that reaches this emulator.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The command [`Azure::run`] runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ebs2azure"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent");
        self.env(&mut c).args(args);
        c
    }
}

impl Drop for Azure {
    fn drop(&mut self) {
        // SIGTERM lets the emulator stop its Azurite; SIGKILL if it does not end.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that neither AWS secrets nor the ARM token nor a SAS signature appear.
pub fn no_azure_secrets(out: &Output) {
    no_secrets(out);
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(ARM_TOKEN)
                && !text.contains(DISK_TOKEN)
                && !text.contains("sig=")
                && !text.contains("sig%3D"),
            "a secret was printed: {text}"
        );
    }
}

/// Attaches `size` bytes at `offset` of `image` as a read-only loop device; returns it.
pub fn attach_loop(image: &Path, offset: u64, size: u64) -> String {
    tool_ok(
        "losetup",
        &[
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &offset.to_string(),
            "--sizelimit",
            &size.to_string(),
            path_str(image),
        ],
    )
    .trim()
    .to_owned()
}

/// Detaches loop device `dev`, retrying while it is busy (a FUSE daemon lets
/// go a moment after its unmount), but only while it still holds what it
/// held: once freed it may be another test's.
pub fn detach_loop(dev: &str) {
    let backing = format!(
        "/sys/block/{}/loop/backing_file",
        dev.trim_start_matches("/dev/")
    );
    let ours = std::fs::read_to_string(&backing).unwrap_or_default();
    for _ in 0..100 {
        if std::fs::read_to_string(&backing).unwrap_or_default() != ours {
            return;
        }
        if tool("losetup", &["-d", dev]).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The subscription the plan tests use.
pub const SUB: &str = "00000000-0000-0000-0000-000000000001";

/// Both emulators (EBS with its EC2 calls, ARM over Azurite) and a scratch
/// directory: what a plan run needs.
pub struct Site {
    /// The EBS emulator.
    pub ebs: Emulator,
    /// The ARM emulator.
    pub az: Azure,
    /// Scratch space (plans, images, state).
    pub dir: tempfile::TempDir,
}

impl Site {
    /// Starts both emulators with extra `serve` flags.
    pub fn start(ebs_flags: &[&str], az_flags: &[&str]) -> Site {
        Site {
            ebs: Emulator::start(ebs_flags),
            az: Azure::start(az_flags),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `plan.toml`: `body` under the usual defaults.
    pub fn plan(&self, body: &str) -> std::path::PathBuf {
        let p = self.path("plan.toml");
        std::fs::write(
            &p,
            format!("[defaults]\nsubscription = \"{SUB}\"\nresource_group = \"rg1\"\nlocation = \"westeurope\"\nregion = \"us-east-1\"\n\n{body}"),
        )
        .unwrap();
        p
    }

    /// `ebs2azure ARGS` with what reaches both emulators in its environment.
    pub fn tool(&self, args: &[&str]) -> Command {
        let mut c = self.ebs.command(AWS_KEY_ID);
        self.az.env(&mut c).args(args);
        c
    }

    /// `ebs2azure ARGS --endpoint-url EBS` (commands that read snapshots).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.tool(args);
        c.args(["--endpoint-url", &self.ebs.endpoint]);
        c
    }

    /// Runs [`Site::command`]; checks that no secret was printed.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        no_secrets(&out);
        no_azure_secrets(&out);
        out
    }

    /// True when disk `name` in Azure holds `raw`'s bytes and a valid
    /// footer after them (read back with the storage SDK).
    pub fn holds(&self, name: &str, raw: &Path) -> bool {
        let back = self.path(&format!("{name}.back"));
        self.az.download(name, &back);
        let a = std::fs::read(raw).unwrap();
        let b = std::fs::read(&back).unwrap();
        std::fs::remove_file(&back).unwrap();
        b.len() == a.len() + 512 && b[..a.len()] == a[..] && &b[a.len()..a.len() + 8] == b"conectix"
    }
}
