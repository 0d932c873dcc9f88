//! `quantize` output against ggml's reference quantizer, without Python: for every fixture
//! checkpoint and file type, the storage type of every quantized tensor and the sha256 of its
//! bytes must equal what `ggml_quantize_chunk` produced from the same rows
//! (tests/fixtures/kquant/quantize_oracle.json, written by scripts/quantize_oracle.py, which
//! also checks gguf-py's reading and dequantization of our files).
//!
//! Checkpoints: the HF fixtures (rows of 64..224 values: the K-types fall back to Q5_0, Q5_1,
//! Q8_0 as llama.cpp does) and `k256`, generated here from its seed (rows of 256 and 512 values:
//! Q4_K, Q5_K and Q6_K themselves).

use std::path::{Path, PathBuf};

use mllama::format::gguf::GgufFile;
use mllama::quant::mix::FileType;
use mllama_quantize::synthetic::{write_checkpoint, SynthDims};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture() -> Value {
    let p = root().join("tests/fixtures/kquant/quantize_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The checkpoint directory of a fixture label (`k256` is written into `tmp`).
fn checkpoint(label: &str, seed: u64, tmp: &Path) -> PathBuf {
    if label == "k256" {
        let dir = tmp.join("k256");
        write_checkpoint(&dir, &SynthDims::k256(), seed).unwrap();
        dir
    } else {
        root()
            .join("tests/fixtures/models")
            .join(label)
            .join("model")
    }
}

/// Compare one converted file with the recorded ggml tensors; returns the tensors compared.
fn compare(gguf: &Path, want: &serde_json::Map<String, Value>, what: &str) -> usize {
    let f = GgufFile::open(gguf).unwrap();
    let quantized: Vec<_> = f.tensors().iter().filter(|t| t.ty.is_quantized()).collect();
    assert_eq!(
        quantized.len(),
        want.len(),
        "{what}: quantized tensor count"
    );
    for t in quantized {
        let w = want[&t.name]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {}", t.name));
        let (ty, sha) = w.split_once(' ').unwrap();
        assert_eq!(t.ty.name(), ty, "{what}: {} type", t.name);
        let got = hex(&Sha256::digest(f.view(t).data));
        assert_eq!(
            &got[..sha.len()],
            sha,
            "{what}: {} ({ty}) bytes differ from ggml",
            t.name
        );
    }
    want.len()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn quantized_tensors_equal_ggml_reference_bytes() {
    let fx = fixture();
    let seed = fx["k256_seed"].as_u64().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut total = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for (label, types) in fx["checkpoints"].as_object().unwrap() {
        let input = checkpoint(label, seed, tmp.path());
        for (ty, want) in types.as_object().unwrap() {
            let output = tmp.path().join(format!("{label}-{ty}.gguf"));
            mllama_quantize::run(&mllama_quantize::Options {
                input: input.clone(),
                output: output.clone(),
                ty: FileType::parse(ty).unwrap(),
                quantize_vision: false,
                progress: false,
            })
            .unwrap();
            let want = want.as_object().unwrap();
            total += compare(&output, want, &format!("{label} {ty}"));
            kinds.extend(want.values().filter_map(|v| v.as_str()?.split(' ').next()));
            std::fs::remove_file(&output).unwrap();
        }
    }
    // Every block type was exercised, the K-types on real 256-multiples.
    let all = [
        "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0",
    ];
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), all);
    assert!(total > 1500, "{total} tensors compared");
}

#[test]
fn info_names_the_file_type_and_counts_tensors_per_type() {
    let tmp = tempfile::tempdir().unwrap();
    let input = checkpoint("k256", 42, tmp.path());
    let output = tmp.path().join("m.gguf");
    mllama_quantize::run(&mllama_quantize::Options {
        input,
        output: output.clone(),
        ty: FileType::Q4KM,
        quantize_vision: false,
        progress: false,
    })
    .unwrap();
    let f = GgufFile::open(&output).unwrap();
    let s = mllama::models::info::summary(&f, false);
    assert!(s.contains("file type:     15 (q4_k_m)"), "{s}");
    for ty in [mllama::GgmlType::Q4_K, mllama::GgmlType::Q6_K] {
        let n = f.tensors().iter().filter(|t| t.ty == ty).count();
        let bytes: u64 = f
            .tensors()
            .iter()
            .filter(|t| t.ty == ty)
            .map(|t| t.size)
            .sum();
        assert!(n > 0 && bytes > 0);
        let line = s
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", ty.name())))
            .unwrap_or_else(|| panic!("no {ty} line in\n{s}"));
        assert!(line.contains(&format!(" {n} tensors")), "{line}");
    }
}
