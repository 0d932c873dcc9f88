//! Q6_K: super-blocks of 256 values in 16 sub-blocks of 16, 6-bit levels with a signed 8-bit
//! scale per sub-block and one f16 super-block scale **stored last** (210 bytes, ggml's
//! `block_q6_K`, 6.5625 bits per weight): value `i` is `(d·sc[i/16])·(q − 32)`.
//!
//! ```text
//! { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }
//! for half h = 0..2, l = 0..32 (value v = 128h + 32k + l, k = 0..4):
//!   low 4 bits:  k=0: ql[64h+l] & 15   k=1: ql[64h+32+l] & 15   k=2: ql[64h+l] >> 4   k=3: ql[64h+32+l] >> 4
//!   high 2 bits: bits 2k..2k+2 of qh[32h+l]
//! ```
//!
//! ggml dots Q6_K weights against [`Q8_K`](super::q8_k) activations.

use half::f16;

use super::kq_common::{
    bsum_lanes, dequantize_bytes, level_lanes, make_qx_quants_rmse1, nearest_int, GROUP_MAX_EPS,
};
use super::q8_k::BlockQ8_K;
use super::{f16_as_f32, LaneDot, QuantBlock};
use crate::error::Error;
use crate::GgmlType;

/// Values per super-block.
pub const BLOCK_VALUES: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;

/// One Q6_K super-block (ggml `block_q6_K`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ6_K {
    /// Low four bits of the levels (see the module's layout).
    pub ql: [u8; 128],
    /// High two bits of the levels.
    pub qh: [u8; 64],
    /// Signed scale of each sub-block of 16.
    pub scales: [i8; 16],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == BLOCK_BYTES);

impl BlockQ6_K {
    /// The 256 signed levels `q − 32` (−32..31) in value order.
    #[inline(always)]
    pub fn levels(&self) -> [i8; 256] {
        let mut q = [0i8; 256];
        for h in 0..2 {
            let (ql, qh) = (&self.ql[64 * h..64 * h + 64], &self.qh[32 * h..32 * h + 32]);
            for l in 0..32 {
                let y = &mut q[128 * h..128 * h + 128];
                y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        q
    }
}

impl QuantBlock for BlockQ6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_K;

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot(w, x)
    }

    /// ggml's `quantize_row_q6_K_ref` for one super-block (no importance matrix): per
    /// sub-block `make_qx_quants(16, nmax 32, rmse_type 1)`; `max_scale` = the sub-block scale
    /// of largest magnitude (first on ties); `iscale = −128/max_scale`, `d = f16(1/iscale)`,
    /// `sc = min(127, nearest_int(iscale·scale))` as i8; then the levels again against the
    /// f16-rounded `d·sc`: `clamp(nearest_int(x/(d·sc)), −32, 31) + 32`; a sub-block whose
    /// `d·sc` is 0 keeps the levels of the search. A super-block whose largest |scale| is below
    /// 1e-15 is all zero bytes.
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..BLOCK_VALUES];
        let mut l = [0i8; 256];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..16 {
            let s =
                make_qx_quants_rmse1(&x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16], 32);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        let mut b = BlockQ6_K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [0; 16],
            d: f16::ZERO,
        };
        if max_abs_scale < GROUP_MAX_EPS {
            return b;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16::from_f32(1.0 / iscale);
        for (sc, &s) in b.scales.iter_mut().zip(&scales) {
            *sc = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..16 {
            let d = b.d.to_f32() * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let l: [u8; 256] = l.map(|v| v as u8);
        for h in 0..2 {
            let l = &l[128 * h..128 * h + 128];
            for i in 0..32 {
                let (q1, q2, q3, q4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
                b.ql[64 * h + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                b.ql[64 * h + 32 + i] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                b.qh[32 * h + i] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        b
    }

    /// ggml's `dequantize_row_q6_K`: `(d·sc)·(q − 32)`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let q = self.levels();
        for (i, o) in out[..BLOCK_VALUES].iter_mut().enumerate() {
            *o = d * self.scales[i / 16] as f32 * q[i] as f32;
        }
    }
}

/// ggml's `quantize_row_q6_K_ref`: whole super-blocks of `x` into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ6_K]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ6_K::quantize(c);
    }
}

/// ggml's `dequantize_row_q6_K`, bit for bit, for `min(blocks, out.len()/256)` super-blocks;
/// never panics (NaN/inf scales give NaN/inf values, as in ggml).
pub fn dequantize_row(blocks: &[BlockQ6_K], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q6_K super-blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 256 and `data` holds exactly its
/// super-blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ6_K>("Q6_K", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}

/// The exact integer part of one Q6_K · Q8_K super-block: `Σ_j sc_j·Σ_{i∈j} (q_i − 32)·x_i`
/// over the 16 sub-blocks of 16 (ggml's `aux32` total; |·| < 2²⁸).
#[inline(always)]
pub fn block_isum(w: &BlockQ6_K, x: &BlockQ8_K) -> i32 {
    let q = w.levels();
    let mut isum = 0i32;
    for ((&s, qj), xj) in w
        .scales
        .iter()
        .zip(q.chunks_exact(16))
        .zip(x.qs.chunks_exact(16))
    {
        let dot: i32 = qj.iter().zip(xj).map(|(&a, &b)| a as i32 * b as i32).sum();
        isum += s as i32 * dot;
    }
    isum
}

/// Q6_K weights · Q8_K activations over `min(w.len(), x.len())` super-blocks:
/// [`super::lane_vec_dot`] with the lanes of [`LaneDot::lanes`] (their sums are ggml's integers,
/// `ggml_vec_dot_q6_K_q8_K_generic`; ggml's f32 order is similar, eight within-block lanes, but
/// not identical, so results differ from ggml's in the last bits). Every SIMD path of ours
/// reproduces this function bit for bit.
pub fn vec_dot(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    super::lane_vec_dot(w, x)
}

impl LaneDot for BlockQ6_K {
    const HAS_MIN: bool = false;
    /// Lanes of `Σ sc[p/16]·u[p]·x[p] − 32·Σ_j sc[j]·bsums[j]` with the unsigned levels
    /// `u = q + 32` (0..63), the offset in `bsum_lanes`; their sum is [`block_isum`].
    #[inline(always)]
    fn lanes(&self, x: &BlockQ8_K) -> ([i32; 8], [i32; 8]) {
        let sc = &self.scales;
        let u = self.levels().map(|v| v as i32 + 32);
        let l = level_lanes(&u, |p| sc[p / 16] as i32, &x.qs);
        let o = bsum_lanes(&x.bsums, |j| sc[j] as i32);
        (std::array::from_fn(|k| l[k] - 32 * o[k]), [0; 8])
    }
    #[inline(always)]
    fn scales(&self, x: &BlockQ8_K) -> (f32, f32) {
        (f16_as_f32(self.d) * x.d, 0.0)
    }
}
