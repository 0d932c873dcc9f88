//! Scalar reference kernels: the meaning of every dot product, written plainly. SIMD variants in
//! sibling modules must agree with these (bit-exactly for the integer parts).

use half::{bf16, f16};

use crate::quant::{BlockQ4_0, BlockQ8_0};

/// Σ a[i]·b[i] in f32, eight interleaved partial sums (the order SIMD kernels use too, so results
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
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

/// Σ f16(w[i])·x[i]
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
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

/// Σ bf16(w[i])·x[i]
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
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

/// Q8_0 weights · Q8_0 activations: Σ_blocks d_w·d_x·(Σ q_w·q_x), the integer sum exact in i32.
#[inline]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut sum = 0f32;
    for (a, b) in w.iter().zip(x) {
        let mut isum = 0i32;
        for k in 0..32 {
            isum += a.qs[k] as i32 * b.qs[k] as i32;
        }
        sum += a.d.to_f32() * b.d.to_f32() * isum as f32;
    }
    sum
}

/// Q4_0 weights · Q8_0 activations: Σ_blocks d_w·d_x·(Σ (q_w − 8)·q_x).
#[inline]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut sum = 0f32;
    for (a, b) in w.iter().zip(x) {
        let mut isum = 0i32;
        for k in 0..16 {
            let lo = (a.qs[k] & 0x0F) as i32 - 8;
            let hi = (a.qs[k] >> 4) as i32 - 8;
            isum += lo * b.qs[k] as i32 + hi * b.qs[k + 16] as i32;
        }
        sum += a.d.to_f32() * b.d.to_f32() * isum as f32;
    }
    sum
}

/// y[i] += a·x[i]
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}
