//! The `quantize` binary end to end: good conversions of a synthetic checkpoint for every type,
//! and every kind of bad input giving a one-line error, a non-zero exit and no output file.

use std::path::{Path, PathBuf};
use std::process::Command;

use mllama::format::gguf::GgufFile;
use mllama::GgmlType;
use mllama_quantize::synthetic::{write_checkpoint, SynthDims};

fn quantize(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args(args)
        .output()
        .expect("run quantize");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checkpoint(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    write_checkpoint(&dir, &SynthDims::tiny(), 7).unwrap();
    dir
}

/// Directory entries other than the inputs: nothing may be left behind by a failed run.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("gguf") || n.contains("partial") || n.contains("probe"))
        .collect()
}

#[test]
fn converts_every_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), "ckpt");
    for (ty, expect) in [
        ("f32", GgmlType::F32),
        ("f16", GgmlType::F16),
        ("bf16", GgmlType::BF16),
        ("q8_0", GgmlType::Q8_0),
        ("q4_0", GgmlType::Q4_0),
        // The tiny checkpoint's rows (64, 96) are not multiples of 256: llama.cpp's fallbacks.
        ("q4_k_m", GgmlType::Q5_0),
        ("q4_k_s", GgmlType::Q5_0),
        ("q5_k_m", GgmlType::Q5_1),
        ("q5_k_s", GgmlType::Q5_1),
        ("q6_k", GgmlType::Q8_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
    ] {
        let out = tmp.path().join(format!("m-{ty}.gguf"));
        let (ok, stdout, stderr) = quantize(&[
            dir.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "-t".as_ref(),
            ty.as_ref(),
        ]);
        assert!(ok, "{ty}: {stderr}");
        assert!(stdout.contains("tensors"), "{stdout}");
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.metadata()[0].0, "general.architecture");
        let tok = f.tensor_info("token_embd.weight").unwrap();
        assert_eq!(tok.ty, expect, "{ty}");
        let ft = mllama::quant::mix::FileType::parse(ty).unwrap();
        assert_eq!(
            f.get("general.file_type"),
            Some(&mllama::format::gguf::Value::U32(ft.llama_ftype())),
            "{ty}"
        );
        assert_eq!(tok.shape(), vec![308, 64]);
        // Vision matrices stay F16 for quantized types, follow the type for float types.
        let vq = f.tensor_info("v.blk.0.attn_q.weight").unwrap().ty;
        assert_eq!(
            vq,
            if expect.is_quantized() {
                GgmlType::F16
            } else {
                expect
            }
        );
        // Small tensors stay F32.
        for name in [
            "v.class_embd",
            "blk.1.cross_attn_attn_gate",
            "output_norm.weight",
            "v.tile_position_embd.weight",
        ] {
            assert_eq!(f.tensor_info(name).unwrap().ty, GgmlType::F32, "{name}");
        }
        assert_eq!(f.tensors().len(), SynthDims::tiny().tensors().len() + 2); // + rope_freqs, dup gate
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644);
        }
    }
    // --quantize-vision
    let out = tmp.path().join("qv.gguf");
    let (ok, _, stderr) = quantize(&[
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "-t".as_ref(),
        "q4_0".as_ref(),
        "--quantize-vision".as_ref(),
    ]);
    assert!(ok, "{stderr}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensor_info("v.blk.0.attn_q.weight").unwrap().ty,
        GgmlType::Q4_0
    );
    assert_eq!(f.tensor_info("mm.0.weight").unwrap().ty, GgmlType::Q4_0);
    assert_eq!(
        f.tensor_info("v.patch_embd.weight").unwrap().ty,
        GgmlType::F16
    );
    // K-mixes: the base type (Q4_K) on vision matrices, here its fallback Q5_0 (rows of 32/64).
    let out = tmp.path().join("qv-k.gguf");
    let (ok, _, stderr) = quantize(&[
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "-t".as_ref(),
        "q4_k_m".as_ref(),
        "--quantize-vision".as_ref(),
    ]);
    assert!(ok, "{stderr}");
    let f = GgufFile::open(&out).unwrap();
    for name in [
        "v.blk.0.attn_q.weight",
        "v.blk.0.ffn_down.weight",
        "mm.0.weight",
    ] {
        assert_eq!(f.tensor_info(name).unwrap().ty, GgmlType::Q5_0, "{name}");
    }
}

