//! Matrix kernels on every SIMD path this CPU has, against the scalar reference and an f64 reference:
//! integer (every quantized type) decode bit-exact with scalar, float paths and the GEMM within tolerance,
//! the Q8_0 activation quantizer bit-identical to `BlockQ8_0::quantize`, `MLLAMA_SIMD` forcing,
//! and no allocation in `matmul` once its `Scratch` is warm.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use common::rnd;
use mllama::kernels::tensor::Mat;
use mllama::kernels::{self, matmul, matmul_with, with_path, Path, Regime, Scratch};
use mllama::quant::{convert_f32, dequantize, BlockQ8_0, QuantBlock};
use mllama::GgmlType;

// ---------------------------------------------------------------------------------------------
// Allocation counting: while `COUNTING` is set, on threads marked `TRACKED` (the test's thread
// and the rayon workers doing its work; the test harness's own threads allocate as they please).

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) && TRACKED.with(|t| t.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Every test holds this shared; the allocation test holds it exclusively.
static SERIAL: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const ALL_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn is_quant(ty: GgmlType) -> bool {
    ty.is_quantized()
}

/// Whether rows of `k` values are whole blocks of `ty`.
fn fits(ty: GgmlType, k: usize) -> bool {
    k.is_multiple_of(ty.block_size())
}

/// Weights of type `ty` from random values, and their exact f32 values.
fn make(ty: GgmlType, m: usize, k: usize, seed: u64) -> (Mat, Vec<f32>) {
    let wf = rnd(m * k, seed);
    let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
    convert_f32(ty, &wf, k, &mut bytes).unwrap();
    let mut wd = vec![0f32; m * k];
    dequantize(ty, &bytes, &mut wd).unwrap();
    (Mat::from_bytes(ty, m, k, &bytes), wd)
}

/// f64 reference and Σ|w·x| (the scale of the rounding error) per output.
fn reference(wd: &[f32], x: &[f32], n: usize, m: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; n * m];
    let mut mag = vec![0f64; n * m];
    for i in 0..n {
        for j in 0..m {
            let (mut s, mut a) = (0f64, 0f64);
            for t in 0..k {
                let p = wd[j * k + t] as f64 * x[i * k + t] as f64;
                s += p;
                a += p.abs();
            }
            y[i * m + j] = s;
            mag[i * m + j] = a;
        }
    }
    (y, mag)
}

fn run(path: Path, w: &Mat, x: &[f32], n: usize, regime: Regime) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.rows];
    let mut sc = Scratch::new();
    with_path(path, || matmul_with(w, None, x, n, &mut y, &mut sc, regime));
    y
}

fn check_close(what: &str, got: &[f32], want: &[f64], mag: &[f64], rel: f64) {
    for (idx, ((&g, &w), &a)) in got.iter().zip(want).zip(mag).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= rel * a + 1e-30,
            "{what}[{idx}]: got {g}, want {w} (error {err:e}, scale {a:e})"
        );
    }
}

/// Float rounding bound relative to Σ|w·x| (f32 sums of up to 14336 terms, in any order).
const FLOAT_REL: f64 = 2e-5;
/// Error of Q8_0-quantized activations relative to Σ|w·x| (≤ ½ step of 1/127 of the block max).
const ACT_QUANT_REL: f64 = 1.5e-2;

fn simd_paths() -> Vec<Path> {
    Path::available()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn reports_available_paths() {
    let _g = shared();
    let avail = Path::available();
    assert!(avail.contains(&Path::Scalar));
    assert!(avail.contains(&Path::parse(kernels::simd_name()).unwrap()));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(avail.contains(&Path::Avx2));
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            assert!(avail.contains(&Path::Avx512));
        }
    }
    #[cfg(target_arch = "aarch64")]
    assert!(avail.contains(&Path::Neon));
    eprintln!("paths: {avail:?}, active: {}", kernels::simd_name());
    for p in avail {
        assert_eq!(with_path(p, kernels::simd_name), p.name());
    }
}

/// Integer decode: every SIMD path equals the scalar reference bit for bit, for many shapes
/// (group tails included: k/32 not a multiple of 8).
#[test]
fn quantized_decode_is_bit_exact_on_every_path() {
    let _g = shared();
    let ks = [32, 64, 96, 224, 256, 288, 320, 1280, 2304, 4096, 14336];
    for ty in ALL_TYPES.into_iter().filter(|t| t.is_quantized()) {
        for (ki, &k) in ks.iter().enumerate().filter(|&(_, &k)| fits(ty, k)) {
            let m = [1, 7, 37, 70, 131][ki % 5];
            let (w, _) = make(ty, m, k, 11 + ki as u64);
            for n in [1, 2, 3, 5, 17] {
                if k * n * m > 20_000_000 {
                    continue;
                }
                let x = rnd(n * k, 100 + n as u64);
                decode_equals_scalar(&w, &x, n, &format!("{ty} n={n} m={m} k={k}"));
            }
        }
    }
}

