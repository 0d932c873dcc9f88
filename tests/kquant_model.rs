//! Whole models with text matrices stored as the new block types.
//!
//! - The HF fixture checkpoints (rows of 64..224 values: whole 32-blocks, not 256-blocks) with
//!   their text matrices re-stored as Q4_1, Q5_0, Q5_1 (beside Q8_0 and Q4_0 made the same way):
//!   prompt logits against the HF reference.
//! - A random-weight model with rows of 256 and 512 ([`kq_model::spec256`]) stored as F32 and as
//!   every block type from the same f32 weights: logits of each against the F32 model; prefill
//!   through the GEMM regime against token-by-token decode (integer dots against quantized
//!   activations); every SIMD path against the scalar path.

mod common;
#[path = "common/kq_model.rs"]
mod kq_model;

use std::collections::HashMap;

use common::*;
use mllama::engine::sequence::Sequence;
use mllama::format::gguf::{GgufFile, GgufWriter};
use mllama::kernels::{with_path, Path};
use mllama::models::mllama::{CachePrecision, Model, Semantics};
use mllama::{GgmlType, GgufError};

/// Text matrices: 2-D tensors outside the vision tower (`v.`) and projector (`mm.`), which is
/// where the converter puts the requested type.
fn is_text_matrix(name: &str, dims: &[u64]) -> bool {
    dims.len() == 2 && !name.starts_with("v.") && !name.starts_with("mm.")
}

/// `f` (an F32 GGUF) with its text matrices re-stored as `ty` (from the same f32 values).
fn restore_text(f: &GgufFile, ty: GgmlType) -> GgufFile {
    let mut w = GgufWriter::new("mllama");
    for (k, v) in f.metadata() {
        if k != "general.architecture" && k != "general.alignment" {
            w.add(k, v.clone()).unwrap();
        }
    }
    let mut types = Vec::new();
    for t in f.tensors() {
        let tt = if is_text_matrix(&t.name, &t.dims) {
            ty
        } else {
            t.ty
        };
        w.add_tensor(&t.name, &t.shape(), tt).unwrap();
        types.push(tt);
    }
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |i, info, sink| {
        let src = &f.tensors()[i];
        let v = f.view(src).to_f32_vec().unwrap();
        let mut b = vec![0u8; info.size as usize];
        mllama::quant::convert_f32(types[i], &v, src.row_len(), &mut b).unwrap();
        std::io::Write::write_all(sink, &b)?;
        Ok(())
    })
    .unwrap();
    GgufFile::from_bytes(out).unwrap()
}

/// Prompt logits (every position) of a fixture case, images attached.
fn prompt_logits(model: &Model, reference: &HashMap<String, T>) -> Vec<f32> {
    let ids: Vec<u32> = reference["input_ids"].i.iter().map(|&x| x as u32).collect();
    let mut seq = Sequence::new(model, ids.len(), Semantics::default());
    if let Some(pv) = reference.get("pixel_values") {
        let n_img = pv.shape[1];
        let per = pv.f.len() / n_img;
        for i in 0..n_img {
            let ar = reference["aspect_ratio_ids"].i[i] as usize;
            let n_tiles = reference["aspect_ratio_mask"].i[i * 4..(i + 1) * 4]
                .iter()
                .sum::<i64>() as usize;
            let out = model.vision.as_ref().unwrap().forward(
                &pv.f[i * per..(i + 1) * per],
                ar,
                n_tiles,
                Default::default(),
            );
            seq.attach_image(&out, n_tiles);
        }
    }
    seq.feed(&ids, true).unwrap().to_vec()
}

