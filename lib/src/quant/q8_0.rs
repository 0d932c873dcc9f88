//! Q8_0: blocks of 32 values as one f16 scale and 32 signed bytes (ggml's `block_q8_0`, 34 bytes).
//!
//! ```text
//! { d: f16, qs: [i8; 32] }      x[i] = d · qs[i]
//! ```
//!
//! Quantization (ggml's `quantize_row_q8_0_ref`): `d = max|x| / 127`, `qs = round_half_away(x /
//! d)` computed as `x · (1/d)` in f32, `1/d` from the f32 `d`, which is then stored rounded to f16.
//! Q8_0 is also the activation type Q8_0 and Q4_0 weights dot against.

use half::f16;

use super::{block_lanes, round_half_away, QuantBlock};
use crate::GgmlType;

/// Q8_0 block: 32 signed bytes and one f16 scale.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale: value `i` is `d · qs[i]`.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; 32],
}

const _: () = assert!(BlockQ8_0::BLOCK == 32 && BlockQ8_0::BYTES == 34);

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = 32;
    type VecDot = BlockQ8_0;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = round_half_away(v * id) as i8;
        }
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    /// Σ_blocks d_w·d_x·(Σ q_w·q_x), the integer sum exact in i32, in the f32 order of
    /// [`block_lanes`] (the "eight block lanes" every SIMD path reproduces bit for bit).
    #[inline]
    fn vec_dot(w: &[Self], x: &[BlockQ8_0]) -> f32 {
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
}