/// The decode of `x` (`n` rows) through `w` on every SIMD path equals the scalar path's, bit for
/// bit (`what` names the case in a failure).
fn decode_equals_scalar(w: &Mat, x: &[f32], n: usize, what: &str) {
    let want = run(Path::Scalar, w, x, n, Regime::Decode);
    for p in simd_paths() {
        let got = run(p, w, x, n, Regime::Decode);
        for (idx, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{p} {what} [{idx}]: {a} vs scalar {b}"
            );
        }
    }
}

/// The decode of `x` through `w` repacked ([`Mat::repack`], when its type has a layout) on every
/// path, the scalar one included, equals the in-place scalar decode bit for bit; the ×16 layouts
/// (Q4_K, Q6_K: their own f32 order) equal their twin (the scalar path on the repacked matrix) bit for bit on every path,
/// and the twin is within 1e-5 of Σ|w·x| of the in-place scalar decode.
fn repacked_equals_scalar(w: &Mat, x: &[f32], n: usize, what: &str) {
    let mut wp = w.clone();
    if !wp.repack(false) {
        return;
    }
    let in_place = run(Path::Scalar, w, x, n, Regime::Decode);
    let own_order = kernels::repack::group_rows(w.ty) == Some(kernels::repack::R16);
    let want = if own_order {
        let twin = run(Path::Scalar, &wp, x, n, Regime::Decode);
        let (m, k) = (w.rows, w.cols);
        let mut row = vec![0f32; k];
        let mut mag = vec![0f64; n * m];
        for j in 0..m {
            w.row_to_f32(j, &mut row);
            for i in 0..n {
                mag[i * m + j] = row
                    .iter()
                    .zip(&x[i * k..][..k])
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
            }
        }
        let in_place: Vec<f64> = in_place.iter().map(|&v| v as f64).collect();
        check_close(
            &format!("Q4_K x16 twin {what}"),
            &twin,
            &in_place,
            &mag,
            1e-5,
        );
        twin
    } else {
        in_place
    };
    for p in Path::available() {
        let got = run(p, &wp, x, n, Regime::Decode);
        for (idx, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{p} repacked {what} [{idx}]: {a} vs {} scalar {b}",
                if own_order { "repacked" } else { "in-place" }
            );
        }
    }
}

/// K-quant decode on blocks of arbitrary bytes (every packed scale, minimum and level pattern,
/// Q6_K scales down to −128; finite f16 scales) against activations that quantize to ±127:
/// every SIMD path equals the scalar reference bit for bit (the bounds of the dedicated x86
/// tiles and the shared lane kernels), over chunk tails (1..=17 blocks) and every tile shape;
/// so do the repacked layouts on every path.
#[test]
fn kquant_decode_on_arbitrary_blocks_is_bit_exact() {
    let _g = shared();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut byte = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 24) as u8
    };
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        let bb = ty.type_size();
        // Offsets of the f16 scales in the block (kept finite: exponent below 30).
        let f16_at: &[usize] = if ty == GgmlType::Q6_K {
            &[208]
        } else {
            &[0, 2]
        };
        // 37 rows: two Q4_K ×16 groups and five leftover rows.
        for (nb, m) in [(1, 9), (8, 5), (9, 13), (17, 6), (3, 37)] {
            let k = 256 * nb;
            let mut bytes: Vec<u8> = (0..m * nb * bb).map(|_| byte()).collect();
            for blk in bytes.chunks_exact_mut(bb) {
                for &at in f16_at {
                    blk[at + 1] &= 0xB3;
                }
            }
            let w = Mat::from_bytes(ty, m, k, &bytes);
            for n in [1, 2, 3, 4, 5] {
                // Large spikes: each block's maximum quantizes to ±127, many others near it.
                let x: Vec<f32> = rnd(n * k, 7 + n as u64)
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if i % 5 == 0 { v.signum() * 4.0 } else { v })
                    .collect();
                let what = format!("{ty} arbitrary blocks n={n} m={m} k={k}");
                decode_equals_scalar(&w, &x, n, &what);
                repacked_equals_scalar(&w, &x, n, &what);
            }
        }
    }
}

