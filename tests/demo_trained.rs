//! The trained demo model end to end (issue 17): the first test of the whole vision path — image
//! decoding and preprocessing at the 56 px tile, vision tower with layer-input taps, projector,
//! cross-attention, greedy generation — on weights trained to mean something.
//!
//! Fixtures (`tests/fixtures/demo_heldout/`, made by `scripts/train_demo.py` and
//! `scripts/gen_demo_fixtures.py`): 40 held-out pictures of coloured shapes with their questions and
//! expected answers, HF transformers' greedy answers on the trained checkpoint, and the checkpoint
//! converted to Q8_0 by our `quantize` (the F32 GGUF is 42 MB, too large to commit).
//!
//! - On the Q8_0 file, our greedy answer equals HF's greedy answer for every question, HF running
//!   on the checkpoint rounded exactly as the file stores it (text Q8_0, vision F16).
//! - The shipped demo (`models/demo/mllama-demo-q4_0.gguf`) answers at least 90% of each question
//!   type exactly right.
//! - Both give the same answers on every kernel path this CPU has (avx512 / avx2 / scalar on
//!   x86-64, dotprod / neon / scalar on aarch64).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mllama::kernels::{with_path, Path as KernelPath};
use mllama::{Model, SamplingParams, Session, SessionOptions, VisionPrecision};
use serde_json::Value;

/// The `<|eot_id|>` that ends every HF answer.
const EOT: u32 = 128009;
/// HF's `max_new_tokens`.
const MAX_TOKENS: usize = 32;
/// How many answers the scalar path may change (see [`answers_on_every_path`]).
const SCALAR_FLIPS: usize = 3;
/// HF's top-two logit gap below which our answer may take the other token.
const NEAR_TIE: f64 = 0.05;
/// How many answers may leave HF's at a near-tie.
const MAX_NEAR_TIES: usize = 4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/demo_heldout")
}

/// One held-out question with HF's greedy answer on the checkpoint rounded as one GGUF stores it.
struct Question {
    image: String,
    kind: String,
    question: String,
    expected: String,
    hf_text: String,
    hf_ids: Vec<u32>,
    /// HF's top-1 minus top-2 logit at each generated token.
    hf_margins: Vec<f64>,
}

