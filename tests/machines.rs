//! From disks to machines against the emulators: plan checks of VM sizes,
//! `vm create` from finished disks (the ARM emulator checks what Azure
//! checks: disks Unattached then Attached, LUNs, the size's limits, the
//! generation, the zone), ARM templates, and a cutover that ends with VMs.

mod common;

use std::path::Path;

use common::*;

const MIB: u64 = 1 << 20;

fn small_volume(path: &Path, seed: u64) {
    sparse_file(path, 1 << 30, &[(64 * MIB, noise(seed, MIB as usize))]);
}

fn vm(site: &Site, name: &str) -> (u16, serde_json::Value) {
    site.az.arm(
        "GET",
        &format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}?api-version=2024-07-01"),
        "",
    )
}

#[test]
fn plan_validate_checks_the_vm_size_against_the_machine() {
    let site = Site::start(&[], &[]);
    let plan = site.plan(
        "[[machine]]\nname = \"a\"\nvm_size = \"Standard_D2_v5\"\nsku = \"Premium_LRS\"\n[[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nsnapshot = \"snap-00000001\"\n\n\
         [[machine]]\nname = \"b\"\nvm_size = \"Standard_A2_v2\"\nhyper_v_generation = \"V2\"\nsku = \"Standard_LRS\"\n[[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nsnapshot = \"snap-00000002\"\n\n\
         [[machine]]\nname = \"c\"\ninstance_type = \"m5.large\"\nsubnet_id = \"not-a-subnet\"\nlicense_type = \"Windows_Datacenter\"\n[[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nsnapshot = \"snap-00000003\"\n",
    );
    let out = site
        .tool(&["plan", "validate", path_str(&plan), "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Standard_D2_v5 takes no Premium SSD disks; choose Standard_D2s_v5"),
        "{text}"
    );
    assert!(
        text.contains("Standard_A2_v2 boots Generation 1 (BIOS) disks only"),
        "{text}"
    );
    assert!(text.contains("is not a subnet's resource id"), "{text}");
    assert!(
        text.contains("license_type \"Windows_Datacenter\""),
        "{text}"
    );
    // A valid plan tells the sizes it proposed from instance types.
    let plan = site.plan(
        "[[machine]]\nname = \"c\"\ninstance_type = \"m5.large\"\n[[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nsnapshot = \"snap-00000003\"\n",
    );
    let out = site
        .tool(&["plan", "validate", path_str(&plan), "--offline"])
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(
        text.contains(
            "vm_size Standard_D2s_v5 (2 vCPU, 8 GiB) is a proposal from instance type m5.large"
        ),
        "{text}"
    );
}

