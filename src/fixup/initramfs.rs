//! Lists the files of an initramfs image as the kernel unpacks it:
//! concatenated cpio (newc) archives, each stored or compressed with gzip,
//! zstd, xz, lzma or lz4 (legacy frames), with zero padding between them.

use std::io::{Cursor, Read};

/// Most bytes a compressed segment may unpack to (read as a stream, never
/// held): past it the image is called a decompression bomb, with an error.
const MAX_UNPACKED: u64 = 2 << 30;
/// Most bytes an xz or lzma segment is held unpacked (lzma-rs unpacks only
/// whole): real initramfs images unpack to tens or hundreds of MiB.
const MAX_BUFFERED: u64 = 512 << 20;
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

/// A Vec that refuses to grow past [`MAX_BUFFERED`] (xz and lzma, which
/// are unpacked whole here: a bomb stops there, with an error).
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > MAX_BUFFERED {
            return Err(std::io::Error::other(format!(
                "it unpacks to more than {} MiB",
                MAX_BUFFERED >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader that ends in an error, not silently, after [`MAX_UNPACKED`]
/// bytes: a decompression bomb is said to be one.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "it unpacks to more than {} MiB, as a decompression bomb does",
                    self.cap >> 20
                ))),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// Legacy lz4 frames as a stream: the magic, then blocks of (LE u32 size,
/// data), each unpacking to at most 8 MiB, until the data ends (a repeated
/// magic starts a new frame). One block is held at a time.
struct Lz4Legacy<'a> {
    data: &'a [u8],
    pos: usize,
    block: Vec<u8>,
    at: usize,
}

impl Read for Lz4Legacy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            let d = self.data;
            if self.pos + 4 > d.len() {
                return Ok(0);
            }
            let n = u32::from_le_bytes([
                d[self.pos],
                d[self.pos + 1],
                d[self.pos + 2],
                d[self.pos + 3],
            ]) as usize;
            if n == 0x184C_2102 {
                self.pos += 4;
                continue;
            }
            if n == 0 || self.pos + 4 + n > d.len() {
                return Ok(0);
            }
            self.block =
                lz4_flex::block::decompress(&d[self.pos + 4..self.pos + 4 + n], 8 << 20)
                    .map_err(|e| std::io::Error::other(format!("the lz4 data is damaged: {e}")))?;
            self.at = 0;
            self.pos += 4 + n;
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A decompressed segment as a stream capped at [`MAX_UNPACKED`]: gzip,
/// zstd and lz4 are read as they unpack (never held whole); xz and lzma,
/// which lzma-rs unpacks only whole, are held up to [`MAX_BUFFERED`].
fn unpacked<'a>(kind: &str, data: &'a [u8], cap: u64) -> Result<Box<dyn Read + 'a>, String> {
    let err = |e: std::io::Error| format!("the {kind} data is damaged: {e}");
    let inner: Box<dyn Read + 'a> = match kind {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(data)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(data).map_err(err)?),
        "xz" | "lzma" => {
            let mut bounded = Bounded(Vec::new());
            let result = if kind == "xz" {
                lzma_rs::xz_decompress(&mut Cursor::new(data), &mut bounded)
            } else {
                lzma_rs::lzma_decompress(&mut Cursor::new(data), &mut bounded)
            };
            result.map_err(|e| format!("the {kind} data is damaged or too large: {e:?}"))?;
            Box::new(Cursor::new(bounded.0))
        }
        "lz4" => Box::new(Lz4Legacy {
            data,
            pos: 4,
            block: Vec::new(),
            at: 0,
        }),
        other => return Err(format!("{other} is not read here")),
    };
    Ok(Box::new(Capped {
        inner,
        left: cap,
        cap,
    }))
}

/// A reader that can look ahead: what [`Peek::peek`] saw is read again.
struct Peek<R> {
    inner: R,
    ahead: Vec<u8>,
}