/// Every path, every type, both regimes, against the f64 result on the exact weight values.
#[test]
fn every_path_and_regime_matches_f64_reference() {
    let _g = shared();
    let shapes = [
        (1, 37, 96),
        (2, 70, 288),
        (3, 5, 4096),
        (5, 33, 1280),
        (17, 19, 320),
        (64, 40, 256),
        (300, 21, 64),
        (4, 9, 2304),
    ];
    for (si, &(n, m, k)) in shapes.iter().enumerate() {
        let x = rnd(n * k, 7 + si as u64);
        for ty in ALL_TYPES.into_iter().filter(|&t| fits(t, k)) {
            let (w, wd) = make(ty, m, k, 3 + si as u64);
            let (want, mag) = reference(&wd, &x, n, m, k);
            for p in Path::available() {
                for regime in [Regime::Decode, Regime::Gemm, Regime::Auto] {
                    let got = run(p, &w, &x, n, regime);
                    let gemm = regime == Regime::Gemm
                        || (regime == Regime::Auto && n >= kernels::gemm_min_rows(p, ty));
                    let rel = if is_quant(ty) && !gemm {
                        ACT_QUANT_REL
                    } else {
                        FLOAT_REL
                    };
                    check_close(
                        &format!("{p} {ty} {regime:?} n={n} m={m} k={k}"),
                        &got,
                        &want,
                        &mag,
                        rel,
                    );
                }
            }
        }
    }
}

/// Float weights with any k (the F32/F16 patch embedding has k = 588), vector tails included.
#[test]
fn float_types_any_k() {
    let _g = shared();
    for (si, &(n, m, k)) in [
        (1, 9, 7),
        (2, 13, 100),
        (3, 6, 588),
        (17, 23, 588),
        (64, 17, 1000),
    ]
    .iter()
    .enumerate()
    {
        let x = rnd(n * k, 50 + si as u64);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let (w, wd) = make(ty, m, k, 60 + si as u64);
            let (want, mag) = reference(&wd, &x, n, m, k);
            for p in Path::available() {
                for regime in [Regime::Decode, Regime::Gemm] {
                    let got = run(p, &w, &x, n, regime);
                    check_close(
                        &format!("{p} {ty} {regime:?} n={n} m={m} k={k}"),
                        &got,
                        &want,
                        &mag,
                        FLOAT_REL,
                    );
                }
            }
        }
    }
}

/// Bigger GEMMs: several x chunks and W blocks per task, k spanning several panels, odd edges.
#[test]
fn gemm_matches_decode_on_larger_shapes() {
    let _g = shared();
    for (si, &(n, m, k, ty)) in [
        (300, 131, 544, GgmlType::F16),
        (197, 600, 300, GgmlType::F32),
        (64, 1040, 1024, GgmlType::Q4_0),
        (100, 77, 2048, GgmlType::Q8_0),
        (33, 250, 800, GgmlType::BF16),
    ]
    .iter()
    .enumerate()
    {
        let x = rnd(n * k, 90 + si as u64);
        let (w, wd) = make(ty, m, k, 80 + si as u64);
        let (want, mag) = reference(&wd, &x, n, m, k);
        for p in Path::available() {
            let gemm = run(p, &w, &x, n, Regime::Gemm);
            check_close(
                &format!("{p} {ty} gemm n={n} m={m} k={k}"),
                &gemm,
                &want,
                &mag,
                FLOAT_REL,
            );
            let dec = run(p, &w, &x, n, Regime::Decode);
            let rel = if is_quant(ty) {
                ACT_QUANT_REL
            } else {
                FLOAT_REL
            };
            check_close(
                &format!("{p} {ty} decode n={n} m={m} k={k}"),
                &dec,
                &want,
                &mag,
                rel,
            );
        }
    }
}

#[test]
fn bias_is_added_in_both_regimes() {
    let _g = shared();
    let (n, m, k) = (9, 45, 256);
    let x = rnd(n * k, 1);
    let b = rnd(m, 2);
    for ty in ALL_TYPES {
        let (w, _) = make(ty, m, k, 3);
        for p in Path::available() {
            for regime in [Regime::Decode, Regime::Gemm] {
                let plain = run(p, &w, &x, n, regime);
                let mut y = vec![0f32; n * m];
                let mut sc = Scratch::new();
                with_path(p, || {
                    matmul_with(&w, Some(&b), &x, n, &mut y, &mut sc, regime)
                });
                for (idx, (a, c)) in y.iter().zip(&plain).enumerate() {
                    assert_eq!(*a, c + b[idx % m], "{p} {ty} {regime:?}");
                }
            }
        }
    }
}

