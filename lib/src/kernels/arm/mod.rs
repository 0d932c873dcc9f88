//! NEON kernels for aarch64 ([`super::Path::Neon`], and [`super::Path::Dotprod`] whose integer dots
//! use `sdot` through `asm!`, the `vdotq_s32` intrinsic being unstable).
//!
//! Every function here is `unsafe` and compiled with `#[target_feature(enable = "neon")]` (plus
//! `dotprod` for the `sdot` variants); the dispatcher only calls them after
//! `is_aarch64_feature_detected!` confirmed the features. Each names its scalar twin in
//! [`super::scalar`].

use std::arch::aarch64::*;
use std::arch::asm;

use half::{bf16, f16};

use super::gemm::{Kernel, Panel};
use super::isa::Isa;
mod bytes;
mod iattn;
mod igemm;
mod repack;

use bytes::{NeonOps, SdotOps};

use super::intdot::{LaneKernel, LaneTile};
use super::traverse::{traverse, FloatDot, FloatTile, QuantDot, QuantTile};
use super::types::{plain_act, ActQuant, Decoder, Job};
use super::{split_row_bytes, split_row_mut, Path, Q8Row, Qs};
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::q5_1::BlockQ5_1;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::{BlockQ4_0, BlockQ8_0};
use crate::GgmlType;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// f16 bits → f32, exactly (`fcvtl`, base ARMv8; the f16 vector types are unstable in Rust).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    asm!("fcvtl {r:v}.4s, {h:v}.4h", h = in(vreg) h, r = out(vreg) r, options(pure, nomem, nostack));
    r
}

/// f32 → f16 bits, round to nearest even (`fcvt`), as `half::f16::from_f32`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f32_to_f16_bits(x: f32) -> u16 {
    let r: f32;
    asm!("fcvt {r:h}, {x:s}", x = in(vreg) x, r = out(vreg) r, options(pure, nomem, nostack));
    // The half sits in the low 16 bits of the register; the instruction zeroes the rest.
    r.to_bits() as u16
}

#[inline]
fn u16_at(p: *const u8) -> u16 {
    // SAFETY: callers pass a pointer to the 2-byte scale at the start of a block.
    unsafe { std::ptr::read_unaligned(p as *const u16) }
}

/// Sum of 8 lanes `[lo | hi]` in the fixed order of [`super::scalar::lanes8`].
#[inline]
#[target_feature(enable = "neon")]
unsafe fn lanes8(lo: float32x4_t, hi: float32x4_t) -> f32 {
    let t = vaddq_f32(lo, hi); // [a0+a4, a1+a5, a2+a6, a3+a7]
    let u = vpaddq_f32(t, t); // [t0+t1, t2+t3, ..]
    vgetq_lane_f32::<0>(u) + vgetq_lane_f32::<1>(u)
}

// ---------------------------------------------------------------------------------------------
// Q8_0 activation quantizer.

/// One block: (f16 bits of d, bytes, Σ qs). Twin: [`BlockQ8_0::quantize`]; `vcvtaq_s32_f32`
/// rounds half away from zero exactly like `quant::round_half_away`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quant_block(p: *const f32, out: *mut i8) -> (u16, i32) {
    let v = [
        vld1q_f32(p),
        vld1q_f32(p.add(4)),
        vld1q_f32(p.add(8)),
        vld1q_f32(p.add(12)),
    ];
    let w = [
        vld1q_f32(p.add(16)),
        vld1q_f32(p.add(20)),
        vld1q_f32(p.add(24)),
        vld1q_f32(p.add(28)),
    ];
    let mut m = vabsq_f32(v[0]);
    for x in v.iter().chain(&w) {
        m = vmaxq_f32(m, vabsq_f32(*x));
    }
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = vdupq_n_s32(0);
    for (h, part) in [v, w].iter().enumerate() {
        let q: [int32x4_t; 4] = std::array::from_fn(|i| vcvtaq_s32_f32(vmulq_n_f32(part[i], id)));
        for qi in q {
            sum = vaddq_s32(sum, qi);
        }
        let a = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
        let b = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
        vst1q_s8(out.add(16 * h), vcombine_s8(vmovn_s16(a), vmovn_s16(b)));
    }
    (f32_to_f16_bits(d), vaddvq_s32(sum))
}

