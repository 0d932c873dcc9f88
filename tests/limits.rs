//! Resource limits: hostile inputs are refused up front with a clear error, before anything large
//! is allocated. Each case runs the `mllama` binary under GNU time and checks both the message and
//! the peak resident memory of the process.

use std::path::{Path, PathBuf};
use std::process::Command;

use mllama::format::gguf::{Array, GgufWriter, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo() -> String {
    root()
        .join("models/demo/mllama-demo-q4_0.gguf")
        .display()
        .to_string()
}

/// Peak RSS a plain run of the demo model needs is ~120 MB; a refused hostile input must stay
/// well below what honouring it would take.
const SMALL_RSS_KB: u64 = 400 * 1024;

/// Run `mllama ARGS` under `/usr/bin/time -f %M`; returns (success, stderr without the time
/// line, peak RSS in KiB).
fn run(args: &[&str]) -> (bool, String, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time (Debian package `time`) is needed; .ci/run installs it"
    );
    // An empty vision cache per run: an image cached by an earlier run is not decoded again,
    // which would hide the decoder's memory.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(time)
        .args(["-f", "PEAK_RSS_KB=%M"])
        .arg(env!("CARGO_BIN_EXE_mllama"))
        .args(args)
        .env("XDG_CACHE_HOME", cache.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut rss = 0;
    let mut lines = Vec::new();
    for l in err.lines() {
        if let Some(v) = l.strip_prefix("PEAK_RSS_KB=") {
            rss = v.trim().parse().unwrap();
        } else if !l.starts_with("Command exited") && !l.starts_with("note:") {
            lines.push(l.to_string());
        }
    }
    (out.status.success(), lines.join("\n"), rss)
}

fn refused(args: &[&str], needle: &str) {
    let (ok, err, rss) = run(args);
    assert!(!ok, "{args:?} was accepted");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(
        rss > 0 && rss < SMALL_RSS_KB,
        "{args:?}: peak RSS {rss} KiB"
    );
    eprintln!("{needle}: refused, peak RSS {} MiB — {err}", rss / 1024);
}

#[test]
fn huge_image_header_is_refused_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    // A PNG whose header declares 100000 × 100000 pixels (40 GB decoded) and has no data.
    let p = tmp.path().join("huge.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    std::fs::write(&p, &png).unwrap();
    refused(
        &[
            "run",
            "-m",
            &demo(),
            "--image",
            p.to_str().unwrap(),
            "-p",
            "hi",
        ],
        "100000x100000",
    );
}

#[test]
fn decompression_bomb_is_refused() {
    // 97 kB of PNG that would inflate to 10000 × 10000 pixels (300 MB as RGB).
    let p = root().join("tests/fixtures/limits/bomb_10000x10000.png");
    refused(
        &[
            "run",
            "-m",
            &demo(),
            "--image",
            p.to_str().unwrap(),
            "-p",
            "hi",
        ],
        "10000x10000",
    );
    // Raising the limit lets it through (and then it costs real memory): the flag works.
    let (ok, err, rss) = run(&[
        "run",
        "-m",
        &demo(),
        "--image",
        p.to_str().unwrap(),
        "-p",
        "hi",
        "-n",
        "1",
        "--max-image-pixels",
        "100000000",
    ]);
    assert!(ok, "{err}");
    assert!(
        rss > 300 * 1024,
        "decoding the bomb for real took only {rss} KiB?"
    );
}

/// The file-size limit, and raising it.
#[test]
fn image_file_size_limit_and_flag() {
    let img = root().join("models/demo/example.jpg");
    let img = img.to_str().unwrap();
    refused(
        &[
            "run",
            "-m",
            &demo(),
            "--image",
            img,
            "-p",
            "hi",
            "--max-image-bytes",
            "1000",
        ],
        "--max-image-bytes",
    );
    let (ok, err, _) = run(&["run", "-m", &demo(), "--image", img, "-p", "hi", "-n", "1"]);
    assert!(ok, "{err}");
}

/// A GGUF whose tensor table claims far more data than the file holds.
#[test]
fn gguf_claiming_more_than_the_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("liar.gguf");
    let mut w = GgufWriter::new("mllama");
    w.add_tensor(
        "token_embd.weight",
        &[1 << 20, 1 << 12],
        mllama::GgmlType::F32,
    )
    .unwrap();
    // Write the header only: the 16 GiB of data are not there.
    let mut bytes = Vec::new();
    let _ = w.write::<_, mllama::GgufError>(&mut bytes, |_, _, sink| {
        std::io::Write::write_all(sink, &[0u8; 64])?;
        Err(mllama::GgufError::Writer("stop".into()))
    });
    std::fs::write(&p, &bytes).unwrap();
    refused(
        &["run", "-m", p.to_str().unwrap(), "-p", "hi"],
        "lies outside the file",
    );
    refused(&["info", p.to_str().unwrap()], "lies outside the file");
}

