//! Scalar reference kernels: the meaning of every kernel, written plainly. The SIMD variants in
//! the sibling modules (`x86`, `arm`) name their twin here in their docs.
//!
//! Agreement rules:
//! - **Integer kernels** (Q8_0/Q4_0 weights · Q8_0 activations) are **bit-exact** across every path.
//!   The per-block integer sum is exact in i32 whatever the order, and the f32 accumulation of the
//!   scaled block sums follows one fixed order, [`crate::quant::block_lanes`]'s "eight block
//!   lanes", which every SIMD path reproduces operation for operation (no fused multiply-add
//!   there). Each block type's scalar dot is its [`QuantBlock::vec_dot`] (one file per type in
//!   `quant/`); the functions here name them for the SIMD kernels' docs.
//! - **Float kernels** (F32/F16/BF16 weights) may use FMA and other summation orders in SIMD; they
//!   agree with these within a tolerance relative to the f64 result.
//! - The activation quantizer [`quantize_row_q8_0`] is bit-identical to [`BlockQ8_0::quantize`] for
//!   finite inputs on every path.
//! - The integer tile `itile` of the low-precision attention (16-bit pairs into `i32`) is
//!   bit-exact on every path.

use half::{bf16, f16};

use crate::quant::{BlockQ4_0, BlockQ8_0, QuantBlock};

/// `Σ a[i]·b[i]` in f32, eight interleaved partial sums (the order SIMD kernels use too, so results
/// stay close; it is not the left-to-right sum).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    lanes8(&acc) + tail
}

/// `Σ f16(w[i])·x[i]`
#[inline]
pub fn dot_f16_f32(w: &[f16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = [0f32; 8];
    let mut cw = w.chunks_exact(8);
    let mut cx = x.chunks_exact(8);
    for (a, b) in (&mut cw).zip(&mut cx) {
        for l in 0..8 {
            acc[l] += a[l].to_f32() * b[l];
        }
    }
    let mut tail = 0f32;
    for (a, b) in cw.remainder().iter().zip(cx.remainder()) {
        tail += a.to_f32() * b;
    }
    lanes8(&acc) + tail
}

/// `Σ bf16(w[i])·x[i]`
#[inline]
pub fn dot_bf16_f32(w: &[bf16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = [0f32; 8];
    let mut cw = w.chunks_exact(8);
    let mut cx = x.chunks_exact(8);
    for (a, b) in (&mut cw).zip(&mut cx) {
        for l in 0..8 {
            acc[l] += a[l].to_f32() * b[l];
        }
    }
    let mut tail = 0f32;
    for (a, b) in cw.remainder().iter().zip(cx.remainder()) {
        tail += a.to_f32() * b;
    }
    lanes8(&acc) + tail
}

pub use crate::quant::lanes8;

/// Q8_0 weights · Q8_0 activations: Σ_blocks d_w·d_x·(Σ q_w·q_x), the integer sum exact in i32,
/// in the "eight block lanes" f32 order of [`crate::quant::block_lanes`], which every SIMD path
/// reproduces operation for operation. The definition is [`QuantBlock::vec_dot`] in `quant/q8_0.rs`.
#[inline]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    BlockQ8_0::vec_dot(w, x)
}

/// Q4_0 weights · Q8_0 activations: Σ_blocks d_w·d_x·(Σ (q_w − 8)·q_x), in the f32 order of
/// [`dot_q8_0_q8_0`]. The definition is [`QuantBlock::vec_dot`] in `quant/q4_0.rs`.
#[inline]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    BlockQ4_0::vec_dot(w, x)
}

/// Quantize a row to Q8_0 blocks (`x.len() == 32 · out.len()`), exactly [`BlockQ8_0::quantize`].
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (b, c) in out.iter_mut().zip(x.chunks_exact(32)) {
        *b = BlockQ8_0::quantize(c);
    }
}

/// `y[i] += a·x[i]`
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `y[i] *= a`
#[inline]
pub fn scale(a: f32, y: &mut [f32]) {
    for v in y {
        *v *= a;
    }
}

/// `s[i] = exp(s[i] − m)` in place, returning `Σ s[i]` (the meaning of the SIMD `exp_sub_sum`).
pub fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
    let mut sum = 0f32;
    for v in s {
        *v = (*v - m).exp();
        sum += *v;
    }
    sum
}