/// Twin: [`super::scalar::quantize_row_q8_0`].
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (i, o) in out.iter_mut().enumerate() {
        let (d, _) = quant_block(x.as_ptr().add(i * 32), o.qs.as_mut_ptr());
        o.d = f16::from_bits(d);
    }
}

/// Split layout (bytes in plain order on this path; `_q4_pairs` is an x86 layout option), f32
/// scales and Σ qs. Twin: [`super::scalar::quantize_row_q8_0`].
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize_row_split(
    x: &[f32],
    qs: &mut [Qs],
    d: &mut [f32],
    s: &mut [i32],
    _q4_pairs: bool,
) {
    for b in 0..qs.len() {
        let (dh, sum) = quant_block(x.as_ptr().add(b * 32), qs[b].0.as_mut_ptr());
        d[b] = f16::from_bits(dh).to_f32();
        s[b] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// Integer decode kernels.

/// `sdot` (`dotprod` extension): `acc[l] += Σ_{t<4} a[4l+t]·b[4l+t]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    asm!("sdot {r:v}.4s, {a:v}.16b, {b:v}.16b", r = inout(vreg) r, a = in(vreg) a, b = in(vreg) b,
        options(pure, nomem, nostack));
    r
}

/// Products of two 16-byte halves with `vmull_s8` summed pairwise into i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mull_acc(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// A quantized weight block as two signed 16-byte halves (values 0..15 and 16..31).
trait QBlock: Copy {
    unsafe fn halves(b: *const Self) -> (int8x16_t, int8x16_t);
    fn scale_bits(b: *const Self) -> u16;
}

impl QBlock for BlockQ4_0 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn halves(b: *const Self) -> (int8x16_t, int8x16_t) {
        let q = vld1q_u8((b as *const u8).add(2));
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
        (lo, hi)
    }
    #[inline(always)]
    fn scale_bits(b: *const Self) -> u16 {
        u16_at(b as *const u8)
    }
}

impl QBlock for BlockQ8_0 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn halves(b: *const Self) -> (int8x16_t, int8x16_t) {
        let p = (b as *const i8).add(2);
        (vld1q_s8(p), vld1q_s8(p.add(16)))
    }
    #[inline(always)]
    fn scale_bits(b: *const Self) -> u16 {
        u16_at(b as *const u8)
    }
}

/// Exact integer dots of blocks `b..b+4` of a weight row with one activation row: `[s0..s3]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sums4<B: QBlock, const DOT: bool>(w: *const B, b: usize, x: &Q8Row) -> int32x4_t {
    let mut a = [vdupq_n_s32(0); 4];
    for (t, at) in a.iter_mut().enumerate() {
        let (lo, hi) = B::halves(w.add(b + t));
        let y = x.qs.add(b + t) as *const i8;
        let (y0, y1) = (vld1q_s8(y), vld1q_s8(y.add(16)));
        *at = if DOT {
            sdot(sdot(*at, lo, y0), hi, y1)
        } else {
            mull_acc(mull_acc(*at, lo, y0), hi, y1)
        };
    }
    vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]))
}

/// Scales of blocks `b..b+4` as f32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales4<B: QBlock>(w: *const B, b: usize) -> float32x4_t {
    let h = [
        B::scale_bits(w.add(b)),
        B::scale_bits(w.add(b + 1)),
        B::scale_bits(w.add(b + 2)),
        B::scale_bits(w.add(b + 3)),
    ];
    f16x4_to_f32(vld1_u16(h.as_ptr()))
}

