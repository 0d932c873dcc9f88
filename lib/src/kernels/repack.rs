//! Row-interleaved ("repacked") weight layouts for the decode kernels, built once at load into
//! anonymous memory (in the spirit of ggml's CPU repack, `block_q4_0x8`; our own layout).
//!
//! # Q4_0 ×8
//! Every group of [`R`] = 8 consecutive weight rows is stored block by block: block `b` of the
//! group ([`BlockQ4_0x8`], 144 bytes) holds the eight rows' f16 scales, then their nibble bytes
//! interleaved four bytes at a time:
//!
//! ```text
//! { d: [f16; 8],               d[r]             = row r's block b scale
//!   qs: [u8; 128] }            qs[32c + 4r + e] = row r's block b qs[4c + e]   (c, e < 4)
//! ```
//!
//! so one sequential stream feeds eight output rows, 32 bytes of nibbles hold the same four
//! values of every row (one i32 lane per row after a 4-byte dot product) and the eight scales are
//! one 128-bit load. The `m mod 8` rows past the last full group follow in the plain Q4_0 layout.
//!
//! # Q4_1 ×8
//! The same for Q4_1 ([`BlockQ4_1x8`], 160 bytes): the eight rows' minimums `m` follow their
//! scales, the nibbles as in Q4_0 ×8. The kernels share Q4_0 ×8's integer part (`Σq·x` of each
//! row's unsigned nibbles, one i32 lane per row); the block value is the layout's own f32 order
//! (`X8Block::value`: `(d·dx)·Σq·x + (m·dx)·Σx`, no FMA) summed in the eight block lanes of
//! [`crate::quant::block_lanes_f32`], so it is close to, not bit-exact with, the in-place
//! [`crate::quant::lane_vec_dot`] (whose eight lanes split each block instead). The leftover rows
//! are computed exactly as in place.
//!
//! # Q8_0 ×8
//! The same for Q8_0 ([`BlockQ8_0x8`], 272 bytes): the eight scales, then the rows' bytes
//! interleaved four at a time, `qs[32c + 4r + e]` = row `r`'s `qs[4c + e]` for the eight chunks
//! `c`, each row's result in the in-place order (bit-exact with [`BlockQ8_0::vec_dot`]).
//!
//! # Q4_K ×16
//! Every group of [`R16`] = 16 consecutive Q4_K rows is stored block by block
//! ([`BlockQ4_Kx16`], 16 × 148 bytes: 4 more per row and block than in place) with the per-block
//! decoding done at load, in the spirit of Q4_0 ×8 (one 4-byte dot product serves every row):
//!
//! ```text
//! { s: { d, dmin: [f16; 16],          row r's d, dmin                    (Kx16Scales,
//!        sc: [[u8; 16]; 8],           sc[j][r]    = row r's 6-bit scale   320 bytes)
//!                                                   of sub-block j
//!        mn: [[[u8; 2]; 16]; 4] },    mn[p][r][e] = row r's minimum of sub-block 2p + e
//!   qs: [[[[u8; 4]; 16]; 8]; 4] }     qs[g][c][r] = row r's in-place qs[32g + 4c..32g + 4c + 4]
//! ```
//!
//! so the 64 bytes `qs[g][c]` hold values `64g + 4c..+4` (low nibbles, sub-block `2g`) and
//! `64g + 32 + 4c..+4` (high nibbles, sub-block `2g + 1`) of all sixteen rows, four bytes per
//! row: one 512-bit register, one i32 lane per row, against the four activation bytes broadcast.
//! Each row's sub-block dot products, scales and minimums are exact integers; the f32 order is
//! this layout's own ([`q4_kx16_dot`], the twin of every kernel): per block
//! `acc += (d·dx)·Σⱼ scⱼ·dotⱼ` and `accm += (dmin·dx)·Σⱼ mⱼ·(bsums₂ⱼ + bsums₂ⱼ₊₁)`, then
//! `acc − accm`, so it is close to, not bit-exact with, [`crate::quant::lane_vec_dot`]. The
//! `m mod 16` rows past the last full group follow in the plain layout (the in-place kernels).
//!
//! # Q6_K ×16
//! Every group of [`R16`] = 16 consecutive Q6_K rows is stored block by block
//! ([`BlockQ6_Kx16`], 16 × 212 bytes: 2 more per row and block than in place), the same idea
//! as Q4_K ×16:
//!
//! ```text
//! { d: [f32; 16],                     row r's d (the f16, widened exactly at load)
//!   sc: [[i8; 16]; 16],               sc[j][r]       = row r's scale of sub-block j (16 values)
//!   q: [[[[[u8; 4]; 16]; 3]; 8]; 2] } q[n][c][0][r]  = row r's ql[64n + 4c..+4]
//!                                     q[n][c][1][r]  = row r's ql[64n + 32 + 4c..+4]
//!                                     q[n][c][2][r]  = row r's qh[32n + 4c..+4]
//! ```
//!
//! so the three 64-byte chunks `q[n][c]` hold the six-bit levels of values `128n + 32s + 4c..+4`
//! (`s` < 4, sub-block `8n + 2s + c/4`) of all sixteen rows: four registers of unsigned levels
//! (0..63) after masks and shifts, one i32 lane per row. Each row's per-block integer
//! `Σⱼ scⱼ·(dotⱼ − 32·bsumsⱼ)` is exact; the f32 order is the layout's own ([`q6_kx16_dot`]):
//! per block `acc += (d·dx)·isum`.
//!
//! # Q5_K ×16
//! Q4_K ×16 with the fifth bits ([`BlockQ5_Kx16`], 16 × 180 bytes: 4 more per row and block
//! than in place): the same scales `s` and low-nibble `qs`, and between them
//!
//! ```text
//!   hb: [[[u64; 2]; 8]; 4]            bit 4r + e of hb[g][c][h] = bit 4 of row r's value
//!                                     64g + 32h + 4c + e
//! ```
//!
//! one 64-bit byte mask per chunk `qs[g][c]` and nibble half, so the five-bit levels of a chunk
//! are its nibbles plus 16 under the mask (AVX-512: `vpaddb` with the mask register). The twin
//! ([`q5_kx16_dot`]) is Q4_K ×16's arithmetic with these levels.
//!
//! Except the ×16 layouts, each row's result is computed exactly as [`QuantBlock::vec_dot`] does
//! (exact integer block sums, then the "eight block lanes" f32 order of
//! [`crate::quant::block_lanes`]), so every path's repacked kernel agrees bit for bit with the
//! in-place kernels; only the memory layout differs. The portable decoder here
//! (`scalar_decoder`) is the meaning of the SIMD ones.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use super::types::{plain_act, Decoder, Job};
use super::{with_bias, Out, Q8Row, SyncPtr};
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::quant::q8_k::BlockQ8_K;
use crate::quant::{
    block_lanes, block_lanes_f32, f16_as_f32, lane_vec_dot, lane_vec_dot_iter, BlockQ4_0,
    BlockQ8_0, LaneDot, QuantBlock,
};
use crate::GgmlType;

/// Rows per interleaved group of the Q4_0 layout.
pub const R: usize = 8;
/// Rows per group of the ×16 layouts (Q4_K, Q5_K, Q6_K).
pub const R16: usize = 16;

