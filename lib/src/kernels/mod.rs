//! Matrix kernels: `y[n, m] = x[n, k] · W[m, k]ᵀ` for every weight type (F32, F16, BF16, Q8_0,
//! Q4_0), with a SIMD path chosen once at start-up.
//!
//! # Two regimes
//! - **Decode** (few activation rows, memory-bound): each weight row is streamed once and dotted
//!   with every activation row. Float weights multiply f32 activations (FMA); quantized weights
//!   multiply activations quantized to Q8_0 with integer dot products, as ggml does (the
//!   activation quantization is exactly [`BlockQ8_0::quantize`]). Parallel over blocks of weight
//!   rows.
//! - **GEMM** (many rows, compute-bound): a cache-blocked packed GEMM (module `gemm`) that converts
//!   weights of any type to f32 while packing and multiplies f32 activations (unquantized) with a
//!   register-blocked FMA micro-kernel.
//!
//! [`matmul`] picks the regime by the number of rows ([`gemm_min_rows`], chosen by measurement);
//! [`matmul_with`] forces one.
//!
//! # Paths and dispatch
//! [`Path`]: `scalar` (portable reference, no target features), `avx2` (x86-64 with AVX2 + FMA +
//! F16C), `avx512` (`avx2` plus AVX-512 F/BW/VL/VNNI/VBMI: `vpdpbusd` quantized decode kernels,
//! everything else shared with `avx2`), `neon` (aarch64) and `dotprod` (aarch64 NEON + `sdot`). The
//! process-wide path is chosen on first use: the best available one, or the one named by the
//! environment variable `MLLAMA_SIMD=scalar|avx2|avx512|neon|dotprod|auto` (an unavailable or
//! unknown name falls back to the best available path with a warning that [`path_warning`]
//! returns; the library prints nothing). [`simd_name`] reports it; [`with_path`] runs a closure
//! with another path on the current thread (tests, benchmarks). The path is read once per call on
//! the calling thread and passed to the workers.
//!
//! Note that for quantized weights the two regimes differ numerically (decode quantizes the
//! activations, GEMM does not), so a row's result can change slightly when the batch crosses the
//! threshold; within one regime, a row's result does not depend on the other rows.
//!
//! # Agreement
//! [`scalar`] is the meaning of every kernel. Integer kernels agree **bit for bit** on every path;
//! float kernels (and the GEMM) agree within a relative tolerance (see [`scalar`]'s module docs).
//!
//! # Also here
//! - [`quantize_row_q8_0`], [`dot`], [`axpy`], [`scale`]: vector helpers on the active path.
//! - [`attention`]: blocked attention for one (head, query block) through the GEMM micro-kernels.
//! - [`probe`]: FMA-peak and memory-bandwidth probes for reporting kernel figures as ratios.
//!
//! Allocation: a call with a warm [`Scratch`] allocates nothing itself (the GEMM's packing buffers
//! are per-thread and persist); rayon's global job queue may allocate one block per 63 calls made
//! from outside its pool.

pub mod attention;
mod gemm;
mod pack;
pub mod probe;
pub mod scalar;
pub mod tensor;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::kernels::tensor::Mat;
use crate::quant::{BlockQ8_0, QuantBlock};
use crate::GgmlType;

// ---------------------------------------------------------------------------------------------
// Dispatch.

/// A kernel implementation family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Portable Rust, no target features: the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI/VBMI: the quantized (Q8_0/Q4_0) decode
    /// kernels use `vpdpbusd` on 512-bit registers (Q4_0 nibbles gathered four blocks at a time
    /// with the VBMI byte permute); every other kernel is the [`Path::Avx2`] one. Results are
    /// bit-identical to [`Path::Avx2`]. CPUs with VNNI but no VBMI (Cascade Lake) get `avx2`.
    Avx512,
    /// aarch64 NEON (`vmull_s8`/`vpadalq_s16` integer dots).
    Neon,
    /// aarch64 NEON with the `dotprod` extension (`sdot` integer dots).
    Dotprod,
}

impl Path {
    /// Every path, best first within an architecture.
    pub const ALL: [Path; 5] = [
        Path::Dotprod,
        Path::Neon,
        Path::Avx512,
        Path::Avx2,
        Path::Scalar,
    ];

