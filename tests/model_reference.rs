//! The whole forward pass against HF transformers references.
//!
//! Every case of every model in `tests/fixtures/models/` (and of `../shared/fixtures/tiny-mllama`
//! when that directory exists, as in CI) is run from a GGUF made by our converter: vision
//! features, cross-attention states, logits at every prompt position, greedy decoding through the
//! caches, the per-step logits of the greedy decode, and the same under Meta's cross-attention
//! semantics. Inputs are the reference `input_ids` and `pixel_values` (tokenizer and preprocessing
//! are tested on their own).

mod common;

use common::*;
use mllama::engine::sequence::Sequence;
use mllama::models::mllama::{Model, Semantics, TapConvention, VisionPrecision};
use mllama::text::sampling::argmax;

use std::collections::HashMap;

type Case = FixtureCase;

/// Every fixture case, sorted, and exactly the expected set ([`fixture_cases`]).
fn cases() -> Vec<Case> {
    fixture_cases()
}

/// A reference tensor that must be present (the panic names the case and key).
fn tensor<'a>(reference: &'a HashMap<String, T>, key: &str, case: &str) -> &'a T {
    reference
        .get(key)
        .unwrap_or_else(|| panic!("{case}: reference has no {key}"))
}

struct Outputs {
    features: Vec<Vec<f32>>,
    states: Vec<f32>,
    logits: Vec<f32>,
    greedy: Vec<i64>,
    step_logits: Vec<Vec<f32>>,
}

fn run(model: &Model, reference: &HashMap<String, T>, sem: Semantics, n_new: usize) -> Outputs {
    run_forced(model, reference, sem, n_new, None)
}

/// With `forced`, decode feeds those tokens instead of our own argmax (teacher forcing), so every
/// step is judged on the reference prefix.
fn run_forced(
    model: &Model,
    reference: &HashMap<String, T>,
    sem: Semantics,
    n_new: usize,
    forced: Option<&[i64]>,
) -> Outputs {
    let ids: Vec<u32> = reference["input_ids"].i.iter().map(|&x| x as u32).collect();
    let mut seq = Sequence::new(model, ids.len() + n_new, sem);
    let mut features = Vec::new();
    let mut states = Vec::new();
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
                sem.taps,
            );
            seq.attach_image(&out, n_tiles);
            features.push(out.features);
            states.extend_from_slice(&out.states);
        }
    }
    let logits = seq.feed(&ids, true).unwrap().to_vec();
    let v = model.text.cfg.vocab_size;
    let last = &logits[logits.len() - v..];
    let mut greedy = vec![argmax(last) as i64];
    let mut step_logits = vec![last.to_vec()];
    while greedy.len() < n_new {
        let prev = match forced {
            Some(f) => f[greedy.len() - 1],
            None => *greedy.last().unwrap(),
        };
        let l = seq.feed(&[prev as u32], false).unwrap();
        greedy.push(argmax(l) as i64);
        step_logits.push(l.to_vec());
    }
    Outputs {
        features,
        states,
        logits,
        greedy,
        step_logits,
    }
}

/// Reference top-k logits of each greedy step vs ours at the same ids.
fn step_diff(reference: &HashMap<String, T>, prefix: &str, ours: &[Vec<f32>]) -> f32 {
    let ids = &reference[&format!("{prefix}greedy_step_topk_ids")];
    let lg = &reference[&format!("{prefix}greedy_step_topk_logits")];
    let k = ids.shape[1];
    assert_eq!(ids.shape[0], ours.len(), "{prefix}greedy steps");
    assert_eq!(lg.f.len(), ids.i.len(), "{prefix}top-k logits and ids");
    let mut diffs = Vec::with_capacity(ids.i.len());
    for (s, row) in ours.iter().enumerate() {
        assert_finite(row, &format!("{prefix}step {s} logits"));
        for j in 0..k {
            let id = ids.i[s * k + j] as usize;
            diffs.push((row[id] - lg.f[s * k + j]).abs());
        }
    }
    worst(diffs)
}

fn name(c: &Case) -> String {
    c.name.clone()
}