/// `RW × NX` dot products of quantized weight rows with activation rows. Twins:
/// [`super::scalar::dot_q4_0_q8_0`], [`super::scalar::dot_q8_0_q8_0`] (bit-exact: exact integer
/// block sums, the "eight block lanes" f32 order in two 4-lane halves, no FMA).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_q<B: QBlock, const DOT: bool, const RW: usize, const NX: usize>(
    w: [*const B; RW],
    nb: usize,
    x: [Q8Row; NX],
) -> [[f32; NX]; RW] {
    let mut acc = [[[vdupq_n_f32(0.0); 2]; NX]; RW];
    let full = nb / 8 * 8;
    let mut g = 0;
    while g < full {
        for (wr, ar) in w.iter().zip(acc.iter_mut()) {
            for h in 0..2 {
                let b = g + 4 * h;
                let dw = scales4(*wr, b);
                for (at, xt) in ar.iter_mut().zip(&x) {
                    let s = vcvtq_f32_s32(sums4::<B, DOT>(*wr, b, xt));
                    let sc = vmulq_f32(dw, vld1q_f32(xt.d.add(b)));
                    at[h] = vaddq_f32(at[h], vmulq_f32(sc, s));
                }
            }
        }
        g += 8;
    }
    let mut out = [[0f32; NX]; RW];
    for r in 0..RW {
        for t in 0..NX {
            let mut tail = 0f32;
            for b in full..nb {
                let (lo, hi) = B::halves(w[r].add(b));
                let y = x[t].qs.add(b) as *const i8;
                let a = mull_acc(
                    mull_acc(vdupq_n_s32(0), lo, vld1q_s8(y)),
                    hi,
                    vld1q_s8(y.add(16)),
                );
                let sc = f16::from_bits(B::scale_bits(w[r].add(b))).to_f32() * *x[t].d.add(b);
                tail += sc * vaddvq_s32(a) as f32;
            }
            out[r][t] = lanes8(acc[r][t][0], acc[r][t][1]) + tail;
        }
    }
    out
}

/// Quantize one activation row into its split-layout region (see [`SplitActs`]; plain byte
/// order on this path). Twin: [`super::scalar::quantize_row_q8_0`].
#[target_feature(enable = "neon")]
unsafe fn quantize_split(x: &[f32], out: &mut [u8]) {
    let (qs, d, s) = split_row_mut(out, x.len() / 32);
    quantize_row_split(x, qs, d, s, false)
}

/// The NEON tile kernels (float, and integer with `vmull_s8`).
struct NeonDot;
/// The `dotprod` integer tile kernels (`sdot`).
struct SdotDot;

impl<B: QBlock> QuantDot<B> for NeonDot {
    #[inline(always)]
    unsafe fn dot<const RW: usize, const NX: usize>(
        w: [*const B; RW],
        nb: usize,
        x: [Q8Row; NX],
    ) -> [[f32; NX]; RW] {
        dot_q::<B, false, RW, NX>(w, nb, x)
    }
}

impl<B: QBlock> QuantDot<B> for SdotDot {
    #[inline(always)]
    unsafe fn dot<const RW: usize, const NX: usize>(
        w: [*const B; RW],
        nb: usize,
        x: [Q8Row; NX],
    ) -> [[f32; NX]; RW] {
        dot_q::<B, true, RW, NX>(w, nb, x)
    }
}

impl<T: Wf> FloatDot<T> for NeonDot {
    #[inline(always)]
    unsafe fn dot<const R: usize, const NX: usize>(
        w: [*const T; R],
        x: [*const f32; NX],
        k: usize,
    ) -> [[f32; NX]; R] {
        dot_float::<T, R, NX>(w, x, k)
    }
}

