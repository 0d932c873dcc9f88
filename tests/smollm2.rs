//! The first end-to-end check on real trained weights: SmolLM2-135M-Instruct (Q4_1 matrices, a
//! Q8_0 embedding tied to the output, `general.architecture = llama`, pre-tokenizer `smollm`)
//! against llama.cpp's outputs for it (`tests/fixtures/smollm2/llamacpp_reference.json`; its
//! README gives the comparison rule): prompt ids equal, greedy ids equal at every step until
//! llama.cpp's own top-2 gap falls below 0.1, and each of its top-5 logits close to ours up to
//! that step. Also the file's ChatML template, the session and the CLI on that file, and the
//! one-line refusal of images.
//!
//! Logit tolerance: the README asks for 0.1, which no implementation short of llama.cpp's own
//! kernels meets on this model: its logits move by several tenths under any change of float
//! summation order, because 8-bit activation rounding amplifies them. Measured
//! (`scripts/smollm2_llamacpp_refs.py`, which reproduces the reference bit for bit with flash
//! attention on and an f16 KV cache, llama.cpp's defaults): llama.cpp itself with flash attention
//! off differs from its reference by up to 0.80 (f16 KV cache) and 0.64 (f32), and with f32 it
//! even picks another token at `capital_raw` step 5, where the reference's top-2 gap is 0.26. Ours
//! differ by up to 0.86 (avx512) and 0.59 (scalar: the same integer dot products, another float
//! order); llama.cpp built for AVX2 only (same commit, same defaults) by up to 0.70 from its
//! own AVX-512 build's reference; an exact float64 evaluation of the dequantized weights
//! (`scripts/smollm2_f64_check.py`) by up to 0.57. So the check here is [`LOGIT_TOL`] (1.0;
//! logits are 10–40) with the token ids exact, and the test prints how many logits are beyond
//! the README's 0.1.
//!
//! The GGUF (94 MB) is not in git: `scripts/fetch_smollm2.sh` puts it in
//! `tests/fixtures/smollm2/` (CI runs it first). Without it these tests fail with that hint,
//! unless `MLLAMA_SKIP_SMOLLM2=1`.

use std::path::PathBuf;
use std::process::Command;

use mllama::engine::sequence::Sequence;
use mllama::text::chat::{ChatTemplate, Message, Role};
use mllama::text::sampling::argmax;
use mllama::{CachePrecision, Error, Model, SamplingParams, Semantics, Session, SessionOptions};
use serde_json::Value;

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// llama.cpp's outputs as the fixture README describes them.
const REFERENCE: &str = "llamacpp_reference.json";
/// llama.cpp's outputs at the same commit with flash attention off and an f32 KV cache.
const REFERENCE_FA0_F32KV: &str = "llamacpp_reference_fa0_f32kv.json";
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The README's tolerance: ids may part once llama.cpp's top-2 gap < 0.1 (also its logit
/// tolerance, reported but not asserted: see the module docs).
const TOL: f32 = 0.1;
/// The logit tolerance asserted: above llama.cpp's own distance from exact arithmetic on this
/// model (up to 0.57 on these logits), see the module docs.
const LOGIT_TOL: f32 = 1.0;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

/// The GGUF's path, checked against the README's SHA-256; `None` (skip) only when
/// `MLLAMA_SKIP_SMOLLM2=1`, otherwise a missing or different file fails the test.
fn gguf() -> Option<PathBuf> {
    let path = dir().join(GGUF);
    if !path.exists() {
        if std::env::var("MLLAMA_SKIP_SMOLLM2").as_deref() == Ok("1") {
            eprintln!("MLLAMA_SKIP_SMOLLM2=1: skipping the SmolLM2 checks");
            return None;
        }
        panic!(
            "{} is missing: run scripts/fetch_smollm2.sh (or set MLLAMA_SKIP_SMOLLM2=1 to skip)",
            path.display()
        );
    }
    Some(path)
}

#[test]
fn fixture_file_is_the_one_the_reference_was_made_from() {
    use sha2::{Digest, Sha256};
    let Some(path) = gguf() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        SHA256,
        "{} differs from the file llama.cpp ran: run scripts/fetch_smollm2.sh again",
        path.display()
    );
}