/// Block `b` of a group of eight Q4_0 rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0x8 {
    /// The eight rows' scales.
    pub d: [f16; 8],
    /// Nibble bytes: `qs[32c + 4r + e]` = row `r`'s `qs[4c + e]`.
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0x8>() == 8 * 18);

/// Block `b` of a group of eight Q4_1 rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_1x8 {
    /// The eight rows' scales.
    pub d: [f16; 8],
    /// The eight rows' minimums.
    pub m: [f16; 8],
    /// Nibble bytes: `qs[32c + 4r + e]` = row `r`'s `qs[4c + e]`.
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1x8>() == 8 * 20);

/// Block `b` of a group of eight Q8_0 rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_0x8 {
    /// The eight rows' scales.
    pub d: [f16; 8],
    /// Bytes: `qs[32c + 4r + e]` = row `r`'s `qs[4c + e]` (`c` < 8).
    pub qs: [i8; 256],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0x8>() == 8 * 34);

/// An eight-row layout of a 32-value nibble type (Q4_0 ×8, Q4_1 ×8): the rows' nibble bytes
/// interleaved four at a time, against Q8_0 activations.
pub(crate) trait X8Block: bytemuck::Pod + Send + Sync {
    /// The in-place block type.
    type Plain: QuantBlock<VecDot = BlockQ8_0>;
    /// Put `s` in as row `r`.
    fn put(&mut self, r: usize, s: &Self::Plain);
    /// Row `r`'s block in the plain layout (the exact inverse of [`X8Block::put`]).
    fn get(&self, r: usize) -> Self::Plain;
    /// The interleaved bytes (the kernels' loads start here, 32 bytes per chunk).
    fn qs_ptr(&self) -> *const u8;
    /// Row `r`'s exact `Σq·x` against activation block `x` (unsigned nibbles 0..15 for the
    /// nibble types, the signed bytes for Q8_0).
    fn raw(&self, r: usize, x: &BlockQ8_0) -> i32;
    /// Row `r`'s value of this block in the layout's twin, from `raw` = `Σq·x` over the row's
    /// unsigned nibbles `q` (0..15), the activation block's scale `dx` and its `sx = Σx`.
    fn value(&self, r: usize, raw: i32, dx: f32, sx: i32) -> f32;
    /// One row stored in place against a split-layout activation row, bit-exact with
    /// [`QuantBlock::vec_dot`] (the leftover rows of a repacked matrix on the SIMD paths).
    ///
    /// # Safety
    /// `nb` blocks at `w`, `nb` blocks in `x`.
    unsafe fn plain_row(w: *const Self::Plain, nb: usize, x: Q8Row) -> f32;
}

impl X8Block for BlockQ4_0x8 {
    type Plain = BlockQ4_0;
    fn put(&mut self, r: usize, s: &BlockQ4_0) {
        self.d[r] = s.d;
        put_nibbles(&mut self.qs, r, &s.qs);
    }
    fn get(&self, r: usize) -> BlockQ4_0 {
        BlockQ4_0 {
            d: self.d[r],
            qs: get_nibbles(&self.qs, r),
        }
    }
    fn qs_ptr(&self) -> *const u8 {
        self.qs.as_ptr()
    }
    fn raw(&self, r: usize, x: &BlockQ8_0) -> i32 {
        nibble_raw(&self.qs, r, x)
    }
    /// `(d·dx)·(raw − 8·sx)`: [`BlockQ4_0::vec_dot`]'s block term, so Q4_0 ×8 is bit-exact.
    fn value(&self, r: usize, raw: i32, dx: f32, sx: i32) -> f32 {
        (f16_as_f32(self.d[r]) * dx) * (raw - 8 * sx) as f32
    }
    unsafe fn plain_row(w: *const BlockQ4_0, nb: usize, x: Q8Row) -> f32 {
        plain_row_split(w, nb, x)
    }
}

impl X8Block for BlockQ4_1x8 {
    type Plain = BlockQ4_1;
    fn put(&mut self, r: usize, s: &BlockQ4_1) {
        self.d[r] = s.d;
        self.m[r] = s.m;
        put_nibbles(&mut self.qs, r, &s.qs);
    }
    fn get(&self, r: usize) -> BlockQ4_1 {
        BlockQ4_1 {
            d: self.d[r],
            m: self.m[r],
            qs: get_nibbles(&self.qs, r),
        }
    }
    fn qs_ptr(&self) -> *const u8 {
        self.qs.as_ptr()
    }
    fn raw(&self, r: usize, x: &BlockQ8_0) -> i32 {
        nibble_raw(&self.qs, r, x)
    }
    /// `(d·dx)·raw + (m·dx)·sx` (each product rounded, then the sum; no FMA).
    fn value(&self, r: usize, raw: i32, dx: f32, sx: i32) -> f32 {
        (f16_as_f32(self.d[r]) * dx) * raw as f32 + (f16_as_f32(self.m[r]) * dx) * sx as f32
    }
    unsafe fn plain_row(w: *const BlockQ4_1, nb: usize, x: Q8Row) -> f32 {
        let xb = (0..nb).map(|b| BlockQ8_0 {
            // The split row keeps the f16 scale widened, so this is exact.
            d: f16::from_f32(*x.d.add(b)),
            qs: (*x.qs.add(b)).0,
        });
        lane_vec_dot_iter::<BlockQ4_1>(std::slice::from_raw_parts(w, nb).iter(), xb)
    }
}

impl X8Block for BlockQ8_0x8 {
    type Plain = BlockQ8_0;
    fn put(&mut self, r: usize, s: &BlockQ8_0) {
        self.d[r] = s.d;
        for c in 0..8 {
            self.qs[32 * c + 4 * r..][..4].copy_from_slice(&s.qs[4 * c..4 * c + 4]);
        }
    }
    fn get(&self, r: usize) -> BlockQ8_0 {
        let mut qs = [0i8; 32];
        for c in 0..8 {
            qs[4 * c..4 * c + 4].copy_from_slice(&self.qs[32 * c + 4 * r..][..4]);
        }
        BlockQ8_0 { d: self.d[r], qs }
    }
    fn qs_ptr(&self) -> *const u8 {
        self.qs.as_ptr() as *const u8
    }
    fn raw(&self, r: usize, x: &BlockQ8_0) -> i32 {
        (0..32)
            .map(|k| self.qs[32 * (k / 4) + 4 * r + k % 4] as i32 * x.qs[k] as i32)
            .sum()
    }
    /// `(d·dx)·raw`: [`BlockQ8_0::vec_dot`]'s block term, so Q8_0 ×8 is bit-exact.
    fn value(&self, r: usize, raw: i32, dx: f32, _sx: i32) -> f32 {
        (f16_as_f32(self.d[r]) * dx) * raw as f32
    }
    unsafe fn plain_row(w: *const BlockQ8_0, nb: usize, x: Q8Row) -> f32 {
        block_lanes(nb, |b| {
            let (a, xq) = (&*w.add(b), &(*x.qs.add(b)).0);
            let isum =
                a.qs.iter()
                    .zip(xq)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            (f16_as_f32(a.d) * *x.d.add(b), isum)
        })
    }
}

