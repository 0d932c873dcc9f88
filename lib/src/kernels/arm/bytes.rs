//! [`ByteOps`] on NEON ([`NeonOps`], `vmull_s8` products) and with `sdot` ([`SdotOps`]): the
//! 32-byte-lane operations of the shared integer kernels in `kernels::intdot` (Q4_K, Q5_K, Q6_K,
//! Q4_1, Q5_0, Q5_1). 32 bytes are two 128-bit registers.

use std::arch::aarch64::*;

use super::sdot;
use crate::kernels::intdot::{ByteOps, NoAhead};

/// NEON byte operations, integer products with `vmull_s8`.
pub(super) struct NeonOps;
/// [`NeonOps`] with `sdot` products (the `dotprod` extension).
pub(super) struct SdotOps;

/// The methods both share; `$feat` the target features of the instance.
macro_rules! neon_bytes {
    ($feat:literal) => {
        type V = (uint8x16_t, uint8x16_t);
        /// Lanes 0–3 (bytes 0..16) and 4–7 (bytes 16..32).
        type Acc = (int32x4_t, int32x4_t);
        type Sc = (i32, i32);
        type F = (float32x4_t, float32x4_t);
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load(p: *const u8) -> Self::V {
            (vld1q_u8(p), vld1q_u8(p.add(16)))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles16(p: *const u8) -> Self::V {
            let q = vld1q_u8(p);
            (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bits32(bits: u32, set: u8) -> Self::V {
            // Byte i of each half gets byte i/8 of its two bytes of `bits`, then tests bit i % 8.
            let m = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
            let half = |b: u16| {
                let v = vcombine_u8(vdup_n_u8(b as u8), vdup_n_u8((b >> 8) as u8));
                vandq_u8(vtstq_u8(v, m), vdupq_n_u8(set))
            };
            (half(bits as u16), half((bits >> 16) as u16))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn test(a: Self::V, m: u8, set: u8) -> Self::V {
            let (m, s) = (vdupq_n_u8(m), vdupq_n_u8(set));
            (vandq_u8(vtstq_u8(a.0, m), s), vandq_u8(vtstq_u8(a.1, m), s))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn and(a: Self::V, m: u8) -> Self::V {
            let m = vdupq_n_u8(m);
            (vandq_u8(a.0, m), vandq_u8(a.1, m))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn or(a: Self::V, b: Self::V) -> Self::V {
            (vorrq_u8(a.0, b.0), vorrq_u8(a.1, b.1))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn shr<const N: i32>(a: Self::V) -> Self::V {
            (vshrq_n_u8::<N>(a.0), vshrq_n_u8::<N>(a.1))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn shl<const N: i32>(a: Self::V) -> Self::V {
            (vshlq_n_u8::<N>(a.0), vshlq_n_u8::<N>(a.1))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn splat(v: u8) -> Self::V {
            (vdupq_n_u8(v), vdupq_n_u8(v))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn zero() -> Self::Acc {
            (vdupq_n_s32(0), vdupq_n_s32(0))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn scale(lo: i16, hi: i16) -> (i32, i32) {
            (lo as i32, hi as i32)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mins_lanes(bsums: *const i16, m: [u8; 8]) -> Self::Acc {
            let m = vld1_u8(m.as_ptr());
            let lo = vreinterpretq_s16_u16(vmovl_u8(vzip1_u8(m, m)));
            let hi = vreinterpretq_s16_u16(vmovl_u8(vzip2_u8(m, m)));
            (pairs4(bsums, lo), pairs4(bsums.add(8), hi))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn sub_offset_lanes(acc: Self::Acc, bsums: *const i16, sc: *const i8) -> Self::Acc {
            let sc = vld1q_s8(sc);
            let o0 = pairs4(bsums, vmovl_s8(vget_low_s8(sc)));
            let o1 = pairs4(bsums.add(8), vmovl_high_s8(sc));
            (
                vsubq_s32(acc.0, vshlq_n_s32::<5>(o0)),
                vsubq_s32(acc.1, vshlq_n_s32::<5>(o1)),
            )
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn fzero() -> Self::F {
            (vdupq_n_f32(0.0), vdupq_n_f32(0.0))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn fadd_scaled(acc: Self::F, i: Self::Acc, s: f32) -> Self::F {
            (
                vaddq_f32(acc.0, vmulq_n_f32(vcvtq_f32_s32(i.0), s)),
                vaddq_f32(acc.1, vmulq_n_f32(vcvtq_f32_s32(i.1), s)),
            )
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn fsum(a: Self::F) -> f32 {
            // p = (a0+a4, a1+a5, a2+a6, a3+a7); then (p0+p1) + (p2+p3).
            let p = vaddq_f32(a.0, a.1);
            let h = vpaddq_f32(p, p);
            vgetq_lane_f32::<0>(h) + vgetq_lane_f32::<1>(h)
        }
    };
}

/// The products of 16 levels (≤ 63, as signed bytes) with 16 activations summed in groups of
/// four consecutive bytes: four i32 lanes (as one `sdot`).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mull16(q: uint8x16_t, x: int8x16_t) -> int32x4_t {
    let q = vreinterpretq_s8_u8(q);
    let lo = vpaddlq_s16(vmull_s8(vget_low_s8(q), vget_low_s8(x)));
    let hi = vpaddlq_s16(vmull_high_s8(q, x));
    vpaddq_s32(lo, hi)
}

/// Lane `l` = `a[2l]·w[2l] + a[2l+1]·w[2l+1]` over 8 i16 values at `a`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn pairs4(a: *const i16, w: int16x8_t) -> int32x4_t {
    let a = vld1q_s16(a);
    let lo = vmull_s16(vget_low_s16(a), vget_low_s16(w));
    vpaddq_s32(lo, vmull_high_s16(a, w))
}

impl ByteOps for NeonOps {
    type Ahead = NoAhead;
    neon_bytes!("neon");
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn dot(acc: Self::Acc, q: Self::V, x: *const i8, s: (i32, i32)) -> Self::Acc {
        (
            vmlaq_n_s32(acc.0, mull16(q.0, vld1q_s8(x)), s.0),
            vmlaq_n_s32(acc.1, mull16(q.1, vld1q_s8(x.add(16))), s.1),
        )
    }
}

impl ByteOps for SdotOps {
    type Ahead = NoAhead;
    neon_bytes!("neon,dotprod");
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot(acc: Self::Acc, q: Self::V, x: *const i8, s: (i32, i32)) -> Self::Acc {
        let z = vdupq_n_s32(0);
        let d0 = sdot(z, vreinterpretq_s8_u8(q.0), vld1q_s8(x));
        let d1 = sdot(z, vreinterpretq_s8_u8(q.1), vld1q_s8(x.add(16)));
        (vmlaq_n_s32(acc.0, d0, s.0), vmlaq_n_s32(acc.1, d1, s.1))
    }
}
