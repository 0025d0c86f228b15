//! A plan's machine as an Azure VM: a NIC in the plan's subnet (a public IP
//! only when asked), the finished OS disk attached with its OS type, the
//! data disks attached at their LUNs in the source's order, the size from
//! the plan, the disks' zone, boot diagnostics on, the license type and
//! tags. Made through ARM ([`create`]) or written as an ARM template
//! ([`template`]) that `az deployment group create` deploys as is.
//!
//! Interop decisions: a VM made from existing disks has no `osProfile`
//! (the guest keeps its own users and keys) and boots the generation its OS
//! disk was created with; boot diagnostics use managed storage (no storage
//! account to name).

use crate::azure::names::segment;
use serde_json::{json, Value};

use super::sizes;
use crate::azure::Session;
use crate::kinds::HyperVGeneration;
use crate::plan::model::{DiskRole, Machine, Plan};

/// The Compute API version for virtual machines.
pub const VM_API_VERSION: &str = "2024-07-01";
/// The Network API version for NICs and public IPs.
pub const NETWORK_API_VERSION: &str = "2024-05-01";

/// Why a machine's VM cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plan does not say enough.
    #[error("machine {machine}: {what}")]
    Incomplete {
        /// The machine.
        machine: String,
        /// What is missing, and where to say it.
        what: String,
    },
    /// A disk is not ready to be attached.
    #[error("machine {machine}: disk {disk} {why}")]
    Disk {
        /// The machine.
        machine: String,
        /// The disk.
        disk: String,
        /// Its state.
        why: String,
    },
    /// The size cannot take these disks.
    #[error("machine {machine}: {problems}")]
    Size {
        /// The machine.
        machine: String,
        /// What the size cannot take.
        problems: String,
    },
    /// An Azure call failed.
    #[error("machine {machine}: {source}")]
    Azure {
        /// The machine.
        machine: String,
        /// What Azure said.
        source: crate::azure::Error,
    },
}

/// A disk to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The disk's name.
    pub name: String,
    /// Its resource id.
    pub id: String,
    /// Its LUN (data disks).
    pub lun: Option<u32>,
}

/// Everything a machine's VM is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// Subscription.
    pub subscription: String,
    /// Resource group (the OS disk's).
    pub resource_group: String,
    /// The VM's name (the machine's).
    pub name: String,
    /// Region.
    pub location: String,
    /// Availability zone (the disks').
    pub zone: Option<String>,
    /// VM size.
    pub size: String,
    /// The subnet's resource id.
    pub subnet_id: String,
    /// A public IP address.
    pub public_ip: bool,
    /// Azure Hybrid Benefit.
    pub license_type: Option<String>,
    /// `Linux` or `Windows`.
    pub os_type: String,
    /// The OS disk's generation.
    pub generation: HyperVGeneration,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// The OS disk.
    pub os_disk: Attached,
    /// The data disks, by LUN.
    pub data_disks: Vec<Attached>,
}

impl VmSpec {
    fn group(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers",
            segment(&self.subscription),
            segment(&self.resource_group)
        )
    }

    /// The VM's resource id.
    pub fn vm_id(&self) -> String {
        format!(
            "{}/Microsoft.Compute/virtualMachines/{}",
            self.group(),
            segment(&self.name)
        )
    }

    /// The NIC's resource id.
    pub fn nic_id(&self) -> String {
        format!(
            "{}/Microsoft.Network/networkInterfaces/{}",
            self.group(),
            segment(&format!("{}-nic", self.name))
        )
    }

    /// The public IP's resource id.
    pub fn public_ip_id(&self) -> String {
        format!(
            "{}/Microsoft.Network/publicIPAddresses/{}",
            self.group(),
            segment(&format!("{}-ip", self.name))
        )
    }

    fn tags(&self) -> Value {
        Value::Object(
            self.tags
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        )
    }

    /// The public IP's body (Standard SKU, static, in the VM's zone).
    pub fn public_ip_body(&self) -> Value {
        let mut b = json!({
            "location": self.location,
            "sku": {"name": "Standard"},
            "properties": {"publicIPAllocationMethod": "Static"},
            "tags": self.tags(),
        });
        if let Some(z) = &self.zone {
            b["zones"] = json!([z]);
        }
        b
    }

    /// The NIC's body.
    pub fn nic_body(&self) -> Value {
        let mut ip = json!({
            "subnet": {"id": self.subnet_id},
            "privateIPAllocationMethod": "Dynamic",
        });
        if self.public_ip {
            ip["publicIPAddress"] = json!({"id": self.public_ip_id()});
        }
        json!({
            "location": self.location,
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": ip}]},
            "tags": self.tags(),
        })
    }

    /// The VM's body.
    pub fn vm_body(&self) -> Value {
        let data: Vec<Value> = self
            .data_disks
            .iter()
            .map(|d| {
                json!({"lun": d.lun.unwrap_or(0), "createOption": "Attach", "managedDisk": {"id": d.id}})
            })
            .collect();
        let mut props = json!({
            "hardwareProfile": {"vmSize": self.size},
            "storageProfile": {
                "osDisk": {"createOption": "Attach", "osType": self.os_type, "managedDisk": {"id": self.os_disk.id}},
                "dataDisks": data,
            },
            "networkProfile": {"networkInterfaces": [{"id": self.nic_id(), "properties": {"primary": true}}]},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": true}},
        });
        if let Some(l) = &self.license_type {
            props["licenseType"] = json!(l);
        }
        let mut b = json!({"location": self.location, "properties": props, "tags": self.tags()});
        if let Some(z) = &self.zone {
            b["zones"] = json!([z]);
        }
        b
    }
}

