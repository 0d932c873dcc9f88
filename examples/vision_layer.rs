//! One vision encoder layer of the 11B tower (6432 tokens, a 4-tile image, F16 weights) in a
//! chosen precision: `cargo run --release --example vision_layer [f32|int16|int8]` (default
//! int16; `VL_REPS`, default 5). Prints the median time, GFLOP/s and the ratio to the FMA peak
//! probed before and after (the whole tower is 40 such layers plus the projector; this is the
//! quick way to compare builds: run two binaries interleaved).

use std::time::Instant;

use mllama::kernels::{active_path, probe};
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::synthetic::{build, SyntheticOptions};
use mllama::models::mllama::VisionPrecision;
use mllama::quant::mix::FileType;
use mllama::GgmlType;

fn main() {
    let prec = std::env::args().nth(1).unwrap_or_else(|| "int16".into());
    let prec = VisionPrecision::parse(&prec).expect("precision: f32, int16 or int8");
    let reps: usize = std::env::var("VL_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let spec = ModelSpec {
        n_layers: 1,
        cross_layers: vec![],
        v_local: 1,
        v_global: 0,
        v_taps: vec![0],
        ..ModelSpec::llama32_11b()
    };
    let opts = SyntheticOptions {
        file_type: FileType::Q4_0,
        vision_type: GgmlType::F16,
        distinct_layers: None,
        seed: 5,
    };
    let mut model = build(&spec, &opts).expect("synthetic model");
    model.set_vision_precision(prec);
    let vc = model.cfg.vision.clone().expect("vision config");
    let n = vc.max_tiles * vc.padded_tokens_per_tile();
    let (d, f) = (vc.hidden as f64, vc.ffn as f64);
    let flops = 2.0 * (n as f64 * (4.0 * d * d + 2.0 * d * f) + 2.0 * (n as f64).powi(2) * d);
    let x0: Vec<f32> = (0..n * vc.hidden)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let tower = model.vision_tower().expect("vision tower").0;
    let mut x = x0.clone();
    tower.run_local_layer(0, &mut x, 4); // warm-up (and the integer weights)
    let path = active_path();
    let p0 = probe::fma_peak_gflops(path, 0.5);
    let mut times = Vec::new();
    for _ in 0..reps {
        x.copy_from_slice(&x0);
        let t = Instant::now();
        tower.run_local_layer(0, &mut x, 4);
        times.push(t.elapsed().as_secs_f64());
    }
    let p1 = probe::fma_peak_gflops(path, 0.5);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t = times[times.len() / 2];
    let peak = (p0 + p1) / 2.0;
    println!(
        "{path} {}: {:.3} s per layer (median of {reps}), {:.0} GFLOP/s = {:.2}× the FMA peak ({peak:.0})",
        model.vision_precision().name(),
        t,
        flops / t / 1e9,
        flops / t / 1e9 / peak
    );
}
