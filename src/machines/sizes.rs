//! A small table of Azure VM sizes (what a plan can be checked against
//! before any call) and EC2 instance types they are proposed for.
//!
//! Figures from Azure's size pages (vCPUs, memory, most data disks,
//! Premium Storage, Hyper-V generations, architecture) and EC2's instance
//! type pages; a size not in the table is passed on to Azure unchecked.

use crate::kinds::HyperVGeneration;

/// What a VM size can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSize {
    /// Its name, e.g. `Standard_D2s_v5`.
    pub name: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, GiB.
    pub memory_gib: u32,
    /// Most data disks it attaches.
    pub max_data_disks: u32,
    /// Takes Premium SSD disks (Premium_LRS, Premium_ZRS).
    pub premium: bool,
    /// Boots Generation 1 (BIOS) disks.
    pub gen1: bool,
    /// Boots Generation 2 (UEFI) disks.
    pub gen2: bool,
    /// An Arm64 size.
    pub arm64: bool,
}

const fn size(
    name: &'static str,
    vcpus: u32,
    memory_gib: u32,
    max_data_disks: u32,
    premium: bool,
    gen1: bool,
    arm64: bool,
) -> VmSize {
    VmSize {
        name,
        vcpus,
        memory_gib,
        max_data_disks,
        premium,
        gen1,
        gen2: true,
        arm64,
    }
}

/// The sizes this version knows.
pub const SIZES: &[VmSize] = &[
    size("Standard_B2s", 2, 4, 4, true, true, false),
    size("Standard_B2ms", 2, 8, 4, true, true, false),
    size("Standard_B4ms", 4, 16, 8, true, true, false),
    size("Standard_D2s_v5", 2, 8, 4, true, true, false),
    size("Standard_D4s_v5", 4, 16, 8, true, true, false),
    size("Standard_D8s_v5", 8, 32, 16, true, true, false),
    size("Standard_D16s_v5", 16, 64, 32, true, true, false),
    size("Standard_D2_v5", 2, 8, 4, false, true, false),
    size("Standard_D4_v5", 4, 16, 8, false, true, false),
    size("Standard_E2s_v5", 2, 16, 4, true, true, false),
    size("Standard_E4s_v5", 4, 32, 8, true, true, false),
    size("Standard_E8s_v5", 8, 64, 16, true, true, false),
    size("Standard_F2s_v2", 2, 4, 4, true, true, false),
    size("Standard_F4s_v2", 4, 8, 8, true, true, false),
    size("Standard_F8s_v2", 8, 16, 16, true, true, false),
    VmSize {
        gen2: false,
        ..size("Standard_A2_v2", 2, 4, 4, false, true, false)
    },
    size("Standard_D2ps_v5", 2, 8, 4, true, false, true),
    size("Standard_D4ps_v5", 4, 16, 8, true, false, true),
];

/// EC2 instance types and the size proposed for each (same vCPUs and
/// memory, same family's purpose, same architecture).
const FROM_EC2: &[(&str, &str)] = &[
    ("t3.medium", "Standard_B2s"),
    ("t3.large", "Standard_B2ms"),
    ("t3.xlarge", "Standard_B4ms"),
    ("m5.large", "Standard_D2s_v5"),
    ("m5.xlarge", "Standard_D4s_v5"),
    ("m5.2xlarge", "Standard_D8s_v5"),
    ("m5.4xlarge", "Standard_D16s_v5"),
    ("m6i.large", "Standard_D2s_v5"),
    ("m6i.xlarge", "Standard_D4s_v5"),
    ("m6i.2xlarge", "Standard_D8s_v5"),
    ("c5.large", "Standard_F2s_v2"),
    ("c5.xlarge", "Standard_F4s_v2"),
    ("c5.2xlarge", "Standard_F8s_v2"),
    ("r5.large", "Standard_E2s_v5"),
    ("r5.xlarge", "Standard_E4s_v5"),
    ("r5.2xlarge", "Standard_E8s_v5"),
    ("m6g.large", "Standard_D2ps_v5"),
    ("m6g.xlarge", "Standard_D4ps_v5"),
];

/// The size named `name` (case-insensitive, as Azure compares them).
pub fn find(name: &str) -> Option<&'static VmSize> {
    SIZES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// The size proposed for an EC2 instance type, when the table knows it.
pub fn propose(instance_type: &str) -> Option<&'static VmSize> {
    FROM_EC2
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(instance_type))
        .and_then(|(_, s)| find(s))
}

/// Why `size` cannot run a machine with `data_disks` data disks, premium
/// disks (`premium`) and an OS disk of generation `generation` (when known).
pub fn problems(
    size: &VmSize,
    data_disks: usize,
    premium: bool,
    generation: Option<HyperVGeneration>,
) -> Vec<String> {
    let mut out = Vec::new();
    if data_disks as u32 > size.max_data_disks {
        out.push(format!(
            "{} takes at most {} data disks, not {data_disks}",
            size.name, size.max_data_disks
        ));
    }
    if premium && !size.premium {
        // The same family's premium-capable size: D2_v5 -> D2s_v5.
        let same_family = size
            .name
            .rsplit_once("_v")
            .and_then(|(head, v)| find(&format!("{head}s_v{v}")));
        let other = same_family.or_else(|| {
            SIZES
                .iter()
                .find(|s| s.premium && s.vcpus == size.vcpus && s.arm64 == size.arm64)
        });
        out.push(format!(
            "{} takes no Premium SSD disks; choose {} or a Standard SKU",
            size.name,
            other.map_or("a size with Premium Storage", |s| s.name)
        ));
    }
    match generation {
        Some(HyperVGeneration::V1) if !size.gen1 => out.push(format!(
            "{} boots Generation 2 (UEFI) disks only, and the OS disk is Generation 1",
            size.name
        )),
        Some(HyperVGeneration::V2) if !size.gen2 => out.push(format!(
            "{} boots Generation 1 (BIOS) disks only, and the OS disk is Generation 2",
            size.name
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_match_the_instance_and_limits_are_told() {
        let d = propose("m5.large").unwrap();
        assert_eq!((d.name, d.vcpus, d.memory_gib), ("Standard_D2s_v5", 2, 8));
        assert!(propose("m6g.large").unwrap().arm64);
        assert!(propose("x9.huge").is_none());
        assert!(problems(d, 4, true, Some(HyperVGeneration::V2)).is_empty());
        assert_eq!(problems(d, 5, true, None).len(), 1);
        let a = find("standard_a2_v2").unwrap();
        let p = problems(a, 0, true, Some(HyperVGeneration::V2));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("no Premium SSD"));
        assert!(problems(
            find("Standard_D2ps_v5").unwrap(),
            0,
            false,
            Some(HyperVGeneration::V1)
        )[0]
        .contains("Generation 2 (UEFI) disks only"));
    }
}
