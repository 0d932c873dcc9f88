//! `mllama run` and a piped `mllama chat` on the demo model: the streamed text must equal greedy
//! decoding through `mllama eval` of the same rendered conversation. And every kind of bad input
//! gives a one-line error and a non-zero exit, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mllama::text::chat::{ChatTemplate, Message, Part, Role};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo() -> PathBuf {
    root().join("models/demo/mllama-demo-q4_0.gguf")
}

fn mllama(args: &[&std::ffi::OsStr], stdin: Option<&str>) -> (bool, String, String) {
    // Each run with an empty vision cache of its own (an image is encoded, not read from disk).
    let cache = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_mllama"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.env("XDG_CACHE_HOME", cache.path());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Greedy answer to `messages` (rendered with the model's template) through `mllama eval`,
/// cut at the first end-of-turn token, decoded as the streaming output would be.
fn eval_answer(messages: &[Message], images: &[&Path], n: usize) -> String {
    let model = mllama::Model::load(demo()).unwrap();
    let tok = model.tokenizer().unwrap();
    let t = ChatTemplate::new(tok.chat_template().unwrap(), "<|begin_of_text|>").unwrap();
    let prompt = t.render(messages, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e.safetensors");
    let mut args: Vec<std::ffi::OsString> = vec![
        "eval".into(),
        "-m".into(),
        demo().into(),
        "--prompt".into(),
        prompt.into(),
    ];
    args.extend([
        "--generate".into(),
        n.to_string().into(),
        "--out".into(),
        out.clone().into(),
    ]);
    for im in images {
        args.push("--image".into());
        args.push(im.into());
    }
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    let (ok, _, err) = mllama(&a, None);
    assert!(ok, "eval: {err}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<u32> = st
        .tensor("greedy_ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let end = ids
        .iter()
        .position(|&i| tok.is_eos(i) || model.cfg.generation.eos_ids.contains(&i))
        .unwrap_or(ids.len());
    tok.decode(&ids[..end], true).unwrap()
}

fn user(text: &str, images: usize) -> Message {
    let mut content: Vec<Part> = (0..images).map(|_| Part::Image).collect();
    content.push(Part::Text { text: text.into() });
    Message {
        role: Role::User,
        content,
    }
}

fn assistant(text: &str) -> Message {
    Message::text(Role::Assistant, text)
}

/// A second test image, different from the demo one.
fn second_image(dir: &Path) -> PathBuf {
    let p = root().join("tests/fixtures/models/base/cases/square_jpeg_chat/square.jpg");
    let q = dir.join("second.jpg");
    std::fs::copy(p, &q).unwrap();
    q
}

#[test]
fn run_streams_greedy_text_like_eval() {
    let img = root().join("models/demo/example.jpg");
    let q = "What is in this picture?";
    let (ok, out, err) = mllama(
        &[
            "run".as_ref(),
            "-m".as_ref(),
            demo().as_os_str(),
            "--image".as_ref(),
            img.as_os_str(),
            "-p".as_ref(),
            q.as_ref(),
            "-n".as_ref(),
            "16".as_ref(),
            "--temperature".as_ref(),
            "0".as_ref(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(!out.is_empty());
    assert_eq!(out, eval_answer(&[user(q, 1)], &[&img], 16));

    // The prompt from stdin gives the same answer; --stats reports on stderr only.
    let (ok, out2, err) = mllama(
        &[
            "run".as_ref(),
            "-m".as_ref(),
            demo().as_os_str(),
            "--image".as_ref(),
            img.as_os_str(),
            "-p".as_ref(),
            "-".as_ref(),
            "-n".as_ref(),
            "16".as_ref(),
            "--temperature".as_ref(),
            "0".as_ref(),
            "--stats".as_ref(),
        ],
        Some(q),
    );
    assert!(ok, "{err}");
    assert_eq!(out2, out);
    for needle in ["load", "vision tower", "prefill", "decode", "peak RSS"] {
        assert!(err.contains(needle), "--stats output lacks {needle}: {err}");
    }

    // Without -m and --image a question goes to the demo model about its demo picture.
    let q2 = "How many shapes are there?";
    let (ok, out3, err) = mllama(
        &[
            "run".as_ref(),
            "-p".as_ref(),
            q2.as_ref(),
            "-n".as_ref(),
            "16".as_ref(),
            "--temperature".as_ref(),
            "0".as_ref(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(err.contains("demo picture"), "{err}");
    assert_eq!(out3, eval_answer(&[user(q2, 1)], &[&img], 16));

    // Same seed, same sampled text; another seed, (almost surely) another text.
    let sampled = |seed: &str| {
        let (ok, out, err) = mllama(
            &[
                "run".as_ref(),
                "-m".as_ref(),
                demo().as_os_str(),
                "-p".as_ref(),
                "Tell me a story.".as_ref(),
                "-n".as_ref(),
                "24".as_ref(),
                "--temperature".as_ref(),
                "1.0".as_ref(),
                "--seed".as_ref(),
                seed.as_ref(),
            ],
            None,
        );
        assert!(ok, "{err}");
        out
    };
    assert_eq!(sampled("7"), sampled("7"));
    assert_ne!(sampled("7"), sampled("8"));
}

#[test]
fn piped_chat_two_images_and_reset_match_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let a = root().join("models/demo/example.jpg");
    let b = second_image(tmp.path());
    let script = format!(
        "/image {}\nDescribe it.\n/image {}\nAnd this one?\n/reset\n/image {}\nWhat about this?\n/quit\n",
        a.display(),
        b.display(),
        b.display()
    );
    let (ok, out, err) = mllama(
        &[
            "chat".as_ref(),
            "-m".as_ref(),
            demo().as_os_str(),
            "-n".as_ref(),
            "12".as_ref(),
            "--temperature".as_ref(),
            "0".as_ref(),
            "--stats".as_ref(),
        ],
        Some(&script),
    );
    assert!(ok, "{err}");
    let a1 = eval_answer(&[user("Describe it.", 1)], &[&a], 12);
    let a2 = eval_answer(
        &[
            user("Describe it.", 1),
            assistant(&a1),
            user("And this one?", 1),
        ],
        &[&a, &b],
        12,
    );
    let a3 = eval_answer(&[user("What about this?", 1)], &[&b], 12);
    assert_eq!(out, format!("{a1}\n{a2}\n{a3}\n"));
    // The second use of image b came from the memory cache: two vision runs in all, one hit.
    let last_stats = &err[err.rfind("load ").unwrap()..];
    assert_eq!(last_stats.matches("cache=miss").count(), 2, "{err}");
    assert_eq!(last_stats.matches("cache=memory").count(), 1, "{err}");
}

fn expect_error(args: &[&str], stdin: Option<&str>, needle: &str) {
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
    let (ok, out, err) = mllama(&a, stdin);
    assert!(!ok, "{args:?} succeeded: {out}");
    assert_eq!(
        err.lines().filter(|l| !l.starts_with("note:")).count(),
        1,
        "{args:?}: {err}"
    );
    assert!(
        err.contains("error") && err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = demo();
    let demo_s = d.to_str().unwrap();
    let txt = tmp.path().join("notes.txt");
    std::fs::write(&txt, "not an image").unwrap();
    let empty = tmp.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let corrupt = tmp.path().join("corrupt.jpg");
    let jpg = std::fs::read(root().join("models/demo/example.jpg")).unwrap();
    std::fs::write(&corrupt, &jpg[..jpg.len() / 2]).unwrap();
    let not_gguf = tmp.path().join("model.gguf");
    std::fs::write(&not_gguf, b"definitely not GGUF").unwrap();
    let other = tmp.path().join("qwen2.gguf");
    mllama::format::gguf::GgufWriter::new("qwen2")
        .write_file::<mllama::Error>(&other, |_, _, _| Ok(()))
        .unwrap();
    let img = root().join("models/demo/example.jpg");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (txt, empty, corrupt, not_gguf, other, img) = (
        s(&txt),
        s(&empty),
        s(&corrupt),
        s(&not_gguf),
        s(&other),
        s(&img),
    );

    expect_error(
        &["run", "-m", "/no/such/model.gguf", "-p", "hi"],
        None,
        "/no/such/model.gguf",
    );
    expect_error(
        &["run", "-m", &not_gguf, "-p", "hi"],
        None,
        "not a GGUF file",
    );
    expect_error(
        &["run", "-m", &other, "-p", "hi"],
        None,
        "not Llama 3.2 Vision",
    );
    expect_error(
        &["run", "-m", demo_s, "-p", "hi", "--image", "/no/pic.png"],
        None,
        "/no/pic.png",
    );
    expect_error(
        &["run", "-m", demo_s, "-p", "hi", "--image", &empty],
        None,
        "empty.jpg",
    );
    expect_error(
        &["run", "-m", demo_s, "-p", "hi", "--image", &corrupt],
        None,
        "corrupt.jpg",
    );
    expect_error(
        &["run", "-m", demo_s, "-p", "hi", "--image", &txt],
        None,
        "notes.txt",
    );
    // More images than <|image|> slots: raw prompt with one slot, two images; a chat prompt
    // with more markers than images.
    expect_error(
        &[
            "run",
            "-m",
            demo_s,
            "--raw",
            "-p",
            "<|image|>Describe.",
            "--image",
            &img,
            "--image",
            &img,
        ],
        None,
        "1 <|image|> tokens but 2 images",
    );
    expect_error(
        &[
            "run",
            "-m",
            demo_s,
            "-p",
            "<|image|> vs <|image|>",
            "--image",
            &img,
        ],
        None,
        "2 <|image|> markers",
    );
    // Over-long prompt for the context.
    let long = "word ".repeat(200);
    expect_error(
        &["run", "-m", demo_s, "--ctx", "64", "-p", &long],
        None,
        "prompt too long",
    );
    // Invalid sampling values: each error names its flag.
    for (flag, value) in [
        ("--temperature", "-1"),
        ("--top-p", "1.5"),
        ("--min-p", "2"),
        ("--repeat-penalty", "0"),
        ("--top-k", "-3"),
        ("--max-tokens", "0"),
    ] {
        expect_error(&["run", "-m", demo_s, "-p", "hi", flag, value], None, flag);
    }
    expect_error(&["run", "-m", demo_s, "-p", ""], None, "empty");
    // An unknown flag is a one-line error too.
    expect_error(&["run", "--no-such-flag"], None, "--no-such-flag");

    // In chat, a bad image is reported and the conversation goes on.
    let (ok, out, err) = mllama(
        &[
            "chat".as_ref(),
            "-m".as_ref(),
            demo_s.as_ref(),
            "-n".as_ref(),
            "4".as_ref(),
        ],
        Some(&format!("/image {txt}\nhello\n/quit\n")),
    );
    assert!(ok, "{err}");
    assert!(err.contains("notes.txt"), "{err}");
    assert!(!out.is_empty());
}

/// The library returns its `MLLAMA_SIMD` warning ([`mllama::kernels::path_warning`]); the binary
/// prints it once, and still runs on the best path.
#[test]
fn unknown_simd_path_warns_once_from_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_mllama"))
        .args(["run", "-m"])
        .arg(demo())
        .args(["-p", "hi", "-n", "1"])
        .env("MLLAMA_SIMD", "bogus")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("MLLAMA_SIMD")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("warning: MLLAMA_SIMD=bogus: unknown path"),
        "{err}"
    );
}
