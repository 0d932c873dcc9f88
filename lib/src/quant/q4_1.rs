//! Q4_1: blocks of 32 values, 4-bit levels with an f16 scale **and minimum** (20 bytes, ggml's
//! `block_q4_1`): value `j` is `d·q[j] + m`.
//!
//! ```text
//! { d: f16, m: f16, qs: [u8; 16] }   qs[j] = q[j] | q[j+16] << 4
//! ```
//!
//! The dot product is this crate's own (see [`vec_dot`]): Q4_1 weights against [`Q8_0`](super::q8_0::BlockQ8_0)
//! activations, Σ w·x = d_w·d_x·Σ q_w·q_x + m_w·d_x·Σ q_x with both integer sums exact. ggml
//! dots against Q8_1 instead, whose f16 `s = d·Σq` carries the minimum's share rounded to f16;
//! ours keeps `Σ q_x` exact (no f16 rounding of `s`), so it is closer to the exact dot of the
//! dequantized values, and its results differ from ggml's in the last bits.

use half::f16;

use super::kq_common::{dequantize_bytes, min_block_lanes, min_block_scales};
use super::{BlockQ8_0, LaneDot, QuantBlock};
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
    type VecDot = BlockQ8_0;

    fn vec_dot(w: &[Self], x: &[BlockQ8_0]) -> f32 {
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

/// Q4_1 weights · Q8_0 activations over `min(w.len(), x.len())` blocks: the [`LaneDot`] dot
/// ([`super::lane_vec_dot`]). Block `b` has the exact integer lanes `I[l] = Σ q_w·q_x` and
/// `M[l] = −Σ q_x` over its values `4l..4l+4` and the scales `(d_w·d_x, m_w·d_x)` (f16 as f32, one
/// rounding); lane `l` accumulates `(d_w·d_x)·I[l]` across blocks (and the minimum lane
/// `(m_w·d_x)·M[l]`), and the result is `lanes8(acc) − lanes8(acc_min)`, i.e.
/// `Σ d_w·d_x·Σ q_w·q_x + m_w·d_x·Σ q_x` with its roundings in a fixed order every SIMD path
/// reproduces bit for bit.
pub fn vec_dot(w: &[BlockQ4_1], x: &[BlockQ8_0]) -> f32 {
    super::lane_vec_dot(w, x)
}

impl BlockQ4_1 {
    /// The 32 levels (0..16) in value order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; 32] {
        let mut q = [0u8; 32];
        for j in 0..16 {
            q[j] = self.qs[j] & 0x0F;
            q[j + 16] = self.qs[j] >> 4;
        }
        q
    }
}

impl LaneDot for BlockQ4_1 {
    const HAS_MIN: bool = true;
    /// Lanes of `Σ q_w·q_x` and of `−Σ q_x` (value `p` in lane `p / 4`).
    #[inline(always)]
    fn lanes(&self, x: &BlockQ8_0) -> ([i32; 8], [i32; 8]) {
        min_block_lanes(&self.levels(), x)
    }
    #[inline(always)]
    fn scales(&self, x: &BlockQ8_0) -> (f32, f32) {
        min_block_scales(self.d, self.m, x)
    }
}
