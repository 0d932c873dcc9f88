//! The vision cache through the `mllama` command: a second process reads the image from disk
//! (`--stats` says `cache=disk`) and answers the same; `mllama cache list|clear`; a full or
//! unwritable cache directory costs one warning, not the run; two processes writing one entry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `mllama run` on the demo model and image (greedy, 8 tokens, `--stats`) with `extra` flags.
fn run_cmd(extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mllama"));
    c.args(["run", "-m"])
        .arg(root().join("models/demo/mllama-demo-q4_0.gguf"))
        .arg("--image")
        .arg(root().join("models/demo/example.jpg"))
        .args([
            "-p",
            "What is it?",
            "-n",
            "8",
            "--temperature",
            "0",
            "--stats",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn run_ok(c: &mut Command) -> (String, String) {
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    (out, err)
}

fn cache(dir: &Path, action: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mllama"))
        .args(["cache", action, "--cache-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    out
}

fn warnings(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("warning:")).collect()
}

#[test]
fn second_process_reads_the_image_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vc");
    let d = dir.to_str().unwrap();
    let (out1, err1) = run_ok(&mut run_cmd(&["--cache-dir", d]));
    assert!(err1.contains("image 0: cache=miss"), "{err1}");
    let (out2, err2) = run_ok(&mut run_cmd(&["--cache-dir", d]));
    assert!(err2.contains("image 0: cache=disk"), "{err2}");
    assert_eq!(out1, out2);
    assert!(warnings(&err1).is_empty() && warnings(&err2).is_empty());

    // The default directory follows XDG_CACHE_HOME.
    let xdg = tmp.path().join("xdg");
    let (_, err) = run_ok(run_cmd(&[]).env("XDG_CACHE_HOME", &xdg));
    assert!(err.contains("cache=miss"), "{err}");
    let (_, err) = run_ok(run_cmd(&[]).env("XDG_CACHE_HOME", &xdg));
    assert!(err.contains("cache=disk"), "{err}");
    // --no-disk-cache neither reads nor writes it.
    let (_, err) = run_ok(run_cmd(&["--no-disk-cache"]).env("XDG_CACHE_HOME", &xdg));
    assert!(err.contains("cache=miss"), "{err}");

    let list = cache(&dir, "list");
    assert!(list.contains(": 1 entries"), "{list}");
    assert_eq!(list.lines().count(), 2, "{list}");
    let cleared = cache(&dir, "clear");
    assert!(cleared.contains("deleted 1 entries"), "{cleared}");
    assert!(cache(&dir, "list").contains(": 0 entries"));
    let (_, err) = run_ok(&mut run_cmd(&["--cache-dir", d]));
    assert!(err.contains("cache=miss"), "{err}");
}

#[test]
fn unwritable_cache_directory_warns_once_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("cache");
    let (out, err) = run_ok(&mut run_cmd(&["--cache-dir", bad.to_str().unwrap()]));
    let (plain, _) = run_ok(&mut run_cmd(&["--no-disk-cache"]));
    assert_eq!(out, plain);
    let w = warnings(&err);
    assert_eq!(w.len(), 1, "{err}");
    assert!(w[0].contains("not writable"), "{err}");
}

/// A file system that fills up: the file size limit (`ulimit -f`, with SIGXFSZ ignored) makes
/// writing the entry fail part-way, as a full disk does. No partial entry is left.
#[cfg(unix)]
#[test]
fn full_cache_directory_warns_once_and_leaves_no_partial_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vc");
    let c = run_cmd(&["--cache-dir", dir.to_str().unwrap()]);
    let mut sh = Command::new("sh");
    let mut line = String::from("trap '' XFSZ; ulimit -f 4; exec");
    for a in std::iter::once(c.get_program()).chain(c.get_args()) {
        line.push_str(&format!(" '{}'", a.to_str().unwrap()));
    }
    sh.args(["-c", &line]).stdin(Stdio::null());
    let (out, err) = run_ok(&mut sh);
    assert!(!out.is_empty());
    let w = warnings(&err);
    assert_eq!(w.len(), 1, "{err}");
    assert!(w[0].contains("not writable"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn two_processes_writing_the_same_entry_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vc");
    let d = dir.to_str().unwrap();
    let a = run_cmd(&["--cache-dir", d]).spawn().unwrap();
    let b = run_cmd(&["--cache-dir", d]).spawn().unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success() && ob.status.success());
    assert_eq!(oa.stdout, ob.stdout);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let (out, err) = run_ok(&mut run_cmd(&["--cache-dir", d]));
    assert!(err.contains("cache=disk"), "{err}");
    assert_eq!(out.as_bytes(), oa.stdout);
}