impl<R: Read> Peek<R> {
    /// At least `n` bytes ahead (fewer only at the end).
    fn peek(&mut self, n: usize) -> std::io::Result<&[u8]> {
        while self.ahead.len() < n {
            let mut buf = [0u8; 8192];
            let got = self.inner.read(&mut buf)?;
            if got == 0 {
                break;
            }
            self.ahead.extend_from_slice(&buf[..got]);
        }
        Ok(&self.ahead)
    }

    /// Skips zero bytes; false at the end of the stream.
    fn skip_zeros(&mut self) -> std::io::Result<bool> {
        loop {
            let zeros = self.peek(1)?.iter().take_while(|&&b| b == 0).count();
            if self.ahead.is_empty() {
                return Ok(false);
            }
            if zeros < self.ahead.len() {
                self.ahead.drain(..zeros);
                return Ok(true);
            }
            self.ahead.clear();
        }
    }
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ahead.is_empty() {
            return self.inner.read(buf);
        }
        let n = buf.len().min(self.ahead.len());
        buf[..n].copy_from_slice(&self.ahead[..n]);
        self.ahead.drain(..n);
        Ok(n)
    }
}

/// Reads every cpio archive in the stream `r` (zero padding between them),
/// adding their paths to `names`; the members' data is read past, never kept.
fn archives_streamed(r: impl Read, names: &mut Vec<String>) -> Result<bool, String> {
    let io = |e: std::io::Error| format!("the data cannot be read: {e}");
    let mut src = Peek {
        inner: r,
        ahead: Vec::new(),
    };
    let mut any = false;
    for _ in 0..MAX_ENTRIES {
        if !src.skip_zeros().map_err(io)? {
            return Ok(any);
        }
        if !src.peek(5).map_err(io)?.starts_with(b"07070") {
            return Err("after its cpio archives the segment holds something else".into());
        }
        loop {
            if names.len() >= MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
            let r = cpio::NewcReader::new(&mut src)
                .map_err(|e| format!("a cpio header is damaged: {e}"))?;
            let trailer = r.entry().is_trailer();
            if !trailer {
                names.push(r.entry().name().trim_start_matches("./").to_owned());
            }
            r.finish()
                .map_err(|e| format!("a cpio member is cut off: {e}"))?;
            if trailer {
                break;
            }
        }
        any = true;
    }
    Err("too many cpio archives".into())
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
    list_capped(data, MAX_UNPACKED)
}

/// [`list`], with compressed segments allowed to unpack to `cap` bytes.
fn list_capped(data: &[u8], cap: u64) -> Result<Contents, String> {
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
        // A compressed segment runs to the end of the image; it is read as
        // it unpacks.
        if !archives_streamed(unpacked(kind, rest, cap)?, &mut names)
            .map_err(|e| format!("the {kind} segment: {e}"))?
        {
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
    fn a_decompression_bomb_is_an_error_not_a_silent_cut() {
        // 4 MiB of zeros after an archive, gzip- and zstd-compressed, against
        // a 1 MiB cap: read as a stream, stopped at the cap, said so.
        let mut main = cpio(&MODS);
        main.extend_from_slice(&vec![0u8; 4 << 20]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&main).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&main[..], 1).unwrap();
        for seg in [gz, zst] {
            let e = list_capped(&seg, 1 << 20).unwrap_err();
            assert!(e.contains("more than 1 MiB"), "{e}");
            // Under a cap it fits, the same image reads whole.
            let Contents::Files(files) = list_capped(&seg, 8 << 20).unwrap() else {
                panic!("not read");
            };
            assert_eq!(files.len(), 2);
        }
        // Junk after the archives inside a compressed segment is an error,
        // as the kernel's unpacker makes it one.
        let mut junk = cpio(&MODS);
        junk.extend_from_slice(b"not cpio");
        let zst = zstd::encode_all(&junk[..], 1).unwrap();
        assert!(list(&zst).unwrap_err().contains("something else"));
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