/// `Σq·x` of row `r`'s unsigned nibbles in an interleaved `qs` against activation block `x`.
fn nibble_raw(qs: &[u8; 128], r: usize, x: &BlockQ8_0) -> i32 {
    let mut raw = 0i32;
    for c in 0..4 {
        for e in 0..4 {
            let q = qs[32 * c + 4 * r + e];
            let k = 4 * c + e;
            raw += (q & 0x0F) as i32 * x.qs[k] as i32 + (q >> 4) as i32 * x.qs[k + 16] as i32;
        }
    }
    raw
}

/// Row `r`'s 16 nibble bytes into an interleaved block's `qs`.
fn put_nibbles(qs: &mut [u8; 128], r: usize, src: &[u8; 16]) {
    for c in 0..4 {
        qs[32 * c + 4 * r..][..4].copy_from_slice(&src[4 * c..4 * c + 4]);
    }
}

/// Row `r`'s 16 nibble bytes out of an interleaved block's `qs`.
fn get_nibbles(qs: &[u8; 128], r: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    for c in 0..4 {
        out[4 * c..4 * c + 4].copy_from_slice(&qs[32 * c + 4 * r..][..4]);
    }
    out
}

/// The twin of every ×8 kernel for row `r` of a group (`g`: its `nb` blocks) against one Q8_0
/// activation row: [`X8Block::value`] of each block in the eight block lanes of
/// [`block_lanes_f32`].
pub(crate) fn x8_dot_row<G: X8Block>(g: &[G], r: usize, x: &[BlockQ8_0]) -> f32 {
    block_lanes_f32(g.len().min(x.len()), |b| {
        let (a, c) = (&g[b], &x[b]);
        let sx = c.qs.iter().map(|&v| v as i32).sum();
        a.value(r, a.raw(r, c), c.d.to_f32(), sx)
    })
}

/// The per-row scales of a block of a Q4_K-family ×16 layout (Q4_K, Q5_K; 320 bytes, five
/// whole cache lines), decoded from the in-place 12 packed bytes at load.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Kx16Scales {
    /// Row `r`'s `d`.
    pub d: [f16; R16],
    /// Row `r`'s `dmin`.
    pub dmin: [f16; R16],
    /// `sc[j][r]`: row `r`'s scale of sub-block `j`.
    pub sc: [[u8; R16]; 8],
    /// `mn[p][r][e]`: row `r`'s minimum of sub-block `2p + e`.
    pub mn: [[[u8; 2]; R16]; 4],
}

const _: () = assert!(std::mem::size_of::<Kx16Scales>() == 320);

impl Kx16Scales {
    /// Row `r`'s scales from its in-place `d`, `dmin` and unpacked 6-bit scales and minimums.
    fn set_row(&mut self, r: usize, d: f16, dmin: f16, (sc, m): ([u8; 8], [u8; 8])) {
        self.d[r] = d;
        self.dmin[r] = dmin;
        for j in 0..8 {
            self.sc[j][r] = sc[j];
            self.mn[j / 2][r][j % 2] = m[j];
        }
    }

    /// Row `r`'s `d`, `dmin` and packed scales (with the in-place blocks' unpacking, the exact
    /// inverse of [`Kx16Scales::set_row`]: `get_scale_min_k4`'s packing, every bit of the 12
    /// bytes a bit of a scale or minimum).
    fn row(&self, r: usize) -> (f16, f16, [u8; 12]) {
        let sc: [u8; 8] = std::array::from_fn(|j| self.sc[j][r]);
        let m: [u8; 8] = std::array::from_fn(|j| self.mn[j / 2][r][j % 2]);
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
        }
        (self.d[r], self.dmin[r], packed)
    }
}

/// Block `b` of a group of sixteen Q4_K rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_Kx16 {
    /// The rows' scales.
    pub s: Kx16Scales,
    /// `qs[g][c][r]`: row `r`'s in-place nibble bytes `qs[32g + 4c..32g + 4c + 4]`.
    pub qs: [[[[u8; 4]; R16]; 8]; 4],
}

/// Bytes of one row's block in the Q4_K ×16 layout.
pub const Q4_KX16_ROW_BLOCK: usize = 148;

const _: () = assert!(std::mem::size_of::<BlockQ4_Kx16>() == R16 * Q4_KX16_ROW_BLOCK);
// Whole cache lines, the nibble chunks on line boundaries (the buffer is line-aligned).
const _: () = assert!(
    std::mem::size_of::<BlockQ4_Kx16>().is_multiple_of(64)
        && std::mem::offset_of!(BlockQ4_Kx16, qs).is_multiple_of(64)
);

impl BlockQ4_Kx16 {
    /// Put `s` in as row `r` (the load-time decoding of the module docs).
    pub fn set_row(&mut self, r: usize, s: &BlockQ4_K) {
        self.s.set_row(r, s.d, s.dmin, s.scales_mins());
        for (g, qg) in self.qs.iter_mut().enumerate() {
            for (c, qc) in qg.iter_mut().enumerate() {
                qc[r].copy_from_slice(&s.qs[32 * g + 4 * c..][..4]);
            }
        }
    }

    /// Row `r`'s block in the plain layout (the exact inverse of [`BlockQ4_Kx16::set_row`]).
    pub fn row(&self, r: usize) -> BlockQ4_K {
        let mut qs = [0u8; 128];
        for (g, qg) in self.qs.iter().enumerate() {
            for (c, qc) in qg.iter().enumerate() {
                qs[32 * g + 4 * c..][..4].copy_from_slice(&qc[r]);
            }
        }
        let (d, dmin, scales) = self.s.row(r);
        BlockQ4_K {
            d,
            dmin,
            scales,
            qs,
        }
    }
}

/// The ×16 layouts of the Q4_K family (Q4_K, Q5_K): each row's `d`, `dmin`, eight 6-bit
/// sub-block scales and minimums, and an unsigned level per value.
pub(crate) trait Kx16Family: X16Block {
    /// The rows' scales.
    fn scales(&self) -> &Kx16Scales;
    /// The nibble chunks `qs[g][c][r]`: the levels' low four bits.
    fn qs(&self) -> &[[[[u8; 4]; R16]; 8]; 4];
    /// Row `r`'s fifth bit of value `64g + 32h + 4c + e` (Q4_K: none).
    #[inline(always)]
    fn fifth(&self, _r: usize, _g: usize, _h: usize, _c: usize, _e: usize) -> u8 {
        0
    }
    /// Row `r`'s level of value `64g + 32h + 4c + e` (sub-block `2g + h`).
    #[inline(always)]
    fn level(&self, r: usize, g: usize, h: usize, c: usize, e: usize) -> i32 {
        let low = self.qs()[g][c][r][e] >> (4 * h) & 0x0F;
        (low | self.fifth(r, g, h, c, e) << 4) as i32
    }
}

