//! What an NTFS volume says about how Windows left it, read from the raw
//! partition before anything mounts it: the dirty flag in `$Volume`'s
//! volume information (MFT record 3, attribute 0x70), and whether
//! `hiberfil.sys` holds a hibernated system (hibernation or Fast Startup).
//! Both make an edit unsafe: Windows would resume from, or repair over,
//! a state that no longer matches the disk.

use diskformats::Disk;

/// `$Volume` is MFT record 3.
const VOLUME_RECORD: u64 = 3;
/// The volume information attribute.
const VOLUME_INFORMATION: u32 = 0x70;
/// End-of-attributes marker.
const END: u32 = 0xFFFF_FFFF;
/// VOLUME_IS_DIRTY in the volume information's flags.
pub const VOLUME_IS_DIRTY: u16 = 0x0001;
/// Largest MFT record handled (they are 1 KiB, or 4 KiB on 4Kn disks).
const MAX_RECORD: usize = 64 << 10;

/// The volume flags of the NTFS partition at `start` (`size` bytes) of `disk`.
pub fn volume_flags(disk: &(impl Disk + ?Sized), start: u64, size: u64) -> Result<u16, String> {
    let read = |offset: u64, len: usize| -> Result<Vec<u8>, String> {
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err("a structure lies past the end of the partition".into());
        }
        let mut buf = vec![0u8; len];
        disk.read_at(&mut buf, start + offset)
            .map_err(|e| format!("cannot read the partition: {e}"))?;
        Ok(buf)
    };
    let boot = read(0, 512)?;
    if &boot[3..11] != b"NTFS    " {
        return Err("it holds no NTFS boot sector".into());
    }
    let bps = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let spc = u64::from(boot[13]);
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() || spc == 0 {
        return Err("its boot sector's geometry is not NTFS's".into());
    }
    let cluster = bps * spc;
    let mft_lcn = u64::from_le_bytes(boot[48..56].try_into().unwrap_or_default());
    let per = boot[64] as i8;
    let record = if per < 0 {
        1usize
            .checked_shl(u32::from(per.unsigned_abs()))
            .unwrap_or(0)
    } else {
        (per as u64 * cluster) as usize
    };
    if !(512..=MAX_RECORD).contains(&record) {
        return Err(format!("its MFT records of {record} bytes are not NTFS's"));
    }
    let at = mft_lcn
        .checked_mul(cluster)
        .and_then(|o| o.checked_add(VOLUME_RECORD * record as u64))
        .ok_or("its MFT lies past any disk")?;
    let mut r = read(at, record)?;
    if &r[..4] != b"FILE" {
        return Err("its $Volume record is not an MFT record".into());
    }
    fix_up(&mut r, bps as usize)?;
    let word = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let dword = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut off = word(&r, 20) as usize;
    // Each attribute is at least 16 bytes long, so this ends.
    while off + 24 <= r.len() {
        let (kind, len) = (dword(&r, off), dword(&r, off + 4) as usize);
        if kind == END {
            break;
        }
        if len < 16 || off + len > r.len() {
            return Err("its $Volume record has a malformed attribute".into());
        }
        if kind == VOLUME_INFORMATION && r[off + 8] == 0 {
            let value = off + word(&r, off + 20) as usize;
            if value + 12 > off + len {
                return Err("its volume information is truncated".into());
            }
            return Ok(word(&r, value + 10));
        }
        off += len;
    }
    Err("its $Volume record has no volume information".into())
}

/// Applies an MFT record's update sequence (the last two bytes of each
/// sector were swapped out when it was written).
fn fix_up(r: &mut [u8], sector: usize) -> Result<(), String> {
    let usa = u16::from_le_bytes([r[4], r[5]]) as usize;
    let count = u16::from_le_bytes([r[6], r[7]]) as usize;
    if count == 0 || usa + 2 * count > r.len() || (count - 1) * sector > r.len() {
        return Err("its $Volume record has a malformed update sequence".into());
    }
    let check = [r[usa], r[usa + 1]];
    for i in 1..count {
        let end = i * sector;
        if r[end - 2..end] != check {
            return Err("its $Volume record was torn (update sequence mismatch)".into());
        }
        r[end - 2] = r[usa + 2 * i];
        r[end - 1] = r[usa + 2 * i + 1];
    }
    Ok(())
}