#[test]
fn vm_create_attaches_finished_disks_and_writes_templates() {
    let site = Site::start(&[], &[]);
    let subnet = site.az.subnet("net", "vnet1", "app");
    let (os, d0, d1) = (
        site.path("os.img"),
        site.path("d0.img"),
        site.path("d1.img"),
    );
    small_volume(&os, 1);
    small_volume(&d0, 2);
    small_volume(&d1, 3);
    let (s_os, s0, s1) = (
        site.ebs.seed(&os, &[]),
        site.ebs.seed(&d0, &[]),
        site.ebs.seed(&d1, &[]),
    );
    let win = site.path("win.img");
    small_volume(&win, 4);
    let s_win = site.ebs.seed(&win, &[]);
    let plan = site.plan(&format!(
        "[[machine]]\nname = \"web01\"\nvm_size = \"Standard_D2s_v5\"\nsubnet_id = \"{subnet}\"\ntags = {{ app = \"web\" }}\n\
         [[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nfixup = false\nsnapshot = \"{s_os}\"\n\
         [[machine.disk]]\nsnapshot = \"{s0}\"\n\
         [[machine.disk]]\nsnapshot = \"{s1}\"\nlun = 0\n\n\
         [[machine]]\nname = \"win01\"\nvm_size = \"Standard_D2s_v5\"\nsubnet_id = \"{subnet}\"\nlicense_type = \"Windows_Server\"\nhyper_v_generation = \"V2\"\npublic_ip = true\n\
         [[machine.disk]]\nrole = \"os\"\nos_type = \"windows\"\nfixup = false\nsnapshot = \"{s_win}\"\n"
    ));
    // Before the disks are finished there is no VM to make.
    let out = site
        .tool(&[
            "vm",
            "create",
            "--plan",
            path_str(&plan),
            "--machine",
            "web01",
        ])
        .output()
        .unwrap();
    assert!(
        fails(&out).contains("web01-os is not in Azure"),
        "{}",
        fails(&out)
    );
    ok(&site.run(&["migrate", "--plan", path_str(&plan)]));

    // A template first: nothing is made.
    let dir = site.path("templates");
    let out = site
        .tool(&[
            "vm",
            "create",
            "--plan",
            path_str(&plan),
            "--emit-template",
            path_str(&dir),
        ])
        .output()
        .unwrap();
    ok(&out);
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("web01.json")).unwrap()).unwrap();
    assert!(t["$schema"]
        .as_str()
        .unwrap()
        .contains("deploymentTemplate.json"));
    let res = t["resources"].as_array().unwrap();
    assert_eq!(res.len(), 2, "no public IP unless asked: {t}");
    let w: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("win01.json")).unwrap()).unwrap();
    assert_eq!(
        w["resources"].as_array().unwrap().len(),
        3,
        "asked for a public IP: {w}"
    );
    assert_eq!(vm(&site, "web01").0, 404);
    // Both pass ARM's template schema (offline copy, testdata/arm) ...
    let check = |files: &[&Path]| {
        std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-arm-template"),
        )
        .args(files)
        .output()
        .unwrap()
    };
    let out = check(&[&dir.join("web01.json"), &dir.join("win01.json")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ... which does catch a template ARM would refuse.
    let mut bad = w.clone();
    bad["resources"][2]["properties"]["storageProfile"]["osDisk"]["createOption"] =
        "Attached".into();
    let bad_file = site.path("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let out = check(&[&bad_file]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("createOption"),
        "{said}"
    );

    let out = site
        .tool(&["vm", "create", "--plan", path_str(&plan), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["complete"], true, "{v}");
    let (status, made) = vm(&site, "web01");
    assert_eq!(status, 200);
    let p = &made["properties"];
    assert_eq!(p["hardwareProfile"]["vmSize"], "Standard_D2s_v5");
    assert_eq!(p["storageProfile"]["osDisk"]["osType"], "Linux");
    assert!(p.get("osProfile").is_none());
    let data = p["storageProfile"]["dataDisks"].as_array().unwrap();
    // The disk with lun = 0 keeps it; the other takes the next free LUN.
    let lun_of = |disk: &str| {
        data.iter()
            .find(|d| d["managedDisk"]["id"].as_str().unwrap().ends_with(disk))
            .unwrap()["lun"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((lun_of("web01-data1"), lun_of("web01-data0")), (0, 1));
    assert_eq!(p["diagnosticsProfile"]["bootDiagnostics"]["enabled"], true);
    assert_eq!(made["tags"]["app"], "web");
    for d in ["web01-os", "web01-data0", "web01-data1"] {
        assert_eq!(site.az.state(d).as_deref(), Some("Attached"), "{d}");
    }
    // Azure refuses to delete an attached disk; the emulator too.
    let (status, err) = site.az.arm(
        "DELETE",
        &format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/disks/web01-os?api-version=2024-03-02"),
        "",
    );
    assert_eq!(status, 409, "{err}");
    let (status, w) = vm(&site, "win01");
    assert_eq!(status, 200);
    assert_eq!(
        w["properties"]["storageProfile"]["osDisk"]["osType"],
        "Windows"
    );
    assert_eq!(w["properties"]["licenseType"], "Windows_Server");
    assert_eq!(site.az.disk("win01-os").unwrap()["hyperVGeneration"], "V2");
    // Made already: a second run changes nothing.
    ok(&site
        .tool(&["vm", "create", "--plan", path_str(&plan)])
        .output()
        .unwrap());
}

#[test]
fn a_cutover_ends_with_the_machines_vm() {
    let site = Site::start(
        &["--snapshot-seconds", "0.2", "--instance-seconds", "0.2"],
        &[],
    );
    let subnet = site.az.subnet("net", "vnet1", "app");
    let isolated = site.az.subnet("net", "isolated", "test");
    let os = site.path("os.img");
    small_volume(&os, 9);
    let (instance, vols) = site.ebs.instance("app01", &[("/dev/xvda", &os)]);
    let first = site.ebs.snapshot_instance(&instance);
    let plan = site.plan(&format!(
        "[[machine]]\nname = \"app01\"\ninstance_id = \"{instance}\"\ninstance_type = \"m5.large\"\nsubnet_id = \"{subnet}\"\ntest_subnet_id = \"{isolated}\"\n\
         [[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nfixup = false\nsnapshot = \"{}\"\n",
        first[&vols[0]]
    ));
    ok(&site.run(&["migrate", "--plan", path_str(&plan), "--pre-seed"]));
    // A test migration leaves a pre-seeded disk alone.
    let out = site
        .tool(&["vm", "create", "--plan", path_str(&plan), "--test"])
        .output()
        .unwrap();
    assert!(
        fails(&out).contains("pre-seeded, still open"),
        "{}",
        fails(&out)
    );
    assert_eq!(site.az.state("app01-os").as_deref(), Some("ActiveUpload"));
    assert!(site.az.state("app01-os-test").is_none());
    ok(&site.run(&["cutover", "--plan", path_str(&plan), "--verify", "changed"]));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.path("plan.state/report.json")).unwrap())
            .unwrap();
    assert!(
        r["machines"][0]["vm"]
            .as_str()
            .unwrap()
            .ends_with("/virtualMachines/app01"),
        "{r}"
    );
    let last = r["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["phase"].as_str(), last["outcome"].as_str()),
        (Some("vm"), Some("ok"))
    );
    let (status, made) = vm(&site, "app01");
    assert_eq!(status, 200);
    assert_eq!(
        made["properties"]["hardwareProfile"]["vmSize"],
        "Standard_D2s_v5"
    );
}

#[test]
fn a_test_migration_stands_beside_the_real_one_and_its_cleanup_deletes_only_it() {
    let site = Site::start(&[], &[]);
    let subnet = site.az.subnet("net", "vnet1", "app");
    let isolated = site.az.subnet("net", "isolated", "test");
    let (os, d0) = (site.path("os.img"), site.path("d0.img"));
    small_volume(&os, 11);
    small_volume(&d0, 12);
    let (s_os, s0) = (site.ebs.seed(&os, &[]), site.ebs.seed(&d0, &[]));
    let plan = site.plan(&format!(
        "[[machine]]\nname = \"web01\"\nvm_size = \"Standard_D2s_v5\"\nsubnet_id = \"{subnet}\"\ntest_subnet_id = \"{isolated}\"\n\
         [[machine.disk]]\nrole = \"os\"\nos_type = \"linux\"\nfixup = false\nsnapshot = \"{s_os}\"\n\
         [[machine.disk]]\nsnapshot = \"{s0}\"\n"
    ));
    ok(&site.run(&["migrate", "--plan", path_str(&plan)]));
    ok(&site
        .tool(&[
            "vm",
            "create",
            "--plan",
            path_str(&plan),
            "--test",
            "--run-id",
            "t1",
        ])
        .output()
        .unwrap());
    let (status, test_vm) = vm(&site, "web01-test");
    assert_eq!(status, 200);
    assert_eq!(test_vm["tags"]["ebs2azure-test-run"], "t1");
    let nic = site.az.arm(
        "GET",
        &format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/web01-test-nic?api-version=2024-05-01"),
        "",
    );
    assert_eq!(
        nic.1["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"],
        isolated.as_str()
    );
    // The copies are attached to the test VM; the real disks are untouched and hold the same bytes.
    for d in ["web01-os-test", "web01-data0-test"] {
        assert_eq!(site.az.state(d).as_deref(), Some("Attached"), "{d}");
    }
    for d in ["web01-os", "web01-data0"] {
        assert_eq!(site.az.state(d).as_deref(), Some("Unattached"), "{d}");
    }
    let (a, b) = (site.path("real.back"), site.path("test.back"));
    site.az.download("web01-data0", &a);
    site.az.download("web01-data0-test", &b);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // The real VM after the test, as a cutover would make it.
    ok(&site
        .tool(&["vm", "create", "--plan", path_str(&plan)])
        .output()
        .unwrap());
    assert_eq!(site.az.state("web01-os").as_deref(), Some("Attached"));

    // Another run's clean-up keeps what is not its own.
    let out = site
        .tool(&[
            "cleanup",
            "--test",
            "--plan",
            path_str(&plan),
            "--run-id",
            "t2",
        ])
        .output()
        .unwrap();
    assert!(ok(&out).contains("kept: it is test run t1's, not t2's"));
    assert_eq!(vm(&site, "web01-test").0, 200);
    let out = site
        .tool(&[
            "cleanup",
            "--test",
            "--plan",
            path_str(&plan),
            "--run-id",
            "t1",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let deleted = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "deleted")
        .count();
    assert_eq!(deleted, 4, "VM, NIC and two disk copies: {v}");
    assert_eq!(vm(&site, "web01-test").0, 404);
    assert!(site.az.state("web01-os-test").is_none());
    // The real machine stands.
    assert_eq!(vm(&site, "web01").0, 200);
    assert_eq!(site.az.state("web01-data0").as_deref(), Some("Attached"));
}

#[test]
fn customer_keys_come_from_the_plans_disk_encryption_set() {
    let site = Site::start(&[], &[]);
    let des = |name: &str, location: &str| {
        let path = format!("/subscriptions/{SUB}/resourceGroups/keys/providers/Microsoft.Compute/diskEncryptionSets/{name}");
        let body = format!(
            r#"{{"location": "{location}", "identity": {{"type": "SystemAssigned"}}, "properties": {{"activeKey": {{"keyUrl": "https://kv.vault.azure.net/keys/k/1"}}}}}}"#
        );
        let (status, v) = site
            .az
            .arm("PUT", &format!("{path}?api-version=2024-03-02"), &body);
        assert!(status == 200 || status == 201, "{status} {v}");
        path
    };
    let (here, there) = (des("des-we", "westeurope"), des("des-us", "eastus"));
    let (a, b) = (site.path("a.img"), site.path("b.img"));
    small_volume(&a, 21);
    small_volume(&b, 22);
    let (sa, sb) = (site.ebs.seed(&a, &[]), site.ebs.seed(&b, &[]));
    let plan = site.plan(&format!(
        "[defaults.tags]\nowner = \"t\"\n\n[[disk]]\nname = \"enc\"\nsnapshot = \"{sa}\"\ndisk_encryption_set = \"{here}\"\nencryption = \"double\"\n\n\
         [[disk]]\nname = \"far\"\nsnapshot = \"{sb}\"\ndisk_encryption_set = \"{there}\"\n"
    ));
    // plan validate finds the set in the wrong region before anything moves.
    let out = site.run(&["plan", "validate", path_str(&plan)]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("disk far: disk encryption set"), "{text}");
    assert!(
        text.contains("is in eastus, and the disk in westeurope"),
        "{text}"
    );
    assert!(!text.contains("disk enc:"), "{text}");
    let out = site.run(&["migrate", "--plan", path_str(&plan)]);
    fails(&out);
    let enc = site.az.disk("enc").unwrap();
    assert_eq!(
        enc["encryption"]["type"],
        "EncryptionAtRestWithPlatformAndCustomerKeys"
    );
    assert_eq!(enc["encryption"]["diskEncryptionSetId"], here.as_str());
    assert!(site.holds("enc", &a));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.path("plan.state/report.json")).unwrap())
            .unwrap();
    let far = r["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "far")
        .unwrap();
    assert!(
        far["error"]
            .as_str()
            .unwrap()
            .contains("is in eastus, not westeurope"),
        "{far}"
    );
    // An encryption kind without a set is a plan problem.
    let bad = site.plan(&format!(
        "[[disk]]\nname = \"x\"\nsnapshot = \"{sa}\"\nencryption = \"double\"\n"
    ));
    let out = site
        .tool(&["plan", "validate", path_str(&bad), "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no disk_encryption_set"));
}

#[test]
fn disks_that_want_an_entra_token_get_one_beside_the_sas() {
    let site = Site::start(&[], &[]);
    let (a, b) = (site.path("a.img"), site.path("b.img"));
    small_volume(&a, 31);
    small_volume(&b, 32);
    let (sa, sb) = (site.ebs.seed(&a, &[]), site.ebs.seed(&b, &[]));
    let plan = site.plan(&format!(
        "[[disk]]\nname = \"entra\"\nsnapshot = \"{sa}\"\ndata_access_auth_mode = \"AzureActiveDirectory\"\nlock_network = false\n\n\
         [[disk]]\nname = \"plain\"\nsnapshot = \"{sb}\"\n"
    ));
    // A token the disk does not take: that disk fails in a sentence saying
    // what it needs; the other, which wants none, moves.
    let wrong = "not-the-disk-token-never-print";
    let out = site
        .command(&["migrate", "--plan", path_str(&plan)])
        .env("EBS2AZURE_DISK_TOKEN", wrong)
        .output()
        .unwrap();
    fails(&out);
    no_azure_secrets(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(wrong));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.path("plan.state/report.json")).unwrap())
            .unwrap();
    let error_of = |name: &str| {
        r["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap()["error"]
            .clone()
    };
    let e = error_of("entra");
    assert!(
        e.as_str().unwrap().contains("refused the Entra ID token")
            && e.as_str()
                .unwrap()
                .contains("Data Operator for Managed Disks"),
        "{e}"
    );
    assert!(error_of("plain").is_null());
    assert!(site.holds("plain", &b));
    assert_eq!(
        site.az.disk("entra").unwrap()["dataAccessAuthMode"],
        "AzureActiveDirectory"
    );
    assert!(site.az.disk("plain").unwrap()["dataAccessAuthMode"].is_null());

    // With the token (a file, as `az account get-access-token` prints it)
    // the run resumes and the disk finishes.
    let file = site.path("disk-token.json");
    std::fs::write(
        &file,
        format!(r#"{{"accessToken": "{DISK_TOKEN}", "tokenType": "Bearer"}}"#),
    )
    .unwrap();
    let out = site
        .command(&[
            "migrate",
            "--plan",
            path_str(&plan),
            "--disk-token-file",
            path_str(&file),
        ])
        .output()
        .unwrap();
    ok(&out);
    no_azure_secrets(&out);
    assert_eq!(site.az.state("entra").as_deref(), Some("Unattached"));
    assert!(site.holds("entra", &a));
    // Reading it back wants the token too: verify gets it the same way.
    let out = site
        .command(&["verify", &sa, "-g", "rg1", "--disk-name", "entra"])
        .env("EBS2AZURE_DISK_TOKEN", DISK_TOKEN)
        .output()
        .unwrap();
    ok(&out);
    no_azure_secrets(&out);
}