/// The twin of every kernel of a [`Kx16Family`] layout: the sixteen rows of one group (`w`: its
/// blocks) against one Q8_K activation row. Per row and block the exact integers
/// `isum = Σⱼ scⱼ·dotⱼ` (`dotⱼ` the levels of sub-block `j` times its activations) and
/// `msum = Σⱼ mⱼ·(bsums₂ⱼ + bsums₂ⱼ₊₁)`, then `acc += (d·dx)·isum`, `accm += (dmin·dx)·msum`
/// (f32, no FMA), result `acc − accm`.
fn kx16_family_dot<B: Kx16Family>(w: &[B], x: &[BlockQ8_K]) -> [f32; R16] {
    std::array::from_fn(|r| {
        let (mut acc, mut accm) = (0f32, 0f32);
        for (a, xb) in w.iter().zip(x) {
            let (mut isum, mut msum) = (0i32, 0i32);
            for j in 0..8 {
                let (g, h) = (j / 2, j % 2);
                let mut dot = 0i32;
                for c in 0..8 {
                    for e in 0..4 {
                        dot += a.level(r, g, h, c, e) * xb.qs[64 * g + 32 * h + 4 * c + e] as i32;
                    }
                }
                isum += a.scales().sc[j][r] as i32 * dot;
                let bs = xb.bsums[2 * j] as i32 + xb.bsums[2 * j + 1] as i32;
                msum += a.scales().mn[g][r][h] as i32 * bs;
            }
            let s = a.scales();
            acc += (f16_as_f32(s.d[r]) * xb.d) * isum as f32;
            accm += (f16_as_f32(s.dmin[r]) * xb.d) * msum as f32;
        }
        acc - accm
    })
}

/// The twin of every Q4_K ×16 kernel: the sixteen rows of one group (`w`: its blocks) against
/// one Q8_K activation row. Per row and block the exact integers `isum = Σⱼ scⱼ·dotⱼ` and
/// `msum = Σⱼ mⱼ·(bsums₂ⱼ + bsums₂ⱼ₊₁)`, then `acc += (d·dx)·isum`, `accm += (dmin·dx)·msum`
/// (f32, no FMA), result `acc − accm` (the Q4_K family's shared twin).
pub fn q4_kx16_dot(w: &[BlockQ4_Kx16], x: &[BlockQ8_K]) -> [f32; R16] {
    kx16_family_dot(w, x)
}

impl Kx16Family for BlockQ4_Kx16 {
    #[inline(always)]
    fn scales(&self) -> &Kx16Scales {
        &self.s
    }
    #[inline(always)]
    fn qs(&self) -> &[[[[u8; 4]; R16]; 8]; 4] {
        &self.qs
    }
}

/// Block `b` of a group of sixteen Q5_K rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_Kx16 {
    /// The rows' scales.
    pub s: Kx16Scales,
    /// `hb[g][c][h]`: bit `4r + e` is the fifth bit of row `r`'s value `64g + 32h + 4c + e`
    /// (one byte mask over the 64 bytes of `qs[g][c]`).
    pub hb: [[[u64; 2]; 8]; 4],
    /// `qs[g][c][r]`: row `r`'s in-place low-nibble bytes `qs[32g + 4c..32g + 4c + 4]`.
    pub qs: [[[[u8; 4]; R16]; 8]; 4],
}

/// Bytes of one row's block in the Q5_K ×16 layout.
pub const Q5_KX16_ROW_BLOCK: usize = 180;

const _: () = assert!(std::mem::size_of::<BlockQ5_Kx16>() == R16 * Q5_KX16_ROW_BLOCK);
const _: () = assert!(
    std::mem::size_of::<BlockQ5_Kx16>().is_multiple_of(64)
        && std::mem::offset_of!(BlockQ5_Kx16, hb).is_multiple_of(64)
        && std::mem::offset_of!(BlockQ5_Kx16, qs).is_multiple_of(64)
);

impl BlockQ5_Kx16 {
    /// Put `s` in as row `r`.
    pub fn set_row(&mut self, r: usize, s: &BlockQ5_K) {
        self.s.set_row(r, s.d, s.dmin, s.scales_mins());
        for g in 0..4 {
            for c in 0..8 {
                self.qs[g][c][r].copy_from_slice(&s.qs[32 * g + 4 * c..][..4]);
                for (h, hb) in self.hb[g][c].iter_mut().enumerate() {
                    for e in 0..4 {
                        let bit = (s.qh[4 * c + e] >> (2 * g + h)) & 1;
                        *hb = *hb & !(1 << (4 * r + e)) | (bit as u64) << (4 * r + e);
                    }
                }
            }
        }
    }

    /// Row `r`'s block in the plain layout (the exact inverse of [`BlockQ5_Kx16::set_row`]).
    pub fn row(&self, r: usize) -> BlockQ5_K {
        let (mut qs, mut qh) = ([0u8; 128], [0u8; 32]);
        for g in 0..4 {
            for c in 0..8 {
                qs[32 * g + 4 * c..][..4].copy_from_slice(&self.qs[g][c][r]);
                for (h, &hb) in self.hb[g][c].iter().enumerate() {
                    for e in 0..4 {
                        qh[4 * c + e] |= ((hb >> (4 * r + e)) as u8 & 1) << (2 * g + h);
                    }
                }
            }
        }
        let (d, dmin, scales) = self.s.row(r);
        BlockQ5_K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }
}

/// The twin of every Q5_K ×16 kernel: [`q4_kx16_dot`]'s arithmetic with five-bit levels.
pub fn q5_kx16_dot(w: &[BlockQ5_Kx16], x: &[BlockQ8_K]) -> [f32; R16] {
    kx16_family_dot(w, x)
}

impl Kx16Family for BlockQ5_Kx16 {
    #[inline(always)]
    fn scales(&self) -> &Kx16Scales {
        &self.s
    }
    #[inline(always)]
    fn qs(&self) -> &[[[[u8; 4]; R16]; 8]; 4] {
        &self.qs
    }
    #[inline(always)]
    fn fifth(&self, r: usize, g: usize, h: usize, c: usize, e: usize) -> u8 {
        (self.hb[g][c][h] >> (4 * r + e)) as u8 & 1
    }
}

/// Block `b` of a group of sixteen Q6_K rows (see the module docs).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ6_Kx16 {
    /// Row `r`'s `d`, widened from f16 (exact).
    pub d: [f32; R16],
    /// `sc[j][r]`: row `r`'s scale of sub-block `j`.
    pub sc: [[i8; R16]; 16],
    /// `q[n][c][s][r]`: row `r`'s in-place bytes `ql[64n + 4c..]` (`s` = 0), `ql[64n + 32 + 4c..]`
    /// (1), `qh[32n + 4c..]` (2), four of each.
    pub q: [[[[[u8; 4]; R16]; 3]; 8]; 2],
}

/// Bytes of one row's block in the Q6_K ×16 layout.
pub const Q6_KX16_ROW_BLOCK: usize = 212;

const _: () = assert!(std::mem::size_of::<BlockQ6_Kx16>() == R16 * Q6_KX16_ROW_BLOCK);
// Whole cache lines, the level chunks on line boundaries (the buffer is line-aligned).
const _: () = assert!(
    std::mem::size_of::<BlockQ6_Kx16>().is_multiple_of(64)
        && std::mem::offset_of!(BlockQ6_Kx16, q).is_multiple_of(64)
);