/// The integer decode kernel of weight blocks `B` on [`Neon`]: [`traverse`] over
/// [`QuantTile`]s. Twin: the portable decoder of `kernels::types`
/// ([`crate::quant::QuantBlock::vec_dot`]), bit-exact.
///
/// # Safety
/// NEON available; `job.w` holds `m·nb` blocks `B`; `job.x` was quantized by
/// [`quantize_split`]; `out` covers `n × m`.
#[target_feature(enable = "neon")]
unsafe fn decode_quant<B: QBlock>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        QuantTile::<B, NeonDot>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// [`decode_quant`] with `sdot` ([`Dotprod`]), the same results bit for bit.
///
/// # Safety
/// As [`decode_quant`], and `dotprod` available.
#[target_feature(enable = "neon,dotprod")]
unsafe fn decode_quant_dot<B: QBlock>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        QuantTile::<B, SdotDot>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

// ---------------------------------------------------------------------------------------------
// Float decode kernels.

/// A float weight element: four of them widened to f32.
trait Wf: Copy {
    /// # Safety
    /// NEON available and 4 elements readable at `p`.
    unsafe fn load4(p: *const Self) -> float32x4_t;
    fn get(self) -> f32;
}

impl Wf for f32 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
}

impl Wf for f16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        f16x4_to_f32(vld1_u16(p as *const u16))
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

impl Wf for bf16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4(p: *const bf16) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p as *const u16)))
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
}

/// `R × NX` dot products (8 lanes per pair as two 4-lane accumulators). Twins:
/// [`super::scalar::dot_f32`], [`super::scalar::dot_f16_f32`], [`super::scalar::dot_bf16_f32`]
/// (FMA, within tolerance).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_float<T: Wf, const R: usize, const NX: usize>(
    w: [*const T; R],
    x: [*const f32; NX],
    k: usize,
) -> [[f32; NX]; R] {
    let mut acc = [[[vdupq_n_f32(0.0); 2]; NX]; R];
    let k8 = k / 8 * 8;
    let mut p = 0;
    while p < k8 {
        for r in 0..R {
            let w0 = T::load4(w[r].add(p));
            let w1 = T::load4(w[r].add(p + 4));
            for t in 0..NX {
                acc[r][t][0] = vfmaq_f32(acc[r][t][0], w0, vld1q_f32(x[t].add(p)));
                acc[r][t][1] = vfmaq_f32(acc[r][t][1], w1, vld1q_f32(x[t].add(p + 4)));
            }
        }
        p += 8;
    }
    let mut out = [[0f32; NX]; R];
    for r in 0..R {
        for t in 0..NX {
            let mut tail = 0f32;
            for q in k8..k {
                tail += (*w[r].add(q)).get() * *x[t].add(q);
            }
            out[r][t] = lanes8(acc[r][t][0], acc[r][t][1]) + tail;
        }
    }
    out
}

/// The decode kernel of a [`LaneKernel`] type (Q4_K, Q5_K, Q6_K, Q4_1, Q5_0, Q5_1) on [`Neon`]
/// (`vmull` products): [`traverse`] over [`LaneTile`]s. Twin: [`crate::quant::lane_vec_dot`],
/// bit-exact.
///
/// # Safety
/// NEON available; `job.w` holds `m·nb` blocks `B`; `job.x` rows of `B::VecDot` blocks (the
/// type's plain activation quantizer); `out` covers `n × m`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn decode_lane<B: LaneKernel>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        LaneTile::<B, NeonOps>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// [`decode_lane`] with `sdot` ([`Dotprod`]), the same results bit for bit.
///
/// # Safety
/// As [`decode_lane`], and `dotprod` available.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn decode_lane_dot<B: LaneKernel>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        LaneTile::<B, SdotOps>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// The float decode kernel of weight elements `T`: [`traverse`] over [`FloatTile`]s. Twin: the
/// portable float decoder of `kernels::types` (within tolerance: FMA).
///
/// # Safety
/// NEON available; `job.w` holds `m × k` elements `T`, `job.x` `n` f32 rows.
#[target_feature(enable = "neon")]
unsafe fn decode_float<T: Wf>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    traverse(
        FloatTile::<T, NeonDot>::new(job),
        job.n,
        rows,
        job.out,
        job.bias,
    )
}

