//! The repacked-layout decode kernels of both x86 paths ([`super::super::repack`]): eight weight
//! rows per 256-bit register, one i32 / f32 lane per row, so nothing is reduced horizontally.

use std::arch::x86_64::*;

use super::super::intdot::{LaneKernel, LaneTile};
use super::super::repack::{full_rows, rows_grouped, rows_split, BlockQ4_0x8, GroupDot, R};
use super::super::types::{plain_act, ActQuant, Decoder, Job};
use super::super::{split_row_bytes, Q8Row};
use super::bytes::Avx2Ops;
use super::quantize_split;
use crate::quant::q4_k::BlockQ4_K;
use crate::quant::q5_k::BlockQ5_K;
use crate::quant::q6_k::BlockQ6_K;
use crate::GgmlType;

/// The AVX2 group kernel of [`BlockQ4_0x8`].
struct Q4x8;
/// The AVX-512 VNNI group kernel of [`BlockQ4_0x8`] (`vpdpbusd` on 256-bit registers).
struct Q4x8Vnni;

/// The f32 part of both group kernels: `block(b)` gives block `b`'s eight `Σq·x − 8Σx`, then the
/// steps of [`crate::quant::block_lanes`] lane-wise (product of the scales, product with the
/// sum, add; no FMA): eight block-lane accumulators and a tail, reduced in
/// [`crate::quant::lanes8`]'s order.
#[inline(always)]
unsafe fn group_f32(
    w: *const BlockQ4_0x8,
    nb: usize,
    x: Q8Row,
    isum: impl Fn(usize) -> __m256i,
) -> [f32; R] {
    let block = |b: usize| -> __m256 {
        let dw = _mm256_cvtph_ps(_mm_loadu_si128((*w.add(b)).d.as_ptr() as *const __m128i));
        let sc = _mm256_mul_ps(dw, _mm256_set1_ps(*x.d.add(b)));
        _mm256_mul_ps(sc, _mm256_cvtepi32_ps(isum(b)))
    };
    let mut acc = [_mm256_setzero_ps(); 8];
    let full = nb / 8 * 8;
    let mut g = 0;
    while g < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, block(g + l));
        }
        g += 8;
    }
    let mut tail = _mm256_setzero_ps();
    for b in full..nb {
        tail = _mm256_add_ps(tail, block(b));
    }
    let s = _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[1], acc[5])),
        _mm256_add_ps(_mm256_add_ps(acc[2], acc[6]), _mm256_add_ps(acc[3], acc[7])),
    );
    let mut out = [0f32; R];
    _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(s, tail));
    out
}

/// Chunk `c` of block `b`: the 32 nibble bytes (low, high nibbles) and the activation bytes of
/// values `4c..4c+4` and `16+4c..` broadcast to every lane.
#[inline(always)]
unsafe fn chunk(w: *const BlockQ4_0x8, x: Q8Row, b: usize, c: usize) -> [__m256i; 4] {
    let mask = _mm256_set1_epi8(0x0F);
    let v = _mm256_loadu_si256((*w.add(b)).qs.as_ptr().add(32 * c) as *const __m256i);
    let xq = (*x.qs.add(b)).0.as_ptr() as *const u8;
    [
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
        _mm256_set1_epi32((xq.add(4 * c) as *const i32).read_unaligned()),
        _mm256_set1_epi32((xq.add(16 + 4 * c) as *const i32).read_unaligned()),
    ]
}

impl GroupDot for Q4x8Vnni {
    /// As [`Q4x8`], the integer sums with `vpdpbusd` (exact in i32). Twin: the portable
    /// repacked decoder (bit-exact).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn dot8(w: *const BlockQ4_0x8, nb: usize, x: Q8Row) -> [f32; R] {
        group_f32(w, nb, x, |b| {
            let mut p = _mm256_setzero_si256();
            for c in 0..4 {
                let [lo, hi, xl, xh] = chunk(w, x, b, c);
                p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(p, lo, xl), hi, xh);
            }
            _mm256_sub_epi32(p, _mm256_set1_epi32(8 * *x.s.add(b)))
        })
    }
}

impl GroupDot for Q4x8 {
    /// Per block: the 32 nibble bytes of chunk `c` (values `4c..4c+4` and `16+4c..` of all eight
    /// rows) meet the four activation bytes of those values broadcast to every lane
    /// (`vpmaddubsw`, unsigned nibbles 0..15); the i16 pairs of four chunks stay below
    /// 4·2·2·15·128 = 30720, and one `vpmaddwd` gives each row's Σq·x in its lane; the −8 offset
    /// comes out with the activation block sum. Then the f32 steps of
    /// [`crate::quant::block_lanes`] lane-wise (product of the scales, product with the sum, add;
    /// no FMA): eight block-lane accumulators and a tail, reduced in [`crate::quant::lanes8`]'s
    /// order. Twin: the portable repacked decoder (bit-exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot8(w: *const BlockQ4_0x8, nb: usize, x: Q8Row) -> [f32; R] {
        let ones = _mm256_set1_epi16(1);
        group_f32(w, nb, x, |b| {
            let mut p = _mm256_setzero_si256();
            for c in 0..4 {
                let [lo, hi, xl, xh] = chunk(w, x, b, c);
                p = _mm256_add_epi16(
                    p,
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh)),
                );
            }
            _mm256_sub_epi32(
                _mm256_madd_epi16(p, ones),
                _mm256_set1_epi32(8 * *x.s.add(b)),
            )
        })
    }
}

/// The repacked Q4_0 decode on [`super::Avx2`]. Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; as [`rows_split`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_0(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<Q4x8>(job, rows)
}

/// [`rows_q4_0`] on [`super::Avx512`] (VNNI), the same results bit for bit.
///
/// # Safety
/// As [`rows_q4_0`], and AVX-512 F/BW/VL/VNNI/VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn rows_q4_0_vnni(job: &Job<'_>, rows: std::ops::Range<usize>) {
    rows_split::<Q4x8Vnni>(job, rows)
}

/// The block-interleaved K-quant decode on both x86 paths: the in-place lane tiles stepping
/// over the interleaved blocks. Twin: the portable repacked decoder.
///
/// # Safety
/// AVX2/FMA/F16C available; `job.w` a repacked matrix of type `B`; as [`rows_grouped`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_lane<B: LaneKernel>(job: &Job<'_>, rows: std::ops::Range<usize>) {
    let full = full_rows(B::TYPE, job.out.m);
    rows_grouped(LaneTile::<B, Avx2Ops>::repacked(job), job, full, rows)
}

/// The repacked decode kernels of [`super::Avx2`] (`VNNI = false`) and [`super::Avx512`].
pub(super) fn repacked_decoder<const VNNI: bool>(ty: GgmlType) -> Option<Decoder> {
    fn lane<B: LaneKernel>() -> Option<Decoder> {
        Some(Decoder {
            act: Some(plain_act::<B::VecDot>()),
            rows: rows_lane::<B>,
        })
    }
    match ty {
        GgmlType::Q4_K => lane::<BlockQ4_K>(),
        GgmlType::Q5_K => lane::<BlockQ5_K>(),
        GgmlType::Q6_K => lane::<BlockQ6_K>(),
        GgmlType::Q4_0 => Some(Decoder {
            act: Some(ActQuant {
                row_bytes: split_row_bytes,
                quantize: quantize_split::<1>,
            }),
            rows: if VNNI { rows_q4_0_vnni } else { rows_q4_0 },
        }),
        _ => None,
    }
}
