//! `quantize` killed with SIGKILL at random moments leaves nothing at the output path (an
//! existing file there stays as it was), and a rerun succeeds.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use mllama_quantize::synthetic::{write_checkpoint, SynthDims};

/// A checkpoint big enough that conversion takes a while (~150 MB of bf16).
fn checkpoint(dir: &Path) {
    let dims = SynthDims {
        vocab: 32000,
        hidden: 512,
        intermediate: 2048,
        layers: 16,
        cross_layers: vec![3, 8, 13],
        heads: 8,
        kv_heads: 2,
        v_hidden: 64,
        v_heads: 2,
        v_intermediate: 128,
        v_layers: 2,
        v_global_layers: 1,
        v_taps: vec![0],
        tile: 56,
        patch: 14,
        shards: 2,
    };
    write_checkpoint(dir, &dims, 11).unwrap();
}

fn run(input: &Path, output: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args([
            input.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
            "-t".as_ref(),
            "q4_0".as_ref(),
            "-q".as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigkill_leaves_no_output_and_rerun_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("ckpt");
    checkpoint(&input);
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("model.gguf");

    // How long a full run takes, to spread the kills over it.
    let t = Instant::now();
    let status = run(&input, &out).wait().unwrap();
    assert!(status.success());
    let full = t.elapsed();
    let good = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();

    // Kill at 10 moments from the start to near the end (deterministic spread).
    let mut killed_mid_run = 0;
    for i in 0..10u32 {
        let delay = full.mul_f64(0.05 + 0.09 * i as f64);
        let mut child = run(&input, &out);
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        // SIGKILL: no chance to clean up.
        let _ = child.kill();
        let _ = child.wait();
        if finished {
            // Too late: the run completed; the file must then be complete.
            assert_eq!(std::fs::read(&out).unwrap(), good);
            std::fs::remove_file(&out).unwrap();
            continue;
        }
        killed_mid_run += 1;
        assert!(
            !out.exists(),
            "a killed run left {} (kill after {delay:?})",
            out.display()
        );
    }
    assert!(
        killed_mid_run >= 5,
        "only {killed_mid_run} kills landed mid-run"
    );

    // A killed run must not touch an existing file either.
    std::fs::write(&out, b"previous").unwrap();
    let mut child = run(&input, &out);
    std::thread::sleep(full / 3);
    let _ = child.kill();
    let _ = child.wait();
    let now = std::fs::read(&out).unwrap();
    assert!(
        now == b"previous" || now == good,
        "existing output was damaged"
    );

    // Leftover temporaries are hidden partial files, never the output name; a rerun succeeds and
    // produces the same bytes.
    for e in std::fs::read_dir(&outdir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            name == "model.gguf"
                || (name.starts_with(".model.gguf.") && name.ends_with(".partial")),
            "{name}"
        );
    }
    std::fs::remove_file(&out).unwrap();
    let status = run(&input, &out).wait().unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), good);
}