impl BlockQ6_Kx16 {
    /// Put `s` in as row `r`.
    pub fn set_row(&mut self, r: usize, s: &BlockQ6_K) {
        self.d[r] = f16_as_f32(s.d);
        for (j, &v) in s.scales.iter().enumerate() {
            self.sc[j][r] = v;
        }
        for (n, qn) in self.q.iter_mut().enumerate() {
            for (c, qc) in qn.iter_mut().enumerate() {
                qc[0][r].copy_from_slice(&s.ql[64 * n + 4 * c..][..4]);
                qc[1][r].copy_from_slice(&s.ql[64 * n + 32 + 4 * c..][..4]);
                qc[2][r].copy_from_slice(&s.qh[32 * n + 4 * c..][..4]);
            }
        }
    }

    /// Row `r`'s block in the plain layout (the inverse of [`BlockQ6_Kx16::set_row`]; an f16
    /// NaN scale comes back a NaN, not necessarily the same one).
    pub fn row(&self, r: usize) -> BlockQ6_K {
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (n, qn) in self.q.iter().enumerate() {
            for (c, qc) in qn.iter().enumerate() {
                ql[64 * n + 4 * c..][..4].copy_from_slice(&qc[0][r]);
                ql[64 * n + 32 + 4 * c..][..4].copy_from_slice(&qc[1][r]);
                qh[32 * n + 4 * c..][..4].copy_from_slice(&qc[2][r]);
            }
        }
        BlockQ6_K {
            ql,
            qh,
            scales: std::array::from_fn(|j| self.sc[j][r]),
            d: f16::from_f32(self.d[r]),
        }
    }
}

/// The twin of every Q6_K ×16 kernel: the sixteen rows of one group (`w`: its blocks) against
/// one Q8_K activation row. Per row and block the exact integer
/// `isum = Σⱼ scⱼ·(Σ_{p∈j} uₚ·xₚ − 32·bsumsⱼ)` (= `Σₚ sc_{p/16}·qₚ·xₚ` with the signed levels
/// `qₚ = uₚ − 32`), then `acc += (d·dx)·isum` (f32, no FMA).
pub fn q6_kx16_dot(w: &[BlockQ6_Kx16], x: &[BlockQ8_K]) -> [f32; R16] {
    std::array::from_fn(|r| {
        let mut acc = 0f32;
        for (a, xb) in w.iter().zip(x) {
            let q = a.row(r).levels();
            let isum: i32 = (0..256)
                .map(|p| a.sc[p / 16][r] as i32 * q[p] as i32 * xb.qs[p] as i32)
                .sum();
            acc += (a.d[r] * xb.d) * isum as f32;
        }
        acc
    })
}

/// A ×16 layout (sixteen rows of a K-quant against Q8_K activations): Q4_K, Q5_K, Q6_K ×16.
pub(crate) trait X16Block: bytemuck::Pod + Send + Sync {
    /// The in-place block type.
    type Plain: LaneDot<VecDot = BlockQ8_K>;
    /// Bytes of one row's block in the layout.
    const ROW_BLOCK: usize;
    /// Put `s` in as row `r`.
    fn put(&mut self, r: usize, s: &Self::Plain);
    /// Row `r`'s block in the plain layout.
    fn get(&self, r: usize) -> Self::Plain;
    /// The layout's twin ([`q4_kx16_dot`], [`q5_kx16_dot`], [`q6_kx16_dot`]).
    fn twin(w: &[Self], x: &[BlockQ8_K]) -> [f32; R16];
}

/// The [`X16Block`] impl of layout `$g` over plain blocks `$plain`: its `set_row`, `row` and
/// twin `$twin`.
macro_rules! x16_block {
    ($g:ty, $plain:ty, $row_block:expr, $twin:ident) => {
        impl X16Block for $g {
            type Plain = $plain;
            const ROW_BLOCK: usize = $row_block;
            fn put(&mut self, r: usize, s: &$plain) {
                self.set_row(r, s)
            }
            fn get(&self, r: usize) -> $plain {
                self.row(r)
            }
            fn twin(w: &[Self], x: &[BlockQ8_K]) -> [f32; R16] {
                $twin(w, x)
            }
        }
    };
}

x16_block!(BlockQ4_Kx16, BlockQ4_K, Q4_KX16_ROW_BLOCK, q4_kx16_dot);
x16_block!(BlockQ5_Kx16, BlockQ5_K, Q5_KX16_ROW_BLOCK, q5_kx16_dot);
x16_block!(BlockQ6_Kx16, BlockQ6_K, Q6_KX16_ROW_BLOCK, q6_kx16_dot);

/// A weight matrix in a repacked layout: full groups of rows, then the leftover rows in
/// the type's plain layout, in one buffer of anonymous memory.
pub struct Repacked {
    /// The weight type (its layout: [`BlockQ4_0x8`] for Q4_0, [`BlockQ4_1x8`] for Q4_1,
    /// [`BlockQ8_0x8`] for Q8_0, [`BlockQ4_Kx16`] for Q4_K, [`BlockQ5_Kx16`] for Q5_K,
    /// [`BlockQ6_Kx16`] for Q6_K).
    pub ty: GgmlType,
    /// The bytes, 2 MiB-aligned from 2 MiB on, else page-aligned: every block type aligned, and the 64-byte chunks of the ×16
    /// layouts (one 512-bit load each) never straddle two cache lines.
    buf: AnonBuf,
    len: usize,
}

/// A repacked matrix's memory ([`super::anon::huge_zeroed`]: anonymous, huge pages advised).
struct AnonBuf(super::anon::HugeBuf);

impl AnonBuf {
    /// `None` if the memory cannot be had (the matrix then stays in place).
    fn zeroed(len: usize) -> Option<Self> {
        super::anon::huge_zeroed(len).ok().map(AnonBuf)
    }
}

impl std::fmt::Debug for Repacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repacked({}, {} bytes)", self.ty, self.len)
    }
}

impl Repacked {
    /// The repacked bytes (the same number as the in-place matrix's, except the ×16 layouts:
    /// 148 bytes per row and block of the full groups instead of 144 (Q4_K), 180 instead of 176
    /// (Q5_K), 212 instead of 210 (Q6_K)).
    pub fn data(&self) -> &[u8] {
        &self.buf.0[..self.len]
    }
}