#[test]
fn legacy_types_on_the_fixture_models_are_close_to_hf() {
    use GgmlType as G;
    let types = [G::Q8_0, G::Q5_1, G::Q5_0, G::Q4_1, G::Q4_0];
    let mut worst = [0f64; 5];
    let mut report = Vec::new();
    for c in fixture_cases() {
        let f32_file = GgufFile::open(converted(&c.model_dir, "f32")).unwrap();
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        let mut rels = [0f64; 5];
        for (k, &ty) in types.iter().enumerate() {
            let model = Model::from_gguf(restore_text(&f32_file, ty)).unwrap();
            rels[k] = rel_l2(&prompt_logits(&model, &reference), &reference["logits"].f);
            worst[k] = worst[k].max(rels[k]);
        }
        report.push(format!("{:<44} {rels:.4?}", c.name));
        // More bits, closer to HF; with a per-block minimum (Q5_1, Q4_1), closer than without.
        assert!(
            rels.windows(2).all(|w| w[0] < w[1]),
            "{}: {types:?} {rels:?}",
            c.name
        );
    }
    eprintln!(
        "prompt logits, relative L2 to HF, {types:?}:\n{}\nworst {worst:.4?}",
        report.join("\n")
    );
    // Q8_0's bound is model_reference.rs's; the others are ~20% above the worst measured
    // (0.123, 0.141, 0.258, 0.280 on the in-repo and shared fixtures).
    let bounds = [0.05, 0.15, 0.17, 0.31, 0.34];
    for k in 0..5 {
        assert!(
            worst[k] <= bounds[k],
            "{}: {} > {}",
            types[k],
            worst[k],
            bounds[k]
        );
    }
}

/// Prompt length: at least 64 rows, so prefill takes the GEMM regime wherever the type's
/// crossover (`kernels::gemm_min_rows`) is 64 or less, with the `<|image|>` token at position 1.
const PROMPT: usize = 72;

fn sem() -> Semantics {
    // f32 caches everywhere, so models differ only in their weights.
    Semantics {
        cache: CachePrecision::F32,
        ..Default::default()
    }
}

/// A [`kq_model::spec256`] model with text matrices stored as `ty` (seed 7).
fn model256(ty: GgmlType) -> Model {
    let mut m = Model::from_gguf(kq_model::parse(kq_model::gguf_bytes(
        &kq_model::spec256(),
        ty,
        7,
    )))
    .unwrap();
    // The text kernels are under test: the vision tower in f32 on every path (`auto` picks
    // int16 on the x86 paths only).
    m.set_vision_precision(mllama::VisionPrecision::F32);
    m
}

/// A sequence with one encoded one-tile image attached.
fn sequence(m: &Model) -> Sequence<&Model> {
    let vc = m.cfg.vision.as_ref().unwrap();
    let n = vc.max_tiles * 3 * vc.image_size * vc.image_size;
    let px: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
        .collect();
    let out = m
        .vision
        .as_ref()
        .unwrap()
        .forward(&px, 1, 1, Default::default());
    let mut seq = Sequence::new(m, PROMPT, sem());
    seq.attach_image(&out, 1);
    seq
}

fn prompt() -> Vec<u32> {
    let img = kq_model::spec256().image_token;
    (0..PROMPT)
        .map(|i| {
            if i == 1 {
                img
            } else {
                (i * 37 + 5) as u32 % 500
            }
        })
        .collect()
}

/// Logits at every prompt position from one prefill (`[PROMPT, V]`).
fn prefill(m: &Model) -> Vec<f32> {
    sequence(m).feed(&prompt(), true).unwrap().to_vec()
}

/// Logits at every prompt position fed one token at a time (the decode regime).
fn decode(m: &Model) -> Vec<f32> {
    let mut seq = sequence(m);
    let mut out = Vec::new();
    for t in prompt() {
        out.extend_from_slice(seq.feed(&[t], false).unwrap());
    }
    out
}