/// The decode kernels of [`Neon`] (`DOT = false`) and [`Dotprod`] (`DOT = true`).
fn decoder<const DOT: bool>(ty: GgmlType) -> Option<Decoder> {
    fn quant<B: QBlock, const DOT: bool>() -> Option<Decoder> {
        let rows: unsafe fn(&Job<'_>, std::ops::Range<usize>) = if DOT {
            decode_quant_dot::<B>
        } else {
            decode_quant::<B>
        };
        let act = Some(ActQuant {
            row_bytes: split_row_bytes,
            quantize: quantize_split,
        });
        Some(Decoder { act, rows })
    }
    let float = |rows| Some(Decoder { act: None, rows });
    fn lane<B: LaneKernel, const DOT: bool>() -> Option<Decoder> {
        let rows: unsafe fn(&Job<'_>, std::ops::Range<usize>) = if DOT {
            decode_lane_dot::<B>
        } else {
            decode_lane::<B>
        };
        Some(Decoder {
            act: Some(plain_act::<B::VecDot>()),
            rows,
        })
    }
    match ty {
        GgmlType::Q4_0 => quant::<BlockQ4_0, DOT>(),
        GgmlType::Q8_0 => quant::<BlockQ8_0, DOT>(),
        GgmlType::F32 => float(decode_float::<f32>),
        GgmlType::F16 => float(decode_float::<f16>),
        GgmlType::BF16 => float(decode_float::<bf16>),
        GgmlType::Q4_K => lane::<BlockQ4_K, DOT>(),
        GgmlType::Q5_K => lane::<BlockQ5_K, DOT>(),
        GgmlType::Q6_K => lane::<BlockQ6_K, DOT>(),
        GgmlType::Q4_1 => lane::<BlockQ4_1, DOT>(),
        GgmlType::Q5_0 => lane::<BlockQ5_0, DOT>(),
        GgmlType::Q5_1 => lane::<BlockQ5_1, DOT>(),
        // No NEON kernel: the type's portable decoder runs.
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Packed GEMM.

/// Micro-kernel rows (activations) and columns (weight rows).
pub(super) const MR: usize = 8;
pub(super) const NR: usize = 12;

/// `c[MR × NR] (+)= a_panel · b_panel` (see `gemm::Kernel::kernel`); 24 accumulators.
///
/// # Safety
/// NEON available; `a` has `kc·MR`, `b` has `kc·NR` values; `c` covers the tile.
#[target_feature(enable = "neon")]
pub(super) unsafe fn kernel_8x12(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    let mut cc = [[vdupq_n_f32(0.0); 3]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = vld1q_f32(b);
        let b1 = vld1q_f32(b.add(4));
        let b2 = vld1q_f32(b.add(8));
        let a0 = vld1q_f32(a);
        let a1 = vld1q_f32(a.add(4));
        macro_rules! row {
            ($i:literal, $v:ident, $l:literal) => {
                cc[$i][0] = vfmaq_laneq_f32::<$l>(cc[$i][0], b0, $v);
                cc[$i][1] = vfmaq_laneq_f32::<$l>(cc[$i][1], b1, $v);
                cc[$i][2] = vfmaq_laneq_f32::<$l>(cc[$i][2], b2, $v);
            };
        }
        row!(0, a0, 0);
        row!(1, a0, 1);
        row!(2, a0, 2);
        row!(3, a0, 3);
        row!(4, a1, 0);
        row!(5, a1, 1);
        row!(6, a1, 2);
        row!(7, a1, 3);
        a = a.add(MR);
        b = b.add(NR);
    }
    for (i, ci) in cc.iter().enumerate() {
        let p = c.add(i * ldc);
        for (v, cv) in ci.iter().enumerate() {
            let mut r = *cv;
            if acc {
                r = vaddq_f32(r, vld1q_f32(p.add(4 * v)));
            }
            vst1q_f32(p.add(4 * v), r);
        }
    }
}

/// Pack weight rows (see `gemm::Kernel::pack_b`): each row's segment converted with NEON into a
/// small buffer, then interleaved.
///
/// # Safety
/// NEON available; the rows and columns exist; `out` has `kc·NR` values.
#[target_feature(enable = "neon")]
pub(super) unsafe fn pack_b(panel: Panel<'_>, out: &mut [f32]) {
    use crate::GgmlType as T;
    let Panel {
        t,
        data,
        row_bytes,
        j0,
        nr,
        p0,
        kc,
    } = panel;
    assert!(out.len() >= kc * NR);
    let ty = t.ty;
    // Columns converted here; the rest (a float tail, or a type without a NEON conversion) goes
    // through the portable pack.
    let kc4 = match ty {
        T::F32 | T::F16 | T::BF16 => kc / 4 * 4,
        T::Q4_0 | T::Q8_0 => kc,
        _ => 0,
    };
    let mut tmp = [0f32; 256];
    let o = out.as_mut_ptr();
    for r in 0..NR {
        let mut p = 0;
        while p < kc4 {
            let len = 256.min(kc4 - p);
            if r < nr {
                let row = data.as_ptr().add((j0 + r) * row_bytes);
                let c0 = p0 + p;
                match ty {
                    T::F32 | T::F16 | T::BF16 => {
                        let mut q = 0;
                        while q < len {
                            let v = match ty {
                                T::F16 => f16::load4((row as *const f16).add(c0 + q)),
                                T::BF16 => bf16::load4((row as *const bf16).add(c0 + q)),
                                _ => f32::load4((row as *const f32).add(c0 + q)),
                            };
                            vst1q_f32(tmp.as_mut_ptr().add(q), v);
                            q += 4;
                        }
                    }
                    _ => {
                        // Q4_0 or Q8_0 (`kc4` is 0 for every other type).
                        let (bytes, q4) = if ty == T::Q4_0 {
                            (18, true)
                        } else {
                            (34, false)
                        };
                        for blk in 0..len / 32 {
                            let bp = row.add((c0 / 32 + blk) * bytes);
                            let d = vdupq_n_f32(f16::from_bits(u16_at(bp)).to_f32());
                            let (lo, hi) = if q4 {
                                BlockQ4_0::halves(bp as *const BlockQ4_0)
                            } else {
                                BlockQ8_0::halves(bp as *const BlockQ8_0)
                            };
                            for (h, v) in [lo, hi].into_iter().enumerate() {
                                let w0 = vmovl_s8(vget_low_s8(v));
                                let w1 = vmovl_high_s8(v);
                                let f = [
                                    vcvtq_f32_s32(vmovl_s16(vget_low_s16(w0))),
                                    vcvtq_f32_s32(vmovl_high_s16(w0)),
                                    vcvtq_f32_s32(vmovl_s16(vget_low_s16(w1))),
                                    vcvtq_f32_s32(vmovl_high_s16(w1)),
                                ];
                                for (e, fe) in f.into_iter().enumerate() {
                                    vst1q_f32(
                                        tmp.as_mut_ptr().add(blk * 32 + h * 16 + 4 * e),
                                        vmulq_f32(fe, d),
                                    );
                                }
                            }
                        }
                    }
                }
                for (q, v) in tmp[..len].iter().enumerate() {
                    *o.add((p + q) * NR + r) = *v;
                }
            } else {
                for q in 0..len {
                    *o.add((p + q) * NR + r) = 0.0;
                }
            }
            p += len;
        }
    }
    if kc4 < kc {
        super::pack::pack_b_tail(panel, kc4, NR, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Vector helpers and probes.

/// Σ a[i]·b[i]. Twin: [`super::scalar::dot_f32`] (FMA, within tolerance).
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (u, s) in acc.iter_mut().enumerate() {
            *s = vfmaq_f32(
                *s,
                vld1q_f32(ap.add(i + 4 * u)),
                vld1q_f32(bp.add(i + 4 * u)),
            );
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(ap.add(i)), vld1q_f32(bp.add(i)));
        i += 4;
    }
    let mut tail = 0f32;
    while i < n {
        tail += *ap.add(i) * *bp.add(i);
        i += 1;
    }
    lanes8(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3])) + tail
}

/// y[i] += a·x[i]. Twin: [`super::scalar::axpy`] (FMA, within tolerance).
#[target_feature(enable = "neon")]
pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(
            yp.add(i),
            vfmaq_n_f32(vld1q_f32(yp.add(i)), vld1q_f32(xp.add(i)), a),
        );
        i += 4;
    }
    while i < n {
        *yp.add(i) += a * *xp.add(i);
        i += 1;
    }
}

