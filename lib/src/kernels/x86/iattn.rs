//! Integer tiles of the low-precision attention ([`super::super::iattn`]) on x86-64:
//! [`itile_4x16`] (`vpmaddwd`, the [`super::Avx2`] path) and [`itile_8x32`] (`vpdpwssd`, AVX-512
//! VNNI, the [`super::Avx512`] path). Twin of both: [`super::super::scalar::itile`]
//! (bit-identical: every product and sum is exact in `i32` under the callers' bounds).

use std::arch::x86_64::*;

/// [`super::super::isa::Isa::itile`] for a 4 × 16 tile: per step, two ymm of B (16 columns × one
/// pair) and one broadcast pair per row; `vpmaddwd` gives `lo·lo + hi·hi` per column, added in
/// `i32`. 8 accumulators.
///
/// # Safety
/// AVX2 is available; `a` holds 4 rows of `kp` pairs `lda` apart, `b` holds `kp·16` pairs, `c`
/// covers the 4 × 16 tile (row stride `ldc`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn itile_4x16(
    kp: usize,
    a: *const i32,
    lda: usize,
    b: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    let mut acc = [[_mm256_setzero_si256(); 2]; 4];
    for p in 0..kp {
        let b0 = _mm256_loadu_si256(b.add(p * 16) as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(p * 16 + 8) as *const __m256i);
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_epi32(*a.add(i * lda + p));
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, b0));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, b1));
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        _mm256_storeu_si256(c.add(i * ldc) as *mut __m256i, acc[0]);
        _mm256_storeu_si256(c.add(i * ldc + 8) as *mut __m256i, acc[1]);
    }
}

/// `acc + Σ_pairs a·b` per `i32` lane (`vpdpwssd`), in inline assembly: LLVM splits the
/// intrinsic `_mm512_dpwssd_epi32` into `vpmaddwd` + `vpaddd` for CPUs it does not tune as fast
/// at `vpdpwssd` (every CPU without `-C target-cpu`), which halves the tile's throughput. The same
/// integers either way (the pair sums cannot overflow under the callers' bounds).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(crate) unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    // SAFETY: AVX-512 VNNI is enabled (the caller's contract); registers only.
    std::arch::asm!(
        "vpdpwssd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// [`super::super::isa::Isa::itile`] for an 8 × 32 tile: per step, two zmm of B (32 columns × one
/// pair) and one broadcast pair per row; `vpdpwssd` adds `lo·lo + hi·hi` per column to the `i32`
/// accumulator (not saturating). 16 accumulators.
///
/// # Safety
/// AVX-512 F + VNNI are available; `a` holds 8 rows of `kp` pairs `lda` apart, `b` holds `kp·32`
/// pairs, `c` covers the 8 × 32 tile (row stride `ldc`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn itile_8x32(
    kp: usize,
    a: *const i32,
    lda: usize,
    b: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    let mut acc = [[_mm512_setzero_si512(); 2]; 8];
    for p in 0..kp {
        let b0 = _mm512_loadu_si512(b.add(p * 32) as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(p * 32 + 16) as *const __m512i);
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(*a.add(i * lda + p));
            acc[0] = dpwssd(acc[0], av, b0);
            acc[1] = dpwssd(acc[1], av, b1);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * ldc) as *mut __m512i, acc[0]);
        _mm512_storeu_si512(c.add(i * ldc + 16) as *mut __m512i, acc[1]);
    }
}

/// [`itile_8x32`] on the first 16 columns only (a last, half-used panel: the vision tower's head
/// dimension 80 is two and a half panels): `b` keeps its 32-pair rows, `c` gets 8 × 16.
///
/// # Safety
/// As [`itile_8x32`] (`c` needs to cover only 8 × 16).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn itile_8x16(
    kp: usize,
    a: *const i32,
    lda: usize,
    b: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    let mut acc = [_mm512_setzero_si512(); 8];
    for p in 0..kp {
        let b0 = _mm512_loadu_si512(b.add(p * 32) as *const __m512i);
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(*a.add(i * lda + p));
            *acc = dpwssd(*acc, av, b0);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * ldc) as *mut __m512i, *acc);
    }
}
