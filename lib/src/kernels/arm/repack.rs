//! The repacked-layout decode kernels of the aarch64 paths ([`super::super::repack`]): Q4_0 ×8
//! with `sdot` on [`super::Dotprod`] (two registers of four rows; plain NEON has no 4-byte dot,
//! so it keeps the in-place Q4_0 kernel). The ×16 K-quant layouts have no kernel here yet.

use std::arch::aarch64::*;

use super::super::repack::{rows_split, BlockQ4_0x8, GroupDot, X8Block, R};
use super::super::types::{ActQuant, Decoder, Job};
use super::super::{split_row_bytes, Q8Row};
use super::{quantize_split, sdot};
use crate::quant::f16_as_f32;
use crate::GgmlType;

/// The `sdot` group kernel of [`BlockQ4_0x8`].
struct Q4x8Sdot;

impl GroupDot for Q4x8Sdot {
    type G = BlockQ4_0x8;
    /// Per block: chunk `c`'s 32 nibble bytes (rows 0..3, rows 4..7) against the activation
    /// bytes of values `4c..4c+4` and `16+4c..` in every lane (`sdot`, nibbles 0..15 as signed
    /// bytes), minus 8·Σx; then the f32 steps of [`crate::quant::block_lanes`] lane-wise (no
    /// FMA), reduced in [`crate::quant::lanes8`]'s order. Twin: the portable repacked decoder
    /// (bit-exact).
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot8(w: *const BlockQ4_0x8, nb: usize, x: Q8Row) -> [f32; R] {
        let block = |b: usize| -> [float32x4_t; 2] {
            let blk = w.add(b);
            let q = (*blk).qs_ptr();
            let xq = (*x.qs.add(b)).0.as_ptr() as *const u8;
            let mask = vdupq_n_u8(0x0F);
            let (mut a0, mut a1) = (vdupq_n_s32(0), vdupq_n_s32(0));
            for c in 0..4 {
                let xl = vreinterpretq_s8_s32(vdupq_n_s32(
                    (xq.add(4 * c) as *const i32).read_unaligned(),
                ));
                let xh = vreinterpretq_s8_s32(vdupq_n_s32(
                    (xq.add(16 + 4 * c) as *const i32).read_unaligned(),
                ));
                let v0 = vld1q_u8(q.add(32 * c));
                let v1 = vld1q_u8(q.add(32 * c + 16));
                a0 = sdot(a0, vreinterpretq_s8_u8(vandq_u8(v0, mask)), xl);
                a0 = sdot(a0, vreinterpretq_s8_u8(vshrq_n_u8::<4>(v0)), xh);
                a1 = sdot(a1, vreinterpretq_s8_u8(vandq_u8(v1, mask)), xl);
                a1 = sdot(a1, vreinterpretq_s8_u8(vshrq_n_u8::<4>(v1)), xh);
            }
            let off = vdupq_n_s32(8 * *x.s.add(b));
            let d: [f32; R] = std::array::from_fn(|r| f16_as_f32((*blk).d[r]));
            let xd = vdupq_n_f32(*x.d.add(b));
            let s0 = vmulq_f32(vld1q_f32(d.as_ptr()), xd);
            let s1 = vmulq_f32(vld1q_f32(d.as_ptr().add(4)), xd);
            [
                vmulq_f32(s0, vcvtq_f32_s32(vsubq_s32(a0, off))),
                vmulq_f32(s1, vcvtq_f32_s32(vsubq_s32(a1, off))),
            ]
        };
        let z = vdupq_n_f32(0.0);
        let mut acc = [[z; 2]; 8];
        let full = nb / 8 * 8;
        let mut g = 0;
        while g < full {
            for (l, a) in acc.iter_mut().enumerate() {
                let v = block(g + l);
                *a = [vaddq_f32(a[0], v[0]), vaddq_f32(a[1], v[1])];
            }
            g += 8;
        }
        let mut tail = [z; 2];
        for b in full..nb {
            let v = block(b);
            tail = [vaddq_f32(tail[0], v[0]), vaddq_f32(tail[1], v[1])];
        }
        let mut out = [0f32; R];
        for h in 0..2 {
            let s = vaddq_f32(
                vaddq_f32(
                    vaddq_f32(acc[0][h], acc[4][h]),
                    vaddq_f32(acc[1][h], acc[5][h]),
                ),
                vaddq_f32(
                    vaddq_f32(acc[2][h], acc[6][h]),
                    vaddq_f32(acc[3][h], acc[7][h]),
                ),
            );
            vst1q_f32(out.as_mut_ptr().add(4 * h), vaddq_f32(s, tail[h]));
        }
        out
    }
}

/// The repacked Q4_0 decode on [`super::Dotprod`]. Twin: the portable repacked decoder.
///
/// # Safety
/// NEON and `dotprod` available; as [`rows_split`].
#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_q4_0_dot(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<Q4x8Sdot>(job, rows)
}

/// The repacked decode kernels of [`super::Neon`] (`DOT = false`) and [`super::Dotprod`].
pub(super) fn repacked_decoder<const DOT: bool>(ty: GgmlType) -> Option<Decoder> {
    match ty {
        GgmlType::Q4_0 if DOT => Some(Decoder {
            act: Some(ActQuant {
                row_bytes: split_row_bytes,
                quantize: quantize_split,
            }),
            rows: rows_q4_0_dot,
        }),
        // The ×16 layouts (Q4_K, Q5_K, Q6_K) have no NEON kernel yet: a repacked matrix runs
        // the portable twin (`repack::scalar_decoder`), and models keep them in place here
        // (`repack_pays`).
        _ => None,
    }
}
