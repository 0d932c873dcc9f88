//! Q5_K: super-blocks of 256 values in 8 sub-blocks of 32, 5-bit levels with a 6-bit scale and
//! a 6-bit minimum per sub-block and two f16 super-block scales (176 bytes, ggml's
//! `block_q5_K`, 5.5 bits per weight): value `i` of sub-block `j` is
//! `(d·sc[j])·q − (dmin·m[j])`.
//!
//! ```text
//! { d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }
//! scales and low nibbles as Q4_K; bit 2g of qh[l] = bit 4 of value 64g + l,
//! bit 2g + 1 of qh[l] = bit 4 of value 64g + 32 + l   (g = 0..4, l = 0..32)
//! ```
//!
//! ggml dots Q5_K weights against [`Q8_K`](super::q8_k) activations.

use half::f16;

use super::kq_common::{
    bsum_lanes, dequantize_bytes, k4_weights, level_lanes, make_qkx2_quants, nearest_int,
    pack_scales_k4, scales_mins_k4,
};
use super::q8_k::BlockQ8_K;
use super::{f16_as_f32, LaneDot, QuantBlock};
use crate::error::Error;
use crate::GgmlType;

/// Values per super-block.
pub const BLOCK_VALUES: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 176;

/// One Q5_K super-block (ggml `block_q5_K`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_K {
    /// Scale of the 6-bit sub-block scales.
    pub d: f16,
    /// Scale of the 6-bit sub-block minimums.
    pub dmin: f16,
    /// The packed 6-bit scales and minimums (as Q4_K).
    pub scales: [u8; 12],
    /// Fifth bits: bit `2g` of byte `l` for value `64g + l`, bit `2g + 1` for `64g + 32 + l`.
    pub qh: [u8; 32],
    /// Low four bits, packed as Q4_K.
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == BLOCK_BYTES);

impl BlockQ5_K {
    /// The eight 6-bit sub-block scales and minimums (ggml's `get_scale_min_k4`).
    #[inline(always)]
    pub fn scales_mins(&self) -> ([u8; 8], [u8; 8]) {
        scales_mins_k4(&self.scales)
    }

    /// The 256 levels (0..32) in value order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for g in 0..4 {
            for l in 0..32 {
                let h = self.qh[l] >> (2 * g);
                q[64 * g + l] = (self.qs[32 * g + l] & 0x0F) | ((h & 1) << 4);
                q[64 * g + 32 + l] = (self.qs[32 * g + l] >> 4) | ((h & 2) << 3);
            }
        }
        q
    }
}

impl QuantBlock for BlockQ5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_K;

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot(w, x)
    }

    /// ggml's `quantize_row_q5_K_ref` for one super-block (no importance matrix): as Q4_K with
    /// 31 levels and `make_qkx2_quants(nmax 31, rmin −0.5, rdelta 0.1, nstep 15)`.
    fn quantize(x: &[f32]) -> Self {
        let x = &x[..BLOCK_VALUES];
        let mut l = [0u8; 256];
        let mut laux = [0u8; 32];
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        for j in 0..8 {
            let xs = &x[32 * j..32 * j + 32];
            let w = k4_weights(xs);
            (scales[j], mins[j]) = make_qkx2_quants(
                xs,
                &w,
                &mut l[32 * j..32 * j + 32],
                &mut laux,
                31,
                -0.5,
                0.1,
                15,
            );
        }
        let (packed, d, dmin) = pack_scales_k4(&scales, &mins);
        let mut b = BlockQ5_K {
            d: f16::from_f32(d),
            dmin: f16::from_f32(dmin),
            scales: packed,
            qh: [0; 32],
            qs: [0; 128],
        };
        let (sc, m) = b.scales_mins();
        for j in 0..8 {
            let d = b.d.to_f32() * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            let dm = b.dmin.to_f32() * m[j] as f32;
            for i in 32 * j..32 * j + 32 {
                l[i] = nearest_int((x[i] + dm) / d).clamp(0, 31) as u8;
            }
        }
        for g in 0..4 {
            for i in 0..32 {
                let (l1, l2) = (l[64 * g + i], l[64 * g + 32 + i]);
                b.qh[i] |= ((l1 >> 4) << (2 * g)) | ((l2 >> 4) << (2 * g + 1));
                b.qs[32 * g + i] = (l1 & 0x0F) | ((l2 & 0x0F) << 4);
            }
        }
        b
    }

    /// ggml's `dequantize_row_q5_K`: `(d·sc)·q − (dmin·m)`.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, min) = (self.d.to_f32(), self.dmin.to_f32());
        let (sc, m) = self.scales_mins();
        let q = self.levels();
        for j in 0..8 {
            let (d1, m1) = (d * sc[j] as f32, min * m[j] as f32);
            for i in 32 * j..32 * j + 32 {
                out[i] = d1 * q[i] as f32 - m1;
            }
        }
    }
}

