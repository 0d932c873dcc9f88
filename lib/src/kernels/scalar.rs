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