/// The spec of `machine`'s VM, from the plan and from its disks as Azure
/// holds them (each must be finished: Unattached, with the OS disk's OS
/// type and generation).
pub fn spec(session: &Session, plan: &Plan, machine: &Machine) -> Result<VmSpec, Error> {
    let incomplete = |what: &str| Error::Incomplete {
        machine: machine.name.clone(),
        what: what.to_owned(),
    };
    let size = machine.vm.size.clone().ok_or_else(|| {
        incomplete("no VM size: set vm_size (or instance_type, for a proposal) in the plan")
    })?;
    let subnet_id = machine
        .vm
        .subnet_id
        .clone()
        .ok_or_else(|| incomplete("no subnet: set subnet_id in the plan"))?;
    let disks: Vec<_> = plan.disks_of(machine).collect();
    let os = disks
        .iter()
        .find(|d| d.role == DiskRole::Os)
        .ok_or_else(|| incomplete("no OS disk"))?;
    let azure = |source| Error::Azure {
        machine: machine.name.clone(),
        source,
    };
    let read = |name: &str, target: &crate::upload::Target| -> Result<Value, Error> {
        let path = target.disk.id();
        let v = session
            .block_on(session.arm().get_resource(
                &format!("reading disk {name}"),
                &path,
                crate::azure::COMPUTE_API_VERSION,
            ))
            .map_err(azure)?
            .ok_or_else(|| Error::Disk {
                machine: machine.name.clone(),
                disk: name.to_owned(),
                why: "is not in Azure; migrate it first".into(),
            })?;
        let state = v
            .pointer("/properties/diskState")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Attached to this machine's VM already: a run that made it.
        let ours = v
            .pointer("/properties/managedBy")
            .and_then(Value::as_str)
            .is_some_and(|m| {
                m.to_ascii_lowercase().ends_with(&format!(
                    "/virtualmachines/{}",
                    machine.name.to_ascii_lowercase()
                ))
            });
        if state != "Unattached" && !(state == "Attached" && ours) {
            return Err(Error::Disk {
                machine: machine.name.clone(),
                disk: name.to_owned(),
                why: format!("is {state}, not Unattached: a VM takes finished disks only (finish its migration or cutover, or detach it)"),
            });
        }
        Ok(v)
    };
    let os_json = read(&os.name, &os.target())?;
    let os_type = os_json
        .pointer("/properties/osType")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Disk {
            machine: machine.name.clone(),
            disk: os.name.clone(),
            why: "has no OS type, so it cannot boot a VM; migrate it as an OS disk".into(),
        })?
        .to_owned();
    let generation = match os_json
        .pointer("/properties/hyperVGeneration")
        .and_then(Value::as_str)
    {
        Some("V2") => HyperVGeneration::V2,
        _ => HyperVGeneration::V1,
    };
    let zone = os_json
        .pointer("/zones/0")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut data_disks = Vec::new();
    let mut next_lun = 0u32;
    let taken: Vec<u32> = disks.iter().filter_map(|d| d.lun).collect();
    for d in disks.iter().filter(|d| d.role == DiskRole::Data) {
        let v = read(&d.name, &d.target())?;
        let lun = d.lun.unwrap_or_else(|| {
            while taken.contains(&next_lun) {
                next_lun += 1;
            }
            next_lun += 1;
            next_lun - 1
        });
        data_disks.push(Attached {
            name: d.name.clone(),
            id: v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            lun: Some(lun),
        });
    }
    if let Some(known) = sizes::find(&size) {
        let premium = disks.iter().any(|d| d.sku.starts_with("Premium"));
        let p = sizes::problems(known, data_disks.len(), premium, Some(generation));
        if !p.is_empty() {
            return Err(Error::Size {
                machine: machine.name.clone(),
                problems: p.join("; "),
            });
        }
    }
    Ok(VmSpec {
        subscription: os.subscription.clone(),
        resource_group: os.resource_group.clone(),
        name: machine.name.clone(),
        location: os.location.clone(),
        zone,
        size,
        subnet_id,
        public_ip: machine.vm.public_ip,
        license_type: machine.vm.license_type.clone(),
        os_type,
        generation,
        tags: os.tags.clone().into_iter().collect(),
        os_disk: Attached {
            name: os.name.clone(),
            id: os_json
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            lun: None,
        },
        data_disks,
    })
}

