//! `mllama eval` end to end: prompt text and image files in, HF's numbers out. Covers the
//! tokenizer (special tokens in text, processor BOS rules), image decoding and preprocessing, the
//! vision tower, the decoder and greedy decoding through the caches — and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn eval(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mllama"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Case {
    model_dir: PathBuf,
    dir: PathBuf,
    json: serde_json::Value,
}

/// Every fixture case, sorted and asserted to be the expected set ([`fixture_cases`]).
fn cases() -> Vec<Case> {
    fixture_cases()
        .into_iter()
        .map(|c| {
            let path = c.dir.join("case.json");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Case {
                json: serde_json::from_str(&text).unwrap(),
                model_dir: c.model_dir,
                dir: c.dir,
            }
        })
        .collect()
}

fn run_case(c: &Case, gguf: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let prompt = c.json["prompt"].as_str().unwrap();
    let mut args: Vec<std::ffi::OsString> = vec![
        "-m".into(),
        gguf.into(),
        "--prompt".into(),
        prompt.into(),
        "--generate".into(),
        "16".into(),
        "--out".into(),
        out.into(),
    ];
    if c.json["add_special_tokens"].as_bool() == Some(true) {
        args.push("--add-bos".into());
    }
    for im in c.json["images"].as_array().unwrap() {
        args.push("--image".into());
        args.push(c.dir.join(im["file"].as_str().unwrap()).into());
    }
    for e in extra {
        args.push(e.into());
    }
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    eval(&a)
}

#[test]
fn eval_matches_hf_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let all = cases();
    assert!(all.len() >= 9);
    for c in &all {
        let gguf = converted(&c.model_dir, "f32");
        let out = tmp.path().join("out.safetensors");
        let (ok, err) = run_case(c, &gguf, &out, &[]);
        let name = c.dir.display().to_string();
        assert!(ok, "{name}: {err}");
        let ours = load_safetensors(&out);
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        assert_eq!(
            ours["input_ids"].i, reference["input_ids"].i,
            "{name}: input_ids"
        );
        assert_eq!(
            ours["greedy_ids"].i, reference["greedy_ids"].i,
            "{name}: greedy ids"
        );
        let dl = max_abs_diff(&ours["logits"].f, &reference["logits"].f);
        assert!(dl <= 1e-4, "{name}: logits max abs diff {dl}");
        let mut line = format!("{name}: logits {dl:.2e}");
        if let Some(rpv) = reference.get("pixel_values") {
            assert_eq!(
                ours["aspect_ratio_ids"].i, reference["aspect_ratio_ids"].i,
                "{name}: aspect_ratio_ids"
            );
            assert_eq!(
                ours["aspect_ratio_mask"].i, reference["aspect_ratio_mask"].i,
                "{name}: aspect_ratio_mask"
            );
            let dp = max_abs_diff(&ours["pixel_values"].f, &rpv.f);
            let dc = max_abs_diff(
                &ours["cross_attention_states"].f,
                &reference["cross_attention_states"].f,
            );
            assert!(dp <= 1e-5, "{name}: pixel_values max abs diff {dp}");
            assert!(
                dc <= 1e-4,
                "{name}: cross_attention_states max abs diff {dc}"
            );
            line += &format!(", pixel_values {dp:.2e}, cross states {dc:.2e}");

            // Meta semantics through the CLI flag.
            let (ok, err) = run_case(c, &gguf, &out, &["--meta-cross-attn"]);
            assert!(ok, "{name}: {err}");
            let meta = load_safetensors(&out);
            assert_eq!(
                meta["greedy_ids"].i, reference["meta_rowmask.greedy_ids"].i,
                "{name}: meta greedy ids"
            );
        }
        report.push(line);
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn eval_bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cases()
        .into_iter()
        .find(|c| c.dir.ends_with("square_jpeg_chat"))
        .unwrap();
    let gguf = converted(&c.model_dir, "q8_0");
    let out = tmp.path().join("o.safetensors");
    let img = c.dir.join("square.jpg");
    let not_image = tmp.path().join("notes.txt");
    std::fs::write(&not_image, "hello").unwrap();
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let truncated = tmp.path().join("cut.jpg");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let not_gguf = tmp.path().join("x.gguf");
    std::fs::write(&not_gguf, b"not a model at all").unwrap();
    // A GGUF of another architecture.
    let other = tmp.path().join("qwen2.gguf");
    {
        let w = mllama::format::gguf::GgufWriter::new("qwen2");
        w.write_file::<mllama::Error>(&other, |_, _, _| Ok(()))
            .unwrap();
    }
    let p = "<|image|>Describe.";
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (
            vec![
                "-m".as_ref(),
                "/no/model.gguf".as_ref(),
                "--prompt".as_ref(),
                "hi".as_ref(),
            ],
            "/no/model.gguf",
        ),
        (
            vec![
                "-m".as_ref(),
                not_gguf.as_os_str(),
                "--prompt".as_ref(),
                "hi".as_ref(),
            ],
            "not a GGUF file",
        ),
        (
            vec![
                "-m".as_ref(),
                other.as_os_str(),
                "--prompt".as_ref(),
                "hi".as_ref(),
            ],
            "\"qwen2\" model, not Llama 3.2 Vision",
        ),
        (
            vec![
                "-m".as_ref(),
                gguf.as_os_str(),
                "--prompt".as_ref(),
                p.as_ref(),
            ],
            "1 <|image|> tokens but 0 images",
        ),
        (
            vec![
                "-m".as_ref(),
                gguf.as_os_str(),
                "--prompt".as_ref(),
                "hi".as_ref(),
                "--image".as_ref(),
                img.as_os_str(),
            ],
            "0 <|image|> tokens but 1 images",
        ),
        (
            vec![
                "-m".as_ref(),
                gguf.as_os_str(),
                "--prompt".as_ref(),
                p.as_ref(),
                "--image".as_ref(),
                "/no/pic.png".as_ref(),
            ],
            "/no/pic.png",
        ),
        (
            vec![
                "-m".as_ref(),
                gguf.as_os_str(),
                "--prompt".as_ref(),
                p.as_ref(),
                "--image".as_ref(),
                not_image.as_os_str(),
            ],
            "notes.txt",
        ),
        (
            vec![
                "-m".as_ref(),
                gguf.as_os_str(),
                "--prompt".as_ref(),
                p.as_ref(),
                "--image".as_ref(),
                empty.as_os_str(),
            ],
            "empty.png",
        ),
        (
            vec![
                "-m".as_ref(),
                gguf.as_os_str(),
                "--prompt".as_ref(),
                p.as_ref(),
                "--image".as_ref(),
                truncated.as_os_str(),
            ],
            "cut.jpg",
        ),
    ];
    for (mut args, needle) in cases {
        args.extend(["--out".as_ref(), out.as_os_str()]);
        let (ok, err) = eval(&args);
        assert!(!ok, "succeeded: {args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!err.contains("panicked"));
        assert!(!out.exists(), "output written despite the error");
    }
}

