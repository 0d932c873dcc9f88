//! Synthetic models (random weights at a spec's shapes, built in memory) run end to end: vision
//! tower, cross-attention K/V, and a text forward through a sequence.

use mllama::engine::sequence::Sequence;
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::synthetic::{build, SyntheticOptions};
use mllama::quant::mix::FileType;
use mllama::GgmlType;

#[test]
fn tiny_synthetic_model_runs() {
    for distinct in [None, Some(1)] {
        let spec = ModelSpec::tiny();
        let m = build(
            &spec,
            &SyntheticOptions {
                file_type: FileType::Q4_0,
                vision_type: GgmlType::F16,
                distinct_layers: distinct,
                seed: 1,
            },
        )
        .unwrap();
        assert_eq!(m.text.cfg.n_layers, spec.n_layers);
        let vc = m.cfg.vision.as_ref().unwrap();
        let px = vec![0.1f32; vc.max_tiles * 3 * vc.image_size * vc.image_size];
        let out = m
            .vision
            .as_ref()
            .unwrap()
            .forward(&px, 6, 4, Default::default());
        assert!(out.states.iter().all(|v| v.is_finite()));
        let mut seq = Sequence::new(&m, 16, Default::default());
        seq.attach_image(&out, 4);
        let l = seq.feed(&[1, spec.image_token, 3, 4], false).unwrap();
        assert!(l.iter().all(|v| v.is_finite()));
    }
}
