//! The attention caches' storage: f16 for quantized text weights (half the memory and the bytes a
//! decode step reads), f32 otherwise; in the cross-attention cache, f32 for any layer whose values
//! do not fit in f16. (Attention over f16 K/V is checked against the naive formula in `tests/kernels.rs`
//! and `ops`; the Q8_0/Q4_0 model tests run through it end to end.)

use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::synthetic::{build, SyntheticOptions};
use mllama::models::mllama::text::{CrossCache, KvCache};
use mllama::models::mllama::Model;
use mllama::quant::mix::FileType;
use mllama::{CachePrecision, GgmlType};

fn tiny(file_type: FileType) -> Model {
    let opts = SyntheticOptions {
        file_type,
        vision_type: GgmlType::F16,
        distinct_layers: None,
        seed: 3,
    };
    build(&ModelSpec::tiny(), &opts).unwrap()
}

#[test]
fn quantized_models_store_f16_and_fall_back_per_layer() {
    let model = tiny(FileType::Q4_0);
    let text = &model.text;
    assert!(text.quantized());
    let (nkv, hd, layers) = (
        text.cfg.n_kv_heads,
        text.cfg.head_dim,
        text.n_cross_layers(),
    );
    assert!(
        layers >= 2,
        "the tiny shapes need two cross layers for this test"
    );
    let keys = 10;
    let n = nkv * keys * hd;
    let kv = |big: bool| -> Vec<(Vec<f32>, Vec<f32>)> {
        (0..layers)
            .map(|l| {
                let k = vec![if big && l == 0 { 1e6 } else { 0.5 }; n];
                (k, vec![0.25; n])
            })
            .collect()
    };

    let mut cc = CrossCache::new(text);
    assert!(cc.is_half());
    cc.push(kv(false), 1, 1, keys);
    assert_eq!(cc.bytes(), layers * 2 * n * 2, "every layer in f16");
    // A second image whose layer-0 keys exceed f16's range: that layer becomes f32 (both images),
    // the others stay f16.
    cc.push(kv(true), 1, 1, keys);
    assert_eq!(cc.n_keys, 2 * keys);
    assert_eq!(cc.bytes(), 2 * n * 2 * (4 + 2 * (layers - 1)));

    let mut full = CrossCache::with_precision(text, false);
    assert!(!full.is_half());
    full.push(kv(false), 1, 1, keys);
    assert_eq!(full.bytes(), layers * 2 * n * 4, "every layer in f32");
}

#[test]
fn float_models_keep_f32() {
    for ty in [FileType::F32, FileType::F16, FileType::BF16] {
        let model = tiny(ty);
        assert!(!model.text.quantized(), "{ty:?}");
        assert!(!CrossCache::new(&model.text).is_half(), "{ty:?}");
        assert!(
            !KvCache::new(&model.text, 8, CachePrecision::Auto.half(&model.text)).is_half(),
            "{ty:?}"
        );
        assert!(CachePrecision::F16.half(&model.text), "{ty:?}");
    }
    let q8 = tiny(FileType::Q8_0);
    assert!(q8.text.quantized());
    assert!(CachePrecision::Auto.half(&q8.text));
    assert!(!CachePrecision::F32.half(&q8.text));
    let kv = KvCache::new(&q8.text, 8, true);
    assert!(kv.is_half());
    assert!(!KvCache::new(&q8.text, 8, false).is_half());
    // Half the bytes of the f32 layout.
    let c = &q8.text.cfg;
    let f32_bytes = 2 * q8.text.n_self_layers() * c.n_kv_heads * 8 * c.head_dim * 4;
    assert_eq!(KvCache::bytes_for(&q8.text, 8, true), f32_bytes / 2);
    assert_eq!(KvCache::bytes_for(&q8.text, 8, false), f32_bytes);
}