/// y[i] *= a. Twin: [`super::scalar::scale`] (bit-exact).
#[target_feature(enable = "neon")]
pub(super) unsafe fn scale(a: f32, y: &mut [f32]) {
    let n = y.len();
    let yp = y.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(yp.add(i), vmulq_n_f32(vld1q_f32(yp.add(i)), a));
        i += 4;
    }
    while i < n {
        *yp.add(i) *= a;
        i += 1;
    }
}

/// `iters` rounds of 16 independent FMA chains of 4 lanes: the FMA peak probe.
#[target_feature(enable = "neon")]
pub(super) unsafe fn fma_chains(iters: u64) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 16];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = vdupq_n_f32(i as f32 * 0.001);
    }
    let m = vdupq_n_f32(0.999_999);
    let c = vdupq_n_f32(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = vfmaq_f32(c, *a, m);
        }
    }
    let mut s = vdupq_n_f32(0.0);
    for a in acc {
        s = vaddq_f32(s, a);
    }
    vaddvq_f32(s)
}

/// Sum of `S` equal parts of a buffer read side by side: the read-bandwidth probe.
#[target_feature(enable = "neon")]
pub(super) unsafe fn sum_streams<const S: usize>(x: &[f32]) -> f32 {
    let q = x.len() / S / 16 * 16;
    let p = x.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); 4]; S];
    let mut i = 0;
    while i < q {
        for (s, a) in acc.iter_mut().enumerate() {
            let b = p.add(s * q + i);
            for (u, au) in a.iter_mut().enumerate() {
                *au = vaddq_f32(*au, vld1q_f32(b.add(4 * u)));
            }
        }
        i += 16;
    }
    let mut s = vdupq_n_f32(0.0);
    for a in acc {
        for au in a {
            s = vaddq_f32(s, au);
        }
    }
    vaddvq_f32(s) + x[S * q..].iter().sum::<f32>()
}

