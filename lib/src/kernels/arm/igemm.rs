//! The integer GEMM micro-kernels of the aarch64 paths ([`crate::kernels::igemm`]): int8
//! [`DotprodIKernel`] (`sdot` by element, 4 × 16 tile) and [`NeonIKernel`] (`smull`/`smlal` +
//! `sadalp`, 2 × 16 tile); 12-bit [`NeonI16Kernel`] (`smlal`, 2 × 16, both paths). All give the
//! integer dots of
//! [`crate::kernels::igemm::scalar_tile`] exactly and its float epilogue operation for operation,
//! so the same bits. Activations are quantized by the portable code (NEON is the aarch64
//! baseline, so it is already compiled for it).

use std::arch::aarch64::*;
use std::arch::asm;

use crate::kernels::igemm::{IKernel, Int16, Int8, Tile, PANEL};

/// The `sdot` int8 micro-kernel of [`super::Dotprod`].
pub(crate) struct DotprodIKernel;

/// The plain NEON int8 micro-kernel of [`super::Neon`].
pub(crate) struct NeonIKernel;

/// The 12-bit micro-kernel of [`super::Neon`] and [`super::Dotprod`].
pub(crate) struct NeonI16Kernel;

impl IKernel<Int16> for NeonI16Kernel {
    const MR: usize = 2;
    const NR: usize = 16;
    unsafe fn tile(t: &Tile<Int16>, out: *mut f32) {
        tile16_neon_2x16(t, out)
    }
}

impl IKernel<Int8> for DotprodIKernel {
    const MR: usize = 4;
    const NR: usize = 16;
    unsafe fn tile(t: &Tile<Int8>, out: *mut f32) {
        tile_sdot_4x16(t, out)
    }
}

impl IKernel<Int8> for NeonIKernel {
    const MR: usize = 2;
    const NR: usize = 16;
    unsafe fn tile(t: &Tile<Int8>, out: *mut f32) {
        tile_neon_2x16(t, out)
    }
}

/// `sdot` by element: `acc[l] += Σ_{c<4} w[4l + c]·a[4L + c]` (row `l` of four weight rows
/// against activation row `L`).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut r = acc;
    asm!("sdot {r:v}.4s, {w:v}.16b, {a:v}.4b[{l}]", r = inout(vreg) r, w = in(vreg) w,
        a = in(vreg) a, l = const L, options(pure, nomem, nostack));
    r
}

/// `y += (da·dw) · f32(dot)` for one activation row against 16 weight rows (four lanes each):
/// the scalar epilogue, lane by lane.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn epilogue(y: &mut [float32x4_t; 4], acc: &[int32x4_t; 4], da: f32, dw: *const f32) {
    for (h, (yh, ah)) in y.iter_mut().zip(acc).enumerate() {
        let s = vmulq_f32(vdupq_n_f32(da), vld1q_f32(dw.add(4 * h)));
        *yh = vaddq_f32(*yh, vmulq_f32(s, vcvtq_f32_s32(*ah)));
    }
}

/// The `MR × 16` float tile to `out` (row stride 16).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store<const MR: usize>(y: &[[float32x4_t; 4]; MR], out: *mut f32) {
    for (i, yi) in y.iter().enumerate() {
        for (h, yh) in yi.iter().enumerate() {
            vst1q_f32(out.add(i * 16 + 4 * h), *yh);
        }
    }
}