    /// The name `MLLAMA_SIMD` uses.
    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
            Path::Neon => "neon",
            Path::Dotprod => "dotprod",
        }
    }

    /// Parse a name (case-insensitive).
    pub fn parse(s: &str) -> Option<Path> {
        Path::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the path (run-time detection).
    pub fn is_available(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => {
                Path::Avx2.is_available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512vbmi")
            }
            #[cfg(target_arch = "aarch64")]
            Path::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Path::Dotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best path this CPU can run.
    pub fn best() -> Path {
        Path::ALL
            .into_iter()
            .find(|p| p.is_available())
            .unwrap_or(Path::Scalar)
    }

    /// Every path this CPU can run, best first.
    pub fn available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.is_available()).collect()
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The path for a `MLLAMA_SIMD` value (`None`, empty or `auto`: the best one), with a warning
/// when the request cannot be honoured (unknown name, or a path this CPU lacks).
pub fn select_path(request: Option<&str>) -> (Path, Option<String>) {
    let best = Path::best();
    match request.map(str::trim) {
        None | Some("") => (best, None),
        Some(s) if s.eq_ignore_ascii_case("auto") => (best, None),
        Some(s) => match Path::parse(s) {
            Some(p) if p.is_available() => (p, None),
            Some(p) => (
                best,
                Some(format!("MLLAMA_SIMD={s}: this CPU cannot run the {p} path; using {best}")),
            ),
            None => (
                best,
                Some(format!(
                    "MLLAMA_SIMD={s}: unknown path (expected scalar, avx2, avx512, neon, dotprod or auto); using {best}"
                )),
            ),
        },
    }
}

static GLOBAL: OnceLock<(Path, Option<String>)> = OnceLock::new();

thread_local! {
    static OVERRIDE: Cell<Option<Path>> = const { Cell::new(None) };
}

/// The process-wide path and the warning of its selection, chosen on first use.
fn global() -> &'static (Path, Option<String>) {
    GLOBAL.get_or_init(|| select_path(std::env::var("MLLAMA_SIMD").ok().as_deref()))
}

fn global_path() -> Path {
    global().0
}

/// Why the process-wide path is not the one `MLLAMA_SIMD` asks for (an unknown name, or a path
/// this CPU cannot run), or `None`. Chooses the path if no kernel has run yet. The library does
/// not print it; a front end shows it (the `mllama` binary prints `warning: ...` at start-up).
pub fn path_warning() -> Option<&'static str> {
    global().1.as_deref()
}

/// The path kernels called on this thread use now.
pub fn active_path() -> Path {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(global_path)
}

/// Name of the active path (`scalar`, `avx2`, `avx512`, `neon` or `dotprod`).
pub fn simd_name() -> &'static str {
    active_path().name()
}

/// Run `f` with `path` as this thread's path (kernels it calls pass it on to their workers).
///
/// # Panics
/// If this CPU cannot run `path`.
pub fn with_path<R>(path: Path, f: impl FnOnce() -> R) -> R {
    assert!(
        path.is_available(),
        "kernels::with_path: this CPU cannot run the {path} path"
    );
    struct Restore(Option<Path>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(path))));
    f()
}

// ---------------------------------------------------------------------------------------------
// Buffers.

/// 32 quantized activation bytes, aligned for one 256-bit load.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct Qs(pub [i8; 32]);

/// Buffers reused across calls so the decode loop does not allocate.
#[derive(Default, Debug)]
pub struct Scratch {
    /// Scalar path: activations as Q8_0 blocks.
    q8: Vec<BlockQ8_0>,
    /// SIMD paths: activations split into bytes, f32 scales and per-block byte sums.
    qs: Vec<Qs>,
    qd: Vec<f32>,
    qsum: Vec<i32>,
}

impl Scratch {
    /// Empty buffers; they grow to the largest call and are then reused.
    pub fn new() -> Self {
        Self::default()
    }
}

fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// A raw pointer to an output buffer that disjoint parallel tasks write into.
#[derive(Clone, Copy)]
pub struct SyncPtr(pub *mut f32);
// SAFETY: only used to hand one output buffer to tasks that write disjoint index sets (each task
// owns a distinct tile of `y`); the buffer outlives the parallel section (rayon joins before the
// borrow ends).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// Row-major `[n, m]` output written by disjoint tasks.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub p: SyncPtr,
    pub m: usize,
}