#[test]
fn converted_values_match_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), "ckpt");
    let out = tmp.path().join("m.gguf");
    let (ok, _, stderr) = quantize(&[
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "-t".as_ref(),
        "f32".as_ref(),
    ]);
    assert!(ok, "{stderr}");
    let f = GgufFile::open(&out).unwrap();
    let ck = mllama_quantize::checkpoint::Checkpoint::open(&dir).unwrap();
    let read = |name: &str| {
        let t = ck.get(name).unwrap();
        let mut v = vec![0f32; t.n_elements()];
        let row = *t.shape.last().unwrap();
        ck.read_rows_f32(t, row, 0, &mut v);
        v
    };
    // Plain copy.
    let up = f
        .tensor("blk.0.ffn_up.weight")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(up, read("language_model.model.layers.0.mlp.up_proj.weight"));
    // q is permuted from rotate-half order to adjacent pairs: ggml row 2i+j of a head is HF row
    // j*hd/2 + i.
    let q = f
        .tensor("blk.0.attn_q.weight")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let hq = read("language_model.model.layers.0.self_attn.q_proj.weight");
    let (h, hd) = (64, 16);
    for head in 0..4 {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let g = head * hd + 2 * i + j;
                let s = head * hd + j * hd / 2 + i;
                assert_eq!(q[g * h..(g + 1) * h], hq[s * h..(s + 1) * h]);
            }
        }
    }
    // Cross-attention q is not permuted; gates are stored raw.
    let cq = f
        .tensor("blk.1.cross_attn_q_proj.weight")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(
        cq,
        read("language_model.model.layers.1.cross_attn.q_proj.weight")
    );
    let g = f
        .tensor("v.position_embd.gate")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(g, read("vision_model.gated_positional_embedding.gate"));
    assert_eq!(
        f.tensor("v.tile_position_embd.gate")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        g
    );
}

