//! Cold cutovers end to end against the EBS emulator (with its EC2 calls
//! over instances whose volumes are image files), the ARM emulator and
//! Azurite on loopback: pre-seed, change the volumes (blocks written,
//! blocks newly zero, blocks trimmed), snapshot, sync, cutover. Disks are
//! read back with the storage SDK; the blob proxy counts what was sent.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 512 * 1024;

/// Both emulators: EC2 snapshots complete and instances stop after half a
/// second; SAS URLs go through the blob proxy, which counts what is sent.
fn site(ebs_flags: &[&str]) -> Site {
    let mut flags = vec!["--snapshot-seconds", "0.5", "--instance-seconds", "0.5"];
    flags.extend_from_slice(ebs_flags);
    Site::start(&flags, &["--proxy", "1"])
}

/// Bytes the blob proxy saw written since the last call, and cleared.
fn sent_since(site: &Site) -> (u64, u64) {
    let s = site.az.stats();
    let put = s["put_page_bytes"].as_u64().unwrap();
    let cleared = s["clear_page_bytes"].as_u64().unwrap();
    site.az.reset_stats();
    (put, cleared)
}

/// A machine `name` whose instance has an OS and a data volume (image
/// files with `blocks` blocks of noise each, seeded from `seed`), both
/// snapshotted once, and the plan of it (the OS disk streamed, no fix-ups).
/// Returns the images, the instance, its volumes, the first snapshots and the plan.
fn two_disk_machine(
    site: &Site,
    name: &str,
    seed: u64,
    blocks: u64,
) -> (
    PathBuf,
    PathBuf,
    String,
    Vec<String>,
    std::collections::BTreeMap<String, String>,
    PathBuf,
) {
    let (os, data) = (site.path("os.img"), site.path("data.img"));
    volume(&os, seed, blocks);
    volume(&data, seed + 99, blocks);
    let (instance, vols) = site
        .ebs
        .instance(name, &[("/dev/xvda", &os), ("/dev/xvdf", &data)]);
    let first = site.ebs.snapshot_instance(&instance);
    let plan = site.plan(&format!(
        "[[machine]]\nname = \"{name}\"\ninstance_id = \"{instance}\"\n\n[[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nfixup = false\nsnapshot = \"{}\"\n\n[[machine.disk]]\nsnapshot = \"{}\"\n",
        first[&vols[0]], first[&vols[1]]
    ));
    (os, data, instance, vols, first, plan)
}

/// A 1 GiB volume with `blocks` blocks of noise spread over it.
fn volume(path: &Path, seed: u64, blocks: u64) {
    let writes: Vec<(u64, Vec<u8>)> = (0..blocks)
        .map(|i| (i * 7 * BLOCK + 64 * MIB, noise(seed + i, BLOCK as usize)))
        .collect();
    sparse_file(path, 1 << 30, &writes);
}

/// Writes noise over block `index` of the image.
fn write_block(path: &Path, index: u64, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&noise(seed, BLOCK as usize), index * BLOCK)
        .unwrap();
}

/// Writes zeros over block `index` (the volume wrote them: still a written block).
fn zero_block(path: &Path, index: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; BLOCK as usize], index * BLOCK)
        .unwrap();
}

/// Punches block `index` out (the volume trimmed it).
fn trim_block(path: &Path, index: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (index * BLOCK) as i64,
            BLOCK as i64,
        )
    };
    assert_eq!(rc, 0, "punching a hole");
}

/// The block index of the `i`th noise block of `volume`.
fn data_block(i: u64) -> u64 {
    (i * 7 * BLOCK + 64 * MIB) / BLOCK
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

fn disk_line<'a>(r: &'a serde_json::Value, disk: &str) -> &'a serde_json::Value {
    r["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == disk)
        .unwrap_or_else(|| panic!("{disk} not in report {r}"))
}