fn check_exact(ty: &str) {
    let mut report = Vec::new();
    for c in cases() {
        let gguf = converted(&c.model_dir, ty);
        let model = Model::load(&gguf).unwrap();
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        let n_new = reference["greedy_ids"].i.len();
        let out = run(&model, &reference, Semantics::default(), n_new);
        let name = name(&c);

        let dl = max_abs_diff(&out.logits, &reference["logits"].f);
        assert!(dl <= 1e-4, "{name} {ty}: logits max abs diff {dl}");
        assert_eq!(
            out.greedy, reference["greedy_ids"].i,
            "{name} {ty}: greedy ids"
        );
        let ds = step_diff(&reference, "", &out.step_logits);
        assert!(
            ds <= 1e-4,
            "{name} {ty}: greedy step logits max abs diff {ds}"
        );
        let (mut dv, mut dc) = (0f32, 0f32);
        // Every image case is checked through the vision tower (a case without an image has
        // none of these references).
        assert_eq!(
            reference.contains_key("pixel_values"),
            reference.contains_key("vision_states"),
            "{name}: pixel_values and vision_states go together"
        );
        if reference.contains_key("pixel_values") {
            let vs = tensor(&reference, "vision_states", &name);
            let n_img = reference["pixel_values"].shape[1];
            assert_eq!(out.features.len(), n_img, "{name}: images run");
            dv = max_abs_diff(&out.features.concat(), &vs.f);
            let cs = tensor(&reference, "cross_attention_states", &name);
            dc = max_abs_diff(&out.states, &cs.f);
            assert!(dv <= 1e-4, "{name} {ty}: vision_states max abs diff {dv}");
            assert!(
                dc <= 1e-4,
                "{name} {ty}: cross_attention_states max abs diff {dc}"
            );

            // Meta's semantics for rows before the first image.
            let meta = run(
                &model,
                &reference,
                Semantics {
                    meta_cross_attn: true,
                    ..Default::default()
                },
                n_new,
            );
            let v = model.text.cfg.vocab_size;
            let last = &meta.logits[meta.logits.len() - v..];
            let ml = tensor(&reference, "meta_rowmask.logits_last", &name);
            let dm = max_abs_diff(last, &ml.f);
            assert!(
                dm <= 1e-4,
                "{name} {ty}: meta_rowmask.logits_last max abs diff {dm}"
            );
            assert_eq!(
                meta.greedy,
                tensor(&reference, "meta_rowmask.greedy_ids", &name).i,
                "{name} {ty}: meta greedy ids"
            );
            let dms = step_diff(&reference, "meta_rowmask.", &meta.step_logits);
            assert!(
                dms <= 1e-4,
                "{name} {ty}: meta step logits max abs diff {dms}"
            );
        }
        report.push(format!(
            "{name:<44} {ty}: logits {dl:.2e}  steps {ds:.2e}  vision {dv:.2e}  cross states {dc:.2e}  greedy {}/{}",
            n_new, n_new
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn f32_gguf_matches_hf() {
    check_exact("f32");
}

#[test]
fn bf16_gguf_matches_hf() {
    // The fixture weights are bf16, so a BF16 GGUF is lossless and must meet the same bounds.
    check_exact("bf16");
}

#[test]
fn q8_0_gguf_is_close_to_hf() {
    let mut worst_rel = 0f64;
    let (mut forced_ok, mut total) = (0, 0);
    let mut report = Vec::new();
    for c in cases() {
        let gguf = converted(&c.model_dir, "q8_0");
        let model = Model::load(&gguf).unwrap();
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        let want = &reference["greedy_ids"].i;
        let n_new = want.len();
        let out = run(&model, &reference, Semantics::default(), n_new);
        let rel = rel_l2(&out.logits, &reference["logits"].f);
        // Free-running greedy: tokens equal up to the first divergence.
        let prefix = out
            .greedy
            .iter()
            .zip(want)
            .take_while(|(a, b)| a == b)
            .count();
        // Teacher-forced: at each step, given HF's previous tokens, is our argmax HF's token?
        let forced = run_forced(&model, &reference, Semantics::default(), n_new, Some(want));
        let hits = forced
            .greedy
            .iter()
            .zip(want)
            .filter(|(a, b)| a == b)
            .count();
        report.push(format!(
            "{:<44} q8_0: logits rel L2 {rel:.4}, greedy {prefix}/{n_new} before first divergence, {hits}/{n_new} teacher-forced",
            name(&c)
        ));
        worst_rel = worst_rel.max(rel);
        forced_ok += hits;
        total += n_new;
    }
    eprintln!("{}", report.join("\n"));
    // Rounding the weights to Q8_0 in HF itself moves logits by about 2% (fixtures README).
    assert!(worst_rel <= 0.05, "Q8_0 logits relative L2 {worst_rel}");
    assert!(
        forced_ok * 100 >= total * 85,
        "teacher-forced greedy agreement {forced_ok}/{total}"
    );
}

#[test]
fn layer_output_taps_match_hf5() {
    // `TapConvention::LayerOutput` (`--vision-taps output`, HF transformers 5.x) against the
    // `output_taps.*` references, made by the same generator without its layer-input patch. Every
    // image case of the in-repo fixtures has them; the default (layer input) must differ.
    let mut checked = Vec::new();
    let sem = Semantics {
        taps: TapConvention::LayerOutput,
        ..Default::default()
    };
    for c in cases() {
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        if !reference.contains_key("output_taps.logits") {
            // Only text-only cases and the shared fixtures (made before output_taps existed) lack
            // them; the count below pins the rest.
            assert!(
                !reference.contains_key("pixel_values") || !c.in_repo,
                "{}: in-repo image case without output_taps references",
                name(&c)
            );
            continue;
        }
        let model = Model::load(converted(&c.model_dir, "f32")).unwrap();
        let want = &reference["output_taps.greedy_ids"].i;
        let out = run(&model, &reference, sem, want.len());
        let name = name(&c);
        let dl = max_abs_diff(&out.logits, &reference["output_taps.logits"].f);
        assert!(dl <= 1e-4, "{name}: output-taps logits max abs diff {dl}");
        let vs = tensor(&reference, "output_taps.vision_states", &name);
        assert_eq!(
            out.features.len(),
            reference["pixel_values"].shape[1],
            "{name}: images run"
        );
        let dv = max_abs_diff(&out.features.concat(), &vs.f);
        assert!(dv <= 1e-4, "{name}: output-taps vision_states {dv}");
        let dc = max_abs_diff(
            &out.states,
            &tensor(&reference, "output_taps.cross_attention_states", &name).f,
        );
        assert!(dc <= 1e-4, "{name}: output-taps cross states {dc}");
        assert_eq!(&out.greedy, want, "{name}: output-taps greedy ids");
        let ds = step_diff(&reference, "output_taps.", &out.step_logits);
        assert!(ds <= 1e-4, "{name}: output-taps step logits {ds}");
        // The two conventions really differ on these weights.
        let d = max_abs_diff(&out.logits, &reference["logits"].f);
        assert!(
            d > 1e-2,
            "{name}: tap conventions gave the same logits ({d})"
        );
        checked.push(name);
    }
    // Exactly the in-repo image cases.
    let want: Vec<&str> = IN_REPO_CASES
        .into_iter()
        .filter(|c| !IN_REPO_TEXT_ONLY.contains(c))
        .collect();
    assert_eq!(
        checked, want,
        "cases checked against output_taps references"
    );
}

/// The vision tower in a fast precision on the F32 files, against HF: cross-attention states
/// within relative L2 `states_bound`, the last prompt position's logits within 2e-2, and
/// free-running greedy ids equal to HF's wherever HF's top-2 margin at the step exceeds our
/// largest logit error there (issue 14's fidelity bound is `states_bound` = 1e-2). The text side
/// stays f32, so every difference comes from the tower.
fn vision_fidelity(prec: VisionPrecision, states_bound: f64, greedy_rule: bool) {
    let mut report = Vec::new();
    let mut seen = 0;
    for c in cases() {
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        if !reference.contains_key("pixel_values") {
            continue;
        }
        seen += 1;
        let mut model = Model::load(converted(&c.model_dir, "f32")).unwrap();
        model.set_vision_precision(prec);
        assert_eq!(model.vision_precision(), prec);
        let name = name(&c);
        let want = &reference["greedy_ids"].i;
        let n_new = want.len();
        let out = run(&model, &reference, Semantics::default(), n_new);
        let cs = tensor(&reference, "cross_attention_states", &name);
        let rs = rel_l2(&out.states, &cs.f);
        let v = model.text.cfg.vocab_size;
        let lf = &reference["logits"].f;
        let rl = rel_l2(&out.logits[out.logits.len() - v..], &lf[lf.len() - v..]);
        let p = prec.name();
        assert!(
            rs <= states_bound,
            "{name}: {p} cross states relative L2 {rs}"
        );
        assert!(rl <= 2e-2, "{name}: {p} last logits relative L2 {rl}");
        // Greedy: equal up to the first step where HF's top-2 margin is within our error there.
        let ids = &reference["greedy_step_topk_ids"];
        let lg = &reference["greedy_step_topk_logits"];
        let k = ids.shape[1];
        let mut agreed = 0;
        for (s, (&ours, &theirs)) in out.greedy.iter().zip(want).enumerate() {
            let err = (0..k)
                .map(|j| (out.step_logits[s][ids.i[s * k + j] as usize] - lg.f[s * k + j]).abs())
                .fold(0f32, f32::max);
            let margin = lg.f[s * k] - lg.f[s * k + 1];
            if ours != theirs {
                assert!(
                    !greedy_rule || margin <= err,
                    "{name}: {p} greedy step {s}: {ours} ≠ HF's {theirs} with margin {margin} > error {err}"
                );
                break;
            }
            agreed += 1;
        }
        report.push(format!(
            "{name:<44} {p} vision: cross states rel L2 {rs:.2e}, last logits rel L2 {rl:.2e}, greedy {agreed}/{n_new}"
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(seen > 0, "no image case");
}

/// 12-bit integer products (what `auto` picks for quantized files on AVX-512 VNNI) meet issue
/// 14's bound.
#[test]
fn int16_vision_is_close_to_hf() {
    vision_fidelity(VisionPrecision::Int16, 1e-2, true);
}

/// int8 products (`--vision-precision int8`, never picked by `auto`): measured 1.5–1.8% on the
/// cross-attention states, over the 1% bound; held to 2.5% and the logits bound, while its
/// greedy answers may leave HF's at steps with margins of ~0.16 (reported, not asserted).
#[test]
fn int8_vision_is_close_to_hf() {
    vision_fidelity(VisionPrecision::Int8, 2.5e-2, false);
}
