//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32, 4-bit levels with a 6-bit scale and
//! a 6-bit minimum per sub-block and two f16 super-block scales (144 bytes, ggml's
//! `block_q4_K`, 4.5 bits per weight): value `i` of sub-block `j` is
//! `(d·sc[j])·q − (dmin·m[j])`.
//!
//! ```text
//! { d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] }
//! scales: 8 × (6-bit sc, 6-bit m), see `get_scale_min_k4`
//! qs[32g + l]: low nibble = value 64g + l, high nibble = value 64g + 32 + l   (g = 0..4)
//! ```
//!
//! ggml dots Q4_K weights against [`Q8_K`](super::q8_k) activations.

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
pub const BLOCK_BYTES: usize = 144;

/// One Q4_K super-block (ggml `block_q4_K`).
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_K {
    /// Scale of the 6-bit sub-block scales.
    pub d: f16,
    /// Scale of the 6-bit sub-block minimums.
    pub dmin: f16,
    /// The packed 6-bit scales and minimums ([`BlockQ4_K::scales_mins`]).
    pub scales: [u8; 12],
    /// The 4-bit levels: byte `32g + l` holds value `64g + l` (low) and `64g + 32 + l` (high).
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == BLOCK_BYTES);

impl BlockQ4_K {
    /// The eight 6-bit sub-block scales and minimums (ggml's `get_scale_min_k4`).
    #[inline(always)]
    pub fn scales_mins(&self) -> ([u8; 8], [u8; 8]) {
        scales_mins_k4(&self.scales)
    }

    /// The 256 levels (0..16) in value order.
    #[inline(always)]
    pub fn levels(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for g in 0..4 {
            for l in 0..32 {
                q[64 * g + l] = self.qs[32 * g + l] & 0x0F;
                q[64 * g + 32 + l] = self.qs[32 * g + l] >> 4;
            }
        }
        q
    }
}

impl QuantBlock for BlockQ4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = BLOCK_VALUES;
    type VecDot = BlockQ8_K;

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot(w, x)
    }

    /// ggml's `quantize_row_q4_K_ref` for one super-block (no importance matrix):
    /// `make_qkx2_quants(nmax 15, rmin −1, rdelta 0.1, nstep 20)` per sub-block with weights
    /// `sqrt(Σx²/32) + |x|`, 6-bit scales and mins relative to `d = max_scale/63`,
    /// `dmin = max_min/63` (f16), then the levels again against the f16-rounded
    /// `d·sc`, `dmin·m`: `q = clamp(nearest_int((x + dmin·m)/(d·sc)), 0, 15)`; a sub-block whose
    /// `d·sc` is 0 keeps the levels of the search.
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
                15,
                -1.0,
                0.1,
                20,
            );
        }
        let (packed, d, dmin) = pack_scales_k4(&scales, &mins);
        let mut b = BlockQ4_K {
            d: f16::from_f32(d),
            dmin: f16::from_f32(dmin),
            scales: packed,
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
                l[i] = nearest_int((x[i] + dm) / d).clamp(0, 15) as u8;
            }
        }
        for g in 0..4 {
            for i in 0..32 {
                b.qs[32 * g + i] = l[64 * g + i] | (l[64 * g + 32 + i] << 4);
            }
        }
        b
    }

    /// ggml's `dequantize_row_q4_K`: `(d·sc)·q − (dmin·m)`.
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

/// ggml's `quantize_row_q4_K_ref`: whole super-blocks of `x` into `out` (the shorter decides).
pub fn quantize_row_ref(x: &[f32], out: &mut [BlockQ4_K]) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(BLOCK_VALUES)) {
        *b = BlockQ4_K::quantize(c);
    }
}

/// ggml's `dequantize_row_q4_K`, bit for bit, for `min(blocks, out.len()/256)` super-blocks;
/// never panics (NaN/inf scales give NaN/inf values, as in ggml).
pub fn dequantize_row(blocks: &[BlockQ4_K], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK_VALUES)) {
        b.dequantize(o);
    }
}

/// Dequantize Q4_K super-blocks stored at any alignment in `data`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `out.len()` is a multiple of 256 and `data` holds exactly its
/// super-blocks.
pub fn dequantize_bytes_to(data: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_bytes::<BlockQ4_K>("Q4_K", BLOCK_VALUES, data, out, |b, o| b.dequantize(o))
}

/// The exact integer parts of one Q4_K · Q8_K super-block: `(Σ_j sc_j·Σ_{i∈j} q_i·x_i,
/// Σ_k bsums_k·m_{k/2})` (ggml's `aux32` total and `sumi`; no overflow: |·| < 2³¹).
#[inline(always)]
pub fn block_isums(w: &BlockQ4_K, x: &BlockQ8_K) -> (i32, i32) {
    let (sc, m) = w.scales_mins();
    let mut isum = 0i32;
    for g in 0..4 {
        let (mut lo, mut hi) = (0i32, 0i32);
        for l in 0..32 {
            let q = w.qs[32 * g + l];
            lo += (q & 0x0F) as i32 * x.qs[64 * g + l] as i32;
            hi += (q >> 4) as i32 * x.qs[64 * g + 32 + l] as i32;
        }
        isum += sc[2 * g] as i32 * lo + sc[2 * g + 1] as i32 * hi;
    }
    let mut msum = 0i32;
    for k in 0..16 {
        msum += x.bsums[k] as i32 * m[k / 2] as i32;
    }
    (isum, msum)
}

/// Q4_K weights · Q8_K activations over `min(w.len(), x.len())` super-blocks:
/// [`super::lane_vec_dot`] with the lanes of [`LaneDot::lanes`] (their sums are ggml's integers,
/// `ggml_vec_dot_q4_K_q8_K_generic`; ggml's f32 order is similar, eight within-block lanes, but
/// not identical, so results differ from ggml's in the last bits). Every SIMD path of ours
/// reproduces this function bit for bit.
pub fn vec_dot(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    super::lane_vec_dot(w, x)
}

impl LaneDot for BlockQ4_K {
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