/// A tokenizer vocabulary of absurd size: a count larger than the file (refused by the reader
/// before allocating), and a real but oversized vocabulary (refused by the tokenizer limit).
#[test]
fn absurd_vocabulary_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Count claims 2^40 strings.
    let p = tmp.path().join("vocab-count.gguf");
    let mut w = GgufWriter::new("mllama");
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()))
        .unwrap();
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into(); 3])),
    )
    .unwrap();
    let mut bytes = Vec::new();
    w.write::<_, mllama::GgufError>(&mut bytes, |_, _, _| Ok(()))
        .unwrap();
    let needle = b"tokenizer.ggml.tokens\x09\x00\x00\x00\x08\x00\x00\x00";
    let at = bytes
        .windows(needle.len())
        .position(|x| x == needle)
        .unwrap()
        + needle.len();
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    refused(&["info", p.to_str().unwrap()], "cannot fit");

    // Two million real one-character tokens: a valid file, refused by the vocabulary limit.
    let p = tmp.path().join("vocab-big.gguf");
    let f = mllama::format::gguf::GgufFile::open(root().join("models/demo/mllama-demo-q4_0.gguf"))
        .unwrap();
    let mut w = GgufWriter::empty();
    for (k, v) in f.metadata() {
        let v = match k.as_str() {
            "tokenizer.ggml.tokens" => Value::Array(Array::String(
                (0..2_000_000).map(|i| format!("t{i}")).collect(),
            )),
            "tokenizer.ggml.token_type" => Value::Array(Array::I32(vec![1; 2_000_000])),
            _ => v.clone(),
        };
        w.add(k, v).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor(&t.name, &t.shape(), t.ty).unwrap();
    }
    w.write_file::<mllama::Error>(&p, |_, t, sink| {
        std::io::Write::write_all(sink, f.view(f.tensor_info(&t.name).unwrap()).data)
            .map_err(mllama::GgufError::from)?;
        Ok(())
    })
    .unwrap();
    let (ok, err, _) = run(&["run", "-m", p.to_str().unwrap(), "-p", "hi"]);
    assert!(
        !ok && err.contains("vocabulary") && err.contains("limit"),
        "{err}"
    );
    // The library says which limit, the count and the maximum.
    let f = mllama::format::gguf::GgufFile::open(&p).unwrap();
    match mllama::text::tokenizer::Tokenizer::from_gguf(&f) {
        Err(mllama::Error::LimitExceeded {
            limit: mllama::Limit::Vocabulary,
            value: 2_000_000,
            max,
            ..
        }) => assert_eq!(max, mllama::text::tokenizer::MAX_VOCAB as u64),
        other => panic!("expected the vocabulary limit, got {:?}", other.err()),
    }
}

/// A context whose KV cache does not fit the memory budget is refused before it is allocated.
#[test]
fn context_larger_than_memory_is_refused() {
    refused(
        &[
            "run",
            "-m",
            &demo(),
            "-p",
            "hi",
            "--ctx",
            "131072",
            "--max-memory-mb",
            "16",
        ],
        "--ctx 131072",
    );
    // The model's limit.
    refused(
        &["run", "-m", &demo(), "-p", "hi", "--ctx", "100000000"],
        "at most",
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// `mllama` never writes into the model file or next to it: run, chat and info on a read-only
/// copy in its own directory leave the directory exactly as it was.
#[test]
fn model_file_and_directory_are_left_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models");
    std::fs::create_dir(&dir).unwrap();
    let model = dir.join("m.gguf");
    std::fs::copy(demo(), &model).unwrap();
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&model).unwrap();
    let mtime = std::fs::metadata(&model).unwrap().modified().unwrap();
    let image = root().join("models/demo/example.jpg");
    let m = model.to_str().unwrap();
    let (ok, err, _) = run(&[
        "run",
        "-m",
        m,
        "--image",
        image.to_str().unwrap(),
        "-p",
        "hi",
        "-n",
        "4",
    ]);
    assert!(ok, "{err}");
    let (ok, err, _) = run(&["info", m]);
    assert!(ok, "{err}");
    let script = tmp.path().join("script.txt");
    std::fs::write(
        &script,
        format!("/image {}\nwhat is this?\n/quit\n", image.display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mllama"))
        .args(["chat", "-m", m, "-n", "4"])
        .stdin(std::fs::File::open(&script).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("m.gguf")]);
    assert_eq!(
        std::fs::metadata(&model).unwrap().modified().unwrap(),
        mtime
    );
    assert!(
        std::fs::read(&model).unwrap() == before,
        "model file changed"
    );
}

/// The same limits reached through the library name the library's settings too, not only the
/// CLI flags.
#[test]
fn library_errors_name_the_session_options() {
    use mllama::{Model, Session, SessionOptions};
    let model = std::sync::Arc::new(Model::load(demo()).unwrap());
    let opts = SessionOptions {
        ctx: Some(131072),
        max_memory: Some(16 << 20),
        ..Default::default()
    };
    let err = Session::new(model.clone(), opts)
        .err()
        .expect("a 16 MiB budget");
    match &err {
        mllama::Error::KvMemory {
            ctx,
            needed,
            budget,
            max_ctx,
            ..
        } => {
            assert_eq!((*ctx, *budget), (131072, 16 << 20), "{err:?}");
            assert!(needed > budget && *max_ctx < *ctx, "{err:?}");
        }
        other => panic!("expected Error::KvMemory, got {other:?}"),
    }
    let err = err.to_string();
    for want in [
        "KV cache",
        "SessionOptions::ctx",
        "SessionOptions::max_memory",
    ] {
        assert!(err.contains(want), "{want:?} missing: {err}");
    }
    let mut opts = SessionOptions::default();
    opts.image_limits.max_bytes = 100;
    let mut s = Session::new(model, opts).unwrap();
    let err = s
        .add_image(root().join("models/demo/example.jpg"))
        .expect_err("a 100-byte image limit");
    assert!(
        matches!(
            err,
            mllama::Error::LimitExceeded {
                limit: mllama::Limit::ImageBytes,
                max: 100,
                ..
            }
        ),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("ImageLimits::max_bytes"), "{err}");
}
