//! The cross-attention of one decode step at the 11B shape: one query row of 32 heads of 128
//! against an image's 6404 keys in 8 kv heads, f16 K/V as cached, for each of the 8
//! cross-attention layers in turn (210 MB of K/V, beyond the caches), on each SIMD path
//! interleaved, with a read-bandwidth probe pass before each round: milliseconds per step and the
//! GB/s of K/V read. `cargo run --release --example xattn_speed` (`XATTN_REPS`, default 5;
//! `XATTN_PATHS`, e.g. `avx512,avx2`, default every SIMD path; `XATTN_LAYERS` and `XATTN_KEYS`,
//! another shape; `XATTN_INNER`, passes per timed round: `XATTN_LAYERS=1 XATTN_KEYS=512
//! XATTN_INNER=50` times K/V that stay in the caches, the compute rate).

mod common;

use std::time::Instant;

use common::{env_usize, paths_env, rand_vec};

use half::f16;
use mllama::kernels::{probe, with_path, Path};
use mllama::nn::{attention, Heads, KeysValues, Mask};

fn main() {
    let env = env_usize;
    let (layers, keys) = (env("XATTN_LAYERS", 8), env("XATTN_KEYS", 6404));
    let (heads, kv_heads, hd) = (32, 8, 128);
    let reps = env("XATTN_REPS", 5);
    // Passes over the layers per timed round (more than one: the K/V stay cached if small).
    let inner = env("XATTN_INNER", 1);
    let simd = Path::available()
        .into_iter()
        .filter(|p| *p != Path::Scalar)
        .collect();
    let paths = paths_env("XATTN_PATHS", simd);
    let kv: Vec<(Vec<f16>, Vec<f16>)> = (0..layers)
        .map(|l| {
            let k = rand_vec(kv_heads * keys * hd, 2 * l as u64 + 1);
            let v = rand_vec(kv_heads * keys * hd, 2 * l as u64 + 2);
            (
                k.iter().map(|&x| f16::from_f32(x)).collect(),
                v.iter().map(|&x| f16::from_f32(x)).collect(),
            )
        })
        .collect();
    let q = rand_vec(heads * hd, 99);
    let mut out = vec![0f32; heads * hd];
    let bytes = (layers * 2 * kv_heads * keys * hd * 2) as f64;
    let buf = probe::probe_buffer(256 << 20).expect("probe buffer");
    let heads_cfg = Heads {
        n_heads: heads,
        n_kv_heads: kv_heads,
        hd,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut probes = Vec::new();
    for _ in 0..reps {
        for (i, &p) in paths.iter().enumerate() {
            probes.push(probe::best_read_gbs(p, &buf, 1));
            let t = Instant::now();
            with_path(p, || {
                for (k, v) in kv.iter().cycle().take(inner * layers) {
                    attention(
                        &q,
                        KeysValues::new(k, v, keys, keys),
                        heads_cfg,
                        Mask::None,
                        &mut out,
                    );
                }
            });
            times[i].push(t.elapsed().as_secs_f64() / inner as f64);
        }
    }
    probes.sort_by(f64::total_cmp);
    println!(
        "cross-attention decode step, {layers} layers × {kv_heads} kv heads × {keys} keys × {hd} (f16 K/V, {:.0} MB); read probe median {:.1} GB/s",
        bytes / 1e6,
        probes[probes.len() / 2]
    );
    for (p, t) in paths.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        println!(
            "{:8} {:6.2} ms per step (best {:.2}), {:5.1} GB/s",
            p.name(),
            med * 1e3,
            t[0] * 1e3,
            bytes / med / 1e9
        );
    }
}