#[test]
fn pre_seed_sync_and_cutover_send_only_what_changed_and_end_identical() {
    let site = site(&[]);
    let (os, data, instance, vols, first, plan) = two_disk_machine(&site, "web01", 1, 20);
    let state = site.path("plan.state");

    // Pre-seed: copied whole, left open.
    let out = site.run(&["migrate", "--plan", path_str(&plan), "--pre-seed"]);
    ok(&out);
    assert_eq!(site.az.state("web01-os").as_deref(), Some("ActiveUpload"));
    assert_eq!(
        site.az.state("web01-data0").as_deref(),
        Some("ActiveUpload")
    );
    assert_eq!(disk_line(&report(&state), "web01-os")["status"], "seeded");
    assert!(site.holds("web01-os", &os) && site.holds("web01-data0", &data));
    let (seeded, _) = sent_since(&site);
    assert!(seeded >= 40 * BLOCK, "{seeded}");
    // Running the pre-seed again does nothing more.
    ok(&site.run(&["migrate", "--plan", path_str(&plan), "--pre-seed"]));
    assert_eq!(sent_since(&site).0, 0);

    // Days later: blocks written, a block newly zero, a block trimmed, a new block.
    write_block(&os, data_block(3), 900);
    write_block(&os, data_block(4), 901);
    zero_block(&os, data_block(5));
    trim_block(&os, data_block(6));
    write_block(&os, 2000, 902);
    write_block(&data, data_block(0), 903);
    let second = site.ebs.snapshot_instance(&instance);
    let targets = site.path("new.txt");
    std::fs::write(
        &targets,
        format!(
            "web01-os {}\n{} {}\n",
            second[&vols[0]], first[&vols[1]], second[&vols[1]]
        ),
    )
    .unwrap();
    let out = site.run(&[
        "sync",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
    ]);
    ok(&out);
    let (sent, cleared) = sent_since(&site);
    let changed_nonzero = 4 * BLOCK;
    assert!(
        sent >= changed_nonzero && sent as f64 <= 1.05 * changed_nonzero as f64,
        "sent {sent}, changed {changed_nonzero}"
    );
    assert!(
        cleared >= 2 * BLOCK,
        "the zeroed and trimmed blocks are cleared: {cleared}"
    );
    assert!(site.holds("web01-os", &os) && site.holds("web01-data0", &data));
    let r = report(&state);
    assert_eq!(r["run"], "sync");
    let line = disk_line(&r, "web01-os");
    assert_eq!(line["status"], "synced");
    assert_eq!(line["synced_from"], first[&vols[0]].as_str());
    assert_eq!(site.az.state("web01-os").as_deref(), Some("ActiveUpload"));
    // The same sync again has nothing to do.
    ok(&site.run(&[
        "sync",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
    ]));
    assert_eq!(sent_since(&site), (0, 0));

    // The window: more changes, then one command.
    write_block(&data, data_block(9), 904);
    trim_block(&data, data_block(10));
    let out = site.run(&[
        "cutover",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
        "--stop-instances",
    ]);
    let text = ok(&out);
    assert!(text.contains("Window timeline"), "{text}");
    let (sent, _) = sent_since(&site);
    assert!(
        sent <= (1.05 * BLOCK as f64) as u64 + 2 * 512,
        "the window sent {sent}"
    );
    for d in ["web01-os", "web01-data0"] {
        assert_eq!(site.az.state(d).as_deref(), Some("Unattached"), "{d}");
    }
    assert!(site.holds("web01-os", &os) && site.holds("web01-data0", &data));
    let r = report(&state);
    assert_eq!(r["run"], "cutover");
    assert_eq!(r["complete"], true);
    let phases: Vec<&str> = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["machine"] == "web01")
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["stop", "snapshot", "sync", "finalize", "verify"],
        "{r}"
    );
    assert!(r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["outcome"] == "ok"));
    assert!(r["rollback"]
        .as_str()
        .unwrap()
        .contains(&format!("start-instances --instance-ids {instance}")));
    // The final snapshot came from the instance, not from the file.
    assert_ne!(
        disk_line(&r, "web01-data0")["snapshot"],
        second[&vols[1]].as_str()
    );
    // A cutover run again skips the finished disks.
    ok(&site.run(&["cutover", "--plan", path_str(&plan)]));
    assert_eq!(sent_since(&site).0, 0);
}

#[test]
fn a_snapshot_of_another_volume_is_refused_and_a_full_copy_is_asked_for() {
    let site = site(&[]);
    let (a, b) = (site.path("a.img"), site.path("b.img"));
    volume(&a, 1, 8);
    volume(&b, 50, 8);
    let sa = site.ebs.seed(&a, &[]);
    let sb = site.ebs.seed(&b, &[]);
    let plan = site.plan(&format!("[[disk]]\nname = \"lone\"\nsnapshot = \"{sa}\"\n"));
    ok(&site.run(&["migrate", "--plan", path_str(&plan), "--pre-seed"]));
    sent_since(&site);
    let targets = site.path("t.txt");
    std::fs::write(&targets, format!("lone {sb}\n")).unwrap();
    let out = site.run(&[
        "sync",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
    ]);
    let err = fails(&out);
    let r = report(&site.path("plan.state"));
    let why = disk_line(&r, "lone")["error"].as_str().unwrap().to_owned();
    assert!(
        why.contains(&format!(
            "snapshot {sb} is not of the same volume as snapshot {sa}"
        )),
        "{why}"
    );
    assert!(err.contains("not done"), "{err}");
    assert_eq!(sent_since(&site).0, 0, "nothing was written");
    // Asked for, the whole new snapshot goes over the disk.
    ok(&site.run(&[
        "sync",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
        "--full",
    ]));
    assert!(site.holds("lone", &b));
    // A cutover killed right after ending the upload, before its journal
    // said so: run again, it finds the disk finished at its base and checks it.
    assert!(site.az.end_upload("lone").contains("202"));
    assert_eq!(site.az.state("lone").as_deref(), Some("Unattached"));
    ok(&site.run(&[
        "cutover",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
    ]));
    let r = report(&site.path("plan.state"));
    assert_eq!(disk_line(&r, "lone")["status"], "finished", "{r}");
    assert_eq!(disk_line(&r, "lone")["snapshot"], sb.as_str());
    // A disk never pre-seeded has nothing to sync from.
    let other = site.plan(&format!(
        "[[disk]]\nname = \"fresh\"\nsnapshot = \"{sa}\"\n"
    ));
    std::fs::remove_dir_all(site.path("plan.state")).unwrap();
    let out = site.run(&["sync", "--plan", path_str(&other)]);
    assert!(fails(&out).contains("pre-seed"), "{}", fails(&out));
}

