//! Integer GEMM throughput at the vision tower's shapes: `cargo run --release --example igemm_speed`
//! (`IG_BITS=16` for the 12-bit levels instead of int8;
//! `IG_N` activation rows, default 6432 = 4 tiles × 1608; `IG_REPS`, default 3; `IG_KB=all` or a
//! list like `32,128` for the block sizes, default the module's `KB`; `IG_F32=0` skips the f32
//! comparison, `IG_AVX2=0` the forced `avx2` path; `IG_SHAPES=1280x1280,...` as `rows x k`).
//!
//! For each shape and path (the default one and `avx2`): GFLOP/s of `matmul_i8` (median of the
//! reps, 2·n·rows·k flops), as a ratio to the path's FMA peak (`probe::fma_peak_gflops`, measured
//! in the same run, median of a probe before and after every shape), and the f32
//! `kernels::matmul` (packed GEMM) on the same F16 matrix, interleaved with the int8 runs.

mod common;

use std::time::Instant;

use common::rand_vec;

use mllama::kernels::igemm::{matmul_i16, matmul_i8, I16Mat, I8Mat, KB};
use mllama::kernels::tensor::Mat;
use mllama::kernels::{matmul_with, probe, with_path, Path, Regime, Scratch};
use mllama::quant::convert_f32;
use mllama::GgmlType;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let env = |v: &str| std::env::var(v).ok();
    let n: usize = env("IG_N").and_then(|s| s.parse().ok()).unwrap_or(6432);
    let reps: usize = env("IG_REPS").and_then(|s| s.parse().ok()).unwrap_or(3);
    let kbs: Vec<usize> = match env("IG_KB").as_deref() {
        None => vec![KB],
        Some("all") => vec![32, 64, 128, 256],
        Some(s) => s.split(',').map(|t| t.trim().parse().unwrap()).collect(),
    };
    let with_f32 = env("IG_F32").as_deref() != Some("0");
    let int16 = env("IG_BITS").as_deref() == Some("16");
    let shapes: Vec<(usize, usize)> = match env("IG_SHAPES") {
        Some(s) => s
            .split(',')
            .map(|t| {
                let (a, b) = t.trim().split_once('x').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect(),
        None => vec![(1280, 1280), (5120, 1280), (1280, 5120), (4096, 7680)],
    };
    let mut paths = vec![Path::best()];
    if Path::Avx2.is_available()
        && !paths.contains(&Path::Avx2)
        && env("IG_AVX2").as_deref() != Some("0")
    {
        paths.push(Path::Avx2);
    }
    let threads = rayon::current_num_threads();
    println!("n = {n}, {threads} threads, {reps} reps, medians");
    println!(
        "{:<7} {:>11} {:>4} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9}",
        "path",
        "rows x k",
        "KB",
        if int16 { "i16 GF/s" } else { "i8 GF/s" },
        "FMA GF/s",
        "int/peak",
        "f32 GF/s",
        "f32/pk",
        "int/f32"
    );
    let mut sc = Scratch::new();
    for &(m, k) in &shapes {
        let wf = rand_vec(m * k, (m * k) as u64);
        let mut bytes = vec![0u8; GgmlType::F16.row_bytes(k as u64).unwrap() as usize * m];
        convert_f32(GgmlType::F16, &wf, k, &mut bytes).unwrap();
        drop(wf);
        let w = Mat::from_bytes(GgmlType::F16, m, k, &bytes);
        let x = rand_vec(n * k, 7);
        let mut y = vec![0f32; n * m];
        let flops = 2.0 * n as f64 * m as f64 * k as f64;
        for &path in &paths {
            for &kb in &kbs {
                let (q8, q16) = if int16 {
                    (None, Some(I16Mat::with_block(&w, kb)))
                } else {
                    (Some(I8Mat::with_block(&w, kb)), None)
                };
                let run = |y: &mut [f32]| match (&q8, &q16) {
                    (Some(q), _) => matmul_i8(q, None, &x, n, y),
                    (_, Some(q)) => matmul_i16(q, None, &x, n, y),
                    _ => unreachable!(),
                };
                let p0 = probe::fma_peak_gflops(path, 0.5);
                let (mut ti, mut tf) = (Vec::new(), Vec::new());
                with_path(path, || {
                    run(&mut y); // warm-up
                    for _ in 0..reps {
                        let t = Instant::now();
                        run(&mut y);
                        ti.push(flops / t.elapsed().as_secs_f64() / 1e9);
                        if with_f32 && kb == kbs[0] {
                            let t = Instant::now();
                            matmul_with(&w, None, &x, n, &mut y, &mut sc, Regime::Gemm);
                            tf.push(flops / t.elapsed().as_secs_f64() / 1e9);
                        }
                    }
                });
                let p1 = probe::fma_peak_gflops(path, 0.5);
                let peak = (p0 + p1) / 2.0;
                let gi = median(ti);
                let (fs, fr, ir) = if tf.is_empty() {
                    ("-".to_string(), "-".to_string(), "-".to_string())
                } else {
                    let gf = median(tf);
                    (
                        format!("{gf:.1}"),
                        format!("{:.2}", gf / peak),
                        format!("{:.2}", gi / gf),
                    )
                };
                println!(
                    "{:<7} {:>11} {:>4} {:>9.1} {:>9.1} {:>8.2} {:>9} {:>8} {:>9}",
                    path.name(),
                    format!("{m}x{k}"),
                    kb,
                    gi,
                    peak,
                    gi / peak,
                    fs,
                    fr,
                    ir
                );
            }
        }
    }
}