/// Whether models repack matrices of type `ty` at load on `path` ([`super::repack_pays`], which
/// also asks for the path's own kernel: the ×16 layouts have none on aarch64 yet).
///
/// - Q4_0 ×8 computes 1.3× (avx512) to 1.7× (avx2) faster per core than in place
///   (`examples/kq_speed.rs`, cache-resident).
/// - Q4_K ×16 computes 2.8× (avx512: 2.6 against 7.4 ns per 256 weights) and 1.8× (avx2)
///   faster cache-resident; on the whole 11B Q4_K_M model (`bench --synthetic 11b --type
///   q4_k_m`, quiet, interleaved with `--no-repack`) it decoded 4.61 / 4.36 against 4.29 / 4.25
///   tokens/s (avx512) and 5.20 against 4.94 (avx2), and prefilled 128 tokens 1.47× faster.
///   (The earlier Q4_K ×4 layout computed faster per core but decoded slower.)
/// - Q6_K ×16 (x86 only) computes 1.6× (avx512: 4.1 against 6.5 ns per 256 weights) and 1.2×
///   (avx2: 6.9 against 8.6) faster than the dedicated in-place tile, cache-resident; on the 11B
///   Q4_K_M model (`bench --synthetic 11b --type q4_k_m --only decode`, three rounds interleaved
///   with the earlier Q6_K ×4 layout) it decoded 1–3% faster at either read bandwidth. With
///   the ×16 kernels taking two to four activation rows per pass over a group
///   (`X16Dot::dot16n`), a 128-token prompt prefills 15% (avx512) and 20% (avx2) faster than
///   with one row at a time, and faster than with the ×4 layout on both paths. Not measured on
///   aarch64, where it stays in place.
/// - Q4_1 ×8 (x86 only) computes 3.9× (avx512: 4.5 against 17.8 ns per 256 weights) and 3.6×
///   (avx2: 5.0 against 18.1) faster than the in-place lane kernel, cache-resident; SmolLM2-135M
///   Q4_1 (`bench -m … --only decode`, interleaved with the build before it and before the
///   spinning `team`) decoded 305 / 326 against 77 / 86 tokens/s (the team alone: 92 / 84).
///   Not measured on aarch64, where it stays in place.
/// - Q8_0 ×8 (x86 only) computes 1.5× (avx512: 6.2 against 9.4 ns per 256 weights) and 1.3×
///   (avx2: 8.2 against 10.4) faster than the in-place tile, cache-resident, and its copy lives
///   in huge pages where the memory-mapped file may not: on the Xeon VM a page cache that had
///   been refilled in small folios (`FilePmdMapped` 0.6 of the 3.4 GB file) decoded the
///   3B-shaped Q8_0 file in place at 6.2–6.6 tokens/s and 8.2–8.6 after dropping and re-reading
///   it; repacked, 8.1–8.4 either way. A 128-token prompt prefilled 2× faster (46 against 24
///   tokens/s).
/// - Q5_K ×16 (avx512 only) read forty 14336 × 4096 matrices on two threads at 0.82–0.85 of the
///   read probe against 0.71 in place (`KQ_MATS=40 KQ_ROWS=14336 KQ_THREADS=2`, with and without
///   `KQ_RP=1`); the 11B Q5_K_M decode went 4.10 / 3.89 / 3.96 → 4.16 / 4.43 / 4.42 tokens/s
///   (interleaved with the in-place build). On avx2 its kernel read them at 0.65–0.72 against
///   0.73–0.78 in place (cache-resident: 10.2–11.4 against 11.3 ns per 256 weights), so Q5_K
///   stays in place there. (The earlier Q5_K ×4 layout measured no faster anywhere.)
pub fn pays(ty: GgmlType, path: super::Path) -> bool {
    use super::Path;
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_K => true,
        GgmlType::Q6_K | GgmlType::Q4_1 | GgmlType::Q8_0 => {
            matches!(path, Path::Avx2 | Path::Avx512)
        }
        GgmlType::Q5_K => path == Path::Avx512,
        _ => false,
    }
}

/// Whether matrices of type `ty` have a repacked layout.
pub fn supports(ty: GgmlType) -> bool {
    group_rows(ty).is_some()
}

/// Rows per group of type `ty`'s repacked layout (`None`: it has none).
pub fn group_rows(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => Some(R),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => Some(R16),
        _ => None,
    }
}

/// Repack `m` rows of `k` values of type `ty` stored in place in `data` (groups in parallel), or
/// `None` if the type has no repacked layout or the matrix has fewer rows than one group.
pub fn repack(ty: GgmlType, data: &[u8], m: usize, k: usize) -> Option<Repacked> {
    let g = group_rows(ty)?;
    let rb = ty.row_bytes(k as u64)? as usize;
    if m < g || !k.is_multiple_of(ty.block_size()) || data.len() != m * rb {
        return None;
    }
    match ty {
        GgmlType::Q4_K => return repack_x16::<BlockQ4_Kx16>(data, m, k),
        GgmlType::Q5_K => return repack_x16::<BlockQ5_Kx16>(data, m, k),
        GgmlType::Q6_K => return repack_x16::<BlockQ6_Kx16>(data, m, k),
        _ => {}
    }
    match ty {
        GgmlType::Q4_0 => repack_x8::<BlockQ4_0x8>(data, m, k),
        GgmlType::Q4_1 => repack_x8::<BlockQ4_1x8>(data, m, k),
        GgmlType::Q8_0 => repack_x8::<BlockQ8_0x8>(data, m, k),
        _ => None,
    }
}

/// The ×8 layout `G` of `m` rows of `k` values stored in place in `data` (the same size).
fn repack_x8<G: X8Block>(data: &[u8], m: usize, k: usize) -> Option<Repacked> {
    let plain = <G::Plain as QuantBlock>::BYTES;
    let nb = k / 32;
    let mut buf = AnonBuf::zeroed(data.len())?;
    let out: &mut [u8] = &mut buf.0[..data.len()];
    let src: &[G::Plain] = bytemuck::cast_slice(data);
    let full = m / R * R;
    let (groups, tail) = out.split_at_mut(full * nb * plain);
    let groups: &mut [G] = bytemuck::cast_slice_mut(groups);
    groups.par_chunks_mut(nb).enumerate().for_each(|(g, dst)| {
        for (b, o) in dst.iter_mut().enumerate() {
            for r in 0..R {
                o.put(r, &src[(g * R + r) * nb + b]);
            }
        }
    });
    tail.copy_from_slice(&data[full * nb * plain..]);
    Some(Repacked {
        ty: <G::Plain as QuantBlock>::TYPE,
        buf,
        len: data.len(),
    })
}

/// The ×16 layout `G` of `m` rows of `k` values stored in place in `data`.
fn repack_x16<G: X16Block>(data: &[u8], m: usize, k: usize) -> Option<Repacked> {
    let plain = <G::Plain as QuantBlock>::BYTES;
    let nb = k / 256;
    let full = m / R16 * R16;
    let len = x16_tail_at::<G>(m, nb) + (m - full) * nb * plain;
    let mut buf = AnonBuf::zeroed(len)?;
    let out: &mut [u8] = &mut buf.0[..len];
    let src: &[G::Plain] = bytemuck::cast_slice(data);
    let (groups, tail) = out.split_at_mut(x16_tail_at::<G>(m, nb));
    let groups: &mut [G] = bytemuck::cast_slice_mut(groups);
    groups.par_chunks_mut(nb).enumerate().for_each(|(g, dst)| {
        for (b, o) in dst.iter_mut().enumerate() {
            for r in 0..R16 {
                o.put(r, &src[(g * R16 + r) * nb + b]);
            }
        }
    });
    tail.copy_from_slice(&data[full * nb * plain..]);
    Some(Repacked {
        ty: <G::Plain as QuantBlock>::TYPE,
        buf,
        len,
    })
}

/// The in-place tail of a repacked ×16 matrix (`m` rows of `nb` blocks): its bytes start at
/// `x16_tail_at::<G>(m, nb)`.
pub(crate) fn x16_tail_at<G: X16Block>(m: usize, nb: usize) -> usize {
    m / R16 * R16 * nb * G::ROW_BLOCK
}