/// The four rows' dots of each weight group from its low-rows and high-rows accumulators
/// (two i32 lanes per row each): `addp` of the pair.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn halves(acc: &[[int32x4_t; 2]; 4]) -> [int32x4_t; 4] {
    acc.map(|[lo, hi]| vpaddq_s32(lo, hi))
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int8, 4, 16>`]. Per step, one 16-byte load holds the
/// four activation rows' four bytes; each of the panel's four 16-byte weight groups (four rows ×
/// four bytes) is dotted with each row by `sdot` by element, exactly in i32.
#[allow(clippy::needless_range_loop)] // acc[row][group]: one sdot per (row, group)
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_sdot_4x16(t: &Tile<Int8>, out: *mut f32) {
    const MR: usize = 4;
    let steps = t.kb / 4;
    let zero = vdupq_n_s32(0);
    let mut y = [[vdupq_n_f32(0.0); 4]; MR];
    for b in 0..t.nb {
        let mut acc = [[zero; 4]; MR];
        let mut ap = t.a.add(b * steps * MR * 4);
        let mut wp = t.w.add(b * steps * PANEL * 4);
        for _ in 0..steps {
            let a = vld1q_s8(ap);
            for h in 0..4 {
                let w = vld1q_s8(wp.add(16 * h));
                acc[0][h] = sdot_lane::<0>(acc[0][h], w, a);
                acc[1][h] = sdot_lane::<1>(acc[1][h], w, a);
                acc[2][h] = sdot_lane::<2>(acc[2][h], w, a);
                acc[3][h] = sdot_lane::<3>(acc[3][h], w, a);
            }
            ap = ap.add(MR * 4);
            wp = wp.add(PANEL * 4);
        }
        for (i, (yi, ai)) in y.iter_mut().zip(&acc).enumerate() {
            epilogue(yi, ai, *t.da.add(b * MR + i), t.dw.add(b * PANEL));
        }
    }
    store(&y, out);
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int8, 2, 16>`]. Two steps at a time: `smull` of the
/// low (high) eight bytes of a weight group (two rows × four bytes) with the activation row's
/// four bytes repeated, `smlal` of the next step's on top (two products per i16 lane, at most
/// 2·127² < 2¹⁵, no overflow), `sadalp` into i32 pairs of each row; per block, `addp` of the low
/// and high accumulators gives the four rows' dots.
#[target_feature(enable = "neon")]
unsafe fn tile_neon_2x16(t: &Tile<Int8>, out: *mut f32) {
    const MR: usize = 2;
    let steps = t.kb / 4;
    let zero = vdupq_n_s32(0);
    let mut y = [[vdupq_n_f32(0.0); 4]; MR];
    for b in 0..t.nb {
        // [row][group][low rows, high rows]
        let mut acc = [[[zero; 2]; 4]; MR];
        let mut ap = t.a.add(b * steps * MR * 4);
        let mut wp = t.w.add(b * steps * PANEL * 4);
        for _ in 0..steps / 2 {
            let mut a = [[vdup_n_s8(0); 2]; MR];
            for (i, ai) in a.iter_mut().enumerate() {
                for (st, v) in ai.iter_mut().enumerate() {
                    let q = (ap.add(st * MR * 4 + 4 * i) as *const i32).read_unaligned();
                    *v = vreinterpret_s8_s32(vdup_n_s32(q));
                }
            }
            for h in 0..4 {
                let w0 = vld1q_s8(wp.add(16 * h));
                let w1 = vld1q_s8(wp.add(PANEL * 4 + 16 * h));
                for (ai, acci) in a.iter().zip(acc.iter_mut()) {
                    let lo = vmlal_s8(vmull_s8(vget_low_s8(w0), ai[0]), vget_low_s8(w1), ai[1]);
                    let hi = vmlal_s8(vmull_s8(vget_high_s8(w0), ai[0]), vget_high_s8(w1), ai[1]);
                    acci[h][0] = vpadalq_s16(acci[h][0], lo);
                    acci[h][1] = vpadalq_s16(acci[h][1], hi);
                }
            }
            ap = ap.add(2 * MR * 4);
            wp = wp.add(2 * PANEL * 4);
        }
        for (i, (yi, ai)) in y.iter_mut().zip(&acc).enumerate() {
            epilogue(yi, &halves(ai), *t.da.add(b * MR + i), t.dw.add(b * PANEL));
        }
    }
    store(&y, out);
}

/// Twin: [`crate::kernels::igemm::scalar_tile::<Int16, 2, 16>`]. Per step, the panel's four
/// 16-byte groups (four rows × one pair each) against the activation row's pair repeated:
/// `smull`/`smlal` (low four) and `smlal2` (high four) add each single product to its own i32
/// lane (at most 64·2047² < 2³¹ per block); per block, `addp` of the low and high accumulators
/// gives the four rows' dots.
#[target_feature(enable = "neon")]
unsafe fn tile16_neon_2x16(t: &Tile<Int16>, out: *mut f32) {
    const MR: usize = 2;
    let steps = t.kb / 2;
    let zero = vdupq_n_s32(0);
    let mut y = [[vdupq_n_f32(0.0); 4]; MR];
    for b in 0..t.nb {
        // [row][group][low rows, high rows]
        let mut acc = [[[zero; 2]; 4]; MR];
        let mut ap = t.a.add(b * steps * MR * 2);
        let mut wp = t.w.add(b * steps * PANEL * 2);
        for _ in 0..steps {
            let mut a = [vdupq_n_s16(0); MR];
            for (i, ai) in a.iter_mut().enumerate() {
                let q = (ap.add(2 * i) as *const i32).read_unaligned();
                *ai = vreinterpretq_s16_s32(vdupq_n_s32(q));
            }
            for h in 0..4 {
                let w = vld1q_s16(wp.add(8 * h));
                for (ai, acci) in a.iter().zip(acc.iter_mut()) {
                    acci[h][0] = vmlal_s16(acci[h][0], vget_low_s16(w), vget_low_s16(*ai));
                    acci[h][1] = vmlal_high_s16(acci[h][1], w, *ai);
                }
            }
            ap = ap.add(MR * 2);
            wp = wp.add(PANEL * 2);
        }
        for (i, (yi, ai)) in y.iter_mut().zip(&acc).enumerate() {
            epilogue(yi, &halves(ai), *t.da.add(b * MR + i), t.dw.add(b * PANEL));
        }
    }
    store(&y, out);
}
