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

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut roots = vec![fixtures().join("models")];
    let shared = root().join("../shared/fixtures");
    if shared.join("tiny-mllama/model/config.json").exists() {
        roots.push(shared);
    }
    for r in roots {
        let mut models: Vec<PathBuf> = std::fs::read_dir(&r)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        models.sort();
        for m in models {
            if !m.join("model/config.json").exists() {
                continue;
            }
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(m.join("cases"))
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect();
            dirs.sort();
            for dir in dirs {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap())
                        .unwrap();
                out.push(Case {
                    model_dir: m.join("model"),
                    dir,
                    json,
                });
            }
        }
    }
    out
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
    let other = tmp.path().join("llama.gguf");
    {
        let w = mllama::gguf::GgufWriter::new("llama");
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
            "\"llama\" model, not Llama 3.2 Vision",
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