fn reference(file: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// How far our greedy run of one case agreed with llama.cpp's.
struct Agreement {
    /// Steps compared (ids and logits).
    compared: usize,
    /// Whether the comparison stopped at a near-tie of llama.cpp's (top-2 gap < 0.1).
    stopped_at_tie: bool,
    /// Largest |ours − llama.cpp| over the compared top-5 logits.
    max_err: f32,
    /// Compared logits beyond the README's 0.1, and all compared logits.
    over_readme: (usize, usize),
}

/// Compare one step's logits with llama.cpp's top-5 (within [`LOGIT_TOL`]); returns the
/// errors, `Err` names a mismatch.
fn check_step(
    name: &str,
    i: usize,
    logits: &[f32],
    step: &Value,
    tol: f32,
) -> Result<Vec<f32>, String> {
    let top_ids = ids(&step["topk_ids"]);
    let top: Vec<f32> = step["topk_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let mut errs = Vec::new();
    for (&id, &want) in top_ids.iter().zip(&top) {
        let got = logits[id as usize];
        let err = (got - want).abs();
        if err.is_nan() || err > tol {
            return Err(format!(
                "{name} step {i}: logit of token {id} is {got}, llama.cpp {want}"
            ));
        }
        errs.push(err);
    }
    Ok(errs)
}

/// Greedy decoding of one case through a [`Sequence`], step by step against llama.cpp.
fn run_case(model: &Model, case: &Value, sem: Semantics, tol: f32) -> Result<Agreement, String> {
    let name = case["name"].as_str().unwrap();
    let tok = model.tokenizer().unwrap();
    let prompt = case["prompt"].as_str().unwrap();
    let add_special = case["add_special"].as_bool().unwrap();
    let got = tok.encode(prompt, add_special).unwrap();
    let want = ids(&case["prompt_ids"]);
    if got != want {
        return Err(format!("{name}: prompt ids {got:?}, llama.cpp {want:?}"));
    }
    let steps = case["steps"].as_array().unwrap();
    let mut seq = Sequence::new(model, got.len() + steps.len() + 1, sem);
    let mut logits = seq.feed(&got, false).unwrap().to_vec();
    let mut a = Agreement {
        compared: 0,
        stopped_at_tie: false,
        max_err: 0.0,
        over_readme: (0, 0),
    };
    for (i, step) in steps.iter().enumerate() {
        for e in check_step(name, i, &logits, step, tol)? {
            a.max_err = a.max_err.max(e);
            a.over_readme.0 += usize::from(e > TOL);
            a.over_readme.1 += 1;
        }
        a.compared += 1;
        let top = &step["topk_logits"];
        let gap = top[0].as_f64().unwrap() - top[1].as_f64().unwrap();
        if gap < TOL as f64 {
            a.stopped_at_tie = true;
            break;
        }
        let ours = argmax(&logits) as u32;
        let theirs = step["id"].as_u64().unwrap() as u32;
        if ours != theirs {
            return Err(format!(
                "{name} step {i}: greedy id {ours}, llama.cpp {theirs}"
            ));
        }
        if i + 1 < steps.len() {
            logits = seq.feed(&[ours], false).unwrap().to_vec();
        }
    }
    Ok(a)
}

/// Every case of the reference `file` run greedily with `sem`, logits within `tol` (with the
/// weights repacked as `mllama run` does by default when `repack`).
fn compare_all(file: &str, sem: Semantics, tol: f32, repack: bool) {
    let Some(path) = gguf() else { return };
    let mut model = Model::load(&path).unwrap();
    if repack {
        model.repack();
    }
    let r = reference(file);
    let mut failures = Vec::new();
    for case in r["cases"].as_array().unwrap() {
        match run_case(&model, case, sem, tol) {
            Ok(a) => eprintln!(
                "{:<24} {} steps agree{}, max |Δlogit| {:.4}, {}/{} logits beyond 0.1",
                case["name"].as_str().unwrap(),
                a.compared,
                if a.stopped_at_tie {
                    " (then a near-tie of llama.cpp's)"
                } else {
                    ""
                },
                a.max_err,
                a.over_readme.0,
                a.over_readme.1
            ),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn greedy_decoding_matches_llama_cpp() {
    compare_all(REFERENCE, Semantics::default(), LOGIT_TOL, false);
}

/// The same with the Q4_1 matrices in their repacked layout (x86; its own f32 order).
#[test]
fn greedy_decoding_matches_llama_cpp_repacked() {
    compare_all(REFERENCE, Semantics::default(), LOGIT_TOL, true);
}

/// The same prompts through llama.cpp's most exact attention (flash attention off, f32 KV
/// cache; `scripts/smollm2_llamacpp_refs.py --write 0:f32 …`) against ours with f32 caches. A
/// second llama.cpp configuration, which itself parts from the README's reference at
/// `capital_raw` step 5 where that reference's top-2 gap is 0.26 (see the module docs).
#[test]
fn greedy_decoding_matches_llama_cpp_without_flash_attention() {
    let sem = Semantics {
        cache: CachePrecision::F32,
        ..Semantics::default()
    };
    compare_all(REFERENCE_FA0_F32KV, sem, LOGIT_TOL, false);
}

#[test]
fn text_only_config_and_tied_output() {
    let Some(path) = gguf() else { return };
    let model = Model::load(&path).unwrap();
    let c = &model.text.cfg;
    assert_eq!(model.cfg.arch.name(), "llama");
    assert!(model.vision.is_none() && model.cfg.vision.is_none());
    assert_eq!(
        (c.n_layers, c.hidden, c.n_heads, c.n_kv_heads),
        (30, 576, 9, 3)
    );
    assert_eq!(
        (c.vocab_size, c.embedding_rows, c.ffn),
        (49152, 49152, 1536)
    );
    assert_eq!((c.rope_theta, c.context_length), (100000.0, 8192));
    assert!(c.cross_layers.is_empty() && c.image_token.is_none());
    assert!(model.text.tied_embeddings());
    let tok = model.tokenizer().unwrap();
    assert!(!tok.adds_bos());
    // <|im_end|> (the eos) and <|endoftext|> end generation, as in llama.cpp.
    assert_eq!(tok.eos_ids(), [0, 2]);
}

/// The file's ChatML template renders the two chat prompts llama.cpp was given.
#[test]
fn chatml_template_renders_the_reference_prompts() {
    let Some(path) = gguf() else { return };
    let model = Model::load(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    let mut t = ChatTemplate::new(tok.chat_template().unwrap(), "").unwrap();
    t.string_content = true;
    let r = reference(REFERENCE);
    let case = |name: &str| {
        let cases = r["cases"].as_array().unwrap();
        let c = cases.iter().find(|c| c["name"] == name).unwrap();
        c["prompt"].as_str().unwrap().to_string()
    };
    let simple = [Message::text(
        Role::User,
        "What is the boiling point of water at sea level?",
    )];
    assert_eq!(t.render(&simple, true).unwrap(), case("chat_simple"));
    let two_turns = [
        Message::text(Role::System, "You answer in one short sentence."),
        Message::text(Role::User, "Name a primary color."),
        Message::text(Role::Assistant, "Red is a primary color."),
        Message::text(Role::User, "Name another one."),
    ];
    assert_eq!(
        t.render(&two_turns, true).unwrap(),
        case("chat_system_two_turns")
    );
}

/// A session (what `run` and `chat` drive) on the file: the chat prompt is the reference's, the
/// greedy answer is llama.cpp's until its first near-tie, and images are refused in one line.
#[test]
fn session_answers_like_llama_cpp_and_refuses_images() {
    let Some(path) = gguf() else { return };
    let model = Model::load(&path).unwrap();
    let r = reference(REFERENCE);
    let cases = r["cases"].as_array().unwrap();
    let case = cases.iter().find(|c| c["name"] == "chat_simple").unwrap();
    let mut s = Session::new(model, SessionOptions::default()).unwrap();

    let err = s.add_image("models/demo/example.jpg").unwrap_err();
    assert!(matches!(err, Error::TextOnlyModel { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        !msg.contains('\n') && msg.contains(GGUF) && msg.contains("text-only"),
        "{msg}"
    );
    let bytes =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo/example.jpg"))
            .unwrap();
    assert!(matches!(
        s.add_image_bytes(&bytes, "x.jpg"),
        Err(Error::TextOnlyModel { .. })
    ));

    s.push_user("What is the boiling point of water at sea level?")
        .unwrap();
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };
    let steps = case["steps"].as_array().unwrap();
    let got: Vec<u32> = s
        .generate(&greedy, steps.len(), None)
        .unwrap()
        .map(|p| p.unwrap().id)
        .filter(|&id| id != mllama::Piece::FLUSH)
        .collect();
    assert_eq!(
        s.stats().prefill_tokens,
        case["prompt_ids"].as_array().unwrap().len()
    );
    for (i, step) in steps.iter().enumerate() {
        let top = &step["topk_logits"];
        if top[0].as_f64().unwrap() - top[1].as_f64().unwrap() < TOL as f64 {
            return; // the continuations may part here
        }
        let want = step["id"].as_u64().unwrap() as u32;
        if s.model().tokenizer().unwrap().is_eos(want) {
            assert_eq!(
                got.len(),
                i,
                "the answer should stop at llama.cpp's end token"
            );
            return;
        }
        assert_eq!(got.get(i), Some(&want), "step {i}: {got:?}");
    }
}

fn mllama(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mllama"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `info`, `run` (raw, greedy), `run --image` (refused in one line), `eval` and `bench -m` on
/// the file.
#[test]
fn cli_runs_a_llama_text_gguf() {
    let Some(path) = gguf() else { return };
    let m = path.to_str().unwrap();

    let (ok, out, err) = mllama(&["info", m]);
    assert!(ok, "{err}");
    assert!(
        out.contains("architecture:  llama") && out.contains("tied to token_embd.weight"),
        "{out}"
    );

    // `run --raw` continues the capital prompt as llama.cpp does (first steps: " Paris.\n\n").
    let r = reference(REFERENCE);
    let case = &r["cases"][0];
    assert_eq!(case["name"], "capital_raw");
    let prompt = case["prompt"].as_str().unwrap();
    let (ok, out, err) = mllama(&[
        "run",
        "-m",
        m,
        "--raw",
        "-p",
        prompt,
        "-n",
        "3",
        "--temperature",
        "0",
    ]);
    assert!(ok, "{err}");
    let model = Model::load(&path).unwrap();
    let want = model
        .tokenizer()
        .unwrap()
        .decode(&ids(&serde_json::json!([7042, 30, 198])), true)
        .unwrap();
    assert_eq!(case["steps"][0]["id"], 7042);
    assert!(out.starts_with(&want), "{out:?} vs {want:?}");

    let (ok, _, err) = mllama(&[
        "run",
        "-m",
        m,
        "--image",
        "models/demo/example.jpg",
        "-p",
        "Hi",
    ]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("text-only model"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("e.safetensors");
    let (ok, _, err) = mllama(&[
        "eval",
        "-m",
        m,
        "--prompt",
        prompt,
        "--generate",
        "2",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(std::fs::metadata(&out_path).unwrap().len() > 49152 * 4);
    let (ok, _, err) = mllama(&[
        "eval",
        "-m",
        m,
        "--prompt",
        "Hi <|image|>",
        "--image",
        "models/demo/example.jpg",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("text-only model"), "{err}");

    let (ok, out, err) = mllama(&[
        "bench",
        "-m",
        m,
        "--only",
        "decode",
        "--decode-tokens",
        "2",
        "--prompt-tokens",
        "4",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("tokens/s"), "{out}");
}

/// A `llama` file without its keys or tensors is refused with a message naming what is missing
/// (no SmolLM2 file needed).
#[test]
fn broken_llama_files_name_the_missing_key_or_tensor() {
    use mllama::format::gguf::{GgufWriter, Value as V};
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty-llama.gguf");
    GgufWriter::new("llama")
        .write_file::<Error>(&empty, |_, _, _| Ok(()))
        .unwrap();
    let e = Model::load(&empty).err().unwrap().to_string();
    assert!(
        e.contains("empty-llama.gguf") && e.contains("llama.embedding_length"),
        "{e}"
    );

    // Keys but no tensors: the embedding table is named.
    let keys_only = tmp.path().join("keys-only.gguf");
    let mut w = GgufWriter::new("llama");
    for (k, v) in [
        ("llama.embedding_length", 64u32),
        ("llama.attention.head_count", 4),
        ("llama.block_count", 2),
        ("llama.feed_forward_length", 128),
        ("llama.context_length", 256),
    ] {
        w.add(k, V::U32(v)).unwrap();
    }
    w.write_file::<Error>(&keys_only, |_, _, _| Ok(())).unwrap();
    let e = Model::load(&keys_only).err().unwrap().to_string();
    assert!(e.contains("missing tensor token_embd.weight"), "{e}");
}
