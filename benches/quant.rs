//! Throughput of f32 → Q8_0/Q4_0 quantization and back (MB/s of f32 data), single-threaded
//! (one row at a time, the kernel) and parallel over rows (what `quantize` uses).

#[path = "../examples/common/mod.rs"]
mod common;

use common::rand_vec;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mllama::quant::{convert_f32, convert_f32_serial, dequantize};
use mllama::GgmlType;

fn data(n: usize) -> Vec<f32> {
    rand_vec(n, 0x2545_F491_4F6C_DD1D)
}

fn bench(c: &mut Criterion) {
    let row = 4096;
    let rows = 1024; // 16 MiB of f32
    let x = data(row * rows);
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.sample_size(20);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let mut out = vec![0u8; ty.row_bytes(row as u64).unwrap() as usize * rows];
        g.bench_function(BenchmarkId::new("serial", ty.name()), |b| {
            b.iter(|| convert_f32_serial(ty, &x, row, &mut out).unwrap())
        });
        g.bench_function(BenchmarkId::new("parallel", ty.name()), |b| {
            b.iter(|| convert_f32(ty, &x, row, &mut out).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.sample_size(20);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let mut q = vec![0u8; ty.row_bytes(row as u64).unwrap() as usize * rows];
        convert_f32(ty, &x, row, &mut q).unwrap();
        let mut y = vec![0f32; x.len()];
        g.bench_function(BenchmarkId::new("parallel", ty.name()), |b| {
            b.iter(|| dequantize(ty, &q, &mut y).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
