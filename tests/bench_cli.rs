//! `mllama bench` from the command line: the JSON keys issue 4 promises (present when their part
//! ran, absent when it did not), the text report, a real GGUF through `-m`, and clear errors for
//! bad arguments. Speeds are not asserted (the machine is shared); only that they are measured.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mllama"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bench_json(args: &[&str]) -> serde_json::Map<String, Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = bench(&all);
    assert!(ok, "bench {args:?} failed: {err}");
    match serde_json::from_str::<Value>(out.trim()) {
        Ok(Value::Object(m)) => m,
        other => panic!("bench {args:?}: not one JSON object: {other:?}\n{out}"),
    }
}

/// A finite positive number under `key`.
fn positive(m: &serde_json::Map<String, Value>, key: &str) -> f64 {
    let v = m
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("missing number {key}: {m:?}"));
    assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    v
}

const ALWAYS: [&str; 3] = [
    "weight_bytes_per_token",
    "read_bandwidth_gbs",
    "peak_rss_bytes",
];
const DECODE: [&str; 3] = [
    "decode_tokens_per_s",
    "effective_bandwidth_gbs",
    "decode_paired_fraction",
];

#[test]
fn json_has_every_key_of_the_parts_run() {
    let m = bench_json(&[
        "--synthetic",
        "tiny",
        "--type",
        "q4_0",
        "--prompt-tokens",
        "8",
        "--decode-tokens",
        "3",
    ]);
    for k in ALWAYS.iter().chain(&DECODE).chain(&[
        "prefill_tokens_per_s",
        "vision_ms_per_image",
        "cross_kv_ms",
    ]) {
        positive(&m, k);
    }
    // Consistent figures: bandwidth = bytes per token × tokens/s.
    let bw = positive(&m, "effective_bandwidth_gbs");
    let want = positive(&m, "weight_bytes_per_token") * positive(&m, "decode_tokens_per_s") / 1e9;
    assert!((bw - want).abs() <= 1e-9 * want.max(1.0), "{bw} vs {want}");
    assert_eq!(m["simd"].as_str(), Some(mllama::kernels::simd_name()));
}

#[test]
fn only_decode_omits_the_other_parts() {
    let m = bench_json(&[
        "--synthetic",
        "tiny",
        "--type",
        "q8_0",
        "--only",
        "decode",
        "--decode-tokens",
        "2",
    ]);
    for k in ALWAYS.iter().chain(&DECODE) {
        positive(&m, k);
    }
    for k in [
        "vision_ms_per_image",
        "prefill_tokens_per_s",
        "vision_gflops",
    ] {
        assert!(!m.contains_key(k), "--only decode printed {k}");
    }
}

#[test]
fn real_gguf_and_text_report() {
    let demo = root().join("models/demo/mllama-demo-q4_0.gguf");
    let (ok, out, err) = bench(&[
        "-m",
        demo.to_str().unwrap(),
        "--only",
        "decode",
        "--decode-tokens",
        "2",
        "--prompt-tokens",
        "4",
    ]);
    assert!(ok, "{err}");
    for want in [
        "read bandwidth",
        "tokens/s",
        "of the read bandwidth probed beside each step",
        "peak RSS",
    ] {
        assert!(out.contains(want), "report lacks {want:?}:\n{out}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let missing = root().join("no/such/model.gguf");
    let cases: [(&[&str], &str); 4] = [
        (&["--synthetic", "7b"], "7b"),
        (&["--synthetic", "tiny", "--type", "q5_k"], "q5_k"),
        (&["-m", missing.to_str().unwrap()], "model.gguf"),
        (
            &["--synthetic", "tiny", "--only", "everything"],
            "everything",
        ),
    ];
    for (args, names) in cases {
        let (ok, out, err) = bench(args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(
            err.to_lowercase().contains(names),
            "{args:?}: error does not name {names:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?} panicked: {err}"
        );
        assert!(out.is_empty(), "{args:?} printed a partial report: {out}");
    }
}

#[test]
fn every_file_type_builds_its_mix_and_decodes() {
    for ty in [
        "q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q4_1", "q5_0", "q5_1",
    ] {
        let m = bench_json(&[
            "--synthetic",
            "tiny",
            "--type",
            ty,
            "--only",
            "decode",
            "--decode-tokens",
            "2",
        ]);
        positive(&m, "decode_tokens_per_s");
        let model = m["model"].as_str().unwrap_or_default();
        assert!(model.contains(&format!("text {ty}")), "{model}");
    }
}
