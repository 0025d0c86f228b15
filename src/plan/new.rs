//! `plan new`: a plan written from a list of snapshots, for people to edit.
//!
//! A list is snapshot ids (one per line or argument, `#` comments allowed),
//! or a CSV with a header naming at least `snapshot` and optionally
//! `machine`, `role`, `name`, `lun`, `device` and `sku`. Rows of one machine
//! become one `[[machine]]`; rows with no machine become `[[disk]]` tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::schema::PLAN_VERSION;
use crate::source::ebs::is_snapshot_id;

/// One row of a snapshot list.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Row {
    /// The snapshot.
    pub snapshot: String,
    /// Its machine.
    #[serde(default)]
    pub machine: Option<String>,
    /// `os` or `data`.
    #[serde(default)]
    pub role: Option<String>,
    /// The disk's name.
    #[serde(default)]
    pub name: Option<String>,
    /// LUN.
    #[serde(default)]
    pub lun: Option<u32>,
    /// EC2 device.
    #[serde(default)]
    pub device: Option<String>,
    /// SKU.
    #[serde(default)]
    pub sku: Option<String>,
    /// The machine's EC2 instance type: its VM size is proposed from it.
    #[serde(default)]
    pub instance_type: Option<String>,
}

/// The defaults written at the top of a new plan.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// Subscription id.
    pub subscription: Option<String>,
    /// Resource group.
    pub resource_group: Option<String>,
    /// Azure region.
    pub location: Option<String>,
    /// AWS region.
    pub region: Option<String>,
    /// Disk SKU.
    pub sku: Option<String>,
}

/// Rows from snapshot ids, one per item (blank items and `#` comments skipped).
pub fn rows_from_ids<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (n, item) in items.into_iter().enumerate() {
        let id = item.split('#').next().unwrap_or("").trim();
        if id.is_empty() {
            continue;
        }
        if !is_snapshot_id(id) {
            return Err(format!(
                "item {} ({id:?}) is not a snapshot id (snap- followed by 8 or 17 lower-case hex digits)",
                n + 1
            ));
        }
        rows.push(Row {
            snapshot: id.to_owned(),
            ..Row::default()
        });
    }
    Ok(rows)
}

/// Rows from a CSV with a header.
pub fn rows_from_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (n, row) in reader.deserialize::<Row>().enumerate() {
        let mut row: Row = row.map_err(|e| format!("CSV row {}: {e}", n + 1))?;
        for v in [
            &mut row.machine,
            &mut row.role,
            &mut row.name,
            &mut row.device,
            &mut row.sku,
            &mut row.instance_type,
        ] {
            if v.as_deref() == Some("") {
                *v = None;
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The plan text for `rows`. Machines get their first row as the OS disk
/// unless a row says `role = os`.
pub fn write(rows: &[Row], defaults: &Defaults) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ebs2azure plan: check it with `ebs2azure plan validate`, run it with `ebs2azure migrate --plan`.");
    header(&mut s, defaults);
    let mut machines: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut lone = Vec::new();
    for r in rows {
        match r.machine.as_deref() {
            Some(m) => {
                if !machines.contains_key(m) {
                    order.push(m);
                }
                machines.entry(m).or_default().push(r);
            }
            None => lone.push(r),
        }
    }
    for m in order {
        let disks = &machines[m];
        let _ = writeln!(s, "\n[[machine]]\nname = {}\nos_type = \"auto\"", quote(m));
        if let Some(t) = disks.iter().find_map(|r| r.instance_type.as_deref()) {
            let _ = writeln!(s, "instance_type = {}", quote(t));
            match crate::machines::sizes::propose(t) {
                Some(size) => {
                    let _ = writeln!(
                        s,
                        "vm_size = {}   # a proposal for {t} ({} vCPU, {} GiB): check it",
                        quote(size.name),
                        size.vcpus,
                        size.memory_gib
                    );
                }
                None => {
                    let _ = writeln!(s, "# vm_size = \"...\"   # no proposal for {t}: choose one");
                }
            }
        }
        let has_os = disks.iter().any(|r| r.role.as_deref() == Some("os"));
        for (k, r) in disks.iter().enumerate() {
            let role = r
                .role
                .clone()
                .unwrap_or_else(|| if !has_os && k == 0 { "os" } else { "data" }.into());
            let _ = writeln!(
                s,
                "  [[machine.disk]]\n  snapshot = {}\n  role = {}",
                quote(&r.snapshot),
                quote(&role)
            );
            disk_keys(&mut s, r, "  ");
        }
    }
    for (k, r) in lone.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("disk-{k:03}"));
        let _ = writeln!(
            s,
            "\n[[disk]]\nsnapshot = {}\nname = {}",
            quote(&r.snapshot),
            quote(&name)
        );
        if let Some(role) = &r.role {
            let _ = writeln!(s, "role = {}", quote(role));
        }
        disk_keys(
            &mut s,
            &Row {
                name: None,
                ..(*r).clone()
            },
            "",
        );
    }
    s
}

