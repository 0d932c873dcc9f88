//! Q5_1: blocks of 32 values, 5-bit levels with an f16 scale and minimum (24 bytes, ggml's
//! `block_q5_1`): value `j` is `d·q[j] + m`.
//!
//! ```text
//! { d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] }   packing as Q5_0
//! ```
//!
//! The dot product is this crate's own, as Q4_1's (see [`super::q4_1`]): against [`Q8_0`](super::q8_0::BlockQ8_0)
//! activations, `d_w·d_x·Σ q_w·q_x + m_w·d_x·Σ q_x` with exact integer sums, where ggml uses
//! Q8_1 and its f16-rounded `s = d·Σq`.

use half::f16;

use super::kq_common::{dequantize_bytes, min_block_lanes, min_block_scales};
use super::{BlockQ8_0, LaneDot, QuantBlock};
use crate::error::Error;
use crate::GgmlType;

/// Values per block.
pub const BLOCK_VALUES: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 24;

/// One Q5_1 block (ggml `block_q5_1`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of level 0).
    pub m: f16,
    /// Fifth bits: bit `j` of this little-endian u32 is bit 4 of level `j`.
    pub qh: [u8; 4],
    /// Low four bits: level `j` in the low nibble of byte `j`, level `j + 16` in the high one.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == BLOCK_BYTES);

impl BlockQ5_1 {
    /// The 32 levels (0..32).
    #[inline(always)]
    pub fn levels(&self) -> [u8; 32] {
        let qh = u32::from_le_bytes(self.qh);
        let mut q = [0u8; 32];
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            q[j] = (self.qs[j] & 0x0F) | h0;
            q[j + 16] = (self.qs[j] >> 4) | h1;
        }
        q
    }
}

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_0;

    fn vec_dot(w: &[Self], x: &[BlockQ8_0]) -> f32 {
        vec_dot(w, x)
    }

    /// ggml's `quantize_row_q5_1_ref` for one block: `d = (max − min)/31`, `m = min`,
    /// `q = trunc((x − min)·(1/d) + 0.5)` (no clamp, as in ggml).
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
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let level = |v: f32| ((v - min) * id + 0.5) as u8;
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for j in 0..16 {
            let (q0, q1) = (level(x[j]), level(x[j + 16]));
            qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    /// ggml's `dequantize_row_q5_1`: `q·d + m`.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (o, q) in out.iter_mut().zip(self.levels()) {
            *o = q as f32 * d + m;
        }
    }
}

/// ggml's `quantize_row_q5_1_ref`: whole blocks of `x` into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ5_1]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ5_1::quantize(c);
    }
}

/// ggml's `dequantize_row_q5_1`, bit for bit, for `min(blocks, out.len()/32)` blocks; never
/// panics (NaN/inf scales give NaN/inf values, as in ggml).
pub fn dequantize_row(blocks: &[BlockQ5_1], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q5_1 blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 32 and `data` holds exactly its blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ5_1>("Q5_1", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}

/// Q5_1 weights · Q8_0 activations over `min(w.len(), x.len())` blocks: the [`LaneDot`] dot
/// of [`super::q4_1::vec_dot`] with levels 0..31 (`I[l] = Σ q_w·q_x`, `M[l] = −Σ q_x` over
/// values `4l..4l+4`; scales `(d_w·d_x, m_w·d_x)`).
pub fn vec_dot(w: &[BlockQ5_1], x: &[BlockQ8_0]) -> f32 {
    super::lane_vec_dot(w, x)
}

impl LaneDot for BlockQ5_1 {
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