/// ggml's `quantize_row_q5_K_ref`: whole super-blocks of `x` into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ5_K]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ5_K::quantize(c);
    }
}

/// ggml's `dequantize_row_q5_K`, bit for bit, for `min(blocks, out.len()/256)` super-blocks;
/// never panics (NaN/inf scales give NaN/inf values, as in ggml).
pub fn dequantize_row(blocks: &[BlockQ5_K], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q5_K super-blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 256 and `data` holds exactly its
/// super-blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ5_K>("Q5_K", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}

/// The exact integer parts of one Q5_K · Q8_K super-block, as [`super::q4_k::block_isums`]:
/// `(Σ_j sc_j·Σ_{i∈j} q_i·x_i, Σ_k bsums_k·m_{k/2})`.
#[inline(always)]
pub fn block_isums(w: &BlockQ5_K, x: &BlockQ8_K) -> (i32, i32) {
    let (sc, m) = w.scales_mins();
    let q = w.levels();
    let mut isum = 0i32;
    for ((&s, qj), xj) in sc.iter().zip(q.chunks_exact(32)).zip(x.qs.chunks_exact(32)) {
        let dot: i32 = qj.iter().zip(xj).map(|(&a, &b)| a as i32 * b as i32).sum();
        isum += s as i32 * dot;
    }
    let mut msum = 0i32;
    for k in 0..16 {
        msum += x.bsums[k] as i32 * m[k / 2] as i32;
    }
    (isum, msum)
}

/// Q5_K weights · Q8_K activations over `min(w.len(), x.len())` super-blocks:
/// [`super::lane_vec_dot`] with the lanes of [`LaneDot::lanes`] (their sums are ggml's integers,
/// `ggml_vec_dot_q5_K_q8_K_generic`; ggml's f32 order is similar, eight within-block lanes, but
/// not identical, so results differ from ggml's in the last bits). Every SIMD path of ours
/// reproduces this function bit for bit.
pub fn vec_dot(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    super::lane_vec_dot(w, x)
}

impl LaneDot for BlockQ5_K {
    const HAS_MIN: bool = true;
    /// Lanes of `Σ sc[p/32]·q[p]·x[p]` and `bsums[k]·m[k/2]` (their sums are
    /// [`block_isums`]).
    #[inline(always)]
    fn lanes(&self, x: &BlockQ8_K) -> ([i32; 8], [i32; 8]) {
        let (sc, m) = self.scales_mins();
        let q = self.levels().map(|v| v as i32);
        (
            level_lanes(&q, |p| sc[p / 32] as i32, &x.qs),
            bsum_lanes(&x.bsums, |k| m[k / 2] as i32),
        )
    }
    #[inline(always)]
    fn scales(&self, x: &BlockQ8_K) -> (f32, f32) {
        (f16_as_f32(self.d) * x.d, f16_as_f32(self.dmin) * x.d)
    }
}