/// The plan's version and `[defaults]` table.
pub(super) fn header(s: &mut String, defaults: &Defaults) {
    let _ = writeln!(s, "version = {PLAN_VERSION}\n");
    let _ = writeln!(
        s,
        "[defaults]                 # any key may be set per machine or per disk too"
    );
    let key = |s: &mut String, k: &str, v: &Option<String>, example: &str| {
        let _ = match v {
            Some(v) => writeln!(s, "{k} = {}", quote(v)),
            None => writeln!(s, "# {k} = {}", quote(example)),
        };
    };
    key(
        s,
        "subscription",
        &defaults.subscription,
        "00000000-0000-0000-0000-000000000000",
    );
    key(s, "resource_group", &defaults.resource_group, "rg");
    key(s, "location", &defaults.location, "westeurope");
    let _ = writeln!(
        s,
        "sku = {}",
        quote(defaults.sku.as_deref().unwrap_or(super::model::DEFAULT_SKU))
    );
    key(s, "region", &defaults.region, "us-east-1");
}

fn disk_keys(s: &mut String, r: &Row, indent: &str) {
    if let Some(n) = &r.name {
        let _ = writeln!(s, "{indent}name = {}", quote(n));
    }
    if let Some(l) = r.lun {
        let _ = writeln!(s, "{indent}lun = {l}");
    }
    if let Some(d) = &r.device {
        let _ = writeln!(s, "{indent}device = {}", quote(d));
    }
    if let Some(k) = &r.sku {
        let _ = writeln!(s, "{indent}sku = {}", quote(k));
    }
}

/// A TOML basic string.
pub(super) fn quote(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{DiskRole, Plan};
    use crate::plan::schema::Common;

    fn defaults() -> Defaults {
        Defaults {
            subscription: Some("00000000-0000-0000-0000-000000000001".into()),
            resource_group: Some("rg".into()),
            location: Some("westeurope".into()),
            ..Defaults::default()
        }
    }

    #[test]
    fn ids_make_a_plan_that_validates() {
        let rows =
            rows_from_ids(["snap-00000001", "", "# a comment", "snap-00000002  # db"]).unwrap();
        assert_eq!(rows.len(), 2);
        let text = write(&rows, &defaults());
        let plan = Plan::parse(&text, "new", &Common::default()).unwrap();
        assert_eq!(plan.disks.len(), 2);
        assert_eq!(plan.disks[1].name, "disk-001");
        assert!(rows_from_ids(["snap-XY"]).is_err());
    }

    #[test]
    fn csv_rows_group_into_machines() {
        let csv = "machine,snapshot,role,lun,device,instance_type\nweb01,snap-0000000a,,,,m5.large\nweb01,snap-0000000b,,0,/dev/xvdf,\ndb01,snap-0000000c,data,1,,x1.odd\ndb01,snap-0000000d,os,,,\n,snap-0000000e,,,,\n";
        let rows = rows_from_csv(csv).unwrap();
        let text = write(&rows, &defaults());
        let plan = Plan::parse(&text, "new", &Common::default()).unwrap();
        let names: Vec<_> = plan
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.role))
            .collect();
        assert_eq!(
            names,
            [
                ("web01-os", DiskRole::Os),
                ("web01-data0", DiskRole::Data),
                ("db01-data0", DiskRole::Data),
                ("db01-os", DiskRole::Os),
                ("disk-000", DiskRole::Data),
            ]
        );
        assert_eq!(plan.disks[1].device.as_deref(), Some("/dev/xvdf"));
        // A known instance type gets a size, said to be a proposal; an unknown one a prompt.
        assert!(
            text.contains(
                "vm_size = \"Standard_D2s_v5\"   # a proposal for m5.large (2 vCPU, 8 GiB)"
            ),
            "{text}"
        );
        assert!(text.contains("no proposal for x1.odd"), "{text}");
        assert_eq!(plan.machines[0].vm.size.as_deref(), Some("Standard_D2s_v5"));
        assert!(
            !plan.machines[0].vm.proposed,
            "written into the plan, it is the plan's"
        );
        assert!(rows_from_csv("snapshot,lun\nsnap-00000001,x\n").is_err());
    }
}
