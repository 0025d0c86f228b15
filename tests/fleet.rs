//! Plans end to end against the EBS emulator, the ARM emulator and Azurite
//! on loopback: many disks in one run, a failing disk among them, SIGKILL
//! at random points then resume, SIGINT, shards as separate processes, the
//! reports, and plan validation. Disks are read back with the storage SDK
//! (the emulator's admin calls), never with our own client.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// A 1 GiB volume with `mib` MiB of noise (seeded by `seed`) in a few
/// places, a zero run and the last block.
fn volume(dir: &Path, seed: u64, mib: u64) -> PathBuf {
    let raw = dir.join(format!("vol{seed}.raw"));
    sparse_file(
        &raw,
        1 << 30,
        &[
            (0, noise(seed, (mib * MIB) as usize)),
            (200 * MIB + 4096, noise(seed + 100, 70_000)),
            (300 * MIB, vec![0u8; MIB as usize]),
            (1023 * MIB + 512 * 1024, noise(seed + 200, 512 * 1024)),
        ],
    );
    raw
}

/// `migrate --plan PLAN EXTRA...` on `site`.
fn migrate(site: &Site, plan: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["migrate", "--plan", path_str(plan)];
    args.extend_from_slice(extra);
    let out = site.command(&args).output().unwrap();
    no_azure_secrets(&out);
    out
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

fn status_of<'a>(r: &'a serde_json::Value, disk: &str) -> &'a str {
    r["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == disk)
        .unwrap_or_else(|| panic!("{disk} not in report {r}"))["status"]
        .as_str()
        .unwrap()
}

/// The content digest of a local image, as reports define it.
fn digest(raw: &Path) -> String {
    let src = ebs2azure::source::ImageSource::open(raw, &Default::default()).unwrap();
    ebs2azure::digest::of_source(&src, std::num::NonZeroUsize::new(4).unwrap()).unwrap()
}

