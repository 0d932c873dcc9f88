//! Replays the fuzz seeds (`fuzz/seeds/`) and every input that ever made a fuzz target fail
//! (`tests/fixtures/fuzz/<target>/`) through the fuzz target bodies: no panic, invariants hold.

use std::path::{Path, PathBuf};

#[path = "common/kq_model.rs"]
mod kq_model;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fixtures/fuzz").join(target),
    ] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no inputs for {target}");
    out
}

/// Every input, and every truncation of it at 16 points, and a few byte flips.
fn variants(data: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![data.to_vec()];
    for k in 1..16 {
        v.push(data[..data.len() * k / 16].to_vec());
    }
    let mut s = 0x9E37_79B9u64 ^ data.len() as u64;
    for _ in 0..16 {
        let mut m = data.to_vec();
        if m.is_empty() {
            break;
        }
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let i = (s as usize) % m.len();
        m[i] ^= (s >> 32) as u8 | 1;
        v.push(m);
    }
    v
}

#[test]
fn gguf() {
    for (p, d) in inputs("gguf") {
        for v in variants(&d) {
            let r = std::panic::catch_unwind(|| mllama::fuzz_entry::gguf(&v));
            assert!(
                r.is_ok(),
                "{} (variant of {} bytes) panicked",
                p.display(),
                v.len()
            );
        }
    }
}

#[test]
fn image() {
    for (p, d) in inputs("image") {
        for v in variants(&d) {
            let r = std::panic::catch_unwind(|| mllama::fuzz_entry::image(&v));
            assert!(
                r.is_ok(),
                "{} (variant of {} bytes) panicked",
                p.display(),
                v.len()
            );
        }
    }
}

#[test]
fn tokenize() {
    let f = mllama::format::gguf::GgufFile::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/mllama-demo-q4_0.gguf"),
    )
    .unwrap();
    let t = mllama::text::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    for (p, d) in inputs("tokenize") {
        for v in variants(&d) {
            let r = std::panic::catch_unwind(|| mllama::fuzz_entry::tokenize(&t, &v));
            assert!(
                r.is_ok(),
                "{} (variant of {} bytes) panicked",
                p.display(),
                v.len()
            );
        }
    }
}

/// The GGUF seed with every K-quant and legacy block type (`fuzz/seeds/gguf/mixed-kquant.gguf`)
/// is what `kq_model::mixed_seed_bytes` builds, loads as a model that uses each type, and gives
/// finite logits. `MLLAMA_WRITE_SEEDS=1 cargo test --release --test fuzz_regressions` rewrites it.
#[test]
fn gguf_kquant_seed_is_current_and_runs() {
    use mllama::GgmlType as T;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gguf/mixed-kquant.gguf");
    let bytes = kq_model::mixed_seed_bytes();
    if std::env::var_os("MLLAMA_WRITE_SEEDS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "{} is stale",
        path.display()
    );
    let f = mllama::format::gguf::GgufFile::from_bytes(bytes).unwrap();
    for ty in [T::Q4_1, T::Q5_0, T::Q5_1, T::Q4_K, T::Q5_K, T::Q6_K] {
        assert!(f.tensors().iter().any(|t| t.ty == ty), "no {ty} tensor");
    }
    let m = mllama::Model::from_gguf(f).unwrap();
    let mut seq = mllama::engine::sequence::Sequence::new(&m, 4, Default::default());
    let l = seq.feed(&[0, 1], false).unwrap().to_vec();
    assert!(l.len() == 64 && l.iter().all(|v| v.is_finite()));
    let l = seq.feed(&[1], false).unwrap();
    assert!(l.iter().all(|v| v.is_finite()));
}