/// The held-out questions with HF's answers for the `ty` GGUF (`q8_0` or `q4_0`).
fn questions(ty: &str) -> Vec<Question> {
    let text = std::fs::read_to_string(fixtures().join("hf_answers.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    json["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| Question {
            image: s(&a["image"]),
            kind: s(&a["type"]),
            question: s(&a["question"]),
            expected: s(&a["expected"]),
            hf_text: s(&a[format!("hf_{ty}")]["text"]),
            hf_ids: a[format!("hf_{ty}")]["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
            hf_margins: a[format!("hf_{ty}")]["margins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        })
        .collect()
}

/// Greedy answers (text, token ids) to every question, each in a fresh session.
fn answers(model: &Arc<Model>, qs: &[&Question]) -> Vec<(String, Vec<u32>)> {
    qs.iter()
        .map(|q| {
            let opts = SessionOptions {
                ctx: Some(96),
                ..Default::default()
            };
            let mut s = Session::new(Arc::clone(model), opts).unwrap();
            s.add_image(fixtures().join(&q.image)).unwrap();
            s.push_user(&q.question).unwrap();
            let mut g = s
                .generate(&SamplingParams::default(), MAX_TOKENS, None)
                .unwrap();
            let ids = g.by_ref().map(|p| p.unwrap().id).collect();
            (g.text().to_string(), ids)
        })
        .collect()
}

/// The answers on every kernel path with the vision tower in f32 (which every path computes;
/// `auto` picks int16 on x86 only), each with a freshly loaded model (the image cache is keyed
/// by the picture, not the path). The SIMD paths (avx512 and avx2; dotprod and neon) must give
/// the same answers: they compute the same integer dot products and share their regime
/// crossovers. The scalar path runs a prompt through the f32 GEMM from 4 rows on (the SIMD paths
/// through the Q8_0-activation decode kernels), so it may flip a near-tie of this lightly trained
/// model: at most `SCALAR_FLIPS` of its answers may differ. Returns the best path's answers.
fn answers_on_every_path(file: &PathBuf, qs: &[Question]) -> Vec<(String, Vec<u32>)> {
    let paths = KernelPath::available();
    let run = |p: KernelPath, qs: &[&Question]| {
        let mut model = Model::load(file).unwrap();
        model.set_vision_precision(VisionPrecision::F32);
        let model = Arc::new(model);
        with_path(p, || answers(&model, qs))
    };
    let all: Vec<&Question> = qs.iter().collect();
    let best = run(paths[0], &all);
    // The other paths: every question on x86-64; on aarch64 (CI runs it under qemu, where the
    // whole set takes minutes per path) every third one.
    let step = if cfg!(target_arch = "aarch64") { 3 } else { 1 };
    let some: Vec<usize> = (0..qs.len()).step_by(step).collect();
    for &p in &paths[1..] {
        let other = run(p, &some.iter().map(|&i| &qs[i]).collect::<Vec<_>>());
        let differ: Vec<String> = some
            .iter()
            .map(|&i| (&qs[i], &best[i]))
            .zip(&other)
            .filter(|((_, a), b)| a != b)
            .map(|((q, a), b)| {
                format!(
                    "{} {:?}: {} {:?}, {p} {:?}",
                    q.image, q.question, paths[0], a.0, b.0
                )
            })
            .collect();
        let allowed = if p == KernelPath::Scalar {
            SCALAR_FLIPS
        } else {
            0
        };
        eprintln!(
            "{}: path {p}: {} of {} answers differ from path {}",
            file.display(),
            differ.len(),
            some.len(),
            paths[0]
        );
        assert!(
            differ.len() <= allowed,
            "{}: path {p} differs from {} on {} answers (allowed {allowed}):\n{}",
            file.display(),
            paths[0],
            differ.len(),
            differ.join("\n")
        );
    }
    best
}

/// The answers with the default (`auto`) vision precision on the best path: what a user gets.
/// Where `auto` is f32 (ARM), those are `f32_answers` (the best path's from
/// [`answers_on_every_path`]), not computed again.
fn answers_auto(
    file: &PathBuf,
    qs: &[Question],
    f32_answers: &[(String, Vec<u32>)],
) -> Vec<(String, Vec<u32>)> {
    let model = Arc::new(Model::load(file).unwrap());
    let prec = model.vision_precision();
    eprintln!(
        "{}: auto vision precision on {}: {}",
        file.display(),
        mllama::kernels::simd_name(),
        prec.name()
    );
    if prec == VisionPrecision::F32 {
        return f32_answers.to_vec();
    }
    answers(&model, &qs.iter().collect::<Vec<_>>())
}

/// Our greedy answers against HF's on the same weights: equal token for token, except that an
/// answer may leave HF's at a near-tie (HF's top two logits closer than [`NEAR_TIE`]; our decode
/// rounds activations to Q8_0 as ggml does), for at most [`MAX_NEAR_TIES`] answers. Returns the
/// near-tie divergences.
fn check_against_hf(file: &str, qs: &[Question], ours: &[(String, Vec<u32>)]) -> Vec<String> {
    let (mut ties, mut wrong) = (Vec::new(), Vec::new());
    for (q, (text, ids)) in qs.iter().zip(ours) {
        // HF's ids end with <|eot_id|> when the answer ended; the session stops there without
        // yielding it (a longer answer shows up as more ids).
        let hf_ids = q.hf_ids.strip_suffix(&[EOT]).unwrap_or(&q.hf_ids);
        if *text == q.hf_text && ids == hf_ids {
            continue;
        }
        let at = ids.iter().zip(hf_ids).take_while(|(a, b)| a == b).count();
        let margin = q.hf_margins.get(at).copied().unwrap_or(f64::INFINITY);
        let line = format!(
            "{} {:?}: ours {text:?}, HF {:?} (token {at}, HF margin {margin})",
            q.image, q.question, q.hf_text
        );
        if margin < NEAR_TIE {
            ties.push(line);
        } else {
            wrong.push(line);
        }
    }
    eprintln!(
        "{file}: {} near-tie divergences from HF:\n{}",
        ties.len(),
        ties.join("\n")
    );
    assert!(
        wrong.is_empty() && ties.len() <= MAX_NEAR_TIES,
        "{file}: {} answers differ from HF's, {} at near-ties (at most {MAX_NEAR_TIES}):\n{}\n{}",
        wrong.len(),
        ties.len(),
        wrong.join("\n"),
        ties.join("\n")
    );
    ties
}

#[test]
fn q8_0_demo_answers_as_hf_on_every_question_and_path() {
    let qs = questions("q8_0");
    assert!(qs.len() >= 160, "{} held-out questions", qs.len());
    let file = fixtures().join("mllama-demo-q8_0.gguf");
    let ours = answers_on_every_path(&file, &qs);
    check_against_hf("mllama-demo-q8_0.gguf", &qs, &ours);
    let auto = answers_auto(&file, &qs, &ours);
    check_against_hf("mllama-demo-q8_0.gguf (auto)", &qs, &auto);
}

/// Issue 17 asks for 90% exact answers per question type, as users run the demo (the default
/// vision precision), on every kernel path.
#[test]
fn shipped_q4_0_demo_accuracy_per_question_type() {
    let qs = questions("q4_0");
    let file = root().join("models/demo/mllama-demo-q4_0.gguf");
    let f32_answers = answers_on_every_path(&file, &qs);
    check_against_hf("mllama-demo-q4_0.gguf", &qs, &f32_answers);
    // Scored as users run it: the default vision precision.
    let ours = answers_auto(&file, &qs, &f32_answers);
    check_against_hf("mllama-demo-q4_0.gguf (auto)", &qs, &ours);
    let text = std::fs::read_to_string(fixtures().join("hf_answers.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let mut score: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (q, (text, _)) in qs.iter().zip(&ours) {
        let e = score.entry(&q.kind).or_default();
        e.0 += usize::from(*text == q.expected);
        e.1 += 1;
    }
    assert_eq!(score.len(), 4, "question types: {score:?}");
    eprintln!(
        "mllama-demo-q4_0.gguf: right answers per question type (auto vision precision): {score:?}"
    );
    for (kind, (right, total)) in &score {
        let hf = json["accuracy"]["q4_0"][kind]["correct"].as_u64().unwrap() as usize;
        let ninety = (total * 9).div_ceil(10);
        assert!(
            *right >= ninety,
            "{kind}: {right}/{total} right, want >= {ninety} (HF on the same weights: {hf}); all: {score:?}"
        );
    }
}
