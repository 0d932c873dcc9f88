//! Single-thread decode mat-vec throughput per type with cache-resident weights (the kernels'
//! compute rate, without the memory system): `cargo run --release --example kq_speed`
//! (`KQ_ROWS`, `KQ_COLS`, `KQ_THREADS`: another shape, more threads; `KQ_PATH`, `KQ_REPS`; `KQ_MATS=N`:
//! N distinct copies multiplied in turn, as a model's sequence of matrices, after a read-probe pass
//! over a buffer of their size (the fraction of it printed); with `KQ_RP=1` repacked).
//! Prints ns per 256 weights and the GB/s of weights the kernel could consume; types with a
//! repacked layout are measured in place and repacked (`q4_0+rp`). With a matrix far beyond the
//! caches it first prints what plain summing of a buffer that size reads in the same pool.

mod common;

use std::time::Instant;

use common::{env_usize, rand_vec};

use mllama::kernels::tensor::Mat;
use mllama::kernels::{matmul_with, with_path, Path, Regime, Scratch};
use mllama::GgmlType;

fn main() {
    // KQ_ROWS=131072 KQ_THREADS=2: a matrix far larger than the caches (the memory-bound
    // regime of decode) instead of the cache-resident one.
    let env = env_usize;
    let (m, k) = (env("KQ_ROWS", 512), env("KQ_COLS", 4096));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names = if args.is_empty() {
        vec!["q4_0", "q4_k", "q5_k", "q6_k", "q8_0"]
    } else {
        args.iter().map(|s| s.as_str()).collect()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(env("KQ_THREADS", 1))
        .build()
        .unwrap();
    let f = rand_vec(m * k, 7);
    let x = rand_vec(k, 3);
    let reps = env("KQ_REPS", 50);
    let only = std::env::var("KQ_PATH").ok();
    for path in Path::available() {
        if only.as_deref().is_some_and(|o| o != path.name()) {
            continue;
        }
        if m * k >= 1 << 28 {
            // Memory-bound regime: what plain summing of a buffer of the Q4_K matrix's size reads
            // in this pool, with 1 and 4 streams per thread (the ceiling the kernels aim for).
            let buf =
                mllama::kernels::probe::probe_buffer(m * k / 256 * 144).expect("read probe buffer");
            let g: Vec<f64> = [1, 4, 1, 4]
                .iter()
                .map(|&s| {
                    pool.install(|| mllama::kernels::probe::read_pass_streams_gbs(path, &buf, s))
                })
                .collect();
            println!(
                "{:8} read      1 stream {:.1} / {:.1} GB/s, 4 streams {:.1} / {:.1} GB/s",
                path.name(),
                g[0],
                g[2],
                g[1],
                g[3]
            );
        }
        for name in &names {
            let ty = GgmlType::from_name(name).unwrap();
            let t = mllama::quant::traits(ty).unwrap();
            let mut bytes = vec![0u8; m * k / t.block_values * t.block_bytes];
            (t.from_f32)(&f, &mut bytes);
            let plain = Mat::from_bytes(ty, m, k, &bytes);
            // KQ_MATS=N: N distinct copies of the matrix, multiplied in turn (a model's sequence of
            // matrices, none cache-resident), instead of one matrix again and again.
            let mats = env("KQ_MATS", 0);
            if mats > 0 {
                let rp = env("KQ_RP", 0) == 1;
                let copies: Vec<Mat> = (0..mats)
                    .map(|_| {
                        let mut c = Mat::from_bytes(ty, m, k, &bytes);
                        if rp {
                            c.repack(false);
                        }
                        c
                    })
                    .collect();
                // The read probe over a buffer of the matrices' size, best of five, in this pool
                // right before them: the ceiling their rate is a fraction of.
                let total = mats * bytes.len();
                let buf = mllama::kernels::probe::probe_buffer(total).expect("read probe buffer");
                let probe = pool.install(|| mllama::kernels::probe::best_read_gbs(path, &buf, 5));
                drop(buf);
                let mut y = vec![0f32; m];
                let mut sc = Scratch::new();
                let mut best = f64::MAX;
                pool.install(|| {
                    with_path(path, || {
                        for _ in 0..5 {
                            let t0 = Instant::now();
                            for w in &copies {
                                matmul_with(w, None, &x, 1, &mut y, &mut sc, Regime::Decode);
                            }
                            best = best.min(t0.elapsed().as_secs_f64() / mats as f64);
                        }
                    })
                });
                // The file's bytes per second (as `bench`'s paired fraction counts them; a
                // repacked layout reads up to 3% more), and their fraction of the probe.
                let read = bytes.len() as f64 / best / 1e9;
                println!(
                    "{:8} {:9} {:7.2} ns/256 {:6.1} GB/s, probe {probe:.1}: {:.3} \
                     ({mats} matrices in turn)",
                    path.name(),
                    format!("{name}{}", if rp { "+rp" } else { "" }),
                    best * 1e9 / (m * k / 256) as f64,
                    read,
                    read / probe
                );
                continue;
            }
            let mut packed = plain.clone();
            let layouts = if packed.repack(false) {
                vec![(plain, ""), (packed, "+rp")]
            } else {
                vec![(plain, "")]
            };
            for (w, tag) in layouts {
                let mut y = vec![0f32; m];
                let mut sc = Scratch::new();
                let mut best = f64::MAX;
                pool.install(|| {
                    with_path(path, || {
                        for _ in 0..(if reps < 50 { 1 } else { 5 }) {
                            let t0 = Instant::now();
                            for _ in 0..reps {
                                matmul_with(&w, None, &x, 1, &mut y, &mut sc, Regime::Decode);
                            }
                            best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
                        }
                    })
                });
                let ns256 = best * 1e9 / (m * k / 256) as f64;
                println!(
                    "{:8} {:9} {:7.2} ns/256 {:6.1} GB/s",
                    path.name(),
                    format!("{name}{tag}"),
                    ns256,
                    bytes.len() as f64 / best / 1e9
                );
            }
        }
    }
}