/// `s[i] = exp(s[i] − m)` in place; returns Σ s[i] (see the x86 twin `x86::exp_sub_sum`).
#[target_feature(enable = "neon")]
pub(super) unsafe fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
    let n = s.len();
    let p = s.as_mut_ptr();
    let mv = vdupq_n_f32(m);
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        let e = exp4(vsubq_f32(vld1q_f32(p.add(i)), mv));
        vst1q_f32(p.add(i), e);
        acc = vaddq_f32(acc, e);
        i += 4;
    }
    let mut tail = 0f32;
    while i < n {
        let e = (*p.add(i) - m).exp();
        *p.add(i) = e;
        tail += e;
        i += 1;
    }
    vaddvq_f32(acc) + tail
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    let lo = vdupq_n_f32(-87.0);
    let under = vcltq_f32(x, lo);
    let x = vminq_f32(vmaxq_f32(x, lo), vdupq_n_f32(88.0));
    let fx = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
    let r = vfmsq_f32(x, fx, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, fx, vdupq_n_f32(-2.121_944_4e-4));
    let mut y = vdupq_n_f32(1.987_569_1e-4);
    y = vfmaq_f32(vdupq_n_f32(1.398_2e-3), y, r);
    y = vfmaq_f32(vdupq_n_f32(8.333_452e-3), y, r);
    y = vfmaq_f32(vdupq_n_f32(4.166_579_6e-2), y, r);
    y = vfmaq_f32(vdupq_n_f32(1.666_666_5e-1), y, r);
    y = vfmaq_f32(vdupq_n_f32(0.5), y, r);
    y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), y, vmulq_f32(r, r));
    let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)));
    let v = vmulq_f32(y, vreinterpretq_f32_s32(e));
    vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(v), under))
}

