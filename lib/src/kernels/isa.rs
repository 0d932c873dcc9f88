//! The instruction sets, as one trait implemented once per [`Path`]: [`Scalar`] here, `Avx2` and
//! `Avx512` in `x86`, `Neon` and `Dotprod` in `arm`. Every default method is the portable
//! (scalar) kernel, so an ISA overrides only what it accelerates, and names the scalar twin in
//! its docs. `kernels::with_isa!` is the one place that turns a run-time [`Path`] into its ISA type;
//! every dispatching kernel goes through it.
//!
//! Adding a SIMD path: a `Path` variant (with detection), a unit type implementing [`Isa`] in its
//! architecture's folder, and one arm in `kernels::with_isa!`.

use half::f16;

use super::gemm::{Kernel, ScalarKernel};
use super::igemm::{IKernel, Int16, Int8, ScalarIKernel};
use super::types::Decoder;
use super::Path;
use crate::quant::BlockQ8_0;
use crate::GgmlType;

/// One instruction set's kernels. Methods are `unsafe`: the caller guarantees that this CPU runs
/// [`Isa::PATH`] (paths only become active through `select_path` / `with_path`, which check).
pub(crate) trait Isa: 'static {
    /// The path this ISA implements.
    #[cfg_attr(not(test), allow(dead_code))] // checked against `with_isa!` by a unit test
    const PATH: Path;
    /// Packing and micro-kernel of the packed GEMM (and of blocked attention).
    type Gemm: Kernel;
    /// Micro-kernel of the int8 GEMM ([`super::igemm`]).
    type IGemm: IKernel<Int8>;
    /// Micro-kernel of the 12-bit integer GEMM ([`super::igemm`]).
    type I16Gemm: IKernel<Int16>;

    /// This ISA's decode kernel for weight type `ty`, if it has one (else the type's portable
    /// kernel runs).
    fn decoder(_ty: GgmlType) -> Option<Decoder> {
        None
    }

    /// This ISA's decode kernel for matrices of type `ty` in their repacked layout
    /// ([`super::repack`]), if it has one (else the portable one runs).
    fn repacked_decoder(_ty: GgmlType) -> Option<Decoder> {
        None
    }

    /// Twin: [`super::scalar::quantize_row_q8_0`] (bit-identical).
    unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
        super::scalar::quantize_row_q8_0(x, out)
    }

    /// `Σ a[i]·b[i]` over the common length. Twin: [`super::scalar::dot_f32`].
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        super::scalar::dot_f32(&a[..n], &b[..n])
    }

    /// `y[i] += a·x[i]`. Twin: [`super::scalar::axpy`].
    unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        super::scalar::axpy(a, x, y)
    }

    /// `y[i] *= a`. Twin: [`super::scalar::scale`].
    unsafe fn scale(a: f32, y: &mut [f32]) {
        super::scalar::scale(a, y)
    }

    /// `s[i] = exp(s[i] − m)`, returning `Σ s[i]`. Twin: [`super::scalar::exp_sub_sum`].
    unsafe fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
        super::scalar::exp_sub_sum(s, m)
    }

    /// The probability levels of the low-precision attention ([`super::iattn`]):
    /// `p[i] = ⌊exp(s[i] − m)·pmax + ½⌋` with this path's `exp` ([`Isa::exp_sub_sum`]'s, lane for
    /// lane), returning `Σ p[i]`; `s` may be overwritten. `pmax < 2¹⁵`, `s[i] ≤ m`. Twin:
    /// [`super::scalar::exp_levels`] over [`Isa::exp_sub_sum`] (bit-identical).
    unsafe fn exp_levels(s: &mut [f32], m: f32, pmax: f32, p: &mut [i16]) -> i32 {
        Self::exp_sub_sum(s, m);
        super::scalar::levels(s, pmax, p)
    }

    /// Grouped attention scores for f32 keys: `s[r·nb + j] = scale · q_r·k_j`. `ahead`: the bytes
    /// the caller reads next (a hint: a path may prefetch them into L2 spread over these keys,
    /// or ignore them; they never change a result).
    unsafe fn scores_f32(
        q: &[f32],
        kb: &[f32],
        hd: usize,
        scale: f32,
        s: &mut [f32],
        ahead: &[u8],
    ) {
        let _ = ahead;
        super::scalar::group_scores(q, kb, hd, scale, s)
    }

    /// [`Isa::scores_f32`] for f16 keys (widened into `scratch`).
    unsafe fn scores_f16(
        q: &[f32],
        kb: &[f16],
        hd: usize,
        scale: f32,
        s: &mut [f32],
        scratch: &mut Vec<f32>,
        ahead: &[u8],
    ) {
        let _ = ahead;
        super::scalar::group_scores(q, super::scalar::widen(kb, scratch), hd, scale, s)
    }

    /// Grouped attention `P·V` for f32 values: `o[r] += Σ_j p[r·nb + j] · v_j` (`ahead` as in
    /// [`Isa::scores_f32`]).
    unsafe fn pv_f32(p: &[f32], vb: &[f32], hd: usize, o: &mut [f32], ahead: &[u8]) {
        let _ = ahead;
        super::scalar::group_pv(p, vb, hd, o)
    }

    /// [`Isa::pv_f32`] for f16 values (widened into `scratch`).
    unsafe fn pv_f16(
        p: &[f32],
        vb: &[f16],
        hd: usize,
        o: &mut [f32],
        scratch: &mut Vec<f32>,
        ahead: &[u8],
    ) {
        let _ = ahead;
        super::scalar::group_pv(p, super::scalar::widen(vb, scratch), hd, o)
    }

    /// Rows of the integer tile [`Isa::itile`] (low-precision attention, [`super::iattn`]).
    const IMR: usize = 4;
    /// Columns of the integer tile [`Isa::itile`].
    const INR: usize = 8;

    /// Integer tile of the low-precision attention ([`super::iattn`]): every `i32` of `a` and `b`
    /// holds two `i16` (the low half first), and for the full `IMR × INR` tile
    /// `c[i·ldc + j] = Σ_{p<kp} lo(a[i·lda + p])·lo(b[p·INR + j]) + hi(a[i·lda + p])·hi(b[p·INR + j])`
    /// in `i32` (the caller bounds the values so that no sum overflows). Twin:
    /// [`super::scalar::itile`] (bit-identical).
    ///
    /// # Safety
    /// Also: `a` holds `IMR` rows of `kp` pairs `lda` apart, `b` holds `kp·INR` pairs, `c` covers
    /// the tile.
    unsafe fn itile(kp: usize, a: *const i32, lda: usize, b: *const i32, c: *mut i32, ldc: usize) {
        super::scalar::itile::<4, 8>(kp, a, lda, b, c, ldc)
    }

    /// [`Isa::itile`] where only the first `INR / 2` columns are needed (the rest of `c`'s tile
    /// may be left as it was or written). Twin: [`Isa::itile`] (the default: the whole tile).
    ///
    /// # Safety
    /// As [`Isa::itile`].
    unsafe fn itile_half(
        kp: usize,
        a: *const i32,
        lda: usize,
        b: *const i32,
        c: *mut i32,
        ldc: usize,
    ) {
        Self::itile(kp, a, lda, b, c, ldc)
    }

    /// Floating-point operations of one [`Isa::fma_chains`] iteration (8 chains × (mul + add)).
    const FMA_FLOPS_PER_ITER: f64 = 16.0;

    /// FMA peak probe ([`super::probe`]): `iters` rounds of independent multiply-add chains.
    unsafe fn fma_chains(iters: u64) -> f32 {
        let mut acc = [0f32; 8];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = i as f32 * 0.001;
        }
        let m = std::hint::black_box(0.999_999f32);
        let c = std::hint::black_box(1e-7f32);
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = *a * m + c;
            }
        }
        acc.iter().sum()
    }

    /// Read-bandwidth probe ([`super::probe`]): the sum of `x` (SIMD paths: `streams` equal
    /// parts read side by side).
    unsafe fn sum_streams(x: &[f32], _streams: usize) -> f32 {
        let mut acc = [0f32; 8];
        for c in x.chunks_exact(8) {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        acc.iter().sum()
    }
}

/// The portable path: every default of [`Isa`].
pub(crate) struct Scalar;

impl Isa for Scalar {
    const PATH: Path = Path::Scalar;
    type Gemm = ScalarKernel;
    type IGemm = ScalarIKernel;
    type I16Gemm = ScalarIKernel;
}