/// `--kv-cache`: `auto` keeps an F32 model's caches in f32 (the HF match above) and stores a
/// quantized model's in f16; `f32` and `f16` force either, and the logits move accordingly.
#[test]
fn kv_cache_flag_sets_the_cache_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cases()
        .into_iter()
        .find(|c| !c.json["images"].as_array().unwrap().is_empty())
        .expect("a case with an image");
    let reference = load_safetensors(&c.dir.join("reference.safetensors"));
    let out = tmp.path().join("out.safetensors");
    let logits = |gguf: &Path, extra: &[&str]| -> Vec<f32> {
        let (ok, err) = run_case(&c, gguf, &out, extra);
        assert!(ok, "{extra:?}: {err}");
        load_safetensors(&out)["logits"].f.clone()
    };
    let f32_model = converted(&c.model_dir, "f32");
    let auto = logits(&f32_model, &[]);
    assert_eq!(auto, logits(&f32_model, &["--kv-cache", "f32"]));
    let exact = max_abs_diff(&auto, &reference["logits"].f);
    let half = max_abs_diff(
        &logits(&f32_model, &["--kv-cache", "f16"]),
        &reference["logits"].f,
    );
    assert!(exact <= 1e-4, "f32 caches: {exact}");
    assert!(
        half > exact && half <= 1e-2,
        "f16 caches should round a little: {half} vs {exact}"
    );

    // Q8_0: the activations are re-quantized to 8 bits at every matmul, so a cache rounding can
    // flip an activation's rounding and move the logits by a quantum; compare each run's error
    // against HF (relative L2), which the Q8_0 weights dominate either way.
    let q8 = converted(&c.model_dir, "q8_0");
    let auto = logits(&q8, &[]);
    assert_eq!(auto, logits(&q8, &["--kv-cache", "f16"]));
    let full = logits(&q8, &["--kv-cache", "f32"]);
    assert_ne!(auto, full, "Q8_0: f16 and f32 caches gave identical logits");
    let rel = |a: &[f32]| {
        let r = &reference["logits"].f;
        let num: f64 = a.iter().zip(r).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = r.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    let (e16, e32) = (rel(&auto), rel(&full));
    assert!(
        e16 <= 0.05 && e16 <= 1.5 * e32 + 1e-3,
        "Q8_0 relative L2 vs HF: f16 caches {e16}, f32 caches {e32}"
    );
    let d = max_abs_diff(&auto, &full);
    eprintln!(
        "f32 model: f32 caches {exact:.2e}, f16 caches {half:.2e}; Q8_0 rel. L2 vs HF: f16 caches \
         {e16:.4}, f32 caches {e32:.4} (max abs diff between them {d:.2e})"
    );
}