/// Row `j` of a repacked matrix of `m` rows of `k` values, dequantized into `out[..k]`.
pub(crate) fn row_to_f32(rp: &Repacked, m: usize, k: usize, j: usize, out: &mut [f32]) {
    let ty = rp.ty;
    let nb = k / ty.block_size();
    match ty {
        GgmlType::Q4_0 => x8_row_to_f32::<BlockQ4_0x8>(rp, m, nb, j, out),
        GgmlType::Q4_1 => x8_row_to_f32::<BlockQ4_1x8>(rp, m, nb, j, out),
        GgmlType::Q8_0 => x8_row_to_f32::<BlockQ8_0x8>(rp, m, nb, j, out),
        GgmlType::Q4_K => x16_row_to_f32::<BlockQ4_Kx16>(rp, m, nb, j, out),
        GgmlType::Q5_K => x16_row_to_f32::<BlockQ5_Kx16>(rp, m, nb, j, out),
        GgmlType::Q6_K => x16_row_to_f32::<BlockQ6_Kx16>(rp, m, nb, j, out),
        // `repack` builds no other layout.
        other => unreachable!("no repacked layout of {other}"),
    }
}

/// [`row_to_f32`] of a ×16 layout `G`.
fn x16_row_to_f32<G: X16Block>(rp: &Repacked, m: usize, nb: usize, j: usize, out: &mut [f32]) {
    let full = m / R16 * R16;
    let (groups, tail) = rp.data().split_at(x16_tail_at::<G>(m, nb));
    for (b, o) in out[..nb * 256].chunks_exact_mut(256).enumerate() {
        let blk = if j < full {
            bytemuck::cast_slice::<u8, G>(groups)[j / R16 * nb + b].get(j % R16)
        } else {
            bytemuck::cast_slice::<u8, G::Plain>(tail)[(j - full) * nb + b]
        };
        blk.dequantize(o);
    }
}

/// [`row_to_f32`] of a ×8 layout `G`.
fn x8_row_to_f32<G: X8Block>(rp: &Repacked, m: usize, nb: usize, j: usize, out: &mut [f32]) {
    let full = m / R * R;
    let plain = <G::Plain as QuantBlock>::BYTES;
    let (groups, tail) = rp.data().split_at(full * nb * plain);
    for (b, o) in out[..nb * 32].chunks_exact_mut(32).enumerate() {
        let blk = if j < full {
            bytemuck::cast_slice::<u8, G>(groups)[j / R * nb + b].get(j % R)
        } else {
            bytemuck::cast_slice::<u8, G::Plain>(tail)[(j - full) * nb + b]
        };
        blk.dequantize(o);
    }
}

// ---------------------------------------------------------------------------------------------
// The decode traversal over a repacked matrix, shared by every path.

/// One path's kernel for a group of eight rows of the ×8 layout `G`: `y[r] = W[row r] · x` for
/// the group's `nb` interleaved blocks at `w`, against one split-layout activation row.
pub(crate) trait GroupDot {
    /// The layout.
    type G: X8Block;
    /// # Safety
    /// The CPU runs the kernel's ISA; `nb` blocks at `w`; the activation row holds `nb` blocks.
    unsafe fn dot8(w: *const Self::G, nb: usize, x: Q8Row) -> [f32; R];
    /// Activation rows [`GroupDot::dot8n`] takes at once (at most 4).
    const NX: usize = 1;
    /// The group against activation rows `x[..nx]` (`1 ≤ nx ≤ NX`): [`GroupDot::dot8`] of each,
    /// bit for bit, in the first `nx` entries.
    ///
    /// # Safety
    /// As [`GroupDot::dot8`] for each of the `nx` rows.
    #[inline(always)]
    unsafe fn dot8n(w: *const Self::G, nb: usize, x: [Q8Row; 4], nx: usize) -> [[f32; R]; 4] {
        std::array::from_fn(|t| {
            if t < nx {
                Self::dot8(w, nb, x[t])
            } else {
                [0.0; R]
            }
        })
    }
}

/// The repacked decode of weight rows `rows` of a ×8 layout (whole groups, then leftover rows)
/// against split-layout activation rows ([`super::SplitActs`]), with `D`'s group kernel.
/// Leftover rows go through [`X8Block::plain_row`].
///
/// # Safety
/// As [`Decoder::rows`]: `job.w` is a [`Repacked`] matrix of layout `D::G` and `job.out.m` rows;
/// `rows` starts at a multiple of [`R`] or past the last full group.
#[inline(always)]
pub(crate) unsafe fn rows_split<D: GroupDot>(job: &Job<'_>, rows: Range<usize>) {
    let (m, nb) = (job.out.m, job.k / 32);
    let full = m / R * R;
    let acts = super::SplitActs::new(job.x, job.x_stride, nb);
    let groups = job.w.as_ptr() as *const D::G;
    let mut j = rows.start;
    while j + R <= rows.end.min(full) {
        let w = groups.add(j / R * nb);
        let mut i = 0;
        while i < job.n {
            let nx = (job.n - i).min(D::NX);
            let v = if nx == 1 {
                [D::dot8(w, nb, acts.row(i)), [0.0; R], [0.0; R], [0.0; R]]
            } else {
                D::dot8n(
                    w,
                    nb,
                    std::array::from_fn(|t| acts.row(i + t.min(nx - 1))),
                    nx,
                )
            };
            for (t, v) in v.iter().enumerate().take(nx) {
                for (r, &v) in v.iter().enumerate() {
                    job.out.put(i + t, j + r, with_bias(v, job.bias, j + r));
                }
            }
            i += nx;
        }
        j += R;
    }
    let plain = <<D::G as X8Block>::Plain as QuantBlock>::BYTES;
    let tail = job.w.as_ptr().add(full * nb * plain) as *const <D::G as X8Block>::Plain;
    for j in j.max(full)..rows.end {
        let w = tail.add((j - full) * nb);
        for i in 0..job.n {
            let v = <D::G as X8Block>::plain_row(w, nb, acts.row(i));
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

/// One plain Q4_0 row against a split-layout activation row, bit-exact with
/// [`QuantBlock::vec_dot`] (the leftover rows of a repacked matrix on the SIMD paths).
///
/// # Safety
/// `nb` blocks at `w`, `nb` blocks in `x`.
#[inline(always)]
pub(crate) unsafe fn plain_row_split(w: *const BlockQ4_0, nb: usize, x: Q8Row) -> f32 {
    block_lanes(nb, |b| {
        let (a, xq) = (&*w.add(b), &(*x.qs.add(b)).0);
        let mut isum = 0i32;
        for k in 0..16 {
            isum +=
                (a.qs[k] & 0x0F) as i32 * xq[k] as i32 + (a.qs[k] >> 4) as i32 * xq[k + 16] as i32;
        }
        (f16_as_f32(a.d) * *x.d.add(b), isum - 8 * *x.s.add(b))
    })
}

// ---------------------------------------------------------------------------------------------
// The portable decoder: the meaning of every SIMD one.

/// The portable decode kernel of a repacked matrix of type `ty` (activations: plain blocks of
/// the type's activation type).
pub(crate) fn scalar_decoder(ty: GgmlType) -> Option<Decoder> {
    match ty {
        GgmlType::Q4_0 => Some(Decoder {
            act: Some(plain_act::<BlockQ8_0>()),
            rows: scalar_rows_x8::<BlockQ4_0x8>,
        }),
        GgmlType::Q4_1 => Some(Decoder {
            act: Some(plain_act::<BlockQ8_0>()),
            rows: scalar_rows_x8::<BlockQ4_1x8>,
        }),
        GgmlType::Q8_0 => Some(Decoder {
            act: Some(plain_act::<BlockQ8_0>()),
            rows: scalar_rows_x8::<BlockQ8_0x8>,
        }),
        GgmlType::Q4_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: scalar_rows_x16::<BlockQ4_Kx16>,
        }),
        GgmlType::Q6_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: scalar_rows_x16::<BlockQ6_Kx16>,
        }),
        GgmlType::Q5_K => Some(Decoder {
            act: Some(plain_act::<BlockQ8_K>()),
            rows: scalar_rows_x16::<BlockQ5_Kx16>,
        }),
        _ => None,
    }
}