#[test]
fn k_types_are_close_to_the_f32_weights() {
    use GgmlType as G;
    let reference = prefill(&model256(G::F32));
    let types = [
        G::Q8_0,
        G::Q6_K,
        G::Q5_K,
        G::Q5_1,
        G::Q5_0,
        G::Q4_K,
        G::Q4_1,
        G::Q4_0,
    ];
    let rel: Vec<f64> = types
        .iter()
        .map(|&ty| rel_l2(&prefill(&model256(ty)), &reference))
        .collect();
    let report: Vec<String> = types
        .iter()
        .zip(&rel)
        .map(|(t, r)| format!("{t} {r:.4}"))
        .collect();
    eprintln!("logits relative L2 to the F32 model: {}", report.join(", "));
    let r = |ty: G| rel[types.iter().position(|&t| t == ty).unwrap()];
    // More bits, closer; a K-quant closer than the legacy type of the same bits.
    assert!(r(G::Q8_0) < r(G::Q6_K) && r(G::Q6_K) < r(G::Q5_K) && r(G::Q5_K) < r(G::Q4_K));
    assert!(
        r(G::Q5_K) < r(G::Q5_0) && r(G::Q4_K) < r(G::Q4_0),
        "{report:?}"
    );
    // ~30% above the measured 0.045, 0.090, 0.165 (Q8_0: 0.013, Q4_0: 0.217): this random model
    // amplifies weight noise about as much as the HF fixtures do.
    assert!(
        r(G::Q6_K) <= 0.06 && r(G::Q5_K) <= 0.12 && r(G::Q4_K) <= 0.21,
        "{report:?}"
    );
}

#[test]
fn decode_and_gemm_regimes_agree() {
    use GgmlType as G;
    let mut report = Vec::new();
    for ty in [G::Q4_1, G::Q5_0, G::Q5_1, G::Q4_K, G::Q5_K, G::Q6_K] {
        let m = model256(ty);
        // Decode dots the weights with activations quantized to Q8_K / Q8_0 blocks;
        // the GEMM multiplies dequantized weights with f32 activations.
        let rel = rel_l2(&decode(&m), &prefill(&m));
        report.push(format!("{ty} {rel:.5}"));
        assert!(
            rel <= 0.02,
            "{ty}: decode vs prefill logits relative L2 {rel}"
        );
    }
    eprintln!("decode vs GEMM prefill, relative L2: {}", report.join(", "));
}

#[test]
fn every_path_agrees_with_the_scalar_path() {
    use GgmlType as G;
    let mut report = Vec::new();
    for ty in [
        G::Q8_0,
        G::Q4_0,
        G::Q4_1,
        G::Q5_0,
        G::Q5_1,
        G::Q4_K,
        G::Q5_K,
        G::Q6_K,
    ] {
        let m = model256(ty);
        let (d0, p0) = with_path(Path::Scalar, || (decode(&m), prefill(&m)));
        for path in Path::available().into_iter().filter(|&p| p != Path::Scalar) {
            let (d, p) = with_path(path, || (decode(&m), prefill(&m)));
            let (rd, rp) = (rel_l2(&d, &d0), rel_l2(&p, &p0));
            report.push(format!("{ty} {path}: decode {rd:.2e}, prefill {rp:.2e}"));
            // Same integer dots and, when both paths take the GEMM regime, the same GEMM up to
            // f32 rounding (FMA, summation order). Decode quantizes activations to 8 bits: a
            // rounding flip of one activation moves this random model's logits by up to ~1%
            // (measured: 0 to 0.011), so decode (and a prefill in different regimes) gets the
            // bound of `decode_and_gemm_regimes_agree`.
            let same_regime = [path, Path::Scalar]
                .iter()
                .all(|&p| mllama::kernels::gemm_min_rows(p, ty) <= PROMPT);
            let bound = if same_regime { 1e-5 } else { 0.02 };
            assert!(rd <= 0.02 && rp <= bound, "{ty} {path}: {rd} {rp}");
        }
    }
    eprintln!(
        "against the scalar path, relative L2:\n{}",
        report.join("\n")
    );
}