fn expect_error(args: &[&std::ffi::OsStr], needle: &str, out_dir: &Path) {
    let (ok, stdout, stderr) = quantize(args);
    assert!(!ok, "succeeded: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left = leftovers(out_dir);
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn run_bad(dir: &Path, out_dir: &Path, needle: &str) {
    let out = out_dir.join("out.gguf");
    expect_error(
        &[
            dir.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "-t".as_ref(),
            "q8_0".as_ref(),
        ],
        needle,
        out_dir,
    );
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn bad_inputs_give_one_line_errors_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let outd = tmp.path().join("out");
    std::fs::create_dir(&outd).unwrap();

    // Missing directory; a file instead of a directory.
    run_bad(&tmp.path().join("nope"), &outd, "input directory not found");
    let file = tmp.path().join("plain.txt");
    std::fs::write(&file, "x").unwrap();
    run_bad(&file, &outd, "not a directory");

    // Missing config.json, invalid JSON, wrong model type.
    let d = checkpoint(tmp.path(), "noconfig");
    std::fs::remove_file(d.join("config.json")).unwrap();
    run_bad(&d, &outd, "config.json: file not found");
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    run_bad(&d, &outd, "config.json: invalid JSON");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    run_bad(&d, &outd, "not a Llama 3.2 Vision (mllama) checkpoint");

    // Missing tokenizer / preprocessor files.
    let d = checkpoint(tmp.path(), "notok");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    run_bad(&d, &outd, "tokenizer.json: file not found");
    let d = checkpoint(tmp.path(), "nopre");
    std::fs::remove_file(d.join("preprocessor_config.json")).unwrap();
    run_bad(&d, &outd, "preprocessor_config.json: file not found");

    // Missing weights; a shard listed in the index but absent.
    let d = checkpoint(tmp.path(), "noweights");
    for e in std::fs::read_dir(&d).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().contains("safetensors") {
            std::fs::remove_file(p).unwrap();
        }
    }
    run_bad(&d, &outd, "no weights");
    let d = checkpoint(tmp.path(), "noshard");
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    run_bad(
        &d,
        &outd,
        "model-00002-of-00002.safetensors: file not found",
    );

    // A tensor missing (config claims one more layer) and a wrong shape.
    let d = checkpoint(tmp.path(), "missing");
    edit_json(&d.join("config.json"), |v| {
        v["text_config"]["num_hidden_layers"] = 4.into()
    });
    run_bad(
        &d,
        &outd,
        "missing tensor \"language_model.model.layers.3.input_layernorm.weight\"",
    );
    let d = checkpoint(tmp.path(), "shape");
    edit_json(&d.join("config.json"), |v| {
        v["text_config"]["intermediate_size"] = 128.into()
    });
    run_bad(&d, &outd, "shape [96, 64], expected [128, 64]");

    // Truncated shard, corrupt header, unsupported dtype.
    let d = checkpoint(tmp.path(), "trunc");
    let shard = d.join("model-00001-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    run_bad(
        &d,
        &outd,
        "model-00001-of-00002.safetensors: truncated or corrupt",
    );
    let d = checkpoint(tmp.path(), "corrupt");
    let shard = d.join("model-00002-of-00002.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[9] = b'#';
    std::fs::write(&shard, &bytes).unwrap();
    run_bad(
        &d,
        &outd,
        "model-00002-of-00002.safetensors: corrupt safetensors header",
    );
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    run_bad(&d, &outd, "model-00002-of-00002.safetensors");
    let d = checkpoint(tmp.path(), "dtype");
    let shard = d.join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let pos = bytes.windows(6).position(|w| w == b"\"BF16\"").unwrap();
    let mut bytes = bytes;
    bytes[pos..pos + 6].copy_from_slice(b"\"I16\" ");
    std::fs::write(&shard, &bytes).unwrap();
    run_bad(&d, &outd, "unsupported dtype I16");

    // Unwritable outputs: missing directory, a directory, a path below a regular file.
    let good = checkpoint(tmp.path(), "good");
    let missing_dir = outd.join("no/such/dir/m.gguf");
    expect_error(
        &[good.as_os_str(), "-o".as_ref(), missing_dir.as_os_str()],
        "does not exist",
        &outd,
    );
    expect_error(
        &[good.as_os_str(), "-o".as_ref(), outd.as_os_str()],
        "output path is a directory",
        &outd,
    );
    let below_file = file.join("m.gguf");
    expect_error(
        &[good.as_os_str(), "-o".as_ref(), below_file.as_os_str()],
        "m.gguf",
        &outd,
    );

    // An unknown type is refused by the argument parser (exit code 2, message names the value).
    let out = outd.join("x.gguf");
    let (ok, _, stderr) = quantize(&[
        good.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "-t".as_ref(),
        "q3_k".as_ref(),
    ]);
    assert!(!ok && stderr.contains("unknown type \"q3_k\""), "{stderr}");
    assert!(stderr.contains("q4_k_m, q4_k_s, q4_1, q4_0"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn help_lists_the_file_types_with_bits_per_weight() {
    let out = Command::new(env!("CARGO_BIN_EXE_quantize"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for ft in mllama::quant::mix::FileType::ALL {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", ft.name())))
            .unwrap_or_else(|| panic!("{} missing from --help:\n{text}", ft.name()));
        assert!(line.contains("bpw"), "{line}");
        assert!(
            line.contains(&format!("ftype {:>2}", ft.llama_ftype())),
            "{line}"
        );
    }
    // Q4_K_M's mix costs more than plain Q4_K over the 11B text decoder, less than Q5_K.
    let q4km = mllama_quantize::help::text_bits_11b(mllama::quant::mix::FileType::Q4KM);
    assert!(q4km > 4.5 && q4km < 5.5, "{q4km}");
}

#[test]
fn failed_run_keeps_an_existing_output_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let d = checkpoint(tmp.path(), "c");
    edit_json(&d.join("config.json"), |v| {
        v["text_config"]["intermediate_size"] = 128.into()
    });
    let out = tmp.path().join("keep.gguf");
    std::fs::write(&out, b"previous contents").unwrap();
    let (ok, _, _) = quantize(&[d.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert!(!ok);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous contents");
}
