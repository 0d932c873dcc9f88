//! The comparison helpers the model tests rely on cannot pass by accident: a NaN or infinity
//! anywhere, or a length mismatch, fails (naming the index); case discovery is sorted and
//! complete.

mod common;

use std::panic::{catch_unwind, UnwindSafe};

use common::*;

/// The panic message of `f`, which must panic.
fn panics(f: impl FnOnce() + UnwindSafe) -> String {
    let e = catch_unwind(f).expect_err("should have panicked");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn nan_and_length_mismatch_fail_every_comparison() {
    let good = [1.0f32, 2.0, 3.0];
    let nan = [1.0f32, f32::NAN, 3.0];
    let inf = [1.0f32, 2.0, f32::INFINITY];
    assert_eq!(max_abs_diff(&good, &[1.0, 2.5, 3.0]), 0.5);
    assert!(rel_l2(&good, &good) == 0.0);

    let m = panics(|| {
        max_abs_diff(&nan, &good);
    });
    assert!(m.contains("ours[1]"), "{m}");
    let m = panics(|| {
        max_abs_diff(&good, &nan);
    });
    assert!(m.contains("reference[1]"), "{m}");
    let m = panics(|| {
        rel_l2(&inf, &good);
    });
    assert!(m.contains("ours[2]"), "{m}");
    let m = panics(|| {
        rel_l2(&good, &good[..2]);
    });
    assert!(m.contains("length mismatch"), "{m}");
    let m = panics(|| {
        max_abs_diff(&good[..1], &good);
    });
    assert!(m.contains("length mismatch"), "{m}");

    assert_eq!(worst([0.5, 0.25]), 0.5);
    let m = panics(|| {
        worst([0.5, f32::NAN, 0.25]);
    });
    assert!(m.contains("difference 1"), "{m}");
}

#[test]
fn fixture_cases_are_sorted_and_complete() {
    let cases = fixture_cases();
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(&names[..IN_REPO_CASES.len()], IN_REPO_CASES);
    let mut sorted = IN_REPO_CASES.to_vec();
    sorted.sort();
    assert_eq!(sorted, IN_REPO_CASES, "IN_REPO_CASES is kept sorted");
    for c in &cases {
        assert!(c.dir.join("reference.safetensors").exists(), "{}", c.name);
        assert!(c.dir.join("case.json").exists(), "{}", c.name);
        assert_eq!(c.in_repo, IN_REPO_CASES.contains(&c.name.as_str()));
    }
    // The text-only list names in-repo cases without an image.
    for t in IN_REPO_TEXT_ONLY {
        let c = cases.iter().find(|c| c.name == t).expect(t);
        let reference = load_safetensors(&c.dir.join("reference.safetensors"));
        assert!(!reference.contains_key("pixel_values"), "{t}");
    }
}