#[test]
fn gemm_nt_matches_scalar() {
    let _g = shared();
    for &(n, m, k) in &[(1, 1, 1), (3, 7, 80), (32, 256, 128), (5, 9, 13)] {
        let a = rnd(n * k, 4);
        let b = rnd(m * k, 5);
        let mut want = vec![0f32; n * m];
        with_path(Path::Scalar, || {
            kernels::gemm_nt(&a, &b, n, m, k, &mut want)
        });
        for p in simd_paths() {
            let mut got = vec![0f32; n * m];
            with_path(p, || kernels::gemm_nt(&a, &b, n, m, k, &mut got));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (k as f32).sqrt(),
                    "{p} gemm_nt {n}×{m}×{k}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn quantizer_is_bit_identical_to_block_quantize() {
    let _g = shared();
    let mut x = rnd(32 * 64, 77);
    // Adversarial blocks: all zeros, ties at .5 steps, tiny and huge values, one outlier.
    x[..32].fill(0.0);
    for (i, v) in x[32..64].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5 * (127.0f32).recip() * 2.0;
    }
    for (i, v) in x[64..96].iter_mut().enumerate() {
        *v = (i as f32 + 0.5) * 1e-30;
    }
    for (i, v) in x[96..128].iter_mut().enumerate() {
        *v = (i as f32 - 15.5) * 1e30;
    }
    x[128] = 1000.0;
    for (i, v) in x[160..192].iter_mut().enumerate() {
        *v = 127.0 - i as f32; // exact multiples: d = 1
    }
    for (i, v) in x[192..224].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) + 0.5; // halves: ties away from zero
    }
    let want: Vec<BlockQ8_0> = x.chunks_exact(32).map(BlockQ8_0::quantize).collect();
    for p in Path::available() {
        let mut got = vec![
            BlockQ8_0 {
                d: half::f16::ZERO,
                qs: [0; 32]
            };
            64
        ];
        with_path(p, || kernels::quantize_row_q8_0(&x, &mut got));
        for (b, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                bytemuck::bytes_of(g),
                bytemuck::bytes_of(w),
                "{p} block {b}"
            );
        }
    }
}

#[test]
fn vector_helpers_match_scalar() {
    let _g = shared();
    for len in [0, 1, 7, 8, 31, 80, 128, 1000] {
        let a = rnd(len, 1);
        let b = rnd(len, 2);
        let want_dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        for p in Path::available() {
            let d = with_path(p, || kernels::dot(&a, &b));
            assert!(
                (d as f64 - want_dot).abs() <= 1e-5 * (len as f64).max(1.0).sqrt(),
                "{p} dot {len}"
            );
            let mut y = b.clone();
            with_path(p, || kernels::axpy(0.75, &a, &mut y));
            for ((yv, av), bv) in y.iter().zip(&a).zip(&b) {
                assert!((yv - (bv + 0.75 * av)).abs() <= 1e-6, "{p} axpy");
            }
            let mut z = a.clone();
            with_path(p, || kernels::scale(-1.5, &mut z));
            for (zv, av) in z.iter().zip(&a) {
                assert_eq!(*zv, av * -1.5, "{p} scale");
            }
        }
    }
}

/// `MLLAMA_SIMD` chooses the process-wide path: run this test binary again with it set.
#[test]
fn mllama_simd_env_forces_the_path() {
    let _g = shared();
    let exe = std::env::current_exe().unwrap();
    let mut cases: Vec<(String, String, bool)> = Path::ALL
        .iter()
        .map(|p| {
            let expect = if p.is_available() {
                p.name()
            } else {
                Path::best().name()
            };
            (p.name().to_string(), expect.to_string(), !p.is_available())
        })
        .collect();
    cases.push(("bogus".into(), Path::best().name().into(), true));
    cases.push(("auto".into(), Path::best().name().into(), false));
    for (value, expect, warns) in cases {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "child_reports_simd_name",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MLLAMA_SIMD", &value)
            .env("MLLAMA_EXPECT_SIMD", &expect)
            .env("MLLAMA_EXPECT_WARNING", if warns { "1" } else { "0" })
            .output();
        let stdout = out
            .as_ref()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !stdout.contains("running 1 test") {
            // Under a user-mode emulator (cross tests through qemu) the binary cannot exec itself.
            eprintln!("skipped: cannot re-run {} here ({out:?})", exe.display());
            return;
        }
        let out = out.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "MLLAMA_SIMD={value}: child failed\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("1 passed"),
            "MLLAMA_SIMD={value}: child did not run\n{stdout}"
        );
        // The library returns its warning (checked by the child) and never prints it.
        assert!(
            !stderr.contains("warning"),
            "MLLAMA_SIMD={value}: the library printed\n{stderr}"
        );
    }
}

