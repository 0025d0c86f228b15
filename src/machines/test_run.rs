//! Test migrations: beside a machine's real disks and VM, never over them,
//! a copy of each finished disk (`NAME-test`, createOption Copy) and a VM
//! (`MACHINE-test`) in the plan's isolated `test_subnet_id`, every resource
//! tagged with the test run's id; and the clean-up that deletes exactly
//! those, checking each resource's name and tag before deleting it.
//!
//! A test copies finished disks only: a pre-seeded disk is still open, and
//! copying or finishing it would disturb the cutover to come, so the test
//! says to wait for it instead.

use serde_json::{json, Value};

use super::vm::{self, Attached, Error, VmSpec};
use crate::azure::Session;
use crate::plan::model::{Machine, Plan};

/// The tag every test resource carries, with its run's id as the value.
pub const TEST_TAG: &str = "ebs2azure-test-run";
/// What test resources' names end with.
pub const TEST_SUFFIX: &str = "-test";

fn disk_path(real: &VmSpec, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}",
        real.subscription, real.resource_group
    )
}

/// The test twin of `real`: its names suffixed, its NIC in `subnet`, its
/// disks the test copies, no public IP, tagged with `run`.
pub fn test_spec(real: &VmSpec, run: &str, subnet: &str) -> VmSpec {
    let twin = |d: &Attached| Attached {
        name: format!("{}{TEST_SUFFIX}", d.name),
        id: disk_path(real, &format!("{}{TEST_SUFFIX}", d.name)),
        lun: d.lun,
    };
    let mut tags: Vec<(String, String)> = real
        .tags
        .iter()
        .filter(|(k, _)| k != TEST_TAG)
        .cloned()
        .collect();
    tags.push((TEST_TAG.to_owned(), run.to_owned()));
    VmSpec {
        name: format!("{}{TEST_SUFFIX}", real.name),
        subnet_id: subnet.to_owned(),
        public_ip: false,
        tags,
        os_disk: twin(&real.os_disk),
        data_disks: real.data_disks.iter().map(twin).collect(),
        ..real.clone()
    }
}

/// Makes `machine`'s test migration under run id `run`; returns the test
/// VM's id.
pub fn create(
    session: &Session,
    plan: &Plan,
    machine: &Machine,
    run: &str,
) -> Result<String, Error> {
    let subnet = machine
        .vm
        .test_subnet_id
        .clone()
        .ok_or_else(|| Error::Incomplete {
            machine: machine.name.clone(),
            what: "no isolated subnet for a test: set test_subnet_id in the plan".into(),
        })?;
    // A disk still open (pre-seeded) is the cutover's to finish: a test
    // neither copies nor finishes it.
    for &i in &machine.disks {
        let d = &plan.disks[i];
        let state = session
            .block_on(session.arm().get(&d.target().disk))
            .map_err(|source| Error::Azure {
                machine: machine.name.clone(),
                source,
            })?
            .map(|x| x.state);
        if let Some(s) = state.filter(|s| s.is_upload()) {
            return Err(Error::Disk {
                machine: machine.name.clone(),
                disk: d.name.clone(),
                why: format!("is {s} (pre-seeded, still open); a test copies finished disks only, so run it after the cutover finishes this disk (the test will not touch it)"),
            });
        }
    }
    let real = vm::spec(session, plan, machine)?;
    let test = test_spec(&real, run, &subnet);
    let arm = session.arm();
    let azure = |source| Error::Azure {
        machine: machine.name.clone(),
        source,
    };
    let tags: serde_json::Map<String, Value> = test
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    for (from, to) in std::iter::once((&real.os_disk, &test.os_disk))
        .chain(real.data_disks.iter().zip(&test.data_disks))
    {
        let what = format!("copying disk {} to {}", from.name, to.name);
        if let Some(v) = session
            .block_on(arm.get_resource(&what, &to.id, crate::azure::COMPUTE_API_VERSION))
            .map_err(azure)?
        {
            if v.pointer(&format!("/tags/{TEST_TAG}"))
                .and_then(Value::as_str)
                != Some(run)
            {
                return Err(Error::Disk {
                    machine: machine.name.clone(),
                    disk: to.name.clone(),
                    why: "exists and is not this test run's; clean the earlier test up first"
                        .into(),
                });
            }
            continue;
        }
        let mut body = json!({
            "location": real.location,
            "tags": Value::Object(tags.clone()),
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": from.id}},
        });
        if let Some(z) = &real.zone {
            body["zones"] = json!([z]);
        }
        session
            .block_on(arm.put_resource(&what, &to.id, crate::azure::COMPUTE_API_VERSION, &body))
            .map_err(azure)?;
    }
    vm::create(session, &test)
}

/// What a clean-up did with one resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cleaned {
    /// The resource's id.
    pub id: String,
    /// `deleted`, `absent`, or why it was kept.
    pub outcome: String,
}

/// Deletes `machine`'s test resources (of run `run`, or of any run), each
/// only after checking its name and tag: the VM first (its disks detach),
/// then its NIC and public IP, then the disk copies.
pub fn cleanup(
    session: &Session,
    plan: &Plan,
    machine: &Machine,
    run: Option<&str>,
) -> Result<Vec<Cleaned>, Error> {
    let disks: Vec<_> = plan.disks_of(machine).collect();
    let Some(first) = disks.first() else {
        return Ok(Vec::new());
    };
    let group = format!(
        "/subscriptions/{}/resourceGroups/{}/providers",
        first.subscription, first.resource_group
    );
    let name = format!("{}{TEST_SUFFIX}", machine.name);
    let mut targets = vec![
        (
            format!("{group}/Microsoft.Compute/virtualMachines/{name}"),
            vm::VM_API_VERSION,
        ),
        (
            format!("{group}/Microsoft.Network/networkInterfaces/{name}-nic"),
            vm::NETWORK_API_VERSION,
        ),
        (
            format!("{group}/Microsoft.Network/publicIPAddresses/{name}-ip"),
            vm::NETWORK_API_VERSION,
        ),
    ];
    for d in &disks {
        targets.push((
            format!("{group}/Microsoft.Compute/disks/{}{TEST_SUFFIX}", d.name),
            crate::azure::COMPUTE_API_VERSION,
        ));
    }
    let arm = session.arm();
    let azure = |source| Error::Azure {
        machine: machine.name.clone(),
        source,
    };
    let mut out = Vec::new();
    for (id, api) in targets {
        let what = format!("cleaning {id} up");
        let Some(v) = session
            .block_on(arm.get_resource(&what, &id, api))
            .map_err(azure)?
        else {
            out.push(Cleaned {
                id,
                outcome: "absent".into(),
            });
            continue;
        };
        let tag = v
            .pointer(&format!("/tags/{TEST_TAG}"))
            .and_then(Value::as_str);
        let outcome = match (tag, run) {
            (None, _) => "kept: it has no test run tag, so it is not a test's".to_owned(),
            (Some(t), Some(r)) if t != r => format!("kept: it is test run {t}'s, not {r}'s"),
            _ => {
                session
                    .block_on(arm.delete_resource(&what, &id, api))
                    .map_err(azure)?;
                "deleted".to_owned()
            }
        };
        out.push(Cleaned { id, outcome });
    }
    Ok(out)
}
