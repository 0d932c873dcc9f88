//! [`ByteOps`] on AVX2 (both x86 paths): the 32-byte-lane operations of the shared integer
//! kernels in `kernels::intdot` (Q4_K, Q5_K, Q6_K, Q4_1, Q5_0, Q5_1).

use std::arch::x86_64::*;

use crate::kernels::intdot::ByteOps;

/// AVX2 byte operations; `dot` is `vpmaddubsw` (u8 × i8 pairs, exact for levels ≤ 63 and
/// |x| ≤ 127) then `vpmaddwd` with the sub-block scales.
pub(super) struct Avx2Ops;

impl ByteOps for Avx2Ops {
    type Ahead = super::Ahead;
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
    type Sc = __m256i;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale(lo: i16, hi: i16) -> __m256i {
        _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales8(sc: [u8; 8]) -> [__m256i; 8] {
        // Word c of the 8 scales broadcast by a byte shuffle (bytes 2c, 2c + 1).
        let v = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(sc)));
        let v = _mm256_broadcastsi128_si256(v);
        std::array::from_fn(|c| {
            _mm256_shuffle_epi8(v, _mm256_set1_epi16(0x0100 + 0x0202 * c as i16))
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales16(sc: *const i8) -> [__m256i; 8] {
        // Half h of the 16 scales as words in both 128-bit lanes; word 2k in the low lane and
        // 2k + 1 in the high lane of each shuffle.
        let half = |h: usize| {
            let v = _mm_cvtepi8_epi16(_mm_loadl_epi64(sc.add(8 * h) as *const __m128i));
            _mm256_broadcastsi128_si256(v)
        };
        let (v0, v1) = (half(0), half(1));
        std::array::from_fn(|k| {
            let (v, j) = if k < 4 { (v0, 2 * k) } else { (v1, 2 * k - 8) };
            let lo = _mm_set1_epi16((0x0100 + 0x0202 * j) as i16);
            let hi = _mm_set1_epi16((0x0100 + 0x0202 * (j + 1)) as i16);
            _mm256_shuffle_epi8(v, _mm256_set_m128i(hi, lo))
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot(acc: __m256i, q: __m256i, x: *const i8, s: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(q, _mm256_loadu_si256(x as *const __m256i));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins_lanes(bsums: *const i16, m: [u8; 8]) -> __m256i {
        let m = _mm_cvtsi64_si128(i64::from_le_bytes(m));
        let m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        _mm256_madd_epi16(_mm256_loadu_si256(bsums as *const __m256i), m)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sub_offset_lanes(acc: __m256i, bsums: *const i16, sc: *const i8) -> __m256i {
        let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
        let o = _mm256_madd_epi16(_mm256_loadu_si256(bsums as *const __m256i), sc);
        _mm256_sub_epi32(acc, _mm256_slli_epi32::<5>(o))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_pair(bits: u32) -> (f32, f32) {
        let f = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(f), _mm_cvtss_f32(_mm_movehdup_ps(f)))
    }
    type F = __m256;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fzero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fadd_scaled(acc: __m256, i: __m256i, s: f32) -> __m256 {
        _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(i)))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fsum(a: __m256) -> f32 {
        // p = (a0+a4, a1+a5, a2+a6, a3+a7); then (p0+p1) + (p2+p3).
        let p = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let h = _mm_hadd_ps(p, p);
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }
}
