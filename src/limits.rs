//! Azure's documented limits on uploaded disks, in one place.

/// Smallest virtual size Azure takes for an uploaded managed disk.
pub const AZURE_MIN_DISK_SIZE: u64 = 20 << 20;
/// Largest virtual size of a managed disk (32 TiB).
pub const AZURE_MAX_DISK_SIZE: u64 = 32 << 40;
/// Largest OS disk a VM boots from: 4,095 GiB, as Azure's disk documentation
/// gives it for OS disks.
pub const AZURE_MAX_OS_DISK_SIZE: u64 = 4095 << 30;

/// Sentences saying why a fixed VHD of `virtual_size` bytes would be refused
/// by Azure; empty when it would be taken.
pub fn azure_size_problems(virtual_size: u64) -> Vec<String> {
    let mut out = Vec::new();
    if !virtual_size.is_multiple_of(1 << 20) {
        out.push(format!(
            "Azure takes only VHDs whose virtual size is a whole number of MiB ({virtual_size} bytes is not); convert it again with ebs2azure"
        ));
    }
    if virtual_size < AZURE_MIN_DISK_SIZE {
        out.push(format!(
            "Azure takes managed disks of at least 20 MiB, and this one has {virtual_size} bytes"
        ));
    }
    if virtual_size > AZURE_MAX_DISK_SIZE {
        out.push(format!(
            "Azure takes managed disks of at most 32 TiB, and this one has {virtual_size} bytes"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_azure_limits_are_named() {
        assert!(azure_size_problems(64 << 20).is_empty());
        assert_eq!(azure_size_problems(1 << 20).len(), 1);
        assert_eq!(azure_size_problems((64 << 20) + 512).len(), 1);
        assert_eq!(
            azure_size_problems(AZURE_MAX_DISK_SIZE + (1 << 20)).len(),
            1
        );
    }
}