/// True when the first bytes of `hiberfil.sys` say a hibernated system is
/// in it ("hibr", as hibernation and Fast Startup leave it; "wake" and
/// zeros mean it was resumed from).
pub fn hibernated(header: &[u8]) -> bool {
    header.len() >= 4 && header[..4].eq_ignore_ascii_case(b"hibr")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NTFS boot sector and a $Volume record holding `flags`.
    fn volume(flags: u16) -> Vec<u8> {
        let mut d = vec![0u8; 64 << 10];
        d[3..11].copy_from_slice(b"NTFS    ");
        d[11..13].copy_from_slice(&512u16.to_le_bytes());
        d[13] = 8; // 4 KiB clusters
        d[48..56].copy_from_slice(&2u64.to_le_bytes()); // $MFT at cluster 2
        d[64] = (-10i8) as u8; // 1 KiB records
        let at = 2 * 4096 + 3 * 1024;
        let r = &mut d[at..at + 1024];
        r[..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&48u16.to_le_bytes());
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[48..50].copy_from_slice(&[0xAB, 0xCD]);
        r[50..52].copy_from_slice(&[1, 2]);
        r[52..54].copy_from_slice(&[3, 4]);
        r[510..512].copy_from_slice(&[0xAB, 0xCD]);
        r[1022..1024].copy_from_slice(&[0xAB, 0xCD]);
        r[20..22].copy_from_slice(&56u16.to_le_bytes());
        // Attribute 0x60 (name), then 0x70 with its value at +24.
        r[56..60].copy_from_slice(&0x60u32.to_le_bytes());
        r[60..64].copy_from_slice(&24u32.to_le_bytes());
        r[80..84].copy_from_slice(&0x70u32.to_le_bytes());
        r[84..88].copy_from_slice(&40u32.to_le_bytes());
        r[100..102].copy_from_slice(&24u16.to_le_bytes());
        r[80 + 24 + 10..80 + 24 + 12].copy_from_slice(&flags.to_le_bytes());
        r[120..124].copy_from_slice(&END.to_le_bytes());
        d
    }

    #[test]
    fn the_dirty_flag_is_read_through_the_update_sequence() {
        let clean = volume(0);
        assert_eq!(volume_flags(&clean[..], 0, clean.len() as u64), Ok(0));
        let dirty = volume(VOLUME_IS_DIRTY);
        assert_eq!(
            volume_flags(&dirty[..], 0, dirty.len() as u64),
            Ok(VOLUME_IS_DIRTY)
        );
        // A torn record, a foreign boot sector, a short partition: errors, no panic.
        let mut torn = volume(0);
        torn[2 * 4096 + 3 * 1024 + 510] = 0;
        assert!(volume_flags(&torn[..], 0, torn.len() as u64).is_err());
        let mut other = volume(0);
        other[3] = b'X';
        assert!(volume_flags(&other[..], 0, other.len() as u64).is_err());
        assert!(volume_flags(&clean[..], 0, 4096).is_err());
        // Any byte changed anywhere in the structures: never a panic.
        for i in (0..16384).step_by(7) {
            let mut d = volume(1);
            d[i] ^= 0xA5;
            let _ = volume_flags(&d[..], 0, d.len() as u64);
        }
    }

    #[test]
    fn hibernation_headers() {
        assert!(hibernated(b"HIBR\0\0"));
        assert!(hibernated(b"hibr"));
        assert!(!hibernated(b"wake"));
        assert!(!hibernated(&[0; 8]));
        assert!(!hibernated(b"hi"));
    }
}