/// Child half of [`mllama_simd_env_forces_the_path`] (a no-op when run directly).
#[test]
fn child_reports_simd_name() {
    if let Ok(expect) = std::env::var("MLLAMA_EXPECT_SIMD") {
        assert_eq!(kernels::simd_name(), expect);
        let value = std::env::var("MLLAMA_SIMD").unwrap();
        let warning = kernels::path_warning();
        assert_eq!(
            warning.is_some(),
            std::env::var("MLLAMA_EXPECT_WARNING").as_deref() == Ok("1"),
            "MLLAMA_SIMD={value}: {warning:?}"
        );
        if let Some(w) = warning {
            assert!(w.starts_with(&format!("MLLAMA_SIMD={value}: ")), "{w}");
            assert!(w.ends_with(&format!("using {expect}")), "{w}");
        }
        // The forced path computes too.
        let (w, wd) = make(GgmlType::Q4_0, 8, 256, 1);
        let x = rnd(256, 2);
        let mut y = vec![0f32; 8];
        matmul(&w, &x, 1, &mut y, &mut Scratch::new());
        let (want, mag) = reference(&wd, &x, 1, 8, 256);
        check_close("forced path", &y, &want, &mag, ACT_QUANT_REL);
    }
}

/// `matmul` with a warm `Scratch` does not allocate for n = 1: strictly none when called from a
/// rayon worker; from another thread, rayon's global job queue may allocate one 63-slot block per
/// 63 injected jobs (one job per call), which the bound allows.
#[test]
fn decode_does_not_allocate_with_warm_scratch() {
    let _g = SERIAL.write().unwrap_or_else(|e| e.into_inner());
    let mut mats: Vec<(Mat, usize)> = ALL_TYPES
        .iter()
        .flat_map(|&ty| {
            [
                (make(ty, 4096, 512, 1).0, 512),
                (make(ty, 64, 256, 2).0, 256),
            ]
        })
        .collect();
    // The same matrices in their repacked layouts (kernels::repack), 67 rows: a leftover row.
    for &ty in ALL_TYPES.iter().filter(|&&t| kernels::repack::supports(t)) {
        let mut w = make(ty, 67, 512, 3).0;
        assert!(w.repack(false));
        mats.push((w, 512));
    }
    let x = rnd(512, 3);
    let mut y = vec![0f32; 4096];
    // Several 512-wide matrices in one call (`matmul_many`: in place and repacked together).
    let many: Vec<&Mat> = mats
        .iter()
        .filter(|(w, k)| *k == 512 && matches!(w.ty, GgmlType::Q4_K | GgmlType::Q6_K))
        .map(|(w, _)| w)
        .take(4)
        .collect();
    assert!(many.len() == 4 && many.iter().any(|w| w.repacked().is_some()));
    for p in Path::available() {
        let mut sc = Scratch::new();
        let mut ys: Vec<Vec<f32>> = many.iter().map(|w| vec![0f32; w.rows]).collect();
        let mut all = |sc: &mut Scratch, y: &mut [f32]| {
            for (w, k) in &mats {
                with_path(p, || matmul(w, &x[..*k], 1, &mut y[..w.rows], sc));
            }
            let mut outs: [&mut [f32]; 4] = {
                let [a, b, c, d] = &mut ys[..] else {
                    unreachable!()
                };
                [a, b, c, d]
            };
            with_path(p, || kernels::matmul_many(&many, &x, 1, &mut outs, sc));
        };
        all(&mut sc, &mut y);
        TRACKED.with(|t| t.set(true));
        rayon::broadcast(|_| TRACKED.with(|t| t.set(true)));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .start_handler(|_| TRACKED.with(|t| t.set(true)))
            .build()
            .unwrap();
        pool.install(|| {
            // Warm-up: besides the scratch, every worker registers with crossbeam's epoch
            // collector the first time it steals (a one-time allocation per thread).
            use rayon::prelude::*;
            for _ in 0..20 {
                all(&mut sc, &mut y);
                (0..10_000).into_par_iter().for_each(|i| {
                    std::hint::black_box(i);
                });
            }
            ALLOCS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for _ in 0..10 {
                all(&mut sc, &mut y);
            }
            COUNTING.store(false, Ordering::SeqCst);
        });
        let inside = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(
            inside, 0,
            "{p}: {inside} allocations in 100 calls from a rayon worker"
        );
        for _ in 0..20 {
            use rayon::prelude::*;
            all(&mut sc, &mut y);
            (0..10_000).into_par_iter().for_each(|i| {
                std::hint::black_box(i);
            });
        }
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            all(&mut sc, &mut y);
        }
        COUNTING.store(false, Ordering::SeqCst);
        let outside = ALLOCS.load(Ordering::SeqCst);
        assert!(
            outside <= 100 / 63 + 1,
            "{p}: {outside} allocations in 100 calls"
        );
    }
}

