//! Whole-model steps at the real Llama-3.2-11B-Vision shapes on synthetic weights (built in
//! memory, stored as `quantize` stores them): one decode step (Q4_0 and Q8_0 text weights, an
//! image attached, cross-attention layers active) and one vision encoder layer (F16, 6432 tokens).
//!
//! Throughput is reported as bytes of weights per second for the decode step (compare with the
//! read bandwidth printed by `mllama bench`) and FLOP/s for the vision layer.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mllama::engine::sequence::Sequence;
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::synthetic::{build, SyntheticOptions};
use mllama::models::mllama::Semantics;
use mllama::quant::mix::FileType;
use mllama::text::sampling::argmax;
use mllama::GgmlType;

fn decode_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_step_11b");
    g.sample_size(10);
    for ty in [FileType::Q4_0, FileType::Q8_0] {
        let spec = ModelSpec::llama32_11b();
        let model = build(
            &spec,
            &SyntheticOptions {
                file_type: ty,
                vision_type: GgmlType::F16,
                distinct_layers: None,
                seed: 3,
            },
        )
        .unwrap();
        let vc = model.cfg.vision.as_ref().unwrap();
        let p = vc.tokens_per_tile();
        let states: Vec<f32> = (0..vc.max_tiles * p * spec.hidden)
            .map(|i| ((i * 40503) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let out = mllama::models::mllama::vision::VisionOutput {
            states,
            features: Vec::new(),
        };
        let mut seq = Sequence::new(&model, 4096, Semantics::default());
        seq.attach_image(&out, 4);
        let prompt: Vec<u32> = vec![128000, 128006, 882, 128007, 271, 128256, 3923, 374, 420, 30];
        let mut next = argmax(seq.feed(&prompt, false).unwrap()) as u32;
        g.throughput(Throughput::Bytes(model.text_bytes_per_token() as u64));
        g.bench_function(ty.name(), |b| {
            b.iter(|| {
                next = argmax(seq.feed(&[next], false).unwrap()) as u32;
            })
        });
    }
    g.finish();
}

fn vision_layer(c: &mut Criterion) {
    let spec = ModelSpec {
        n_layers: 1,
        cross_layers: vec![],
        v_local: 1,
        v_global: 0,
        v_taps: vec![0],
        ..ModelSpec::llama32_11b()
    };
    let model = build(
        &spec,
        &SyntheticOptions {
            file_type: FileType::Q4_0,
            vision_type: GgmlType::F16,
            distinct_layers: None,
            seed: 5,
        },
    )
    .unwrap();
    let vc = model.cfg.vision.as_ref().unwrap();
    let n = vc.max_tiles * vc.padded_tokens_per_tile();
    let (d, f) = (vc.hidden as u64, vc.ffn as u64);
    let flops = 2 * (n as u64 * (4 * d * d + 2 * d * f) + 2 * (n as u64) * (n as u64) * d);
    let x0: Vec<f32> = (0..n * vc.hidden)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut g = c.benchmark_group("vision_layer_11b");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops));
    g.bench_function("f16_6432_tokens", |b| {
        b.iter(|| {
            let mut x = x0.clone();
            model.vision.as_ref().unwrap().run_local_layer(0, &mut x, 4);
            x
        })
    });
    g.finish();
}

criterion_group!(benches, decode_step, vision_layer);
criterion_main!(benches);
