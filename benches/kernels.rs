//! Matrix kernel throughput per SIMD path, with the machine's own limits for comparison.
//!
//! ```sh
//! cargo bench --bench kernels                 # criterion: probe, decode, cross_attention, gemm, crossover groups
//! cargo bench --bench kernels -- decode/      # one group
//! cargo bench --bench kernels -- summary      # one-run table of ratios (GB/s vs the read probe,
//!                                             # GFLOP/s vs the FMA peak, scalar vs SIMD)
//! cargo bench --bench kernels -- summary pathratio   # quantized decode, each SIMD path vs the
//!                                             # slowest one, interleaved round-robin
//! cargo bench --bench kernels -- summary xattn       # one decode step's cross-attention (11B,
//!                                             # f32 and f16 K/V) vs the read probe
//! ```
//!
//! Decode (n = 1) is reported as GB/s of weights read. Matrices smaller than 256 MB are
//! replicated and the copies used in turn, so every call streams its weights from memory (as in a
//! real decode step, where the whole model passes through the caches) rather than from the
//! last-level cache.

#[path = "../examples/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::rand_vec;

use criterion::{BenchmarkId, Criterion, Throughput};
use mllama::kernels::tensor::Mat;
use mllama::kernels::{matmul_with, probe, with_path, Path, Regime, Scratch};
use mllama::GgmlType;
use rayon::prelude::*;

/// Deterministic synthetic weights of any type (valid blocks with small random scales).
fn weights(ty: GgmlType, m: usize, k: usize, seed: u64) -> Mat {
    let row_bytes = ty.row_bytes(k as u64).unwrap() as usize;
    let mut bytes = vec![0u8; row_bytes * m];
    bytes
        .par_chunks_mut(row_bytes)
        .enumerate()
        .for_each(|(r, row)| {
            let mut s = seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            };
            match ty {
                GgmlType::F32 => {
                    for c in row.chunks_exact_mut(4) {
                        let v = (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                        c.copy_from_slice(&(v * 0.1).to_le_bytes());
                    }
                }
                GgmlType::F16 | GgmlType::BF16 => {
                    for c in row.chunks_exact_mut(2) {
                        let v = ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                        let b = if ty == GgmlType::F16 {
                            half::f16::from_f32(v).to_le_bytes()
                        } else {
                            half::bf16::from_f32(v).to_le_bytes()
                        };
                        c.copy_from_slice(&b);
                    }
                }
                GgmlType::Q8_0 | GgmlType::Q4_0 => {
                    let bs = ty.type_size();
                    for blk in row.chunks_exact_mut(bs) {
                        let d = half::f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-5);
                        blk[..2].copy_from_slice(&d.to_le_bytes());
                        for q in &mut blk[2..] {
                            *q = next() as u8;
                        }
                        if ty == GgmlType::Q8_0 {
                            for q in &mut blk[2..] {
                                if *q == 0x80 {
                                    *q = 0x81; // keep to −127..127 like ggml's quantizer
                                }
                            }
                        }
                    }
                }
                _ => {
                    // Other block types: random values through the type's own quantizer.
                    let vals: Vec<f32> = (0..k)
                        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1)
                        .collect();
                    let t = mllama::quant::traits(ty).expect("a block type");
                    (t.from_f32)(&vals, row);
                }
            }
        });
    Mat::from_bytes(ty, m, k, &bytes)
}

/// Enough copies of a matrix that cycling through them exceeds the last-level cache.
fn copies(ty: GgmlType, m: usize, k: usize) -> Vec<Mat> {
    let bytes = ty.row_bytes(k as u64).unwrap() as usize * m;
    let count = (256usize << 20).div_ceil(bytes).clamp(1, 64);
    (0..count)
        .map(|c| weights(ty, m, k, 17 + c as u64))
        .collect()
}

fn simd_paths() -> Vec<Path> {
    Path::available()
}

const DECODE_SHAPES: [(usize, usize); 4] =
    [(4096, 4096), (14336, 4096), (4096, 14336), (128256, 4096)];
const DECODE_TYPES: [GgmlType; 3] = [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16];

