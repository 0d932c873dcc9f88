//! Q4_0: blocks of 32 values as one f16 scale and 16 bytes of 4-bit values offset by 8 (ggml's
//! `block_q4_0`, 18 bytes).
//!
//! ```text
//! { d: f16, qs: [u8; 16] }      x[i]    = d · ((qs[i] & 0xF) − 8)
//!                               x[i+16] = d · ((qs[i] >> 4) − 8)
//! ```
//!
//! Quantization (ggml's `quantize_row_q4_0_ref`): `m` = the value of largest magnitude (first one
//! on ties), `d = m / −8`, `qs = min(15, trunc(x · (1/d) + 8.5))`, `1/d` from the f32 `d`, which
//! is then stored rounded to f16. Activations for the integer dot are [`BlockQ8_0`].

use half::f16;

use super::{block_lanes, BlockQ8_0, QuantBlock};
use crate::GgmlType;

/// Q4_0 block: 32 four-bit values (offset by 8) and one f16 scale. Byte `j` holds value `j` in
/// its low nibble and value `j + 16` in its high nibble.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale: a nibble `q` stands for `d · (q − 8)`.
    pub d: f16,
    /// Packed nibbles: values `j` (low) and `j + 16` (high) in byte `j`.
    pub qs: [u8; 16],
}

const _: () = assert!(BlockQ4_0::BLOCK == 32 && BlockQ4_0::BYTES == 18);

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = 32;
    type VecDot = BlockQ8_0;

    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), 32);
        // The value of largest magnitude, keeping its sign; the first one wins on ties.
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as u8).min(15);
            let q1 = ((x[j + 16] * id + 8.5) as u8).min(15);
            qs[j] = q0 | (q1 << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..16 {
            out[j] = ((self.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            out[j + 16] = ((self.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }

    /// Σ_blocks d_w·d_x·(Σ (q_w − 8)·q_x), in the f32 order of [`block_lanes`].
    #[inline]
    fn vec_dot(w: &[Self], x: &[BlockQ8_0]) -> f32 {
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
}
