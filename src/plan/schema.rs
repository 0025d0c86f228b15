//! The plan file as people and scripts write it (TOML), before defaults are
//! applied: every key is optional where a default may fill it in, unknown
//! keys are refused (a typo must not silently fall back to a default), and
//! each table keeps its place in the file so that problems name a line.
//!
//! The keys a plan may set at every level (`[defaults]`, a machine, a disk)
//! are declared once, in [`common_keys!`], and merged by [`Common::over`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Version of the plan format this build reads and writes.
pub const PLAN_VERSION: u32 = 1;

/// Declares a plan table with the keys every level may set, plus its own.
macro_rules! common_keys {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// Azure subscription id.
            pub subscription: Option<String>,
            /// Azure resource group of the disks.
            pub resource_group: Option<String>,
            /// Azure region of the disks, e.g. `westeurope`.
            pub location: Option<String>,
            /// Disk SKU, e.g. `Premium_LRS`.
            pub sku: Option<String>,
            /// Availability zone.
            pub zone: Option<String>,
            /// AWS region of the snapshots.
            pub region: Option<String>,
            /// `auto`, `linux` or `windows`.
            pub os_type: Option<String>,
            /// `auto`, `V1` or `V2`.
            pub hyper_v_generation: Option<String>,
            /// Fix an OS disk's guest up so it boots on Azure (default true).
            pub fixup: Option<bool>,
            /// Lock a finished disk's network access: no SAS export or
            /// upload, no public access (default true).
            pub lock_network: Option<bool>,
            /// A disk encryption set (resource id): customer-managed keys.
            pub disk_encryption_set: Option<String>,
            /// With a disk encryption set: `customer-key` (default) or
            /// `double` (platform and customer keys).
            pub encryption: Option<String>,
            /// `AzureActiveDirectory`: the disk's upload and read URLs also
            /// want an Entra token (`dataAccessAuthMode`); default `None`.
            pub data_access_auth_mode: Option<String>,
            /// Tags, merged level by level (a lower level wins per key).
            #[serde(default)]
            pub tags: BTreeMap<String, String>,
        }

        impl $name {
            /// The keys every level may set.
            pub fn common(&self) -> Common {
                Common {
                    subscription: self.subscription.clone(),
                    resource_group: self.resource_group.clone(),
                    location: self.location.clone(),
                    sku: self.sku.clone(),
                    zone: self.zone.clone(),
                    region: self.region.clone(),
                    os_type: self.os_type.clone(),
                    hyper_v_generation: self.hyper_v_generation.clone(),
                    fixup: self.fixup,
                    lock_network: self.lock_network,
                    disk_encryption_set: self.disk_encryption_set.clone(),
                    encryption: self.encryption.clone(),
                    data_access_auth_mode: self.data_access_auth_mode.clone(),
                    tags: self.tags.clone(),
                }
            }
        }
    };
}

common_keys! {
    /// The `[defaults]` table, and the merged keys of one disk.
    pub struct Common {}
}

impl Common {
    /// These keys with `lower`'s set ones on top (tags merged per key).
    pub fn over(&self, lower: &Common) -> Common {
        fn pick<T: Clone>(low: &Option<T>, high: &Option<T>) -> Option<T> {
            low.clone().or_else(|| high.clone())
        }
        let mut tags = self.tags.clone();
        tags.extend(lower.tags.clone());
        Common {
            subscription: pick(&lower.subscription, &self.subscription),
            resource_group: pick(&lower.resource_group, &self.resource_group),
            location: pick(&lower.location, &self.location),
            sku: pick(&lower.sku, &self.sku),
            zone: pick(&lower.zone, &self.zone),
            region: pick(&lower.region, &self.region),
            os_type: pick(&lower.os_type, &self.os_type),
            hyper_v_generation: pick(&lower.hyper_v_generation, &self.hyper_v_generation),
            fixup: lower.fixup.or(self.fixup),
            lock_network: lower.lock_network.or(self.lock_network),
            disk_encryption_set: pick(&lower.disk_encryption_set, &self.disk_encryption_set),
            encryption: pick(&lower.encryption, &self.encryption),
            data_access_auth_mode: pick(&lower.data_access_auth_mode, &self.data_access_auth_mode),
            tags,
        }
    }
}