/// `matmul_many` gives each matrix what `matmul` gives it, bit for bit, on every path: matrices
/// of different types and heights reading the same input, in place and repacked together, few
/// activation rows (one parallel section) and many (where a matrix takes the GEMM).
#[test]
fn matmul_many_equals_matmul_on_each() {
    let _g = shared();
    let k = 512;
    let mut ws: Vec<Mat> = [
        (GgmlType::Q4_K, 48, true),
        (GgmlType::Q6_K, 37, true),
        (GgmlType::Q4_0, 70, true),
        (GgmlType::Q8_0, 16, false),
        (GgmlType::F16, 9, false),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(ty, m, pack))| {
        let mut w = make(ty, m, k, 40 + i as u64).0;
        if pack {
            w.repack(false);
        }
        w
    })
    .collect();
    ws.push(make(GgmlType::Q6_K, 21, k, 50).0);
    let sets: [&[usize]; 4] = [&[0, 1, 2], &[1, 5], &[3, 4, 0, 5], &[2]];
    for p in Path::available() {
        for n in [1, 2, 3, 5, 40] {
            let x = rnd(n * k, 60 + n as u64);
            for set in sets {
                let mats: Vec<&Mat> = set.iter().map(|&i| &ws[i]).collect();
                let mut got: Vec<Vec<f32>> =
                    mats.iter().map(|w| vec![f32::NAN; n * w.rows]).collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| &mut v[..]).collect();
                let mut sc = Scratch::new();
                with_path(p, || kernels::matmul_many(&mats, &x, n, &mut outs, &mut sc));
                for (w, g) in mats.iter().zip(&got) {
                    let mut want = vec![0f32; n * w.rows];
                    with_path(p, || matmul(w, &x, n, &mut want, &mut sc));
                    let same = g.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{p} n={n} {} [{}, {k}] in {set:?}", w.ty, w.rows);
                }
            }
        }
    }
}

