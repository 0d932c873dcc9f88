//! [`ByteOps`] on NEON ([`NeonOps`], `vmull_s8` products) and with `sdot` ([`SdotOps`]): the
//! 32-byte-lane operations of the shared integer kernels in `kernels::intdot` (Q4_K, Q5_K, Q6_K,
//! Q4_1, Q5_0, Q5_1). 32 bytes are two 128-bit registers.

use std::arch::aarch64::*;

use super::sdot;
use crate::kernels::intdot::ByteOps;

/// NEON byte operations, integer products with `vmull_s8`.
pub(super) struct NeonOps;
/// [`NeonOps`] with `sdot` products (the `dotprod` extension).
pub(super) struct SdotOps;

/// The methods both share; `$feat` the target features of the instance.
macro_rules! neon_bytes {
    ($feat:literal) => {
        type V = (uint8x16_t, uint8x16_t);
        type Acc = int32x4_t;
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
        unsafe fn zero() -> int32x4_t {
            vdupq_n_s32(0)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn sum(acc: int32x4_t) -> i32 {
            vaddvq_s32(acc)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bsums_pairs(bsums: *const i16, m: [u8; 8]) -> i32 {
            let m = vld1_u8(m.as_ptr());
            let lo = vreinterpretq_s16_u16(vmovl_u8(vzip1_u8(m, m)));
            let hi = vreinterpretq_s16_u16(vmovl_u8(vzip2_u8(m, m)));
            madd16(bsums, lo, hi)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bsums_dot(bsums: *const i16, sc: *const i8) -> i32 {
            let sc = vld1q_s8(sc);
            madd16(bsums, vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc))
        }
    };
}

/// `Σ q·x` of 16 levels (≤ 63, as signed bytes) with 16 activations, as four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mull16(q: uint8x16_t, x: int8x16_t) -> int32x4_t {
    let q = vreinterpretq_s8_u8(q);
    let lo = vmull_s8(vget_low_s8(q), vget_low_s8(x));
    let hi = vmull_high_s8(q, x);
    vpadalq_s16(vpaddlq_s16(lo), hi)
}

/// `Σ_k a[k]·(lo ++ hi)[k]` over 16 i16 values at `a`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn madd16(a: *const i16, lo: int16x8_t, hi: int16x8_t) -> i32 {
    let (a0, a1) = (vld1q_s16(a), vld1q_s16(a.add(8)));
    let p = vmull_s16(vget_low_s16(a0), vget_low_s16(lo));
    let p = vmlal_high_s16(p, a0, lo);
    let p = vmlal_s16(p, vget_low_s16(a1), vget_low_s16(hi));
    vaddvq_s32(vmlal_high_s16(p, a1, hi))
}

impl ByteOps for NeonOps {
    neon_bytes!("neon");
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn dot(acc: int32x4_t, q: Self::V, x: *const i8, lo: i16, hi: i16) -> int32x4_t {
        let acc = vmlaq_n_s32(acc, mull16(q.0, vld1q_s8(x)), lo as i32);
        vmlaq_n_s32(acc, mull16(q.1, vld1q_s8(x.add(16))), hi as i32)
    }
}

impl ByteOps for SdotOps {
    neon_bytes!("neon,dotprod");
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot(acc: int32x4_t, q: Self::V, x: *const i8, lo: i16, hi: i16) -> int32x4_t {
        let z = vdupq_n_s32(0);
        let d0 = sdot(z, vreinterpretq_s8_u8(q.0), vld1q_s8(x));
        let d1 = sdot(z, vreinterpretq_s8_u8(q.1), vld1q_s8(x.add(16)));
        vmlaq_n_s32(vmlaq_n_s32(acc, d0, lo as i32), d1, hi as i32)
    }
}