/// Makes the VM of `spec` (its public IP and NIC first); a VM of that name
/// with the same OS disk is taken as made already. Returns the VM's id.
pub fn create(session: &Session, spec: &VmSpec) -> Result<String, Error> {
    let arm = session.arm();
    let azure = |source| Error::Azure {
        machine: spec.name.clone(),
        source,
    };
    let what = format!("reading VM {}", spec.name);
    if let Some(v) = session
        .block_on(arm.get_resource(&what, &spec.vm_id(), VM_API_VERSION))
        .map_err(azure)?
    {
        let os = v
            .pointer("/properties/storageProfile/osDisk/managedDisk/id")
            .and_then(Value::as_str)
            .unwrap_or("");
        if os.eq_ignore_ascii_case(&spec.os_disk.id) {
            return Ok(spec.vm_id());
        }
        return Err(Error::Incomplete {
            machine: spec.name.clone(),
            what: format!("a VM named {} exists already with another OS disk; delete it or rename the machine", spec.name),
        });
    }
    if spec.public_ip {
        let what = format!("creating the public IP of {}", spec.name);
        session
            .block_on(arm.put_resource(
                &what,
                &spec.public_ip_id(),
                NETWORK_API_VERSION,
                &spec.public_ip_body(),
            ))
            .map_err(azure)?;
    }
    let what = format!("creating the network interface of {}", spec.name);
    session
        .block_on(arm.put_resource(&what, &spec.nic_id(), NETWORK_API_VERSION, &spec.nic_body()))
        .map_err(azure)?;
    let what = format!("creating VM {}", spec.name);
    session
        .block_on(arm.put_resource(&what, &spec.vm_id(), VM_API_VERSION, &spec.vm_body()))
        .map_err(azure)?;
    Ok(spec.vm_id())
}

/// An ARM template of `spec`'s resources (public IP, NIC, VM), deployable
/// into its resource group as is.
pub fn template(spec: &VmSpec) -> Value {
    let mut resources = Vec::new();
    let mut nic_deps = Vec::new();
    if spec.public_ip {
        let mut ip = spec.public_ip_body();
        ip["type"] = json!("Microsoft.Network/publicIPAddresses");
        ip["apiVersion"] = json!(NETWORK_API_VERSION);
        ip["name"] = json!(format!("{}-ip", spec.name));
        resources.push(ip);
        nic_deps.push(json!(format!(
            "[resourceId('Microsoft.Network/publicIPAddresses', '{}-ip')]",
            spec.name
        )));
    }
    let mut nic = spec.nic_body();
    nic["type"] = json!("Microsoft.Network/networkInterfaces");
    nic["apiVersion"] = json!(NETWORK_API_VERSION);
    nic["name"] = json!(format!("{}-nic", spec.name));
    nic["dependsOn"] = json!(nic_deps);
    resources.push(nic);
    let mut vm = spec.vm_body();
    vm["type"] = json!("Microsoft.Compute/virtualMachines");
    vm["apiVersion"] = json!(VM_API_VERSION);
    vm["name"] = json!(spec.name);
    vm["dependsOn"] = json!([format!(
        "[resourceId('Microsoft.Network/networkInterfaces', '{}-nic')]",
        spec.name
    )]);
    resources.push(vm);
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {"generator": "ebs2azure", "machine": spec.name, "generation": spec.generation.to_string()},
        "resources": resources,
        "outputs": {"vmId": {"type": "string", "value": format!("[resourceId('Microsoft.Compute/virtualMachines', '{}')]", spec.name)}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            subscription: "s".into(),
            resource_group: "rg".into(),
            name: "web01".into(),
            location: "westeurope".into(),
            zone: Some("1".into()),
            size: "Standard_D2s_v5".into(),
            subnet_id: "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/a".into(),
            public_ip: false,
            license_type: Some("Windows_Server".into()),
            os_type: "Windows".into(),
            generation: HyperVGeneration::V2,
            tags: vec![("app".into(), "web".into())],
            os_disk: Attached { name: "web01-os".into(), id: "/x/disks/web01-os".into(), lun: None },
            data_disks: vec![Attached { name: "web01-data0".into(), id: "/x/disks/web01-data0".into(), lun: Some(0) }],
        }
    }

    #[test]
    fn the_vm_attaches_its_disks_and_has_no_os_profile() {
        let s = spec();
        let vm = s.vm_body();
        assert_eq!(
            vm["properties"]["storageProfile"]["osDisk"]["createOption"],
            "Attach"
        );
        assert_eq!(vm["properties"]["storageProfile"]["dataDisks"][0]["lun"], 0);
        assert!(vm["properties"].get("osProfile").is_none());
        assert_eq!(vm["zones"][0], "1");
        assert_eq!(vm["properties"]["licenseType"], "Windows_Server");
        assert_eq!(
            vm["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"],
            true
        );
        assert!(
            s.nic_body()["properties"]["ipConfigurations"][0]["properties"]
                .get("publicIPAddress")
                .is_none()
        );
        let t = template(&s);
        let types: Vec<&str> = t["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "Microsoft.Network/networkInterfaces",
                "Microsoft.Compute/virtualMachines"
            ]
        );
        let with_ip = VmSpec {
            public_ip: true,
            ..spec()
        };
        assert_eq!(template(&with_ip)["resources"].as_array().unwrap().len(), 3);
    }
}
