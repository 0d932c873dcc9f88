//! Helpers shared by the integration tests: reading reference safetensors, converting fixture
//! checkpoints with the real converter, comparing numbers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use safetensors::{Dtype, SafeTensors};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// A tensor read from a safetensors file, as f32 or i64, with its shape.
pub struct T {
    pub shape: Vec<usize>,
    pub f: Vec<f32>,
    pub i: Vec<i64>,
}

pub fn load_safetensors(path: &Path) -> HashMap<String, T> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (name, v) in st.tensors() {
        let d = v.data();
        let (f, i) = match v.dtype() {
            Dtype::F32 => (
                d.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                vec![],
            ),
            Dtype::F16 => (
                d.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                vec![],
            ),
            Dtype::I64 => (
                vec![],
                d.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::U8 => (vec![], d.iter().map(|&b| b as i64).collect()),
            other => panic!("{name}: dtype {other:?}"),
        };
        out.insert(
            name,
            T {
                shape: v.shape().to_vec(),
                f,
                i,
            },
        );
    }
    out
}

/// Convert a checkpoint with `quantize` (once per process and type) and return the GGUF path.
pub fn converted(model_dir: &Path, ty: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static DONE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let done = DONE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = format!("{}::{ty}", model_dir.display());
    let mut g = done.lock().unwrap();
    if let Some(p) = g.get(&key) {
        return p.clone();
    }
    let out = dir.path().join(format!("m{}-{ty}.gguf", g.len()));
    mllama_quantize::run(&mllama_quantize::Options {
        input: model_dir.to_path_buf(),
        output: out.clone(),
        ty: mllama_quantize::convert::parse_type(ty).unwrap(),
        quantize_vision: false,
        progress: false,
    })
    .unwrap_or_else(|e| panic!("converting {}: {e}", model_dir.display()));
    g.insert(key, out.clone());
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}