/// Plain softmax attention of one query row over the given keys, in f64.
fn naive_attention(
    qi: &[f32],
    k: &[f32],
    v: &[f32],
    hd: usize,
    keys: &[usize],
    scale: f32,
) -> Vec<f64> {
    if keys.is_empty() {
        return vec![0.0; hd];
    }
    let s: Vec<f64> = keys
        .iter()
        .map(|&j| {
            (0..hd)
                .map(|d| qi[d] as f64 * k[j * hd + d] as f64)
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut o = vec![0f64; hd];
    for (p, &j) in e.iter().zip(keys) {
        for d in 0..hd {
            o[d] += p / z * v[j * hd + d] as f64;
        }
    }
    o
}

#[test]
fn attention_blocks_match_naive_softmax() {
    use kernels::attention::{attend, AttnScratch, Head};
    use std::ops::Range;
    let _g = shared();
    for &(nq, nk, hd) in &[
        (1, 1, 16),
        (5, 200, 80),
        (32, 600, 128),
        (7, 300, 64),
        (32, 129, 80),
    ] {
        let q = rnd(nq * 3 * hd, 1 + nq as u64);
        let k = rnd(nk * hd, 2 + nk as u64);
        let v = rnd(nk * hd, 3 + hd as u64);
        let scale = 1.0 / (hd as f32).sqrt();
        let masks: Vec<Vec<Vec<Range<usize>>>> = vec![
            (0..nq).map(|_| std::iter::once(0..nk).collect()).collect(),
            (0..nq)
                .map(|i| std::iter::once(0..(nk / 2 + i).min(nk)).collect())
                .collect(),
            (0..nq)
                .map(|i| {
                    if i % 3 == 1 {
                        vec![]
                    } else {
                        vec![i.min(nk / 2)..(i + 10).min(nk / 2), (nk / 2)..nk]
                    }
                })
                .collect(),
        ];
        for rows in &masks {
            let rows: Vec<Vec<Range<usize>>> = rows
                .iter()
                .map(|r| r.iter().filter(|x| x.start < x.end).cloned().collect())
                .collect();
            for p in Path::available() {
                let mut out = vec![f32::NAN; nq * 2 * hd];
                let mut ws = AttnScratch::new();
                // q rows strided (3·hd), out rows strided (2·hd), as inside a multi-head layout.
                with_path(p, || {
                    let head = Head {
                        q: &q,
                        q_stride: 3 * hd,
                        nq,
                        k: &k,
                        v: &v,
                        nk,
                        hd,
                        scale,
                    };
                    attend(&head, &rows, &mut out, 2 * hd, &mut ws)
                });
                for i in 0..nq {
                    let keys: Vec<usize> = rows[i].iter().flat_map(|r| r.clone()).collect();
                    let want = naive_attention(&q[i * 3 * hd..][..hd], &k, &v, hd, &keys, scale);
                    for d in 0..hd {
                        let got = out[i * 2 * hd + d];
                        assert!(
                            (got as f64 - want[d]).abs() < 2e-6,
                            "{p} nq={nq} nk={nk} hd={hd} row {i} dim {d}: {got} vs {}",
                            want[d]
                        );
                    }
                }
            }
        }
    }
}

/// The decode form: rows that share a kv head and see the same keys, on every path, around the
/// key-block size (256) and with a head size that is not a multiple of eight.
#[test]
fn attention_group_matches_naive_softmax() {
    use kernels::attention::{attend_group, AttnScratch, Head};
    use std::ops::Range;
    let _g = shared();
    for &(nq, nk, hd) in &[
        (1, 1, 16),
        (4, 255, 128),
        (4, 256, 128),
        (4, 257, 128),
        (8, 700, 80),
        (3, 300, 20),
        (5, 6404, 128),
    ] {
        let q = rnd(nq * hd, 11 + nq as u64);
        let k = rnd(nk * hd, 12 + nk as u64);
        let v = rnd(nk * hd, 13 + hd as u64);
        let scale = 1.0 / (hd as f32).sqrt();
        let masks: Vec<Vec<Range<usize>>> = vec![
            vec![0..nk],
            vec![0..nk.div_ceil(2)],
            vec![0..nk / 3, nk / 2..nk],
            vec![],
        ];
        for keys in &masks {
            let keys: Vec<Range<usize>> =
                keys.iter().filter(|r| r.start < r.end).cloned().collect();
            let list: Vec<usize> = keys.iter().flat_map(|r| r.clone()).collect();
            // f16 K/V (as cached for quantized models) against the naive result on the rounded
            // values.
            let (k16, v16): (Vec<half::f16>, Vec<half::f16>) = (
                k.iter().map(|&x| half::f16::from_f32(x)).collect(),
                v.iter().map(|&x| half::f16::from_f32(x)).collect(),
            );
            let (kr, vr): (Vec<f32>, Vec<f32>) = (
                k16.iter().map(|x| x.to_f32()).collect(),
                v16.iter().map(|x| x.to_f32()).collect(),
            );
            for (p, half) in Path::available()
                .into_iter()
                .flat_map(|p| [(p, false), (p, true)])
            {
                let mut out = vec![f32::NAN; nq * hd];
                let mut ws = AttnScratch::new();
                with_path(p, || {
                    let (q, q_stride) = (&q[..], hd);
                    if half {
                        let (k, v) = (&k16[..], &v16[..]);
                        let head = Head {
                            q,
                            q_stride,
                            nq,
                            k,
                            v,
                            nk,
                            hd,
                            scale,
                        };
                        attend_group(&head, &keys, &mut out, &mut ws)
                    } else {
                        let (k, v) = (&k[..], &v[..]);
                        let head = Head {
                            q,
                            q_stride,
                            nq,
                            k,
                            v,
                            nk,
                            hd,
                            scale,
                        };
                        attend_group(&head, &keys, &mut out, &mut ws)
                    }
                });
                let (k, v) = if half { (&kr, &vr) } else { (&k, &v) };
                for i in 0..nq {
                    let want = naive_attention(&q[i * hd..][..hd], k, v, hd, &list, scale);
                    for d in 0..hd {
                        let got = out[i * hd + d];
                        assert!(
                            (got as f64 - want[d]).abs() < 2e-6,
                            "{p} f16 {half} nq={nq} nk={nk} hd={hd} keys {keys:?} row {i} dim {d}: {got} vs {}",
                            want[d]
                        );
                    }
                }
            }
        }
    }
}

/// `nn::attention` (parallel over kv heads and over heads × row blocks), `nn::attention_lowp` and
/// `nn::gelu_inplace` (parallel over chunks) run the caller's `with_path` path on rayon's workers
/// too: bit for bit what the kernels give on that path on this thread (or in a one-thread pool).
#[test]
fn nn_parallel_sections_keep_the_callers_path() {
    use kernels::attention::{attend_group, AttnScratch, Head};
    use mllama::nn::{attention, gelu_inplace, Heads, KeysValues, Mask};
    let _g = shared();
    let (nh, nkv, nk, hd) = (8, 2, 700, 64);
    let rep = nh / nkv;
    let q = rnd(nh * hd, 91);
    let k = rnd(nkv * nk * hd, 92);
    let v = rnd(nkv * nk * hd, 93);
    let heads = Heads::new(nh, nkv, hd);
    let g = rnd(1 << 17, 94);
    let mut per_path = Vec::new();
    for p in Path::available() {
        let (got, want, gelu) = with_path(p, || {
            let mut got = vec![0f32; nh * hd];
            attention(
                &q,
                KeysValues::new(&k, &v, nk, nk),
                heads,
                Mask::None,
                &mut got,
            );
            // The same heads through the decode kernel on this thread.
            let mut want = vec![0f32; nh * hd];
            let mut ws = AttnScratch::new();
            for h in 0..nkv {
                let head = Head {
                    q: &q[h * rep * hd..(h + 1) * rep * hd],
                    q_stride: hd,
                    nq: rep,
                    k: &k[h * nk * hd..(h + 1) * nk * hd],
                    v: &v[h * nk * hd..(h + 1) * nk * hd],
                    nk,
                    hd,
                    scale: heads.scale,
                };
                let out = &mut want[h * rep * hd..(h + 1) * rep * hd];
                attend_group(&head, std::slice::from_ref(&(0..nk)), out, &mut ws);
            }
            let mut gelu = g.clone();
            gelu_inplace(&mut gelu);
            (got, want, gelu)
        });
        assert!(
            got == want,
            "{p}: nn::attention differs from attend_group on this path"
        );
        per_path.push((p, gelu));
    }
    // The prefill sections (heads × row blocks; f32 and int16 attention): on the global pool the
    // same bits as in a one-thread pool, where every task runs on the thread that set the path.
    // (With the workers on the global path, the scalar path's results differed here.)
    let nq = 40;
    let qp = rnd(nq * nh * hd, 95);
    let prefill = |p: Path| {
        with_path(p, || {
            let (mut f, mut i) = (vec![0f32; nq * nh * hd], vec![0f32; nq * nh * hd]);
            let kv = KeysValues::new(&k, &v, nk, nk);
            attention(&qp, kv, heads, Mask::None, &mut f);
            let prec = mllama::nn::AttnPrecision::Int16;
            mllama::nn::attention_lowp(&qp, kv, heads, Mask::None, &mut i, prec);
            (f, i)
        })
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for p in Path::available() {
        let (f, i) = prefill(p);
        let (f1, i1) = one.install(|| prefill(p));
        assert!(
            f == f1,
            "{p}: prefill attention left the path on the workers"
        );
        assert!(i == i1, "{p}: int16 attention left the path on the workers");
    }
    // GELU on a chunk of the input on this thread, path by path, equals the parallel result.
    for (p, gelu) in &per_path {
        let mut part = g[..1 << 14].to_vec();
        with_path(*p, || gelu_inplace(&mut part));
        assert!(
            gelu[..1 << 14] == part[..],
            "{p}: parallel GELU left the path"
        );
    }
}

#[test]
fn exp_matches_scalar() {
    let _g = shared();
    let mut x: Vec<f32> = (0..2000).map(|i| -100.0 + i as f32 * 0.05).collect();
    x.push(f32::NEG_INFINITY);
    for p in Path::available() {
        let mut a = x.clone();
        let sum = with_path(p, || kernels::attention::exp_sub_sum(&mut a, 0.5));
        let mut want_sum = 0f64;
        for (g, &xi) in a.iter().zip(&x) {
            let w = ((xi - 0.5) as f64).exp();
            want_sum += w;
            assert!(
                (*g as f64 - w).abs() <= 3e-7 * w + 1e-37,
                "{p} exp({xi} - 0.5) = {g}, want {w}"
            );
        }
        assert!((sum as f64 - want_sum).abs() <= 1e-5 * want_sum, "{p} sum");
    }
}
