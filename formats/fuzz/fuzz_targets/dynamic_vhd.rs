//! Opening and reading arbitrary files as images (dynamic VHDs above all).
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::unix::io::FromRawFd;

use diskformats::{data_ranges, Disk, Image, OpenOptions};
use libfuzzer_sys::fuzz_target;

fn memfile(data: &[u8]) -> File {
    // SAFETY: memfd_create with a valid C string; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), 0) };
    assert!(fd >= 0);
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data).unwrap();
    f
}

fuzz_target!(|data: &[u8]| {
    let opts = OpenOptions { accept_bad_checksum: true, ..Default::default() };
    if let Ok(img) = Image::from_file(memfile(data), &opts) {
        let mut buf = vec![0u8; 4096];
        for r in data_ranges(&img).take(64).flatten() {
            let len = (r.end - r.start).min(4096) as usize;
            let _ = img.read_at(&mut buf[..len], r.start);
        }
    }
});
