//! Convert throughput: a sparse raw image with a quarter of its 512 KiB blocks
//! filled, to a fixed VHD, through the library (page cache, no flush). The
//! side-by-side comparison with qemu-img is `scripts/bench-convert`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ebs2azure::convert::{convert, Input, Options};
use ebs2azure::sink::vhd_file::FileOptions;

const SIZE: u64 = 256 << 20;
const BLOCK: u64 = 512 << 10;

fn make_image(path: &Path) -> u64 {
    let f = File::create(path).expect("create image");
    f.set_len(SIZE).expect("size image");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; BLOCK as usize];
    let mut filled = 0;
    for i in 0..SIZE / BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(4) {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (x >> (j % 8)) as u8 ^ j as u8;
            }
            f.write_all_at(&block, i * BLOCK).expect("fill block");
            filled += BLOCK;
        }
    }
    filled
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = dir.path().join("bench.raw");
    let filled = make_image(&raw);
    let out = dir.path().join("bench.vhd");
    let opts = Options {
        file: FileOptions {
            overwrite: true,
            sync: false,
        },
        // SAFETY: the image is this benchmark's own temporary file; nothing
        // else writes it. Mapped, as the command maps its inputs.
        input_mapping: unsafe { ebs2azure::source::InputMapping::mapped() },
        ..Options::default()
    };
    let mut g = c.benchmark_group("convert");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(filled));
    g.bench_function("raw-256MiB-25pct-to-vhd-fixed", |b| {
        b.iter(|| convert(&Input::Image(raw.clone()), &out, &opts).expect("convert"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