/// One path's kernel for a group of sixteen rows of the ×16 layout `G`: `y[r] = W[row r] · x`
/// for the group's `nb` blocks at `w` against one Q8_K activation row, bit-exact with
/// [`X16Block::twin`].
pub(crate) trait X16Dot {
    /// The layout.
    type G: X16Block;
    /// # Safety
    /// The CPU runs the kernel's ISA; `nb` blocks at `w` and at `x`.
    unsafe fn dot16(w: *const Self::G, nb: usize, x: *const BlockQ8_K) -> [f32; R16];
    /// Activation rows [`X16Dot::dot16n`] takes at once (at most 4).
    const NX: usize = 1;
    /// The group against activation rows `x[..nx]` (`1 ≤ nx ≤ NX`): [`X16Dot::dot16`] of each,
    /// bit for bit, in the first `nx` entries.
    ///
    /// # Safety
    /// As [`X16Dot::dot16`] for each of the `nx` rows.
    #[inline(always)]
    unsafe fn dot16n(
        w: *const Self::G,
        nb: usize,
        x: [*const BlockQ8_K; 4],
        nx: usize,
    ) -> [[f32; R16]; 4] {
        std::array::from_fn(|t| {
            if t < nx {
                Self::dot16(w, nb, x[t])
            } else {
                [0.0; R16]
            }
        })
    }
}

/// [`X16Block::twin`] as a group kernel (the portable and ARM paths).
pub(crate) struct X16Twin<G>(std::marker::PhantomData<G>);

impl<G: X16Block> X16Dot for X16Twin<G> {
    type G = G;
    #[inline(always)]
    unsafe fn dot16(w: *const G, nb: usize, x: *const BlockQ8_K) -> [f32; R16] {
        G::twin(
            std::slice::from_raw_parts(w, nb),
            std::slice::from_raw_parts(x, nb),
        )
    }
}

/// The repacked decode of weight rows `rows` of a ×16 layout: whole groups with `D`'s kernel
/// against every activation row (plain Q8_K rows) in turn, the leftover rows (stored in place
/// after the groups) with `tail`, the path's in-place decoder of the type.
///
/// # Safety
/// As [`Decoder::rows`]: `job.w` is a [`Repacked`] matrix of layout `D::G` and `job.out.m`
/// rows; `rows` starts at a multiple of [`R16`] or past the last full group; `tail` runs on this
/// CPU.
#[inline(always)]
pub(crate) unsafe fn rows_x16<D: X16Dot>(
    job: &Job<'_>,
    rows: Range<usize>,
    tail: unsafe fn(&Job<'_>, Range<usize>),
) {
    let (m, nb) = (job.out.m, job.k / 256);
    let full = m / R16 * R16;
    let groups = job.w.as_ptr() as *const D::G;
    let mut j = rows.start;
    while j + R16 <= rows.end.min(full) {
        let w = groups.add(j / R16 * nb);
        let mut i = 0;
        while i < job.n {
            let nx = (job.n - i).min(D::NX);
            let x: [*const BlockQ8_K; 4] = std::array::from_fn(|t| {
                job.x.as_ptr().add((i + t.min(nx - 1)) * job.x_stride) as *const BlockQ8_K
            });
            let v = if nx == 1 {
                [D::dot16(w, nb, x[0]), [0.0; R16], [0.0; R16], [0.0; R16]]
            } else {
                D::dot16n(w, nb, x, nx)
            };
            for (t, v) in v.iter().enumerate().take(nx) {
                for (r, &v) in v.iter().enumerate() {
                    job.out.put(i + t, j + r, with_bias(v, job.bias, j + r));
                }
            }
            i += nx;
        }
        j += R16;
    }
    let j = j.max(full);
    if j < rows.end {
        // The leftover rows as an in-place matrix of their own, writing columns `full..` of y.
        let tail_job = Job {
            w: &job.w[x16_tail_at::<D::G>(m, nb)..],
            k: job.k,
            x: job.x,
            x_stride: job.x_stride,
            n: job.n,
            out: Out {
                p: SyncPtr(job.out.p.0.add(full)),
                m,
            },
            bias: job.bias.map(|b| &b[full..]),
        };
        tail(&tail_job, j - full..rows.end - full);
    }
}

/// The portable repacked decoder of a ×16 layout: whole groups through its twin, the leftover
/// rows through [`crate::quant::lane_vec_dot`].
unsafe fn scalar_rows_x16<G: X16Block>(job: &Job<'_>, rows: Range<usize>) {
    rows_x16::<X16Twin<G>>(job, rows, scalar_tail::<G::Plain>)
}

/// In-place rows `rows` of a lane type (the leftover rows of [`scalar_rows_x16`]).
unsafe fn scalar_tail<B: LaneDot>(job: &Job<'_>, rows: Range<usize>) {
    let nb = job.k / B::BLOCK;
    let w: &[B] = bytemuck::cast_slice(job.w);
    let xb = nb * <B::VecDot as QuantBlock>::BYTES;
    for j in rows {
        for i in 0..job.n {
            let x: &[B::VecDot] = bytemuck::cast_slice(&job.x[i * job.x_stride..][..xb]);
            let v = lane_vec_dot(&w[j * nb..][..nb], x);
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}

/// Twin of every ×8 kernel: each row's blocks through [`x8_dot_row`] (for Q4_0 ×8 the order
/// and arithmetic of [`BlockQ4_0::vec_dot`]), the leftover rows through the in-place
/// [`QuantBlock::vec_dot`].
unsafe fn scalar_rows_x8<G: X8Block>(job: &Job<'_>, rows: Range<usize>) {
    let (m, nb) = (job.out.m, job.k / 32);
    let full = m / R * R;
    let plain = <G::Plain as QuantBlock>::BYTES;
    let (groups, tail) = job.w.split_at(full * nb * plain);
    let groups: &[G] = bytemuck::cast_slice(groups);
    let tail: &[G::Plain] = bytemuck::cast_slice(tail);
    for j in rows {
        for i in 0..job.n {
            let xr: &[BlockQ8_0] = bytemuck::cast_slice(&job.x[i * job.x_stride..][..nb * 34]);
            let v = if j < full {
                x8_dot_row(&groups[j / R * nb..][..nb], j % R, xr)
            } else {
                G::Plain::vec_dot(&tail[(j - full) * nb..][..nb], xr)
            };
            job.out.put(i, j, with_bias(v, job.bias, j));
        }
    }
}
