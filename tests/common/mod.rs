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

/// The in-repo model fixture cases (`model/case`, sorted), every one of which must be found.
pub const IN_REPO_CASES: [&str; 9] = [
    "base/raw_image_first",
    "base/square_jpeg_chat",
    "base/text_first_gray_chat",
    "base/text_only_chat",
    "mqa_lastcross/palette_wide_chat",
    "mqa_lastcross/panorama_1x4_chat",
    "tile28/three_images_mixed_chat",
    "tile28/two_consecutive_images_chat",
    "tile28/two_images_interleaved_chat",
];

/// The in-repo cases without an image (no `pixel_values` reference).
pub const IN_REPO_TEXT_ONLY: [&str; 1] = ["base/text_only_chat"];

/// The cases of `../shared/fixtures/tiny-mllama` (sorted), used when that directory exists (CI).
pub const SHARED_CASES: [&str; 3] = [
    "tiny-mllama/tall_image_chat",
    "tiny-mllama/text_only_chat",
    "tiny-mllama/wide_image_chat",
];

/// One model fixture case: `<root>/<model>/cases/<case>` with its checkpoint in
/// `<root>/<model>/model`.
pub struct FixtureCase {
    /// `model/case`, e.g. `base/text_only_chat`.
    pub name: String,
    pub model_dir: PathBuf,
    pub dir: PathBuf,
    /// Whether it comes from the in-repo fixtures (not `../shared`).
    pub in_repo: bool,
}

/// The shared fixtures next to the repository (as in CI), if present.
pub fn shared_fixtures() -> Option<PathBuf> {
    let shared = root().join("../shared/fixtures");
    shared
        .join("tiny-mllama/model/config.json")
        .exists()
        .then_some(shared)
}

fn sorted_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Every model fixture case, in sorted order (models, then cases), asserted to be exactly
/// [`IN_REPO_CASES`] followed by [`SHARED_CASES`] when the shared fixtures are present: a case
/// that goes missing (or appears unlisted) fails here instead of being silently skipped.
pub fn fixture_cases() -> Vec<FixtureCase> {
    let mut roots = vec![(fixtures().join("models"), true)];
    if let Some(shared) = shared_fixtures() {
        roots.push((shared, false));
    }
    let mut out = Vec::new();
    for (r, in_repo) in roots {
        for m in sorted_dir(&r) {
            let model_dir = m.join("model");
            if !model_dir.join("config.json").exists() {
                continue;
            }
            let model = m.file_name().unwrap().to_string_lossy().into_owned();
            for dir in sorted_dir(&m.join("cases")) {
                let name = format!("{model}/{}", dir.file_name().unwrap().to_string_lossy());
                out.push(FixtureCase {
                    name,
                    model_dir: model_dir.clone(),
                    dir,
                    in_repo,
                });
            }
        }
    }
    let mut want: Vec<&str> = IN_REPO_CASES.to_vec();
    if shared_fixtures().is_some() {
        want.extend(SHARED_CASES);
    }
    let found: Vec<&str> = out.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        found, want,
        "fixture cases (update IN_REPO_CASES/SHARED_CASES when adding one)"
    );
    out
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

/// The largest `|a[i] − b[i]|`. Panics when the lengths differ or either side has a NaN or an
/// infinity anywhere (naming the index): `f32::max` would drop a NaN and let it pass a bound.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_finite_pair(a, b);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `‖a − b‖₂ / ‖b‖₂` (b is the reference). Panics like [`max_abs_diff`] on a length mismatch or
/// a non-finite value.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_finite_pair(a, b);
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Same length, and every value of both finite (the first bad index is named).
pub fn assert_finite_pair(a: &[f32], b: &[f32]) {
    assert_eq!(
        a.len(),
        b.len(),
        "length mismatch: ours {}, reference {}",
        a.len(),
        b.len()
    );
    assert_finite(a, "ours");
    assert_finite(b, "reference");
}

/// Every value finite; otherwise panic naming `what` and the first bad index.
pub fn assert_finite(x: &[f32], what: &str) {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        panic!("{what}[{i}] = {} (not finite)", x[i]);
    }
}

/// The largest of `diffs`, failing on a NaN (which `f32::max` would drop).
pub fn worst(diffs: impl IntoIterator<Item = f32>) -> f32 {
    diffs.into_iter().enumerate().fold(0.0, |w, (i, d)| {
        assert!(!d.is_nan(), "difference {i} is NaN");
        w.max(d)
    })
}

/// `n` pseudo-random values in [−1, 1) from `seed` (xorshift64): test data for the kernel tests.
pub fn rnd(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
