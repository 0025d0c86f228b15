//! Converts a raw image into a sparse fixed VHD of a whole number of MiB,
//! reading only its data and writing only its non-zero 4 KiB pages.
//!
//! `cargo run -p diskformats --example raw2vhd -- disk.raw disk.vhd`

use diskformats::vhd::FixedVhdWriter;
use diskformats::{data_ranges, nonzero_runs, round_up_to_mib, Disk, Image, OpenOptions};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = &args[..] else {
        eprintln!("usage: raw2vhd RAW VHD");
        std::process::exit(2);
    };
    let img = Image::open(input, &OpenOptions::default())?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)?;
    let vhd = FixedVhdWriter::create(out, round_up_to_mib(img.size()))?;
    let mut buf = vec![0u8; 1 << 20];
    for range in data_ranges(&img) {
        let range = range?;
        let mut at = range.start;
        while at < range.end {
            let len = ((range.end - at) as usize).min(buf.len());
            img.read_at(&mut buf[..len], at)?;
            for run in nonzero_runs(&buf[..len], 4096) {
                vhd.write_at(&buf[run.clone()], at + run.start as u64)?;
            }
            at += len as u64;
        }
    }
    vhd.finish()?.sync_all()?;
    Ok(())
}
