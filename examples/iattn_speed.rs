//! The vision tower's self-attention at the real 4-tile shape (N = 6432 tokens = 4 tiles × 1608,
//! 1601 real, 16 heads of 80, `Mask::Vision`): f32 `nn::attention` against
//! `nn::attention_lowp(Int16)`, interleaved in one run, as seconds, effective GFLOP/s
//! (4·N²·D, D = 1280) and that over the path's FMA peak probe.
//! `cargo run --release --example iattn_speed` (`IATTN_REPS`, default 3; `IATTN_PATHS`, e.g.
//! `avx512,avx2`, default the active path; `IATTN_TILES`, default 4).

mod common;

use std::time::Instant;

use common::{env_usize, paths_env, rand_vec};

use mllama::kernels::{probe, with_path};
use mllama::nn::{attention_lowp, AttnPrecision, Heads, KeysValues, Mask};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let reps = env_usize("IATTN_REPS", 3);
    let tiles = env_usize("IATTN_TILES", 4);
    let paths = paths_env("IATTN_PATHS", vec![mllama::kernels::active_path()]);
    let (tile, real, heads, hd) = (1608, 1601, 16, 80);
    let n = tiles * tile;
    let d = heads * hd;
    // Values in ±1.7 (activations of the vision tower's size).
    let wide = |seed| -> Vec<f32> { rand_vec(n * d, seed).iter().map(|x| x * 3.4).collect() };
    let (q, k, v) = (wide(1), wide(2), wide(3));
    let pad_query: Vec<bool> = (0..n).map(|i| i % tile >= real).collect();
    let real_keys: Vec<_> = (0..tiles).map(|t| t * tile..t * tile + real).collect();
    let mask = Mask::Vision {
        pad_query: &pad_query,
        real_keys: &real_keys,
    };
    let flops = 4.0 * (n as f64).powi(2) * d as f64;
    let mut out = vec![0f32; n * d];
    println!(
        "N = {n} ({tiles} tiles), {heads} heads × {hd}, {:.0} GFLOP per call, {} threads",
        flops / 1e9,
        rayon::current_num_threads()
    );
    for path in paths {
        let peak = probe::fma_peak_gflops(path, 0.5);
        let mut t = [Vec::new(), Vec::new()];
        for _ in 0..reps {
            for (i, prec) in [AttnPrecision::F32, AttnPrecision::Int16]
                .into_iter()
                .enumerate()
            {
                let kv = KeysValues::new(&k, &v, n, n);
                let t0 = Instant::now();
                with_path(path, || {
                    attention_lowp(&q, kv, Heads::new(heads, heads, hd), mask, &mut out, prec)
                });
                t[i].push(t0.elapsed().as_secs_f64());
            }
        }
        let peak2 = probe::fma_peak_gflops(path, 0.5);
        println!("{path}: FMA peak {peak:.1} / {peak2:.1} GFLOP/s (before / after)");
        let pk = 0.5 * (peak + peak2);
        for (i, name) in ["f32", "int16"].iter().enumerate() {
            let s = median(&mut t[i]);
            println!(
                "  {name:6} median {s:6.3} s of {:?}: {:6.1} GFLOP/s = {:.2}× FMA peak",
                t[i].iter()
                    .map(|x| (x * 1e3).round() / 1e3)
                    .collect::<Vec<_>>(),
                flops / s / 1e9,
                flops / s / 1e9 / pk
            );
        }
    }
}
