//! Q8_1: blocks of 32 signed bytes with an f16 scale `d` and an f16 `s = d·Σq` (36 bytes,
//! ggml's `block_q8_1`). The activation type ggml dots Q4_1 and Q5_1 weights against: `s`
//! supplies the weights' minimum term `m_w·Σx` without a second pass. This crate dots them
//! against Q8_0 and sums `Σq` exactly instead (see [`super::q4_1`]); the block stays a GGUF type
//! with its reference quantizer.
//!
//! ```text
//! { d: f16, s: f16, qs: [i8; 32] }   x[j] = d·qs[j]
//! ```

use half::f16;

use super::kq_common::dequantize_bytes;
use super::{round_half_away, QuantBlock};
use crate::error::Error;
use crate::GgmlType;

/// Values per block.
pub const BLOCK_VALUES: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 36;

/// One Q8_1 block (ggml `block_q8_1`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d · Σ qs` (rounded to f16).
    pub s: f16,
    /// Quantized values.
    pub qs: [i8; 32],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == BLOCK_BYTES);

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_1;

    /// Activation blocks dotted with each other (used by tests and as a table completeness
    /// requirement): per block `(d_w·d_x, Σ qw·qx)` in the eight-block-lane order.
    fn vec_dot(w: &[Self], x: &[Self]) -> f32 {
        super::block_lanes(w.len(), |b| {
            let isum = w[b]
                .qs
                .iter()
                .zip(&x[b].qs)
                .map(|(&a, &c)| a as i32 * c as i32)
                .sum();
            (w[b].d.to_f32() * x[b].d.to_f32(), isum)
        })
    }

    /// ggml's `quantize_row_q8_1_ref` for one block: `d = max|x|/127`,
    /// `qs = roundf(x·(1/d))` (half away from zero), `s = f16((Σqs)·d)`.
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..BLOCK_VALUES];
        let mut amax = 0f32;
        for &v in x {
            // C's MAX(amax, |v|)
            amax = if amax > v.abs() { amax } else { v.abs() };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for j in 0..16 {
            qs[j] = round_half_away(x[j] * id) as i8;
            qs[j + 16] = round_half_away(x[j + 16] * id) as i8;
            sum += qs[j] as i32 + qs[j + 16] as i32;
        }
        BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    }

    /// `d·qs[j]` (ggml has no Q8_1 dequantizer; this is the value the block stands for).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q8_1_ref`: whole blocks of `x` into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ8_1]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ8_1::quantize(c);
    }
}

/// `d·qs` for `min(blocks, out.len()/32)` blocks; never panics.
pub fn dequantize_row(blocks: &[BlockQ8_1], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q8_1 blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 32 and `data` holds exactly its blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ8_1>("Q8_1", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}
