//! Throughput of the zero test and of run detection, in bytes per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn zero(c: &mut Criterion) {
    let mut g = c.benchmark_group("zero");
    for size in [4096usize, 512 << 10, 4 << 20] {
        let buf = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("is_zero/{size}"), |b| {
            b.iter(|| diskformats::is_zero(black_box(&buf)))
        });
    }
    let block = vec![0u8; 512 << 10];
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("nonzero_runs/zero-block-4k", |b| {
        b.iter(|| diskformats::nonzero_runs(black_box(&block), 4096).count())
    });
    let mut half = vec![0u8; 512 << 10];
    for chunk in half.chunks_mut(8192) {
        chunk[..4096].fill(0x5a);
    }
    g.bench_function("nonzero_runs/alternating-4k", |b| {
        b.iter(|| diskformats::nonzero_runs(black_box(&half), 4096).count())
    });
    g.finish();
}

criterion_group!(benches, zero);
criterion_main!(benches);