/// (n, m, k, type): vision tower and prefill shapes.
const GEMM_SHAPES: [(usize, usize, usize, GgmlType); 5] = [
    (6432, 1280, 1280, GgmlType::F16),
    (6432, 5120, 1280, GgmlType::F16),
    (6432, 1280, 5120, GgmlType::F16),
    (512, 4096, 4096, GgmlType::Q4_0),
    (512, 4096, 4096, GgmlType::Q8_0),
];

fn bench_probe(c: &mut Criterion) {
    let mut g = c.benchmark_group("probe");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let buf = probe::probe_buffer(512 << 20).expect("read probe buffer");
    for path in simd_paths() {
        g.throughput(Throughput::Bytes((buf.len() * 4) as u64));
        g.bench_function(BenchmarkId::new("read_512MB", path.name()), |b| {
            b.iter(|| probe::read_pass_gbs(path, &buf))
        });
    }
    g.finish();
    for path in simd_paths() {
        println!(
            "probe/fma_peak/{path}: {:.1} GFLOP/s",
            probe::fma_peak_gflops(path, 0.5)
        );
    }
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for ty in DECODE_TYPES {
        for (m, k) in DECODE_SHAPES {
            let ws = copies(ty, m, k);
            let x = rand_vec(k, 3);
            let mut y = vec![0f32; m];
            let mut sc = Scratch::new();
            g.throughput(Throughput::Bytes(ws[0].nbytes() as u64));
            for path in simd_paths() {
                let mut idx = 0;
                g.bench_function(
                    BenchmarkId::new(format!("{}/{m}x{k}", ty.name()), path.name()),
                    |b| {
                        b.iter(|| {
                            idx = (idx + 1) % ws.len();
                            with_path(path, || {
                                matmul_with(&ws[idx], None, &x, 1, &mut y, &mut sc, Regime::Decode)
                            })
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// One decode step's cross-attention at the 11B shapes: 32 query heads over the cached K/V of a
/// 4-tile image (8 kv heads × 6404 keys × 128), f32 (float models) and f16 (quantized models).
/// Eight layers' worth of K/V copies are cycled so the reads come from memory, as in decoding.
struct CrossAttn {
    q: Vec<f32>,
    k32: Vec<Vec<f32>>,
    v32: Vec<Vec<f32>>,
    k16: Vec<Vec<half::f16>>,
    v16: Vec<Vec<half::f16>>,
    out: Vec<f32>,
}

const XA: (usize, usize, usize, usize) = (32, 8, 6404, 128); // heads, kv heads, keys, head dim

impl CrossAttn {
    fn new() -> Self {
        let (nh, nkv, nk, hd) = XA;
        let layers = 8;
        let f = |s: u64| rand_vec(nkv * nk * hd, s);
        let h = |x: &[f32]| {
            x.iter()
                .map(|&v| half::f16::from_f32(v))
                .collect::<Vec<_>>()
        };
        let k32: Vec<Vec<f32>> = (0..layers).map(|l| f(40 + l)).collect();
        let v32: Vec<Vec<f32>> = (0..layers).map(|l| f(60 + l)).collect();
        CrossAttn {
            q: rand_vec(nh * hd, 5),
            k16: k32.iter().map(|k| h(k)).collect(),
            v16: v32.iter().map(|v| h(v)).collect(),
            k32,
            v32,
            out: vec![0f32; nh * hd],
        }
    }
    /// Bytes of K and V one call reads.
    fn bytes(half: bool) -> usize {
        let (_, nkv, nk, hd) = XA;
        2 * nkv * nk * hd * if half { 2 } else { 4 }
    }
    fn run(&mut self, layer: usize, half: bool) {
        let (nh, nkv, nk, hd) = XA;
        let mask = mllama::nn::Mask::None;
        let l = layer % self.k32.len();
        if half {
            let (k, v) = (&self.k16[l], &self.v16[l]);
            mllama::nn::attention(
                &self.q,
                mllama::nn::KeysValues::new(k, v, nk, nk),
                mllama::nn::Heads::new(nh, nkv, hd),
                mask,
                &mut self.out,
            )
        } else {
            let (k, v) = (&self.k32[l], &self.v32[l]);
            mllama::nn::attention(
                &self.q,
                mllama::nn::KeysValues::new(k, v, nk, nk),
                mllama::nn::Heads::new(nh, nkv, hd),
                mask,
                &mut self.out,
            )
        }
    }
}

fn bench_cross_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_attention");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    let mut xa = CrossAttn::new();
    for half in [false, true] {
        g.throughput(Throughput::Bytes(CrossAttn::bytes(half) as u64));
        for path in simd_paths() {
            let mut layer = 0;
            let name = if half {
                "decode_11b_f16"
            } else {
                "decode_11b_f32"
            };
            g.bench_function(BenchmarkId::new(name, path.name()), |b| {
                b.iter(|| {
                    layer += 1;
                    with_path(path, || xa.run(layer, half))
                })
            });
        }
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (n, m, k, ty) in GEMM_SHAPES {
        let w = weights(ty, m, k, 5);
        let x = rand_vec(n * k, 7);
        let mut y = vec![0f32; n * m];
        let mut sc = Scratch::new();
        g.throughput(Throughput::Elements((2 * n * m * k) as u64));
        for path in simd_paths() {
            g.bench_function(
                BenchmarkId::new(format!("{}/n{n}/{m}x{k}", ty.name()), path.name()),
                |b| {
                    b.iter(|| {
                        with_path(path, || {
                            matmul_with(&w, None, &x, n, &mut y, &mut sc, Regime::Gemm)
                        })
                    })
                },
            );
        }
    }
    g.finish();
}

/// Decode vs GEMM for small n: where [`mllama::kernels::gemm_min_rows`] comes from.
fn bench_crossover(c: &mut Criterion) {
    let mut g = c.benchmark_group("crossover");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let path = Path::best();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ] {
        let w = weights(ty, 4096, 4096, 9);
        for n in [2, 4, 8, 12, 16, 24, 32, 48, 64] {
            let x = rand_vec(n * 4096, 1);
            let mut y = vec![0f32; n * 4096];
            let mut sc = Scratch::new();
            for regime in [Regime::Decode, Regime::Gemm] {
                let id = BenchmarkId::new(format!("{}/{path}/{regime:?}", ty.name()), n);
                g.bench_function(id, |b| {
                    b.iter(|| {
                        with_path(path, || {
                            matmul_with(&w, None, &x, n, &mut y, &mut sc, regime)
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

/// Median seconds of `reps` calls of `f` after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Decode of one 14336×4096 matrix per call, 20 distinct copies per pass (far beyond the
/// last-level cache), on pools of 1 and 2 threads; every pass is paired with a read-probe pass on
/// the same pool right before it. Prints, per type, thread count and path, the median over the
/// rounds of decode GB/s, probe GB/s and their ratio (each ratio from one adjacent pair).
fn paired(buf: &[f32]) {
    const COPIES: usize = 20;
    const ROUNDS: usize = 5;
    let (m, k) = (14336, 4096);
    println!(
        "\npaired decode n=1, {m}x{k} ×{COPIES} copies per pass, median of {ROUNDS} (probe pass; decode pass)"
    );
    let paths: Vec<Path> = simd_paths()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect();
    let probe_path = Path::best();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16] {
        let ws: Vec<Mat> = (0..COPIES)
            .map(|c| weights(ty, m, k, 101 + c as u64))
            .collect();
        let bytes: usize = ws.iter().map(|w| w.nbytes()).sum();
        let x = rand_vec(k, 3);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for &path in &paths {
                let mut y = vec![0f32; m];
                let mut sc = Scratch::new();
                let mut rows: Vec<(f64, f64)> = pool.install(|| {
                    // Warm-up: scratch, pool threads, page tables.
                    for w in &ws[..2] {
                        with_path(path, || {
                            matmul_with(w, None, &x, 1, &mut y, &mut sc, Regime::Decode)
                        });
                    }
                    (0..ROUNDS)
                        .map(|_| {
                            let bw = probe::best_read_gbs(probe_path, buf, 1);
                            let t = Instant::now();
                            for w in &ws {
                                with_path(path, || {
                                    matmul_with(w, None, &x, 1, &mut y, &mut sc, Regime::Decode)
                                });
                            }
                            (bytes as f64 / t.elapsed().as_secs_f64() / 1e9, bw)
                        })
                        .collect()
                });
                let med = |v: &mut Vec<f64>| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let mut d: Vec<f64> = rows.iter().map(|r| r.0).collect();
                let mut p: Vec<f64> = rows.iter().map(|r| r.1).collect();
                let mut ratio: Vec<f64> = rows.iter_mut().map(|r| r.0 / r.1).collect();
                let best = d.iter().cloned().fold(0.0, f64::max);
                println!(
                    "  {:5} threads={threads} {:7}: decode {:5.1} GB/s (best {:5.1}), probe {:5.1} GB/s, ratio {:3.0}%",
                    ty.name(),
                    path.name(),
                    med(&mut d),
                    best,
                    med(&mut p),
                    100.0 * med(&mut ratio)
                );
            }
        }
    }
}

/// Quantized decode (Q4_0, Q8_0; n = 1, 2, 4; k = 4096) on every SIMD path as a speed ratio to the
/// last (slowest) SIMD path, e.g. avx512/avx2. The paths take turns (round-robin) and each keeps
/// its best sample, so load from other processes on a shared machine shifts all paths alike.
/// Shapes: weights hot in L2 on one thread (m = 32 and 160 rows: the compute ceiling) and a
/// 4096×4096 matrix streamed from memory (copies beyond the last-level cache) on 1 and 2 threads.
fn path_ratios() {
    const ROUNDS: usize = 25;
    let paths: Vec<Path> = simd_paths()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect();
    let Some(&base) = paths.last() else {
        println!("pathratio: no SIMD path");
        return;
    };
    let names: Vec<&str> = paths.iter().map(|p| p.name()).collect();
    println!("\nquantized decode, k=4096, GB/s of weights (best of {ROUNDS} interleaved rounds), ratio to {base}: paths {names:?}");
    let k = 4096;
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        // (label, rows, copies, threads)
        let hot: Vec<Mat> = vec![weights(ty, 160, k, 5)];
        let hot32: Vec<Mat> = vec![weights(ty, 32, k, 6)];
        let cold = copies(ty, 4096, k);
        let cases: [(&str, &[Mat], usize); 4] = [
            ("L2 m=32    1 thr ", &hot32, 1),
            ("L2 m=160   1 thr ", &hot, 1),
            ("mem m=4096 1 thr ", &cold, 1),
            ("mem m=4096 2 thr ", &cold, 2),
        ];
        for (label, ws, threads) in cases {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let m = ws[0].rows;
            let bytes: usize = ws.iter().map(|w| w.nbytes()).sum();
            // Hot weights: repeat the call so one sample takes about a millisecond.
            let reps = if ws.len() == 1 {
                (1 << 20) / bytes + 1
            } else {
                1
            };
            for n in [1, 2, 4] {
                let x = rand_vec(n * k, 3);
                let mut y = vec![0f32; n * m];
                let mut sc = Scratch::new();
                let mut best = vec![f64::INFINITY; paths.len()];
                pool.install(|| {
                    for round in 0..=ROUNDS {
                        for (pi, &path) in paths.iter().enumerate() {
                            let t = Instant::now();
                            with_path(path, || {
                                for _ in 0..reps {
                                    for w in ws {
                                        matmul_with(w, None, &x, n, &mut y, &mut sc, Regime::Decode)
                                    }
                                }
                            });
                            // Round 0 warms scratch, pool and caches.
                            if round > 0 {
                                best[pi] = best[pi].min(t.elapsed().as_secs_f64());
                            }
                        }
                    }
                });
                let gbs: Vec<String> = best
                    .iter()
                    .map(|t| format!("{:5.1}", (reps * bytes) as f64 / t / 1e9))
                    .collect();
                let ratios: Vec<String> = best
                    .iter()
                    .map(|t| format!("{:.2}", best[best.len() - 1] / t))
                    .collect();
                println!(
                    "  {:5} {label} n={n}: GB/s [{}]  ratio [{}]",
                    ty.name(),
                    gbs.join(", "),
                    ratios.join(", ")
                );
            }
        }
    }
}

/// The one-run table: every figure next to the probe it should be compared with.
fn summary(filter: &[String]) {
    let want = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    let threads = rayon::current_num_threads();
    // The best path, or the one MLLAMA_SIMD asks for.
    let best = mllama::kernels::active_path();
    println!("threads: {threads}, path: {best}");
    let buf = probe::probe_buffer(512 << 20).expect("read probe buffer");
    let bw = probe::best_read_gbs(best, &buf, 3);
    println!(
        "probe: read bandwidth ({best}, 512 MB, best of 3 rounds of 1/2/4/8 streams): {bw:.1} GB/s"
    );
    let mut peak = std::collections::HashMap::new();
    for p in simd_paths() {
        let f = probe::fma_peak_gflops(p, 0.5);
        peak.insert(p, f);
        println!("probe: FMA peak ({p}): {f:.1} GFLOP/s");
    }
    if let Some(spec) = filter.iter().find_map(|f| f.strip_prefix("prof=")) {
        // prof=TYPE,N,REGIME: repeat one call for a profiler.
        let parts: Vec<&str> = spec.split(',').collect();
        let ty = GgmlType::from_name(parts[0]).unwrap();
        let n: usize = parts[1].parse().unwrap();
        let regime = if parts[2] == "gemm" {
            Regime::Gemm
        } else {
            Regime::Decode
        };
        let w = weights(ty, 4096, 4096, 9);
        let x = rand_vec(n * 4096, 1);
        let mut y = vec![0f32; n * 4096];
        let mut sc = Scratch::new();
        let t = time(200, || {
            matmul_with(&w, None, &x, n, &mut y, &mut sc, regime)
        });
        println!("prof {spec}: {:.3} ms", t * 1e3);
        return;
    }
    if want("probe1") {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let buf = probe::probe_buffer(512 << 20).expect("read probe buffer");
        for streams in [1, 2, 4, 8] {
            let one: Vec<f64> = (0..4)
                .map(|_| pool.install(|| probe::read_pass_streams_gbs(best, &buf, streams)))
                .collect();
            let all: Vec<f64> = (0..4)
                .map(|_| probe::read_pass_streams_gbs(best, &buf, streams))
                .collect();
            println!("{streams} streams: one thread {one:.1?} GB/s; all threads {all:.1?} GB/s");
        }
        let one = pool.install(|| probe::fma_peak_gflops(best, 0.5));
        println!("FMA peak one thread: {one:.1} GFLOP/s");
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16] {
            let ws = copies(ty, 14336, 4096);
            let x = rand_vec(4096, 3);
            let mut y = vec![0f32; 14336];
            let mut sc = Scratch::new();
            let mut idx = 0;
            let mut run = || {
                idx = (idx + 1) % ws.len();
                with_path(best, || {
                    matmul_with(&ws[idx], None, &x, 1, &mut y, &mut sc, Regime::Decode)
                })
            };
            let t1 = pool.install(|| time(20, &mut run));
            let t2 = time(20, &mut run);
            let gb = ws[0].nbytes() as f64 / 1e9;
            println!(
                "{} 14336x4096 decode: one thread {:.1} GB/s, all {:.1} GB/s",
                ty.name(),
                gb / t1,
                gb / t2
            );
        }
    }
    if want("paired") {
        paired(&buf);
    }
    if want("pathratio") {
        path_ratios();
    }
    if want("hot") {
        // Compute ceiling of the decode kernels: one thread, weights hot in L2/L3.
        println!("\ndecode, one thread, weights hot in cache (GB/s of weights)");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for (ty, m, k) in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::F32,
        ]
        .into_iter()
        .flat_map(|t| [(t, 1024, 4096), (t, 256, 14336)])
        {
            let w = weights(ty, m, k, 1);
            let mut line = format!("  {:5} {m}x{k}", ty.name());
            for nx in [1, 2, 4] {
                let x = rand_vec(nx * k, 3);
                let mut y = vec![0f32; nx * m];
                let mut sc = Scratch::new();
                let t = pool.install(|| {
                    time(50, || {
                        with_path(best, || {
                            matmul_with(&w, None, &x, nx, &mut y, &mut sc, Regime::Decode)
                        })
                    })
                });
                line += &format!("  n={nx}: {:6.1} GB/s", w.nbytes() as f64 / t / 1e9);
            }
            println!("{line}");
        }
    }
    if want("attn") {
        // Vision-tower self-attention of one 1608-token tile: 16 heads of 80, all keys visible.
        let (n, heads, hd) = (1608, 16, 80);
        let q = rand_vec(n * heads * hd, 1);
        let k = rand_vec(heads * n * hd, 2);
        let v = rand_vec(heads * n * hd, 3);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; n * heads * hd];
        let flop = 4.0 * (heads * n * n * hd) as f64;
        let t_ops = time(2, || {
            mllama::nn::attention(
                &q,
                mllama::nn::KeysValues::new(&k, &v, n, n),
                mllama::nn::Heads {
                    n_heads: heads,
                    n_kv_heads: heads,
                    hd,
                    scale,
                },
                mllama::nn::Mask::None,
                &mut out,
            )
        });
        println!(
            "\nattention n={n} heads={heads} hd={hd}: ops::attention {:.1} ms ({:.1} GFLOP/s)",
            t_ops * 1e3,
            flop / t_ops / 1e9
        );
        let rows: Vec<Vec<std::ops::Range<usize>>> =
            (0..n).map(|_| std::iter::once(0..n).collect()).collect();
        for path in simd_paths() {
            let t = time(3, || {
                let base = mllama::kernels::SyncPtr(out.as_mut_ptr());
                let nqb = n.div_ceil(32);
                (0..heads * nqb).into_par_iter().for_each_init(
                    || {
                        (
                            mllama::kernels::attention::AttnScratch::new(),
                            vec![0f32; 32 * hd],
                        )
                    },
                    |(ws, tmp), t| {
                        let op = base;
                        let (h, qb) = (t / nqb, t % nqb);
                        let (i0, i1) = (qb * 32, ((qb + 1) * 32).min(n));
                        let qd = heads * hd;
                        with_path(path, || {
                            let head = mllama::kernels::attention::Head {
                                q: &q[i0 * qd + h * hd..],
                                q_stride: qd,
                                nq: i1 - i0,
                                k: &k[h * n * hd..],
                                v: &v[h * n * hd..],
                                nk: n,
                                hd,
                                scale,
                            };
                            mllama::kernels::attention::attend(&head, &rows[i0..i1], tmp, hd, ws)
                        });
                        for (r, row) in tmp.chunks_exact(hd).take(i1 - i0).enumerate() {
                            // SAFETY: task (h, qb) alone writes rows i0..i1 of head h, inside `out`.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    row.as_ptr(),
                                    op.0.add((i0 + r) * qd + h * hd),
                                    hd,
                                )
                            };
                        }
                    },
                );
            });
            println!(
                "  attend ({path}): {:.1} ms ({:.1} GFLOP/s) ×{:.1} vs ops::attention",
                t * 1e3,
                flop / t / 1e9,
                t_ops / t
            );
        }
    }
    if want("xattn") {
        // One decode step's cross-attention per call, K/V from memory (eight layers cycled);
        // each figure next to a read-probe pass made just before it.
        let mut xa = CrossAttn::new();
        println!(
            "\ncross-attention decode step, 11B shapes (32 heads, 8 kv heads, 6404 keys, 128)"
        );
        for half in [false, true] {
            for path in simd_paths() {
                let mut layer = 0;
                let t = time(24, || {
                    layer += 1;
                    with_path(path, || xa.run(layer, half))
                });
                let bw = probe::best_read_gbs(best, &buf, 1);
                let gbs = CrossAttn::bytes(half) as f64 / t / 1e9;
                println!(
                    "  {} K/V {path:7}: {:.2} ms per layer, {gbs:.1} GB/s of K/V = {:.0}% of the probe ({bw:.1} GB/s)",
                    if half { "f16" } else { "f32" },
                    t * 1e3,
                    100.0 * gbs / bw
                );
            }
        }
    }
    if want("decode") {
        println!(
            "\ndecode n=1 (GB/s of weights; % of the read probe re-measured just before each line)"
        );
        for ty in DECODE_TYPES {
            for (m, k) in DECODE_SHAPES {
                let ws = copies(ty, m, k);
                let x = rand_vec(k, 3);
                let mut y = vec![0f32; m];
                let mut sc = Scratch::new();
                let bw = probe::best_read_gbs(best, &buf, 1);
                let mut line = format!("  {:5} {m:6}x{k:<6} probe {bw:4.1} GB/s", ty.name());
                let mut base = 0.0;
                for path in simd_paths().into_iter().rev() {
                    let mut idx = 0;
                    let reps = if path == Path::Scalar {
                        3
                    } else {
                        2 * ws.len().max(5)
                    };
                    let t = time(reps, || {
                        idx = (idx + 1) % ws.len();
                        with_path(path, || {
                            matmul_with(&ws[idx], None, &x, 1, &mut y, &mut sc, Regime::Decode)
                        })
                    });
                    let gbs = ws[0].nbytes() as f64 / t / 1e9;
                    if path == Path::Scalar {
                        base = t;
                    }
                    line += &format!(
                        "  {path}: {:8.3} ms {gbs:6.1} GB/s ({:3.0}%) ×{:.1}",
                        t * 1e3,
                        100.0 * gbs / bw,
                        base / t
                    );
                }
                println!("{line}");
            }
        }
    }
    if want("gemm") {
        println!("\ngemm (GFLOP/s; % of the path's FMA peak)");
        for (n, m, k, ty) in GEMM_SHAPES {
            let w = weights(ty, m, k, 5);
            let x = rand_vec(n * k, 7);
            let mut y = vec![0f32; n * m];
            let mut sc = Scratch::new();
            let flop = 2.0 * (n * m * k) as f64;
            let mut line = format!("  {:5} n={n:5} {m:5}x{k:<5}", ty.name());
            let mut base = 0.0;
            for path in simd_paths().into_iter().rev() {
                let reps = if path == Path::Scalar { 1 } else { 3 };
                let t = time(reps, || {
                    with_path(path, || {
                        matmul_with(&w, None, &x, n, &mut y, &mut sc, Regime::Gemm)
                    })
                });
                let gf = flop / t / 1e9;
                if path == Path::Scalar {
                    base = t;
                }
                line += &format!(
                    "  {path}: {gf:6.1} GFLOP/s ({:3.0}%) ×{:.1}",
                    100.0 * gf / peak[&path],
                    base / t
                );
            }
            println!("{line}");
        }
    }
    if want("crossover") {
        println!("\ncrossover on {best}: ms decode / gemm");
        for (ty, m, k) in [
            (GgmlType::Q4_0, 4096, 4096),
            (GgmlType::Q4_0, 14336, 4096),
            (GgmlType::Q8_0, 4096, 4096),
            (GgmlType::Q4_1, 4096, 4096),
            (GgmlType::Q5_0, 4096, 4096),
            (GgmlType::Q5_1, 4096, 4096),
            (GgmlType::Q4_K, 4096, 4096),
            (GgmlType::Q5_K, 4096, 4096),
            (GgmlType::Q6_K, 4096, 4096),
            (GgmlType::F16, 4096, 4096),
            (GgmlType::F16, 14336, 4096),
            (GgmlType::BF16, 4096, 4096),
            (GgmlType::F32, 4096, 4096),
        ] {
            let w = weights(ty, m, k, 9);
            let mut line = format!("  {:5} {m}x{k}", ty.name());
            for n in [2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512] {
                if n > 64 && (m > 4096 || !ty.is_quantized()) {
                    continue;
                }
                let x = rand_vec(n * k, 1);
                let mut y = vec![0f32; n * m];
                let mut sc = Scratch::new();
                let mut ms = [0.0; 2];
                for (r, regime) in [Regime::Decode, Regime::Gemm].into_iter().enumerate() {
                    ms[r] = 1e3
                        * time(5, || {
                            with_path(best, || {
                                matmul_with(&w, None, &x, n, &mut y, &mut sc, regime)
                            })
                        });
                }
                line += &format!("  n{n}: {:.2}/{:.2}", ms[0], ms[1]);
            }
            println!("{line}");
        }
    }
}

/// A criterion group: its name and the function that registers it.
type Group = (&'static str, fn(&mut Criterion));

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().is_some_and(|a| a == "summary") {
        summary(&args[1..]);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    // A filter that names a group (`decode/...`) skips the other groups' set-up (their matrices
    // take seconds to build); any other filter is left to criterion.
    let groups: [Group; 5] = [
        ("probe", bench_probe),
        ("decode", bench_decode),
        ("cross_attention", bench_cross_attention),
        ("gemm", bench_gemm),
        ("crossover", bench_crossover),
    ];
    let filter = args.first().map(String::as_str);
    let named = filter.filter(|f| groups.iter().any(|(g, _)| f.starts_with(g)));
    for (name, run) in groups {
        if named.is_none_or(|f| f.starts_with(name)) {
            run(&mut c);
        }
    }
    c.final_summary();
}
