//! Prints what an image is: its format, size, data and partitions.
//!
//! `cargo run -p diskformats --example info -- disk.vhd`

use diskformats::{data_ranges, Disk, Image, OpenOptions, PartitionTable};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: info IMAGE");
        std::process::exit(2);
    };
    let img = Image::open(&path, &OpenOptions::default())?;
    let data: u64 = data_ranges(&img)
        .map(|r| r.map(|r| r.end - r.start))
        .sum::<Result<u64, _>>()?;
    println!(
        "{path}: {}, {} bytes, {data} bytes of data",
        img.format(),
        img.size()
    );
    let table = PartitionTable::read(&img)?;
    println!("partition table: {}", table.kind());
    for p in table.partitions() {
        println!(
            "  {:>3}  start {:>14}  size {:>14}  {} ({})",
            p.number, p.start, p.size, p.kind, p.type_id
        );
    }
    for problem in table.problems() {
        println!("problem: {problem}");
    }
    Ok(())
}
