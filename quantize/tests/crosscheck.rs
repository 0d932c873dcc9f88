//! Our GGUF files as the reference Python reader (`gguf.GGUFReader`) sees them.
//!
//! `scripts/gguf_crosscheck.py` converted `tests/fixtures/models/base/model` with our `quantize`
//! for every type and recorded what GGUFReader read: every key (type ids and value), every tensor
//! (type, dims, absolute data offset, size, sha256 of the bytes). Here we convert the same
//! checkpoint again and require our reader to see exactly the same, so the files stay readable by
//! ggml tooling without Python in CI.

use std::path::PathBuf;

use mllama::format::gguf::{Array, GgufFile, Value};
use mllama::GgmlType;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn array_json(a: &Array) -> Json {
    match a {
        Array::String(v) => Json::from(v.clone()),
        Array::F32(v) => Json::from(v.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        Array::F64(v) => Json::from(v.clone()),
        Array::Bool(v) => Json::from(v.clone()),
        Array::Array(v) => Json::from(v.iter().map(array_json).collect::<Vec<_>>()),
        other => Json::from(other.to_i64_vec().unwrap()),
    }
}

fn type_ids(v: &Value) -> Vec<u64> {
    match v {
        Value::Array(a) => vec![9, a.elem_type() as u64],
        other => vec![other.value_type() as u64],
    }
}

fn check_value(key: &str, ours: &Value, py: &Json) {
    let types: Vec<u64> = py["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(type_ids(ours), types, "{key}: value types");
    let ours_json = match ours {
        Value::String(s) => Json::from(s.clone()),
        Value::Array(a) => array_json(a),
        Value::F32(x) => Json::from(*x as f64),
        Value::F64(x) => Json::from(*x),
        Value::Bool(b) => Json::from(*b),
        other => Json::from(other.as_i64().unwrap()),
    };
    if let Some(v) = py.get("value") {
        assert!(same(&ours_json, v), "{key}: ours {ours_json}, gguf-py {v}");
    } else if let Some(n) = py.get("len") {
        let a = ours_json.as_array().unwrap();
        assert_eq!(a.len() as u64, n.as_u64().unwrap(), "{key}: length");
        assert_eq!(&Json::from(a[..3].to_vec()), &py["head"], "{key}: head");
        assert_eq!(
            &Json::from(a[a.len() - 3..].to_vec()),
            &py["tail"],
            "{key}: tail"
        );
    } else {
        let s = ours.as_str().unwrap();
        assert_eq!(s.len() as u64, py["strlen"].as_u64().unwrap(), "{key}");
        assert_eq!(
            hex(&Sha256::digest(s.as_bytes())),
            py["sha256"].as_str().unwrap(),
            "{key}"
        );
    }
}

/// JSON equality with floats compared at f32 precision (every float we store is an f32; the
/// decimal text Python prints may parse to a neighbouring f64).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32),
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn our_reader_sees_what_gguf_py_sees() {
    let model = root().join("tests/fixtures/models/base/model");
    let tmp = tempfile::tempdir().unwrap();
    for ty in ["f32", "f16", "bf16", "q8_0", "q4_0"] {
        let view: Json = serde_json::from_str(
            &std::fs::read_to_string(
                root().join(format!("tests/fixtures/gguf_crosscheck/view_{ty}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let out = tmp.path().join(format!("{ty}.gguf"));
        mllama_quantize::run(&mllama_quantize::Options {
            input: model.clone(),
            output: out.clone(),
            ty: mllama_quantize::convert::parse_type(ty).unwrap(),
            quantize_vision: false,
            progress: false,
        })
        .unwrap();
        let f = GgufFile::open(&out).unwrap();

        let order: Vec<&str> = view["key_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ours, order, "{ty}: key order");
        for (k, v) in f.metadata() {
            check_value(k, v, &view["keys"][k.as_str()]);
        }

        let tensors = view["tensors"].as_array().unwrap();
        assert_eq!(f.tensors().len(), tensors.len(), "{ty}: tensor count");
        for (t, p) in f.tensors().iter().zip(tensors) {
            assert_eq!(t.name, p["name"].as_str().unwrap());
            assert_eq!(
                Some(t.ty),
                GgmlType::from_id(p["type"].as_u64().unwrap() as u32),
                "{}",
                t.name
            );
            let dims: Vec<u64> = p["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(t.dims, dims, "{}", t.name);
            assert_eq!(
                f.data_start() + t.offset,
                p["offset"].as_u64().unwrap(),
                "{}",
                t.name
            );
            assert_eq!(t.size, p["n_bytes"].as_u64().unwrap(), "{}", t.name);
            assert_eq!(
                hex(&Sha256::digest(f.view(t).data)),
                p["sha256"].as_str().unwrap(),
                "{}",
                t.name
            );
        }
    }
}

#[test]
fn converted_files_follow_the_model_spec() {
    // The converter and `ModelSpec` (synthetic benchmark models) describe the same layout.
    let model = root().join("tests/fixtures/models/base/model");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    mllama_quantize::run(&mllama_quantize::Options {
        input: model.clone(),
        output: out.clone(),
        ty: mllama::quant::mix::FileType::Q8_0,
        quantize_vision: false,
        progress: false,
    })
    .unwrap();
    let f = GgufFile::open(&out).unwrap();
    let cfg = mllama_quantize::config::MllamaConfig::load(&model).unwrap();
    let pre = mllama_quantize::config::PreprocessConfig::load(&model, &cfg.vision).unwrap();
    let spec = mllama_quantize::convert::spec(&cfg, &pre, 520);
    let listed: Vec<(String, Vec<usize>)> =
        spec.tensors().into_iter().map(|(n, s, _)| (n, s)).collect();
    let ours: Vec<(String, Vec<usize>)> = f
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape()))
        .collect();
    assert_eq!(ours, listed);
}

#[test]
fn fuzz_seeds_and_regressions_replay_cleanly() {
    // The `safetensors` fuzz target's seeds and past failures (see tests/fuzz_regressions.rs).
    let mut n = 0;
    for dir in [
        root().join("fuzz/seeds/safetensors"),
        root().join("tests/fixtures/fuzz/safetensors"),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            for k in 0..=8 {
                let cut = &data[..data.len() * k / 8];
                let tmp = tempfile::tempdir().unwrap();
                let r = std::panic::catch_unwind(|| {
                    mllama_quantize::fuzz_entry::checkpoint(tmp.path(), cut)
                });
                assert!(r.is_ok(), "{} cut at {k}/8 panicked", e.path().display());
                n += 1;
            }
        }
    }
    assert!(n >= 27, "{n} inputs");
}