#[test]
fn a_plan_moves_machines_and_lone_disks_and_a_failing_disk_stops_no_other() {
    let f = Site::start(&[], &[]);
    let raws: Vec<PathBuf> = (1..=4).map(|i| volume(f.dir.path(), i, 3)).collect();
    let snaps: Vec<String> = raws.iter().map(|r| f.ebs.seed(r, &[])).collect();
    let missing = "snap-0123456789abcdef0";
    let plan = f.plan(&format!(
        "[[machine]]\nname = \"web01\"\ntags = {{ app = \"web\" }}\n  [[machine.disk]]\n  snapshot = \"{}\"\n  role = \"os\"\n  os_type = \"linux\"\n  fixup = false\n  [[machine.disk]]\n  snapshot = \"{}\"\n  lun = 0\n  sku = \"StandardSSD_LRS\"\n\n[[machine]]\nname = \"db01\"\nos_type = \"windows\"\n  [[machine.disk]]\n  snapshot = \"{}\"\n  role = \"os\"\n  fixup = false\n  [[machine.disk]]\n  snapshot = \"{missing}\"\n\n[[disk]]\nsnapshot = \"{}\"\nname = \"archive-01\"\nlock_network = false\n\n[[disk]]\nsnapshot = \"snap-0aaaaaaaaaaaaaaa0\"\nname = \"old-02\"\nexclude = true\n",
        snaps[0], snaps[1], snaps[2], snaps[3]
    ));
    let state = f.path("state");
    let out = migrate(&f, &plan, &["--state-dir", path_str(&state)]);
    let err = fails(&out);
    assert!(err.contains("1 of 6 disks are not done"), "{err}");
    let r = report(&state);
    assert_eq!(status_of(&r, "web01-os"), "finished");
    assert_eq!(status_of(&r, "web01-data0"), "finished");
    assert_eq!(status_of(&r, "db01-os"), "finished");
    assert_eq!(status_of(&r, "db01-data0"), "failed");
    assert_eq!(status_of(&r, "archive-01"), "finished");
    assert_eq!(status_of(&r, "old-02"), "excluded");
    assert_eq!(r["complete"], false);
    assert_eq!(r["totals"]["done"], 4);
    let failed = &r["disks"].as_array().unwrap()[3];
    assert!(
        failed["error"].as_str().unwrap().contains("was not found"),
        "{failed}"
    );
    let md = std::fs::read_to_string(state.join("report.md")).unwrap();
    assert!(md.contains("db01-data0") && md.contains("FAILED"), "{md}");
    assert!(
        md.contains("web01: complete") && md.contains("db01: not complete"),
        "{md}"
    );

    // Every disk holds its snapshot's bytes, with the plan's settings.
    for (name, raw) in [
        ("web01-os", &raws[0]),
        ("web01-data0", &raws[1]),
        ("db01-os", &raws[2]),
        ("archive-01", &raws[3]),
    ] {
        assert!(f.holds(name, raw), "{name} differs from its snapshot");
        assert_eq!(f.az.state(name).as_deref(), Some("Unattached"));
        let line = r["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap();
        assert_eq!(line["digest"].as_str().unwrap(), digest(raw), "{name}");
        // Only the non-zero data was read and sent (3 MiB + 70,000 B + 512 KiB).
        let sent = line["bytes_sent"].as_u64().unwrap();
        assert!(
            sent > 3 * MIB && sent < 4 * MIB + 512 * 1024,
            "{name}: {sent}"
        );
    }
    assert_eq!(f.az.disk("web01-os").unwrap()["osType"], "Linux");
    assert_eq!(f.az.disk("db01-os").unwrap()["osType"], "Windows");
    assert!(f.az.disk("web01-data0").unwrap()["osType"].is_null());
    assert!(f.az.disk("old-02").is_none());
    assert!(f.az.disk("db01-data0").is_none());

    // Finished disks are locked (no SAS, no public access) unless the plan says otherwise.
    let web = f.az.disk("web01-os").unwrap();
    assert_eq!(
        (
            web["networkAccessPolicy"].as_str(),
            web["publicNetworkAccess"].as_str()
        ),
        (Some("DenyAll"), Some("Disabled"))
    );
    assert!(f.az.disk("archive-01").unwrap()["networkAccessPolicy"].is_null());
    let locked = f
        .tool(&[
            "verify",
            "--digest",
            "0",
            "-g",
            "rg1",
            "--disk-name",
            "web01-os",
        ])
        .output()
        .unwrap();
    assert!(fails(&locked).contains("DenyAll"), "{}", fails(&locked));
    // The reported digest checks the disk later, with no source; a changed page fails it.
    let d = r["disks"][4]["digest"].as_str().unwrap().to_owned();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--digest",
            &d,
            "-g",
            "rg1",
            "--disk-name",
            "archive-01",
        ];
        args.extend_from_slice(extra);
        f.tool(&args).output().unwrap()
    };
    let text = ok(&verify(&[]));
    assert!(text.contains("content digest matches"), "{text}");
    f.az.tamper("archive-01", 500 * MIB, &[7u8; 512]);
    let e = fails(&verify(&[]));
    assert!(e.contains("does not hold what was reported"), "{e}");

    // Run again: the finished disks are skipped, the missing one fails again.
    let out = migrate(&f, &plan, &["--state-dir", path_str(&state)]);
    assert!(!out.status.success());
    let r = report(&state);
    assert_eq!(status_of(&r, "web01-os"), "finished_earlier");
    assert_eq!(status_of(&r, "archive-01"), "finished_earlier");
    assert_eq!(status_of(&r, "db01-data0"), "failed");

    // `report show` prints the same report.
    let out = f
        .tool(&["report", "show", path_str(&state), "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(shown, r);
}

#[test]
fn killed_at_random_points_a_plan_resumes_to_the_same_bytes() {
    // Slow enough to be killed mid-copy: 50 ms per block request, 2 in
    // flight, about 40 blocks a second for ~105 blocks.
    let f = Site::start(&["--latency-ms", "50"], &[]);
    let raws: Vec<PathBuf> = (11..=13).map(|i| volume(f.dir.path(), i, 16)).collect();
    let snaps: Vec<String> = raws.iter().map(|r| f.ebs.seed(r, &[])).collect();
    let plan = f.plan(&format!(
        "[[machine]]\nname = \"app\"\nos_type = \"linux\"\n  [[machine.disk]]\n  snapshot = \"{}\"\n  role = \"os\"\n  fixup = false\n  [[machine.disk]]\n  snapshot = \"{}\"\n\n[[disk]]\nsnapshot = \"{}\"\nname = \"lone\"\n",
        snaps[0], snaps[1], snaps[2]
    ));
    let state = f.path("state");
    let args = [
        "--state-dir",
        path_str(&state),
        "--concurrency",
        "2",
        "--disks-at-once",
        "2",
    ];
    // A fixed sequence of "random" kill times, so a failure can be replayed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    for _ in 0..6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let after = Duration::from_millis(200 + x % 1800);
        let mut c = f.command(&["migrate", "--plan", path_str(&plan)]);
        let mut child = c
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut ended = None;
        while started.elapsed() < after {
            if let Some(s) = child.try_wait().unwrap() {
                ended = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if ended.is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(
        kills >= 2,
        "the run was too quick to be killed ({kills} kills)"
    );
    let out = migrate(&f, &plan, &args);
    ok(&out);
    let r = report(&state);
    assert_eq!(r["complete"], true, "{r}");
    for (name, raw) in [
        ("app-os", &raws[0]),
        ("app-data0", &raws[1]),
        ("lone", &raws[2]),
    ] {
        assert!(f.holds(name, raw), "{name} differs after {kills} kills");
        let line = r["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap();
        if line["status"] == "finished" || line["status"] == "finished_earlier" {
            if let Some(d) = line["digest"].as_str() {
                assert_eq!(d, digest(raw), "{name}");
            }
        }
    }
    // At least one disk was resumed rather than started over.
    let journals = std::fs::read_dir(state.join("journals")).unwrap().count();
    assert_eq!(journals, 3);
}

#[test]
fn an_interrupt_stops_cleanly_and_says_how_to_resume() {
    let f = Site::start(&["--latency-ms", "100"], &[]);
    let raw = volume(f.dir.path(), 21, 32);
    let snap = f.ebs.seed(&raw, &[]);
    let plan = f.plan(&format!(
        "[[disk]]\nsnapshot = \"{snap}\"\nname = \"big\"\n"
    ));
    let state = f.path("state");
    let mut c = f.command(&[
        "migrate",
        "--plan",
        path_str(&plan),
        "--state-dir",
        path_str(&state),
        "--concurrency",
        "2",
        "--json",
    ]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the disk to start, let it copy a little, then interrupt.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stdout = format!("{first}{rest}").into_bytes();
    no_azure_secrets(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("to resume") && err.contains("--plan"), "{err}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "started");
    let ended = events.iter().find(|e| e["event"] == "interrupted").unwrap();
    assert_eq!(ended["status"], "interrupted");
    assert_eq!(ended["name"], "big");
    assert_eq!(events.last().unwrap()["event"], "run_ended");
    assert!(f.az.state("big").unwrap().contains("Upload"));
    // Resumed: done, identical, and the journaled blocks were not read again.
    let out = migrate(&f, &plan, &["--state-dir", path_str(&state), "--json"]);
    let text = ok(&out);
    let started: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(started["resumed"], true);
    let r = report(&state);
    assert_eq!(status_of(&r, "big"), "finished");
    let read = r["disks"][0]["bytes_allocated"].as_u64().unwrap();
    // The snapshot lists 66 blocks (32 MiB of noise, one block at 200 MiB,
    // the last one); the blocks journaled before the interrupt are not read.
    assert!(
        read < 65 * 512 * 1024,
        "the resumed run read {read} bytes again"
    );
    assert!(f.holds("big", &raw));
    assert_eq!(r["disks"][0]["digest"].as_str().unwrap(), digest(&raw));
}

#[test]
fn shards_as_separate_processes_cover_the_plan_exactly_once() {
    let f = Site::start(&[], &[]);
    let mut body = String::new();
    let mut raws = Vec::new();
    for m in 0..4u64 {
        let os = volume(f.dir.path(), 30 + 2 * m, 1);
        let data = volume(f.dir.path(), 31 + 2 * m, 1);
        let (so, sd) = (f.ebs.seed(&os, &[]), f.ebs.seed(&data, &[]));
        body += &format!("[[machine]]\nname = \"m{m}\"\nos_type = \"linux\"\n  [[machine.disk]]\n  snapshot = \"{so}\"\n  role = \"os\"\n  fixup = false\n  [[machine.disk]]\n  snapshot = \"{sd}\"\n\n");
        raws.push((format!("m{m}-os"), os));
        raws.push((format!("m{m}-data0"), data));
    }
    let lone = volume(f.dir.path(), 40, 1);
    body += &format!(
        "[[disk]]\nsnapshot = \"{}\"\nname = \"lone\"\n",
        f.ebs.seed(&lone, &[])
    );
    raws.push(("lone".into(), lone));
    let plan = f.plan(&body);
    let state = f.path("state");
    // Three shards at once; the index from the scheduler's variable for one.
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut c = f.command(&[
                "migrate",
                "--plan",
                path_str(&plan),
                "--state-dir",
                path_str(&state),
            ]);
            if i == 2 {
                c.env("JOB_COMPLETION_INDEX", "2")
                    .env("EBS2AZURE_SHARD_COUNT", "3");
            } else {
                c.args(["--shard", &format!("{i}/3")]);
            }
            c.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut seen = std::collections::HashMap::new();
    for i in 0..3 {
        let r = report(&state.join(format!("shard-{i}-of-3")));
        assert_eq!(r["shards"][0], format!("{i}/3"));
        for d in r["disks"].as_array().unwrap() {
            *seen
                .entry(d["name"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), raws.len(), "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    for (name, raw) in &raws {
        assert!(f.holds(name, raw), "{name}");
    }
    // One report of the three.
    let shards: Vec<String> = (0..3)
        .map(|i| state.join(format!("shard-{i}-of-3")).display().to_string())
        .collect();
    let mut args = vec!["report", "merge"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["--out", path_str(&state), "--json"]);
    let out = f.tool(&args).output().unwrap();
    let merged: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(merged["totals"]["disks"], raws.len());
    assert_eq!(merged["complete"], true);
    assert_eq!(report(&state)["totals"]["done"], raws.len());
    // The same plan run whole afterwards (or with another shard count) finds
    // every disk's journal: nothing moves again.
    let out = migrate(
        &f,
        &plan,
        &["--state-dir", path_str(&state), "--shard", "1/2"],
    );
    ok(&out);
    let r = report(&state.join("shard-1-of-2"));
    assert!(
        r["disks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "finished_earlier"),
        "{r}"
    );
}

#[test]
fn validation_lists_every_problem_with_its_line() {
    let f = Site::start(&[], &[]);
    let raw = volume(f.dir.path(), 50, 1);
    let snap = f.ebs.seed(&raw, &[]);
    let plan = f.plan(&format!(
        "[[machine]]\nname = \"web01\"\n  [[machine.disk]]\n  snapshot = \"{snap}\"\n  [[machine.disk]]\n  snapshot = \"snap-0123456789abcdef0\"\n  name = \"bad name\"\n\n[[disk]]\nsnapshot = \"{snap}\"\n"
    ));
    let out = f
        .command(&["plan", "validate", path_str(&plan)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    for want in [
        "plan.toml:line 7: machine \"web01\" has no OS disk",
        "plan.toml:line 11: disk name \"bad name\"",
        "plan.toml:line 15: a disk of no machine needs a name",
        "plan.toml:line 15: snapshot",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // A valid plan, then one of its snapshots gone: found online only.
    let plan = f.plan(&format!(
        "[[machine]]\nname = \"web01\"\n  [[machine.disk]]\n  snapshot = \"{snap}\"\n  role = \"os\"\n  [[machine.disk]]\n  snapshot = \"snap-0123456789abcdef0\"\n"
    ));
    let out = f
        .command(&["plan", "validate", path_str(&plan), "--offline"])
        .output()
        .unwrap();
    assert!(ok(&out).contains("valid: 1 machines, 2 disks"));
    let out = f
        .command(&["plan", "validate", path_str(&plan), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let p = &v["problems"][0];
    assert_eq!(p["line"], 12);
    assert!(
        p["message"].as_str().unwrap().contains("web01-data0"),
        "{p}"
    );
    // TOML errors: line and column.
    std::fs::write(&plan, "[defaults]\nlocation = westeurope\n").unwrap();
    let out = f
        .command(&["plan", "validate", path_str(&plan)])
        .output()
        .unwrap();
    blocked(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plan.toml:line 2: column 12:"), "{text}");
    // migrate --plan says the same in one sentence.
    let e = fails(&migrate(&f, &plan, &[]));
    assert!(e.contains("line 2, column 12"), "{e}");
}

#[test]
fn plan_new_writes_a_plan_that_runs_and_a_changed_plan_is_caught() {
    let f = Site::start(&[], &[]);
    let raw = volume(f.dir.path(), 60, 1);
    let snap = f.ebs.seed(&raw, &[]);
    let plan = f.path("new.toml");
    let mut c = f.tool(&[
        "plan",
        "new",
        "-o",
        path_str(&plan),
        "-g",
        "rg1",
        "--location",
        "westeurope",
    ]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{snap}\n# a comment").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(
        text.contains(&format!("subscription = \"{SUB}\"")),
        "{text}"
    );
    let out = f
        .command(&["plan", "validate", path_str(&plan)])
        .output()
        .unwrap();
    ok(&out);
    let state = f.path("new.state");
    ok(&migrate(&f, &plan, &[]));
    assert!(f.holds("disk-000", &raw));
    assert_eq!(status_of(&report(&state), "disk-000"), "finished");
    // The plan changes: the run names the disk and stops.
    std::fs::write(
        &plan,
        text.replace("sku = \"Premium_LRS\"", "sku = \"Standard_LRS\""),
    )
    .unwrap();
    let e = fails(&migrate(&f, &plan, &[]));
    assert!(
        e.contains("disk-000") && e.contains("--accept-plan-changes"),
        "{e}"
    );
}

#[test]
fn the_kubernetes_manifests_plan_validates() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/ebs2azure-plan.yaml"),
    )
    .unwrap();
    // The ConfigMap's `plan.toml: |` block, four spaces in.
    let start = yaml.find("plan.toml: |\n").unwrap() + "plan.toml: |\n".len();
    let plan: String = yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    let out = ebs2azure(&["plan", "validate", path_str(&path), "--offline"]);
    assert!(ok(&out).contains("valid: 1 machines, 2 disks"));
}

#[test]
fn an_interrupted_single_migrate_says_how_to_resume() {
    let f = Site::start(&["--latency-ms", "100"], &[]);
    let raw = volume(f.dir.path(), 70, 24);
    let snap = f.ebs.seed(&raw, &[]);
    let mut c = f.command(&[
        "migrate",
        &snap,
        "-g",
        "rg1",
        "--disk-name",
        "one",
        "--location",
        "westeurope",
        "--concurrency",
        "2",
    ]);
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the disk exists and takes writes, then interrupt.
    let started = Instant::now();
    while f.az.state("one").as_deref() != Some("ActiveUpload")
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    no_azure_secrets(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("--resume"),
        "{err}"
    );
    assert!(f.az.state("one").unwrap().contains("Upload"));
    let mut c = f.command(&[
        "migrate",
        &snap,
        "-g",
        "rg1",
        "--disk-name",
        "one",
        "--resume",
    ]);
    ok(&c.output().unwrap());
    assert!(f.holds("one", &raw));
}
