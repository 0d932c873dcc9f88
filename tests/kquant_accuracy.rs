//! Quality of the K-quant mixes (issue 12's acceptance): on a checkpoint whose text matrices have
//! rows of 256 and 512 values (`SynthDims::k256`, so Q4_K/Q5_K/Q6_K are used themselves, not
//! their fallbacks), Q4_K_M logits are closer to the reference than Q4_0's in every case.
//!
//! The reference is the same checkpoint converted to F32 and run by our engine (which matches HF
//! transformers to ~1e-5 on every fixture: tests/model_reference.rs); no torch needed. Caches are
//! f32 for every model so only the weights differ. Figures: `cargo test --release --test
//! kquant_accuracy -- --nocapture`.

mod common;

use common::rel_l2;
use mllama::engine::sequence::Sequence;
use mllama::quant::mix::FileType;
use mllama::{CachePrecision, Model, Semantics};
use mllama_quantize::synthetic::{write_checkpoint, SynthDims};

/// One case: a prompt (token ids; `None` = the image token) and the image's pixel pattern.
struct Case {
    name: &'static str,
    prompt: Vec<Option<u32>>,
    image_seed: Option<u32>,
}

fn cases() -> Vec<Case> {
    let text = |ids: &[u32]| ids.iter().map(|&t| Some(t)).collect::<Vec<_>>();
    let mut with_image = text(&[488, 1, 77]);
    with_image.push(None);
    with_image.extend(text(&[300, 12, 45, 99, 250, 3, 480]));
    let mut image_first = vec![None];
    image_first.extend(text(&[17, 230, 402, 5, 61, 61, 200, 311]));
    Case::all(
        text(&[488, 20, 31, 400, 7, 150, 2, 99, 401, 17, 88]),
        with_image,
        image_first,
    )
}

impl Case {
    fn all(text: Vec<Option<u32>>, a: Vec<Option<u32>>, b: Vec<Option<u32>>) -> Vec<Case> {
        vec![
            Case {
                name: "text_only",
                prompt: text,
                image_seed: None,
            },
            Case {
                name: "image_mid",
                prompt: a,
                image_seed: Some(1),
            },
            Case {
                name: "image_first",
                prompt: b,
                image_seed: Some(2),
            },
        ]
    }
}

/// Logits of every prompt position for `case` on `model` (f32 caches).
fn logits(model: &Model, case: &Case) -> Vec<f32> {
    let sem = Semantics {
        cache: CachePrecision::F32,
        ..Default::default()
    };
    let image = model.cfg.text.image_token.unwrap();
    let tokens: Vec<u32> = case.prompt.iter().map(|t| t.unwrap_or(image)).collect();
    let mut seq = Sequence::new(model, 64, sem);
    if let Some(s) = case.image_seed {
        let vc = model.cfg.vision.as_ref().unwrap();
        let n = vc.max_tiles * 3 * vc.image_size * vc.image_size;
        let px: Vec<f32> = (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(s * 97) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect();
        let out = model.vision.as_ref().unwrap().forward(&px, 6, 4, sem.taps);
        seq.attach_image(&out, 4);
    }
    seq.feed(&tokens, true).unwrap().to_vec()
}

#[test]
fn q4_k_m_is_closer_to_the_reference_than_q4_0() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("k256");
    write_checkpoint(&ckpt, &SynthDims::k256(), 42).unwrap();
    let convert = |ft: FileType| {
        let output = tmp.path().join(format!("{ft}.gguf"));
        mllama_quantize::run(&mllama_quantize::Options {
            input: ckpt.clone(),
            output: output.clone(),
            ty: ft,
            quantize_vision: false,
            progress: false,
        })
        .unwrap();
        Model::load(&output).unwrap()
    };
    let reference = convert(FileType::F32);
    // The four compared below first, then every other quantized file type (reported).
    let mut types = vec![
        FileType::Q4_0,
        FileType::Q4KM,
        FileType::Q8_0,
        FileType::Q6K,
    ];
    let rest: Vec<FileType> = FileType::ALL
        .into_iter()
        .filter(|f| f.is_quantized() && !types.contains(f))
        .collect();
    types.extend(rest);
    let models: Vec<Model> = types.iter().map(|&ft| convert(ft)).collect();
    for case in cases() {
        let want = logits(&reference, &case);
        let err: Vec<f64> = models
            .iter()
            .map(|m| rel_l2(&logits(m, &case), &want))
            .collect();
        let figures: Vec<String> = types
            .iter()
            .zip(&err)
            .map(|(t, e)| format!("{t} {e:.4}"))
            .collect();
        eprintln!("{:12} rel-L2 vs F32: {}", case.name, figures.join("  "));
        assert!(
            err[1] < err[0],
            "{}: q4_k_m {} not below q4_0 {}",
            case.name,
            err[1],
            err[0]
        );
        // More bits, less error: Q6_K and Q8_0 both well below the 4-bit types.
        assert!(err[2] < err[1] && err[3] < err[1], "{}: {err:?}", case.name);
        assert!(
            err[0] > 0.0 && err[3] > 0.0,
            "{}: quantization changed nothing",
            case.name
        );
    }
}
