//! [`ByteOps`] on AVX2 (both x86 paths): the 32-byte-lane operations of the shared integer
//! kernels in `kernels::intdot` (Q4_K, Q5_K, Q6_K, Q4_1, Q5_0, Q5_1).

use std::arch::x86_64::*;

use super::hsum_i32;
use crate::kernels::intdot::ByteOps;

/// AVX2 byte operations; `dot` is `vpmaddubsw` (u8 × i8 pairs, exact for levels ≤ 63 and
/// |x| ≤ 127) then `vpmaddwd` with the sub-block scales.
pub(super) struct Avx2Ops;

impl ByteOps for Avx2Ops {
    type V = __m256i;
    type Acc = __m256i;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles16(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bits32(bits: u32, set: u8) -> __m256i {
        // Byte i gets byte i/8 of `bits`, then tests bit i % 8.
        let idx = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let b = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), idx);
        let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let on = _mm256_cmpeq_epi8(_mm256_and_si256(b, m), m);
        _mm256_and_si256(on, _mm256_set1_epi8(set as i8))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn test(a: __m256i, m: u8, set: u8) -> __m256i {
        let zero = _mm256_cmpeq_epi8(
            _mm256_and_si256(a, _mm256_set1_epi8(m as i8)),
            _mm256_setzero_si256(),
        );
        _mm256_andnot_si256(zero, _mm256_set1_epi8(set as i8))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn and(a: __m256i, m: u8) -> __m256i {
        _mm256_and_si256(a, _mm256_set1_epi8(m as i8))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn shr<const N: i32>(a: __m256i) -> __m256i {
        Self::and(_mm256_srli_epi16::<N>(a), 0xFFu8 >> N)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn shl<const N: i32>(a: __m256i) -> __m256i {
        Self::and(_mm256_slli_epi16::<N>(a), 0xFFu8 << N)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn splat(v: u8) -> __m256i {
        _mm256_set1_epi8(v as i8)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot(acc: __m256i, q: __m256i, x: *const i8, lo: i16, hi: i16) -> __m256i {
        let p = _mm256_maddubs_epi16(q, _mm256_loadu_si256(x as *const __m256i));
        let sc = if lo == hi {
            _mm256_set1_epi16(lo)
        } else {
            _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
        };
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sum(acc: __m256i) -> i32 {
        hsum_i32(acc)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bsums_pairs(bsums: *const i16, m: [u8; 8]) -> i32 {
        let m = _mm_cvtsi64_si128(i64::from_le_bytes(m));
        let m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        let bs = _mm256_loadu_si256(bsums as *const __m256i);
        hsum_i32(_mm256_madd_epi16(bs, m))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bsums_dot(bsums: *const i16, sc: *const i8) -> i32 {
        let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
        let bs = _mm256_loadu_si256(bsums as *const __m256i);
        hsum_i32(_mm256_madd_epi16(bs, sc))
    }
}