impl Out {
    /// # Safety
    /// `(i, j)` lies inside the buffer and belongs to the calling task.
    #[inline(always)]
    pub unsafe fn put(self, i: usize, j: usize, v: f32) {
        *self.p.0.add(i * self.m + j) = v;
    }
}

#[inline(always)]
pub(crate) fn with_bias(v: f32, bias: Option<&[f32]>, j: usize) -> f32 {
    match bias {
        Some(b) => v + b[j],
        None => v,
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix multiplication.

/// Which kernel family computes a [`matmul_with`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// Decode below [`gemm_min_rows`] rows, GEMM from there.
    Auto,
    /// Streaming dot products (quantized weights: Q8_0-quantized activations, integer dots).
    Decode,
    /// Packed f32 GEMM (activations stay f32 for every weight type).
    Gemm,
}

/// From this many activation rows on, [`matmul`] uses the packed GEMM for weights of type `ty` on
/// `path` (`usize::MAX`: never). Measured on AVX2 with `cargo bench --bench kernels -- summary
/// crossover` (4096×4096 and 14336×4096, three runs): the integer Q4_0 kernel beat the f32 GEMM
/// at every n up to 512, the Q8_0 kernel up to n ≈ 64, the float decode kernels up to n ≈ 48.
/// The NEON paths use the same values (not measured on hardware); on the scalar path the portable
/// GEMM overtakes the plain dot products at once.
pub fn gemm_min_rows(path: Path, ty: GgmlType) -> usize {
    match (path, ty) {
        (Path::Scalar, _) => 4,
        (_, GgmlType::Q4_0) => usize::MAX,
        (_, GgmlType::Q8_0) => 64,
        _ => 48,
    }
}

/// `y[n, m] = x[n, k] · W[m, k]ᵀ` with `m = w.rows`, `k = w.cols`.
pub fn matmul(w: &Mat, x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) {
    matmul_with(w, None, x, n, y, scratch, Regime::Auto);
}

/// `y[n, m] = x[n, k] · W[m, k]ᵀ + b[m]`
pub fn matmul_bias(w: &Mat, b: &[f32], x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) {
    matmul_with(w, Some(b), x, n, y, scratch, Regime::Auto);
}

/// [`matmul`] / [`matmul_bias`] with the regime chosen by the caller.
pub fn matmul_with(
    w: &Mat,
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut Scratch,
    regime: Regime,
) {
    let (m, k) = (w.rows, w.cols);
    assert_eq!(
        x.len(),
        n * k,
        "matmul: x has {} values, expected {n}×{k}",
        x.len()
    );
    assert_eq!(
        y.len(),
        n * m,
        "matmul: y has {} values, expected {n}×{m}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            m,
            "matmul: bias has {} values, expected {m}",
            b.len()
        );
    }
    assert!(
        matches!(
            w.ty,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0
        ),
        "matmul: weight type {} has no kernel",
        w.ty
    );
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        for row in y.chunks_exact_mut(m) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = with_bias(0.0, bias, j);
            }
        }
        return;
    }
    let path = active_path();
    let gemm = match regime {
        Regime::Auto => n >= gemm_min_rows(path, w.ty),
        Regime::Decode => false,
        Regime::Gemm => true,
    };
    if gemm {
        gemm::gemm(path, w, x, n, y);
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(m) {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
    } else {
        decode(path, w, bias, x, n, y, scratch);
    }
}