#[test]
fn a_sync_killed_midway_resumes_and_ends_identical() {
    // 10 blocks a second: the journal appends its records every 2 s, so a
    // kill after 3 s finds some of the sync's blocks journaled.
    let site = site(&["--get-rate", "10"]);
    let vol = site.path("v.img");
    volume(&vol, 7, 8);
    let (instance, vols) = site.ebs.instance("db01", &[("/dev/xvda", &vol)]);
    let first = site.ebs.snapshot_instance(&instance);
    let plan = site.plan(&format!(
        "[[machine]]\nname = \"db01\"\ninstance_id = \"{instance}\"\n[[machine.disk]]\nrole = \"os\"\nfixup = false\nos_type = \"linux\"\nsnapshot = \"{}\"\n",
        first[&vols[0]]
    ));
    ok(&site.run(&[
        "migrate",
        "--plan",
        path_str(&plan),
        "--pre-seed",
        "--concurrency",
        "4",
    ]));
    for i in 0..60 {
        write_block(&vol, 1000 + i * 3, 500 + i);
    }
    let second = site.ebs.snapshot_instance(&instance);
    let targets = site.path("t.txt");
    std::fs::write(&targets, format!("db01-os {}\n", second[&vols[0]])).unwrap();
    sent_since(&site);
    let mut child = site
        .command(&[
            "sync",
            "--plan",
            path_str(&plan),
            "--to-snapshots",
            path_str(&targets),
            "--concurrency",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.az.stats()["put_page_bytes"].as_u64().unwrap() < 30 * BLOCK
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let (before, _) = sent_since(&site);
    assert!(
        (30 * BLOCK..60 * BLOCK).contains(&before),
        "killed after {before} bytes"
    );
    ok(&site.run(&[
        "sync",
        "--plan",
        path_str(&plan),
        "--to-snapshots",
        path_str(&targets),
    ]));
    let (after, _) = sent_since(&site);
    assert!(
        after < 60 * BLOCK,
        "the resumed sync sent {after}: journaled blocks are not sent again"
    );
    assert!(before + after >= 60 * BLOCK);
    assert!(site.holds("db01-os", &vol));
    let r = report(&site.path("plan.state"));
    assert_eq!(disk_line(&r, "db01-os")["resumed"], true);
    // A short window: only the blocks it changes are read back.
    write_block(&vol, 1500, 990);
    trim_block(&vol, 1000);
    let out = site.run(&["cutover", "--plan", path_str(&plan), "--verify", "changed"]);
    ok(&out);
    assert!(site.holds("db01-os", &vol));
    let r = report(&site.path("plan.state"));
    let verify = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "verify")
        .unwrap();
    assert_eq!(verify["outcome"], "ok", "{r}");
}

#[test]
fn a_disk_finished_by_a_killed_cutover_counts_only_if_its_volume_did_not_change() {
    let site = site(&[]);
    let (os, data, _, _, _, plan) = two_disk_machine(&site, "app01", 3, 4);
    ok(&site.run(&["migrate", "--plan", path_str(&plan), "--pre-seed"]));
    // A cutover ended both uploads and was killed before its journals said so.
    for d in ["app01-os", "app01-data0"] {
        assert!(site.az.end_upload(d).contains("202"));
    }
    // Only the data volume changed since.
    write_block(&data, data_block(1), 321);
    let out = site.run(&["cutover", "--plan", path_str(&plan)]);
    fails(&out);
    let r = report(&site.path("plan.state"));
    assert_eq!(disk_line(&r, "app01-os")["status"], "finished", "{r}");
    let why = disk_line(&r, "app01-data0")["error"].as_str().unwrap();
    assert!(
        why.contains("finished at snapshot") && why.contains("1 blocks changed on the volume"),
        "{why}"
    );
    assert!(site.holds("app01-os", &os));
}