// ---------------------------------------------------------------------------------------------
// The two aarch64 instruction sets.

/// [`Path::Neon`]: NEON (`vmull_s8`/`vpadalq_s16` integer dots).
pub(crate) struct Neon;

/// [`Path::Dotprod`]: [`Neon`] with `sdot` integer dots.
pub(crate) struct Dotprod;

/// The [`Isa`] methods both aarch64 paths share (the NEON kernels). Attention's grouped scores
/// and `P·V` keep the portable loops, which vectorise with baseline NEON.
macro_rules! neon_isa {
    () => {
        type Gemm = NeonKernel;
        const FMA_FLOPS_PER_ITER: f64 = 128.0; // 16 chains × 4 lanes × 2
        unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
            quantize_row_q8_0(x, out)
        }
        unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            dot(a, b)
        }
        unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
            axpy(a, x, y)
        }
        unsafe fn scale(a: f32, y: &mut [f32]) {
            scale(a, y)
        }
        unsafe fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
            exp_sub_sum(s, m)
        }
        const IMR: usize = 4;
        const INR: usize = 8;
        /// `vmlal_s16` ([`iattn::itile_4x8`]).
        unsafe fn itile(
            kp: usize,
            a: *const i32,
            lda: usize,
            b: *const i32,
            c: *mut i32,
            ldc: usize,
        ) {
            iattn::itile_4x8(kp, a, lda, b, c, ldc)
        }
        unsafe fn fma_chains(iters: u64) -> f32 {
            fma_chains(iters)
        }
        unsafe fn sum_streams(x: &[f32], streams: usize) -> f32 {
            match streams {
                1 => sum_streams::<1>(x),
                2 => sum_streams::<2>(x),
                4 => sum_streams::<4>(x),
                _ => sum_streams::<8>(x),
            }
        }
    };
}

impl Isa for Neon {
    const PATH: Path = Path::Neon;
    type IGemm = igemm::NeonIKernel;
    type I16Gemm = igemm::NeonI16Kernel;
    neon_isa!();
    fn decoder(ty: GgmlType) -> Option<Decoder> {
        decoder::<false>(ty)
    }
    fn repacked_decoder(ty: GgmlType) -> Option<Decoder> {
        repack::repacked_decoder::<false>(ty)
    }
}

impl Isa for Dotprod {
    const PATH: Path = Path::Dotprod;
    type IGemm = igemm::DotprodIKernel;
    type I16Gemm = igemm::NeonI16Kernel;
    neon_isa!();
    fn decoder(ty: GgmlType) -> Option<Decoder> {
        decoder::<true>(ty)
    }
    fn repacked_decoder(ty: GgmlType) -> Option<Decoder> {
        repack::repacked_decoder::<true>(ty)
    }
}

/// The packed GEMM's NEON micro-kernel and packing (both aarch64 paths).
pub(crate) struct NeonKernel;

impl Kernel for NeonKernel {
    const MR: usize = MR;
    const NR: usize = NR;
    unsafe fn pack_b(panel: Panel<'_>, out: &mut [f32]) {
        pack_b(panel, out)
    }
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        kernel_8x12(kc, a, b, c, ldc, acc)
    }
}