/// Activations in the form the weight type and path want.
enum Act<'a> {
    F32(&'a [f32]),
    /// Scalar path: Q8_0 blocks.
    Blocks(&'a [BlockQ8_0]),
    /// SIMD paths: bytes, scales, byte sums.
    Split(&'a [Qs], &'a [f32], &'a [i32]),
}

/// Weight bytes (times activation rows) a decode task should at least cover.
const DECODE_TASK_BYTES: usize = 1 << 18;

fn decode(
    path: Path,
    w: &Mat,
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    sc: &mut Scratch,
) {
    let (m, k) = (w.rows, w.cols);
    let act = match w.ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 => {
            let nb = k / 32;
            if path == Path::Scalar {
                grow(&mut sc.q8, n * nb, bytemuck::Zeroable::zeroed());
                let q8 = &mut sc.q8[..n * nb];
                for (row, out) in x.chunks_exact(k).zip(q8.chunks_exact_mut(nb)) {
                    scalar::quantize_row_q8_0(row, out);
                }
                Act::Blocks(&sc.q8[..n * nb])
            } else {
                grow(&mut sc.qs, n * nb, Qs::default());
                grow(&mut sc.qd, n * nb, 0.0);
                grow(&mut sc.qsum, n * nb, 0);
                let (qs, qd, qsum) = (
                    &mut sc.qs[..n * nb],
                    &mut sc.qd[..n * nb],
                    &mut sc.qsum[..n * nb],
                );
                for (i, row) in x.chunks_exact(k).enumerate() {
                    let r = i * nb..(i + 1) * nb;
                    quantize_split(
                        path,
                        w.ty,
                        row,
                        &mut qs[r.clone()],
                        &mut qd[r.clone()],
                        &mut qsum[r],
                    );
                }
                Act::Split(&sc.qs[..n * nb], &sc.qd[..n * nb], &sc.qsum[..n * nb])
            }
        }
        _ => Act::F32(x),
    };
    let threads = rayon::current_num_threads().max(1);
    let work = w.nbytes().saturating_mul(n.div_ceil(4));
    let tasks = (work / DECODE_TASK_BYTES)
        .clamp(1, 8 * threads)
        .min(m.div_ceil(4));
    let rows_per = m.div_ceil(tasks).next_multiple_of(4);
    let tasks = m.div_ceil(rows_per);
    let out = Out {
        p: SyncPtr(y.as_mut_ptr()),
        m,
    };
    let job = |t: usize| {
        let rows = t * rows_per..((t + 1) * rows_per).min(m);
        // SAFETY: tasks own disjoint row ranges of W, hence disjoint columns of y; `out` covers
        // the n × m buffer `y`, which outlives the parallel section.
        unsafe { decode_rows(path, w, &act, n, rows, out, bias) };
    };
    if tasks == 1 {
        job(0);
    } else {
        (0..tasks).into_par_iter().for_each(job);
    }
}

fn quantize_split(
    path: Path,
    ty: GgmlType,
    x: &[f32],
    qs: &mut [Qs],
    d: &mut [f32],
    s: &mut [i32],
) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Avx2 and Avx512 paths are only active when their features (a superset of
        // AVX2 + FMA + F16C) were detected (`Path::is_available`, checked by `select_path` and
        // `with_path`).
        Path::Avx2 | Path::Avx512 => unsafe {
            let interleave = match (path, ty) {
                (Path::Avx2, GgmlType::Q4_0) => 2,
                (_, GgmlType::Q4_0) => 4,
                _ => 1,
            };
            x86::quantize_row_split(x, qs, d, s, interleave)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON detected for these paths.
        Path::Neon | Path::Dotprod => unsafe {
            arm::quantize_row_split(x, qs, d, s, ty == GgmlType::Q4_0)
        },
        _ => {
            let _ = ty;
            for (b, c) in x.chunks_exact(32).enumerate() {
                let blk = BlockQ8_0::quantize(c);
                qs[b].0 = blk.qs;
                d[b] = blk.d.to_f32();
                s[b] = blk.qs.iter().map(|&q| q as i32).sum();
            }
        }
    }
}

/// # Safety
/// `out` covers `n × w.rows`; the caller owns columns `rows` of it.
unsafe fn decode_rows(
    path: Path,
    w: &Mat,
    act: &Act<'_>,
    n: usize,
    rows: std::ops::Range<usize>,
    out: Out,
    bias: Option<&[f32]>,
) {
    let k = w.cols;
    let nb = k / 32;
    match (path, act) {
        #[cfg(target_arch = "x86_64")]
        (Path::Avx2 | Path::Avx512, Act::Split(qs, d, s)) => x86::decode_quant(
            path == Path::Avx512,
            w.ty == GgmlType::Q4_0,
            w.data(),
            nb,
            (qs, d, s),
            n,
            rows,
            out,
            bias,
        ),
        #[cfg(target_arch = "x86_64")]
        (Path::Avx2 | Path::Avx512, Act::F32(x)) => match w.ty {
            GgmlType::F32 => x86::decode_float(w.as_f32(), k, x, n, rows, out, bias),
            GgmlType::F16 => x86::decode_float(w.as_f16(), k, x, n, rows, out, bias),
            _ => x86::decode_float(w.as_bf16(), k, x, n, rows, out, bias),
        },
        #[cfg(target_arch = "aarch64")]
        (Path::Neon | Path::Dotprod, Act::Split(qs, d, s)) => arm::decode_quant(
            path == Path::Dotprod,
            w.ty == GgmlType::Q4_0,
            w.data(),
            nb,
            (qs, d, s),
            n,
            rows,
            out,
            bias,
        ),
        #[cfg(target_arch = "aarch64")]
        (Path::Neon | Path::Dotprod, Act::F32(x)) => match w.ty {
            GgmlType::F32 => arm::decode_float(w.as_f32(), k, x, n, rows, out, bias),
            GgmlType::F16 => arm::decode_float(w.as_f16(), k, x, n, rows, out, bias),
            _ => arm::decode_float(w.as_bf16(), k, x, n, rows, out, bias),
        },
        (_, Act::Blocks(q)) => {
            for j in rows {
                for i in 0..n {
                    let xq = &q[i * nb..(i + 1) * nb];
                    let v = match w.ty {
                        GgmlType::Q8_0 => {
                            scalar::dot_q8_0_q8_0(&w.as_q8_0()[j * nb..(j + 1) * nb], xq)
                        }
                        _ => scalar::dot_q4_0_q8_0(&w.as_q4_0()[j * nb..(j + 1) * nb], xq),
                    };
                    out.put(i, j, with_bias(v, bias, j));
                }
            }
        }
        (_, Act::F32(x)) => {
            for j in rows {
                for i in 0..n {
                    let xr = &x[i * k..(i + 1) * k];
                    let v = match w.ty {
                        GgmlType::F32 => scalar::dot_f32(&w.as_f32()[j * k..(j + 1) * k], xr),
                        GgmlType::F16 => scalar::dot_f16_f32(&w.as_f16()[j * k..(j + 1) * k], xr),
                        _ => scalar::dot_bf16_f32(&w.as_bf16()[j * k..(j + 1) * k], xr),
                    };
                    out.put(i, j, with_bias(v, bias, j));
                }
            }
        }
        (_, Act::Split(..)) => unreachable!("split activations only on SIMD paths"),
    }
}

/// Plain f32 GEMM on row-major buffers: `c[n, m] = a[n, k] · b[m, k]ᵀ` (both operands
/// "row = one dot-product vector"). Single-threaded (callers parallelise over heads and blocks);
/// SIMD on the active path.
pub fn gemm_nt(a: &[f32], b: &[f32], n: usize, m: usize, k: usize, c: &mut [f32]) {
    assert!(
        a.len() >= n * k && b.len() >= m * k && c.len() >= n * m,
        "gemm_nt: buffers too small"
    );
    if n == 0 || m == 0 {
        return;
    }
    let out = Out {
        p: SyncPtr(c.as_mut_ptr()),
        m,
    };
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected; `out` covers c (n × m).
        Path::Avx2 | Path::Avx512 => unsafe {
            x86::decode_float(&b[..m * k], k, &a[..n * k], n, 0..m, out, None)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: features detected; `out` covers c (n × m).
        Path::Neon | Path::Dotprod => unsafe {
            arm::decode_float(&b[..m * k], k, &a[..n * k], n, 0..m, out, None)
        },
        _ => {
            for i in 0..n {
                let ar = &a[i * k..(i + 1) * k];
                for j in 0..m {
                    c[i * m + j] = scalar::dot_f32(ar, &b[j * k..(j + 1) * k]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vector helpers on the active path.

/// Quantize a row to Q8_0 blocks, bit-identical to [`BlockQ8_0::quantize`] (finite inputs).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        out.len() * 32,
        "quantize_row_q8_0: {} values for {} blocks",
        x.len(),
        out.len()
    );
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected.
        Path::Avx2 | Path::Avx512 => unsafe { x86::quantize_row_q8_0(x, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: features detected.
        Path::Neon | Path::Dotprod => unsafe { arm::quantize_row_q8_0(x, out) },
        _ => scalar::quantize_row_q8_0(x, out),
    }
}

/// `Σ a[i]·b[i]` over the common length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_on(active_path(), a, b)
}

/// `y[i] += a·x[i]` over the common length.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_on(active_path(), a, x, y)
}

/// `y[i] *= a`.
pub fn scale(a: f32, y: &mut [f32]) {
    scale_on(active_path(), a, y)
}

#[inline]
pub(crate) fn dot_on(path: Path, a: &[f32], b: &[f32]) -> f32 {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` is only ever an available path.
        Path::Avx2 | Path::Avx512 => unsafe { x86::dot(a, b) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `path` is only ever an available path.
        Path::Neon | Path::Dotprod => unsafe { arm::dot(a, b) },
        _ => {
            let n = a.len().min(b.len());
            scalar::dot_f32(&a[..n], &b[..n])
        }
    }
}

#[inline]
pub(crate) fn axpy_on(path: Path, a: f32, x: &[f32], y: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` is only ever an available path.
        Path::Avx2 | Path::Avx512 => unsafe { x86::axpy(a, x, y) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `path` is only ever an available path.
        Path::Neon | Path::Dotprod => unsafe { arm::axpy(a, x, y) },
        _ => scalar::axpy(a, x, y),
    }
}

#[inline]
pub(crate) fn scale_on(path: Path, a: f32, y: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` is only ever an available path.
        Path::Avx2 | Path::Avx512 => unsafe { x86::scale(a, y) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `path` is only ever an available path.
        Path::Neon | Path::Dotprod => unsafe { arm::scale(a, y) },
        _ => scalar::scale(a, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn reference(wf: &[f32], x: &[f32], n: usize, m: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * m];
        for i in 0..n {
            for j in 0..m {
                let mut s = 0f64;
                for t in 0..k {
                    s += wf[j * k + t] as f64 * x[i * k + t] as f64;
                }
                y[i * m + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn matmul_all_types_against_f64_reference() {
        let (n, m, k) = (37, 70, 96);
        let wf = rnd(m * k, 3);
        let x = rnd(n * k, 5);
        let mut sc = Scratch::new();
        for path in Path::available() {
            for ty in [
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::Q8_0,
                GgmlType::Q4_0,
            ] {
                let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
                crate::quant::convert_f32(ty, &wf, k, &mut bytes).unwrap();
                let w = Mat::from_bytes(ty, m, k, &bytes);
                // Reference on the dequantized weights.
                let mut wd = vec![0f32; m * k];
                crate::quant::dequantize(ty, &bytes, &mut wd).unwrap();
                let want = reference(&wd, &x, n, m, k);
                for regime in [Regime::Decode, Regime::Gemm] {
                    let mut y = vec![0f32; n * m];
                    with_path(path, || {
                        matmul_with(&w, None, &x, n, &mut y, &mut sc, regime)
                    });
                    let tol = match (ty, regime) {
                        (GgmlType::Q8_0 | GgmlType::Q4_0, Regime::Decode) => 0.02, // activation quantization
                        _ => 1e-5,
                    };
                    for (a, b) in y.iter().zip(&want) {
                        assert!((a - b).abs() <= tol, "{path} {ty} {regime:?}: {a} vs {b}");
                    }
                    // Decode rows do not depend on how many rows go together.
                    if regime == Regime::Decode {
                        let mut y1 = vec![0f32; m];
                        with_path(path, || {
                            matmul_with(&w, None, &x[..k], 1, &mut y1, &mut sc, regime)
                        });
                        assert_eq!(&y1[..], &y[..m], "{path} {ty}");
                    }
                }
            }
        }
    }

    #[test]
    fn select_path_parses_and_falls_back() {
        assert_eq!(select_path(None), (Path::best(), None));
        assert_eq!(select_path(Some("auto")), (Path::best(), None));
        assert_eq!(select_path(Some("Scalar")), (Path::Scalar, None));
        let (p, w) = select_path(Some("bogus"));
        assert_eq!(p, Path::best());
        assert!(w.unwrap().contains("unknown"));
        for p in Path::ALL {
            let (got, w) = select_path(Some(p.name()));
            if p.is_available() {
                assert_eq!((got, w), (p, None));
            } else {
                assert_eq!(got, Path::best());
                assert!(w.unwrap().contains("cannot run"));
            }
        }
    }
}
