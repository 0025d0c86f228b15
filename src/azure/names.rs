//! Azure's rules for the names and values a disk is created with, checked
//! before any call so that a plan of a hundred disks fails at once, with
//! every problem, instead of one ARM error at a time.
//!
//! Sources: "Naming rules and restrictions for Azure resources"
//! (Microsoft.Compute/disks: 1-80 characters, alphanumerics, underscores,
//! periods and hyphens, starting with an alphanumeric and ending with an
//! alphanumeric or underscore; resource groups: 1-90 characters,
//! alphanumerics, underscores, parentheses, hyphens and periods, not ending
//! with a period), and `DiskStorageAccountTypes` in the Compute OpenAPI spec
//! (disk.json), less the SKUs that direct upload does not take.

/// SKUs a disk made by direct upload may have (UltraSSD_LRS and
/// PremiumV2_LRS are in the spec's enum but cannot be uploaded to).
pub const UPLOAD_SKUS: [&str; 5] = [
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
];

/// Why `name` cannot name a managed disk, if it cannot.
pub fn disk_name_problem(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let last_ok = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() || name.len() > 80 {
        Some(format!(
            "disk name {name:?} must have 1 to 80 characters, not {}",
            name.len()
        ))
    } else if !name.chars().all(ok_char) || !first_ok || !last_ok {
        Some(format!(
            "disk name {name:?} may hold only letters, digits, '_', '.' and '-', start with a letter or digit and end with one or '_'"
        ))
    } else {
        None
    }
}

/// Why `name` cannot name a resource group, if it cannot.
pub fn resource_group_problem(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_alphanumeric() || "_-.()".contains(c);
    if name.is_empty() || name.chars().count() > 90 {
        Some(format!(
            "resource group {name:?} must have 1 to 90 characters"
        ))
    } else if !name.chars().all(ok_char) || name.ends_with('.') {
        Some(format!(
            "resource group {name:?} may hold only letters, digits, '_', '-', '.', '(' and ')', and must not end with '.'"
        ))
    } else {
        None
    }
}

/// Why `id` is not a subscription id (a GUID), if it is not.
pub fn subscription_problem(id: &str) -> Option<String> {
    let groups: Vec<&str> = id.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    (!ok).then(|| format!("subscription {id:?} is not a subscription id (a GUID)"))
}

/// Why `location` is not an Azure region name, if it is not.
pub fn location_problem(location: &str) -> Option<String> {
    let ok = !location.is_empty()
        && location.len() <= 64
        && location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (!ok).then(|| {
        format!("location {location:?} is not an Azure region name (lower-case letters and digits, e.g. westeurope)")
    })
}

/// Why `sku` cannot be the SKU of an uploaded disk, if it cannot.
pub fn sku_problem(sku: &str) -> Option<String> {
    (!UPLOAD_SKUS.contains(&sku)).then(|| {
        format!(
            "sku {sku:?} is not one a disk can be uploaded to; use one of {}",
            UPLOAD_SKUS.join(", ")
        )
    })
}

/// `s` as one URL path segment: every byte outside the unreserved set
/// (letters, digits, `-._~`) and `()` percent-encoded. Checked names never
/// need it; it keeps a name that slipped past the checks from becoming a
/// query string or another path (`a?x=1`, `../b`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_become_queries_or_paths() {
        assert_eq!(segment("web01-os"), "web01-os");
        assert_eq!(segment("rg(1)"), "rg(1)");
        assert_eq!(segment("bad.name?x=1"), "bad.name%3Fx%3D1");
        assert_eq!(segment("a/../b"), "a%2F..%2Fb");
        assert_eq!(segment("wé"), "w%C3%A9");
    }

    #[test]
    fn disk_names_follow_azure() {
        assert!(disk_name_problem("web01-os").is_none());
        assert!(disk_name_problem("a_").is_none());
        assert!(disk_name_problem(&"a".repeat(80)).is_none());
        for bad in ["", "-web", "web.", "web 01", "wéb", &"a".repeat(81)] {
            assert!(disk_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn groups_subscriptions_locations_and_skus() {
        assert!(resource_group_problem("rg-(prod)_1").is_none());
        assert!(resource_group_problem("rg.").is_some());
        assert!(resource_group_problem("rg/x").is_some());
        assert!(subscription_problem("00000000-0000-0000-0000-000000000001").is_none());
        assert!(subscription_problem("my-sub").is_some());
        assert!(location_problem("westeurope").is_none());
        assert!(location_problem("West Europe").is_some());
        assert!(sku_problem("Premium_LRS").is_none());
        assert!(sku_problem("UltraSSD_LRS").is_some());
        assert!(sku_problem("premium_lrs").is_some());
    }
}