common_keys! {
    /// A `[[machine]]`: a name, its disks, and keys for all of them.
    pub struct MachineEntry {
        /// The machine's name; its disks' names derive from it.
        pub name: Option<String>,
        /// The EC2 instance the machine is (`i-...`): `cutover` stops it
        /// when asked and snapshots its volumes.
        pub instance_id: Option<String>,
        /// The EC2 instance type (`m5.large`): a VM size is proposed from it.
        pub instance_type: Option<String>,
        /// The Azure VM size (`Standard_D2s_v5`).
        pub vm_size: Option<String>,
        /// The subnet the VM's NIC joins (a resource id).
        pub subnet_id: Option<String>,
        /// The isolated subnet test migrations put their VMs in.
        pub test_subnet_id: Option<String>,
        /// Give the VM a public IP address (default false).
        pub public_ip: Option<bool>,
        /// Azure Hybrid Benefit: `Windows_Server`, `Windows_Client`,
        /// `RHEL_BYOS`, `SLES_BYOS` or `None`.
        pub license_type: Option<String>,
        /// Kept in the plan, skipped by runs.
        #[serde(default)]
        pub exclude: bool,
        /// The machine's disks.
        #[serde(default)]
        pub disk: Vec<Spanned<DiskEntry>>,
    }
}

common_keys! {
    /// A disk: under a machine (`[[machine.disk]]`) or alone (`[[disk]]`).
    pub struct DiskEntry {
        /// The EBS snapshot to move.
        pub snapshot: Option<String>,
        /// `os` or `data` (default: `data`).
        pub role: Option<String>,
        /// The managed disk's name (default from the machine: `NAME-os`, `NAME-data0`).
        pub name: Option<String>,
        /// The data disk's LUN on the VM.
        pub lun: Option<u32>,
        /// The EC2 device the guest's fstab names it by (`/dev/xvdf`), so
        /// the OS disk's fix-up mounts it by UUID.
        pub device: Option<String>,
        /// Kept in the plan, skipped by runs.
        #[serde(default)]
        pub exclude: bool,
    }
}

/// A whole plan file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The plan format's version (default: this build's).
    pub version: Option<u32>,
    /// Keys for every disk.
    #[serde(default)]
    pub defaults: Common,
    /// Machines and their disks.
    #[serde(default)]
    pub machine: Vec<Spanned<MachineEntry>>,
    /// Disks that belong to no machine.
    #[serde(default)]
    pub disk: Vec<Spanned<DiskEntry>>,
}

/// The 1-based line of byte `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_levels_win_and_tags_merge() {
        let defaults = Common {
            location: Some("westeurope".into()),
            sku: Some("Premium_LRS".into()),
            tags: [
                ("env".to_owned(), "prod".to_owned()),
                ("app".into(), "x".into()),
            ]
            .into(),
            ..Default::default()
        };
        let disk = Common {
            sku: Some("StandardSSD_LRS".into()),
            tags: [("app".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        };
        let merged = defaults.over(&disk);
        assert_eq!(merged.location.as_deref(), Some("westeurope"));
        assert_eq!(merged.sku.as_deref(), Some("StandardSSD_LRS"));
        assert_eq!(merged.tags["app"], "web");
        assert_eq!(merged.tags["env"], "prod");
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_line() {
        let text = "[defaults]\nlocation = \"westeurope\"\n\n[[machine]]\nname = \"web01\"\nsku_name = \"x\"\n";
        let e = toml::from_str::<PlanFile>(text).unwrap_err();
        let at = e.span().unwrap().start;
        assert_eq!(line_of(text, at), 6, "{e}");
        assert!(e.to_string().contains("sku_name"), "{e}");
    }

    #[test]
    fn entries_keep_their_lines() {
        let text = "[[machine]]\nname = \"a\"\n  [[machine.disk]]\n  snapshot = \"snap-00000001\"\n\n[[disk]]\nsnapshot = \"snap-00000002\"\n";
        let plan: PlanFile = toml::from_str(text).unwrap();
        let m = &plan.machine[0];
        assert_eq!(m.get_ref().name.as_deref(), Some("a"));
        let d = &m.get_ref().disk[0];
        assert_eq!(line_of(text, d.span().start), 3, "the line of its header");
        assert_eq!(line_of(text, plan.disk[0].span().start), 6);
    }
}
