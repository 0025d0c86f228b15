//! Lists the files of an initramfs image as the kernel unpacks it:
//! concatenated cpio (newc) archives, each stored or compressed with gzip,
//! zstd, xz, lzma or lz4 (legacy frames), with zero padding between them.

use std::io::{Cursor, Read};

/// Most bytes an initramfs may unpack to.
const MAX_UNPACKED: u64 = 2 << 30;
/// Most cpio members and segments read (bounds hostile images).
const MAX_ENTRIES: usize = 1_000_000;

/// What reading an initramfs gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Every path in it.
    Files(Vec<String>),
    /// A segment in a format not read here, named.
    Unsupported(String),
}

/// The compression of a segment, from its magic bytes.
fn compression(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if b.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        Some("lz4")
    } else if b.starts_with(&[0x5d, 0, 0]) {
        Some("lzma")
    } else if b.starts_with(b"BZh") {
        Some("bzip2")
    } else if b.starts_with(b"\x89LZO") {
        Some("lzo")
    } else {
        None
    }
}

/// A Vec that refuses to grow past [`MAX_UNPACKED`] (a decompression bomb stops there).
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > MAX_UNPACKED {
            return Err(std::io::Error::other("it unpacks to more than 2 GiB"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses one segment (bounded), or says why not.
fn unpack(kind: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let err = |e: std::io::Error| format!("the {kind} data is damaged: {e}");
    match kind {
        "gzip" => {
            flate2::read::MultiGzDecoder::new(data)
                .take(MAX_UNPACKED)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        "zstd" => {
            zstd::stream::read::Decoder::new(data)
                .map_err(err)?
                .take(MAX_UNPACKED)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        "xz" | "lzma" => {
            let mut bounded = Bounded(Vec::new());
            let result = if kind == "xz" {
                lzma_rs::xz_decompress(&mut Cursor::new(data), &mut bounded)
            } else {
                lzma_rs::lzma_decompress(&mut Cursor::new(data), &mut bounded)
            };
            result.map_err(|e| format!("the {kind} data is damaged or too large: {e:?}"))?;
            out = bounded.0;
        }
        "lz4" => {
            // Legacy frames: the magic, then blocks of (LE u32 size, data), each
            // unpacking to at most 8 MiB, until the data or a new magic ends them.
            let mut pos = 4;
            while pos + 4 <= data.len() && out.len() as u64 <= MAX_UNPACKED {
                let n = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                    as usize;
                if n == 0x184C_2102 {
                    pos += 4;
                    continue;
                }
                if n == 0 || pos + 4 + n > data.len() {
                    break;
                }
                let block = lz4_flex::block::decompress(&data[pos + 4..pos + 4 + n], 8 << 20)
                    .map_err(|e| format!("the lz4 data is damaged: {e}"))?;
                out.extend_from_slice(&block);
                pos += 4 + n;
            }
        }
        other => return Err(format!("{other} is not read here")),
    }
    Ok(out)
}

/// Reads the cpio archives at the start of `data`, adding their paths to
/// `names`; returns the bytes they took (0 when `data` is not cpio).
fn archives(data: &[u8], names: &mut Vec<String>) -> Result<usize, String> {
    let mut cur = Cursor::new(data);
    let mut end = 0;
    for _ in 0..MAX_ENTRIES {
        // Zero padding may separate archives.
        let mut pos = cur.position() as usize;
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if !data[pos..].starts_with(b"07070") {
            return Ok(if end == 0 { 0 } else { pos.max(end) });
        }
        cur.set_position(pos as u64);
        loop {
            if names.len() >= MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
            let r =
                cpio::NewcReader::new(cur).map_err(|e| format!("a cpio header is damaged: {e}"))?;
            let trailer = r.entry().is_trailer();
            if !trailer {
                names.push(r.entry().name().trim_start_matches("./").to_owned());
            }
            cur = r
                .finish()
                .map_err(|e| format!("a cpio member is cut off: {e}"))?;
            if trailer {
                break;
            }
        }
        end = cur.position() as usize;
    }
    Err("too many cpio archives".into())
}

/// Lists the files of the initramfs image `data`.
pub fn list(data: &[u8]) -> Result<Contents, String> {
    let mut names = Vec::new();
    let mut pos = 0;
    for _ in 0..MAX_ENTRIES {
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if pos >= data.len() {
            return Ok(Contents::Files(names));
        }
        let rest = &data[pos..];
        let took = archives(rest, &mut names)?;
        if took > 0 {
            pos += took;
            continue;
        }
        let Some(kind) = compression(rest) else {
            return Ok(Contents::Unsupported(format!(
                "an unknown format (it starts with {:02x?})",
                &rest[..rest.len().min(4)]
            )));
        };
        if matches!(kind, "bzip2" | "lzo") {
            return Ok(Contents::Unsupported(kind.to_owned()));
        }
        // A compressed segment runs to the end of the image.
        let unpacked = unpack(kind, rest)?;
        let took = archives(&unpacked, &mut names)?;
        if took == 0 {
            return Err(format!("the {kind} segment holds no cpio archive"));
        }
        return Ok(Contents::Files(names));
    }
    Err("too many segments".into())
}

/// The Hyper-V drivers (of `drivers`) an initramfs listing holds as modules.
pub fn drivers_in(files: &[String], drivers: &[&str]) -> Vec<String> {
    drivers
        .iter()
        .filter(|d| {
            files.iter().any(|f| {
                let name = f.rsplit('/').next().unwrap_or(f);
                [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .any(|ext| name == format!("{d}{ext}"))
            })
        })
        .map(|d| (*d).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cpio(files: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let mut w = cpio::newc::Builder::new(f)
                .ino(i as u32 + 1)
                .mode(0o100644)
                .write(&mut out, 3);
            w.write_all(b"abc").unwrap();
            w.finish().unwrap();
        }
        cpio::newc::trailer(&mut out).unwrap();
        out
    }

    const MODS: [&str; 2] = [
        "usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko",
        "usr/lib/modules/6.1/kernel/drivers/scsi/hv_storvsc.ko.zst",
    ];

    #[test]
    fn early_cpio_then_each_compression() {
        let early = cpio(&["kernel/x86/microcode/GenuineIntel.bin"]);
        let main = cpio(&MODS);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&main).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&main[..], 1).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut Cursor::new(&main), &mut xz).unwrap();
        let block = lz4_flex::block::compress(&main);
        let mut lz4 = vec![0x02, 0x21, 0x4c, 0x18];
        lz4.extend_from_slice(&(block.len() as u32).to_le_bytes());
        lz4.extend_from_slice(&block);
        for (name, seg) in [
            ("gzip", gz),
            ("zstd", zst),
            ("xz", xz),
            ("lz4", lz4),
            ("none", main.clone()),
        ] {
            let mut img = early.clone();
            img.resize(img.len().div_ceil(512) * 512, 0); // padding, as dracut leaves it
            img.extend_from_slice(&seg);
            let Contents::Files(files) = list(&img).unwrap() else {
                panic!("{name}: not read");
            };
            assert_eq!(files.len(), 3, "{name}: {files:?}");
            assert_eq!(
                drivers_in(&files, &["hv_vmbus", "hv_storvsc", "hv_netvsc"]),
                vec!["hv_vmbus", "hv_storvsc"],
                "{name}"
            );
        }
    }

    #[test]
    fn unsupported_and_damaged_images_say_so() {
        let mut bz = b"BZh91AY&SY".to_vec();
        bz.extend_from_slice(&[0; 64]);
        assert_eq!(list(&bz).unwrap(), Contents::Unsupported("bzip2".into()));
        assert!(matches!(
            list(b"garbage!").unwrap(),
            Contents::Unsupported(_)
        ));
        let mut cut = cpio(&MODS);
        cut.truncate(150);
        assert!(list(&cut).is_err());
        let gz_junk = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
        assert!(list(&gz_junk).is_err());
        assert_eq!(list(&[]).unwrap(), Contents::Files(vec![]));
    }

    #[test]
    fn the_testdata_initramfs_images_hold_what_they_say() {
        let read = |name: &str| {
            let path = format!("{}/testdata/initramfs/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let drivers = ["hv_vmbus", "hv_storvsc", "hv_netvsc"];
        let Contents::Files(files) = list(&read("hyperv.cpio.gz")).unwrap() else {
            panic!("gzip is read here");
        };
        assert_eq!(drivers_in(&files, &drivers), ["hv_vmbus", "hv_storvsc"]);
        let Contents::Files(files) = list(&read("bare.cpio.gz")).unwrap() else {
            panic!("gzip is read here");
        };
        assert!(drivers_in(&files, &drivers).is_empty(), "{files:?}");
    }
}
