//! Bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz) and `tests/fuzz_regressions.rs`
//! (replays of seeds and of every input that ever crashed). Not part of the supported API.

use crate::image::{decode_image, ImageLimits};
use crate::models::mllama::preprocess::{preprocess, PreprocessConfig};
use crate::text::tokenizer::Tokenizer;

/// Parse a GGUF image and use everything the reader hands out: views, scale checks,
/// dequantization, `info`, and model loading (which must fail cleanly or succeed); a model that
/// loads runs a two-token prefill and one decode step (every weight type's GEMM and decode
/// kernels).
pub fn gguf(data: &[u8]) {
    let Ok(f) = crate::format::gguf::GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = crate::models::info::summary(&f, true);
    for t in f.tensors() {
        let v = f.view(t);
        assert_eq!(v.data.len() as u64, t.size);
        let scales_ok = v.check_scales().is_ok();
        if t.n_elements() <= 1 << 16 {
            if let Ok(x) = v.to_f32_vec() {
                // Finite scales give finite values for every block type.
                assert!(!scales_ok || !t.ty.is_quantized() || x.iter().all(|x| x.is_finite()));
            }
        }
    }
    if let Ok(m) = crate::Model::from_gguf(f) {
        forward(&m);
    }
}

/// A two-token prefill and one decode step on a loaded model (errors, e.g. an id outside a tiny
/// vocabulary, are fine; panics are not).
fn forward(m: &crate::Model) {
    let mut seq = crate::engine::sequence::Sequence::new(m, 4, Default::default());
    if seq.feed(&[0, 1], false).is_ok() {
        let _ = seq.feed(&[1], false);
    }
}

/// Decode an image and preprocess it at a small tile size.
pub fn image(data: &[u8]) {
    let limits = ImageLimits {
        max_width: 4096,
        max_height: 4096,
        max_pixels: 1 << 22,
        max_bytes: 1 << 24,
        max_alloc: 1 << 27,
    };
    let Ok(img) = decode_image(data, &limits) else {
        return;
    };
    assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
    let cfg = PreprocessConfig::with_tile_size(28, 4);
    let p = preprocess(&img, &cfg).expect("a decoded image always preprocesses");
    assert_eq!(p.pixel_values.len(), 4 * 3 * 28 * 28);
    assert!(p.pixel_values.iter().all(|v| v.is_finite()));
}

/// Tokenize arbitrary bytes (as lossy UTF-8) with and without BOS rules; decoding whole and
/// streamed must agree; arbitrary ids decode or fail cleanly.
pub fn tokenize(t: &Tokenizer, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for add_bos in [false, true] {
        let ids = t
            .encode(&text, add_bos)
            .expect("encoding any text succeeds");
        let whole = t
            .decode(&ids, false)
            .expect("decoding our own ids succeeds");
        let mut s = t.stream(false);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&s.push(id).expect("stream"));
        }
        streamed.push_str(&s.finish());
        assert_eq!(streamed, whole);
    }
    let ids: Vec<u32> = data
        .chunks_exact(3)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0]))
        .collect();
    let _ = t.decode(&ids, true);
}
