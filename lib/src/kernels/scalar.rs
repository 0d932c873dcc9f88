//! Scalar reference kernels: the meaning of every kernel, written plainly. The SIMD variants in
//! the sibling modules (`x86`, `arm`) name their twin here in their docs.
//!
//! Agreement rules:
//! - **Integer kernels** (Q8_0/Q4_0 weights · Q8_0 activations) are **bit-exact** across every path.
//!   The per-block integer sum is exact in i32 whatever the order, and the f32 accumulation of the
//!   scaled block sums follows one fixed order, [`dot_q8_0_q8_0`]'s "eight block lanes", which every
//!   SIMD path reproduces operation for operation (no fused multiply-add there).
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

/// The fixed reduction of eight lanes: `((a0+a4)+(a1+a5)) + ((a2+a6)+(a3+a7))`.
#[inline]
pub fn lanes8(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Q8_0 weights · Q8_0 activations: Σ_blocks d_w·d_x·(Σ q_w·q_x), the integer sum exact in i32.
///
/// The f32 order ("eight block lanes") is part of the definition, shared bit for bit by every SIMD
/// path: block `b = 8g + l` of the first `8·⌊nb/8⌋` blocks adds `(d_w·d_x)·isum` (two roundings,
/// then the add; no FMA) to lane `l`; the lanes are reduced by [`lanes8`]; the remaining blocks
/// are summed left to right into a separate `tail`, and the result is `lanes + tail`.
#[inline]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    block_lanes(w.len(), |b| {
        let (a, c) = (&w[b], &x[b]);
        let mut isum = 0i32;
        for k in 0..32 {
            isum += a.qs[k] as i32 * c.qs[k] as i32;
        }
        (a.d.to_f32() * c.d.to_f32(), isum)
    })
}

/// Q4_0 weights · Q8_0 activations: Σ_blocks d_w·d_x·(Σ (q_w − 8)·q_x), in the f32 order of
/// [`dot_q8_0_q8_0`].
#[inline]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    block_lanes(w.len(), |b| {
        let (a, c) = (&w[b], &x[b]);
        let mut isum = 0i32;
        for k in 0..16 {
            let lo = (a.qs[k] & 0x0F) as i32 - 8;
            let hi = (a.qs[k] >> 4) as i32 - 8;
            isum += lo * c.qs[k] as i32 + hi * c.qs[k + 16] as i32;
        }
        (a.d.to_f32() * c.d.to_f32(), isum)
    })
}

/// The "eight block lanes" accumulation of `(scale_b, isum_b)` for `nb` blocks.
#[inline(always)]
fn block_lanes(nb: usize, block: impl Fn(usize) -> (f32, i32)) -> f32 {
    let mut acc = [0f32; 8];
    let full = nb / 8 * 8;
    for g in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            let (s, i) = block(g + l);
            *a += s * i as f32;
        }
    }
    let mut tail = 0f32;
    for b in full..nb {
        let (s, i) = block(b);
        tail += s * i as f32;
    }
    lanes8(&acc) + tail
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
