//! Q5_0: blocks of 32 values, 5-bit levels with an f16 scale (22 bytes, ggml's `block_q5_0`):
//! value `j` is `d·(q[j] − 16)`.
//!
//! ```text
//! { d: f16, qh: [u8; 4], qs: [u8; 16] }   low nibbles as Q4_0 (j | j+16 << 4);
//!                                          bit j of qh (u32 LE) = bit 4 of q[j]
//! ```
//!
//! ggml dots Q5_0 weights against Q8_0 activations; so do we, in the [`LaneDot`] order (see
//! [`vec_dot`]).

use half::f16;

use super::kq_common::{dequantize_bytes, lanes32};
use super::{f16_as_f32, BlockQ8_0, LaneDot, QuantBlock};
use crate::error::Error;
use crate::GgmlType;

/// Values per block.
pub const BLOCK_VALUES: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 22;

/// One Q5_0 block (ggml `block_q5_0`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale: a level `q` (0..32) stands for `d·(q − 16)`.
    pub d: f16,
    /// Fifth bits: bit `j` of this little-endian u32 is bit 4 of level `j`.
    pub qh: [u8; 4],
    /// Low four bits: level `j` in the low nibble of byte `j`, level `j + 16` in the high one.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == BLOCK_BYTES);

impl BlockQ5_0 {
    /// The 32 signed levels `q − 16` (−16..15).
    #[inline(always)]
    pub fn levels(&self) -> [i8; 32] {
        let qh = u32::from_le_bytes(self.qh);
        let mut q = [0i8; 32];
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            q[j] = ((self.qs[j] & 0x0F) | h0) as i8 - 16;
            q[j + 16] = ((self.qs[j] >> 4) | h1) as i8 - 16;
        }
        q
    }
}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_0;

    fn vec_dot(w: &[Self], x: &[BlockQ8_0]) -> f32 {
        vec_dot(w, x)
    }

    /// ggml's `quantize_row_q5_0_ref` for one block: `m` = the value of largest magnitude
    /// (first on ties), `d = m/−16`, `q = min(31, trunc(x·(1/d) + 16.5))`.
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..BLOCK_VALUES];
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let level = |v: f32| ((v * id + 16.5) as i8).min(31) as u8;
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for j in 0..16 {
            let (q0, q1) = (level(x[j]), level(x[j + 16]));
            qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    /// ggml's `dequantize_row_q5_0`: `(q − 16)·d`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(self.levels()) {
            *o = q as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q5_0_ref`: whole blocks of `x` into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ5_0]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ5_0::quantize(c);
    }
}

/// ggml's `dequantize_row_q5_0`, bit for bit, for `min(blocks, out.len()/32)` blocks; never
/// panics (NaN/inf scales give NaN/inf values, as in ggml).
pub fn dequantize_row(blocks: &[BlockQ5_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q5_0 blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 32 and `data` holds exactly its blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ5_0>("Q5_0", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}

/// Q5_0 weights · Q8_0 activations over `min(w.len(), x.len())` blocks: the [`LaneDot`] dot
/// ([`super::lane_vec_dot`]) without a minimum term. Block `b` has the exact integer lanes
/// `I[l] = Σ (q_w − 16)·q_x` over its values `4l..4l+4` and the scale `d_w·d_x` (f16 as f32, one
/// rounding); lane `l` accumulates `(d_w·d_x)·I[l]` (two roundings, no FMA) across blocks, and the
/// lanes reduce once as `((a0+a4)+(a1+a5)) + ((a2+a6)+(a3+a7))`. Every SIMD path reproduces this
/// bit for bit.
pub fn vec_dot(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    super::lane_vec_dot(w, x)
}

impl LaneDot for BlockQ5_0 {
    const HAS_MIN: bool = false;
    /// Lanes of `Σ (q_w − 16)·q_x` (value `p` in lane `p / 4`); no minimum lanes.
    #[inline(always)]
    fn lanes(&self, x: &BlockQ8_0) -> ([i32; 8], [i32; 8]) {
        (lanes32(&self.levels(), &x.qs).0, [0; 8])
    }
    #[inline(always)]
    fn scales(&self, x: &BlockQ8_0) -> (f32, f32) {
        (f16_as_f32(self.d) * f16_as_f32(x.d), 0.0)
    }
}
