//! `quantize` end to end on the in-repo fixture checkpoint (and on the shared tiny-mllama model
//! when `../shared/fixtures` is present): MB/s of checkpoint read and converted.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mllama::quant::mix::FileType;
use mllama_quantize::{run, Options};

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let models = [
        (
            "fixture-base",
            root.join("tests/fixtures/models/base/model"),
        ),
        (
            "shared-tiny",
            root.join("../shared/fixtures/tiny-mllama/model"),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("quantize_end_to_end");
    g.sample_size(10);
    for (label, dir) in models {
        if !dir.join("config.json").exists() {
            eprintln!("skipping {label}: {} not found", dir.display());
            continue;
        }
        for ty in [FileType::Q8_0, FileType::Q4_0, FileType::BF16] {
            let opts = Options {
                input: dir.clone(),
                output: tmp.path().join("out.gguf"),
                ty,
                quantize_vision: false,
                progress: false,
            };
            let s = run(&opts).unwrap();
            g.throughput(Throughput::Bytes(s.bytes_in));
            g.bench_function(BenchmarkId::new(label, ty.name()), |b| {
                b.iter(|| run(&opts).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
