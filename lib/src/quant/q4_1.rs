//! Q4_1: blocks of 32 values, 4-bit levels with an f16 scale **and minimum** (20 bytes, ggml's
//! `block_q4_1`): value `j` is `d·q[j] + m`.
//!
//! ```text
//! { d: f16, m: f16, qs: [u8; 16] }   qs[j] = q[j] | q[j+16] << 4
//! ```
//!
//! ggml dots Q4_1 weights against [`Q8_1`](super::q8_1) activations, whose `s = d·Σq` carries
//! the minimum's share: Σ x·w = d_w·d_x·Σ q_w·q_x + m_w·s_x.

use half::f16;

use super::kq_common::dequantize_bytes;
use super::q8_1::BlockQ8_1;
use super::{f16_as_f32, IntDot, QuantBlock};
use crate::error::Error;
use crate::GgmlType;

/// Values per block.
pub const BLOCK_VALUES: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 20;

/// One Q4_1 block (ggml `block_q4_1`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of level 0).
    pub m: f16,
    /// Levels: `j` in the low nibble of byte `j`, `j + 16` in its high nibble.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == BLOCK_BYTES);

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_1;

    fn vec_dot(w: &[Self], x: &[BlockQ8_1]) -> f32 {
        vec_dot(w, x)
    }

    /// ggml's `quantize_row_q4_1_ref` for one block: `d = (max − min)/15`, `m = min`,
    /// `q = min(15, trunc((x − min)·(1/d) + 0.5))`.
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..BLOCK_VALUES];
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let level = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            qs[j] = level(x[j]) | (level(x[j + 16]) << 4);
        }
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs,
        }
    }

    /// ggml's `dequantize_row_q4_1`: `q·d + m`.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for j in 0..16 {
            out[j] = (self.qs[j] & 0x0F) as f32 * d + m;
            out[j + 16] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// ggml's `quantize_row_q4_1_ref`: whole blocks of `x` into `out` (the shorter of the two
/// decides; a partial block at the end of `x` is ignored).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ4_1]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ4_1::quantize(c);
    }
}

/// ggml's `dequantize_row_q4_1`, bit for bit. Dequantizes `min(blocks, out.len()/32)` blocks;
/// never panics (NaN/inf scales give NaN/inf values, as in ggml).
pub fn dequantize_row(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q4_1 blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 32 and `data` holds exactly its blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ4_1>("Q4_1", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}

/// Q4_1 weights · Q8_1 activations: block `b` contributes `(d_w·d_x)·isum + m_w·s_x` (three
/// roundings and the add, no FMA; `isum = Σ q_w·q_x` exact in i32), accumulated in the
/// eight-block-lane order of `kq_common::block_lanes` (see [`super::q5_0::vec_dot`]).
/// Uses `min(w.len(), x.len())` blocks.
pub fn vec_dot(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    super::int_vec_dot(w, x)
}

impl IntDot for BlockQ4_1 {
    /// `(Σ q_w·q_x, 0)`, levels 0..15.
    fn isums(&self, c: &BlockQ8_1) -> (i32, i32) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (self.qs[j] & 0x0F) as i32 * c.qs[j] as i32;
            isum += (self.qs[j] >> 4) as i32 * c.qs[j + 16] as i32;
        }
        (isum, 0)
    }
    #[inline(always)]
    fn value(&self, c: &BlockQ8_1, isum: i32, _: i32) -> f32 {
        (f16_as_f32(self.d) * f16_as_f32(c.d)) * isum as f32 + f16_as_f32(self.m) * f16_as_f32(c.s)
    }
}
