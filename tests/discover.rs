//! Discovery against the emulators: `plan new --from-ec2` writes a plan from
//! EC2's instances (names, platforms, boot modes, tags, volumes in device
//! order, their newest snapshots or new ones), leaves out what Azure cannot
//! run with the reason, and the plan it writes validates and migrates.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

const MIB: u64 = 1 << 20;

fn volume(path: &Path, seed: u64) {
    sparse_file(path, 1 << 30, &[(8 * MIB, noise(seed, MIB as usize))]);
}

#[test]
fn a_fleet_is_discovered_from_ec2_and_its_plan_validates() {
    let site = Site::start(&["--snapshot-seconds", "0.2"], &[]);
    let img = |name: &str, seed| {
        let p = site.path(name);
        volume(&p, seed);
        p
    };
    let (root, data1, data2, win, arm, store, lone) = (
        img("root.img", 1),
        img("data1.img", 2),
        img("data2.img", 3),
        img("win.img", 4),
        img("arm.img", 5),
        img("store.img", 6),
        img("lone.img", 7),
    );
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    // Volumes registered out of device order: the plan puts them in it.
    let (web, web_vols) = site.ebs.register(&json!({
        "volumes": [{"device": "/dev/xvda", "image": s(&root)},
                    {"device": "/dev/xvdg", "image": s(&data2), "encrypted": true},
                    {"device": "/dev/xvdf", "image": s(&data1)}],
        "name": "web server #1", "instance_type": "m5.large", "boot_mode": "uefi",
        "tags": {"wave": "1", "app": "shop", "aws:cloudformation:stack-name": "legacy"}}));
    let (winst, _) = site.ebs.register(&json!({
        "volumes": [{"device": "/dev/sda1", "image": s(&win)}],
        "name": "win01", "platform": "windows", "instance_type": "m5.xlarge", "boot_mode": "legacy-bios",
        "tags": {"wave": "1"}}));
    let (armi, _) = site.ebs.register(&json!({
        "volumes": [{"device": "/dev/xvda", "image": s(&arm)}],
        "name": "graviton", "architecture": "arm64", "instance_type": "c7g.large", "tags": {"wave": "1"}}));
    let (storei, _) = site.ebs.register(&json!({
        "volumes": [{"device": "/dev/sda1", "image": s(&store)}],
        "name": "old", "root_device_type": "instance-store", "tags": {"wave": "1"}}));
    let (lonei, _) = site.ebs.register(&json!({
        "volumes": [{"device": "/dev/xvda", "image": s(&lone)}], "name": "never-snapshotted",
        "tags": {"wave": "2"}}));
    let web_snaps = site.ebs.snapshot_instance(&web);
    let win_snaps = site.ebs.snapshot_instance(&winst);
    site.ebs.snapshot_instance(&armi);
    // A newer snapshot of web's root: the newest completed one is taken.
    let newer = site.ebs.snapshot_instance(&web);
    assert_ne!(newer[&web_vols[0]], web_snaps[&web_vols[0]]);

    let plan = site.path("wave1.toml");
    let out = site
        .command(&[
            "plan",
            "new",
            "--from-ec2",
            "--tag",
            "wave=1",
            "-g",
            "rg1",
            "--location",
            "westeurope",
            "-o",
            path_str(&plan),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    no_secrets(&out);
    assert!(
        said.contains(&format!(
            "left out {armi} (graviton): it is an Arm64 instance (c7g.large)"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "left out {storei} (old): its root device is an instance store"
        )),
        "{said}"
    );
    assert!(!said.contains(&lonei), "wave 2 is not asked for: {said}");
    assert!(
        said.contains("2 machines, 4 disks; 2 instances left out"),
        "{said}"
    );
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains(&format!("#   {armi} (graviton):")), "{text}");
    // It validates against the emulators (snapshots exist, completed, fit Azure).
    let out = site
        .command(&["plan", "validate", path_str(&plan), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    let machines = parsed["machine"].as_array().unwrap();
    let web_m = machines
        .iter()
        .find(|m| m["instance_id"].as_str() == Some(web.as_str()))
        .unwrap();
    assert_eq!(web_m["name"].as_str(), Some("web-server-1"));
    assert_eq!(web_m["os_type"].as_str(), Some("linux"));
    assert_eq!(web_m["hyper_v_generation"].as_str(), Some("V2"));
    assert_eq!(web_m["vm_size"].as_str(), Some("Standard_D2s_v5"));
    assert_eq!(web_m["tags"]["app"].as_str(), Some("shop"));
    assert!(web_m["tags"].get("aws:cloudformation:stack-name").is_none());
    let disks = web_m["disk"].as_array().unwrap();
    let devs: Vec<&str> = disks
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(devs, ["/dev/xvda", "/dev/xvdf", "/dev/xvdg"]);
    assert_eq!(disks[0]["role"].as_str(), Some("os"));
    assert_eq!(
        disks[0]["snapshot"].as_str(),
        Some(newer[&web_vols[0]].as_str())
    );
    assert_eq!(
        (disks[1]["lun"].as_integer(), disks[2]["lun"].as_integer()),
        (Some(0), Some(1))
    );
    assert!(text.contains("kms:Decrypt"), "{text}");
    let win_m = machines
        .iter()
        .find(|m| m["instance_id"].as_str() == Some(winst.as_str()))
        .unwrap();
    assert_eq!(win_m["os_type"].as_str(), Some("windows"));
    assert_eq!(win_m["hyper_v_generation"].as_str(), Some("V1"));
    let win_snap = win_snaps.values().next().unwrap();
    assert_eq!(
        win_m["disk"][0]["snapshot"].as_str(),
        Some(win_snap.as_str())
    );
    // The discovered plan migrates: the data disk holds its volume.
    let out = site.run(&["migrate", "--plan", path_str(&plan)]);
    assert!(
        site.holds("web-server-1-data0", &data1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A volume with no snapshot is said so, unless new ones are taken.
    let lone_plan = site.path("wave2.toml");
    let out = site
        .command(&[
            "plan",
            "new",
            "--from-ec2",
            "--tag",
            "wave=2",
            "-o",
            path_str(&lone_plan),
        ])
        .output()
        .unwrap();
    assert!(
        fails(&out).contains("can go to Azure as they are"),
        "{}",
        fails(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no completed snapshot"));
    let out = site
        .command(&[
            "plan",
            "new",
            "--from-ec2",
            "--instance-ids",
            &lonei,
            "--snapshot",
            "-o",
            path_str(&lone_plan),
        ])
        .output()
        .unwrap();
    ok(&out);
    let text = std::fs::read_to_string(&lone_plan).unwrap();
    let snap = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("snapshot = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(snap.starts_with("snap-"), "{text}");
    // An id EC2 does not have is one sentence.
    let out = site
        .command(&[
            "plan",
            "new",
            "--from-ec2",
            "--instance-ids",
            "i-0000000000000000f",
        ])
        .output()
        .unwrap();
    let e = fails(&out);
    assert!(e.contains("i-0000000000000000f"), "{e}");
}