/// `p[i] = ⌊e[i]·pmax + ½⌋` for `e[i] ∈ [0, 1]`, returning `Σ p[i]` (the second half of
/// `Isa::exp_levels`; with `exp_sub_sum` before it, its meaning).
pub fn levels(e: &[f32], pmax: f32, p: &mut [i16]) -> i32 {
    let mut sum = 0i32;
    for (p, &x) in p.iter_mut().zip(e) {
        // x ∈ [0, 1], so x·pmax + ½ ∈ [½, pmax + ½]: in range of i32 (truncation = floor).
        let v = (x * pmax + 0.5) as i32;
        *p = v as i16;
        sum += v;
    }
    sum
}

/// `src` widened to f32 into `scratch` (grown on demand).
pub(crate) fn widen<'a>(src: &[half::f16], scratch: &'a mut Vec<f32>) -> &'a [f32] {
    use half::slice::HalfFloatSliceExt;
    if scratch.len() < src.len() {
        scratch.resize(src.len(), 0.0);
    }
    let dst = &mut scratch[..src.len()];
    src.convert_to_f32_slice(dst);
    dst
}

/// The scores step of `attention::attend_group` on the scalar and NEON paths (NEON is baseline on aarch64, so these plain
/// loops vectorise there): `s[r·nb + j] = scale · q_r·k_j`, eight-lane dot products (lane `l`
/// sums elements `8i + l`, then [`super::scalar::lanes8`], then the tail left to right), rows four
/// at a time so four accumulation chains overlap.
#[inline]
pub fn group_scores(q: &[f32], kb: &[f32], hd: usize, scale: f32, s: &mut [f32]) {
    let nb = kb.len() / hd;
    let nq = q.len() / hd;
    let full = hd / 8 * 8;
    let mut r0 = 0;
    while r0 < nq {
        let rows = (nq - r0).min(4);
        for (j, kj) in kb.chunks_exact(hd).enumerate() {
            let mut acc = [[0f32; 8]; 4];
            if rows == 4 {
                let qr: [&[f32]; 4] = std::array::from_fn(|r| &q[(r0 + r) * hd..][..hd]);
                for c in (0..full).step_by(8) {
                    let kc = &kj[c..c + 8];
                    for (a, qr) in acc.iter_mut().zip(&qr) {
                        let qc = &qr[c..c + 8];
                        for l in 0..8 {
                            a[l] += qc[l] * kc[l];
                        }
                    }
                }
            } else {
                for (a, r) in acc.iter_mut().zip(r0..r0 + rows) {
                    let qr = &q[r * hd..][..hd];
                    for c in (0..full).step_by(8) {
                        for l in 0..8 {
                            a[l] += qr[c + l] * kj[c + l];
                        }
                    }
                }
            }
            for (a, r) in acc.iter().zip(r0..r0 + rows) {
                let qr = &q[r * hd..][..hd];
                let mut tail = 0f32;
                for d in full..hd {
                    tail += qr[d] * kj[d];
                }
                s[r * nb + j] = (lanes8(a) + tail) * scale;
            }
        }
        r0 += rows;
    }
}

/// The `P·V` step of `attention::attend_group` on the scalar and NEON paths: `o[r] += Σ_j p[r·nb + j] · v_j`.
#[inline]
pub fn group_pv(p: &[f32], vb: &[f32], hd: usize, o: &mut [f32]) {
    let nb = vb.len() / hd;
    for (j, vj) in vb.chunks_exact(hd).enumerate() {
        for (r, or) in o.chunks_exact_mut(hd).enumerate() {
            let pj = p[r * nb + j];
            for (x, y) in or.iter_mut().zip(vj) {
                *x += pj * y;
            }
        }
    }
}

/// The plain meaning of `Isa::itile` (low-precision attention, [`super::iattn`]) for an `MR × NR` tile (wrapping `i32` arithmetic, which
/// the callers' bounds never reach).
///
/// # Safety
/// `a` holds `MR` rows of `kp` values `lda` apart, `b` holds `kp·NR` values, `c` covers the tile.
pub(crate) unsafe fn itile<const MR: usize, const NR: usize>(
    kp: usize,
    a: *const i32,
    lda: usize,
    b: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    for i in 0..MR {
        let ar = std::slice::from_raw_parts(a.add(i * lda), kp);
        let mut t = [0i32; NR];
        for (p, &x) in ar.iter().enumerate() {
            let (a0, a1) = (x as i16 as i32, (x >> 16) as i16 as i32);
            let br = std::slice::from_raw_parts(b.add(p * NR), NR);
            for (t, &y) in t.iter_mut().zip(br) {
                let (b0, b1) = (y as i16 as i32, (y >> 16) as i16 as i32);
                *t = t
                    .wrapping_add(a0.wrapping_mul(b0))
                    .wrapping_add(a1.wrapping_mul(b1));
            }
        }
        std::slice::from_raw_parts_mut(c.add(i * ldc), NR).copy_from_slice(&t);
    }
}
