//! Integer tile of the low-precision attention ([`super::super::iattn`]) on aarch64 (both the
//! [`super::Neon`] and [`super::Dotprod`] paths: `sdot` has no 16-bit form). Twin:
//! [`super::super::scalar::itile`] (bit-identical: every product and sum is exact in `i32`
//! under the callers' bounds).

use std::arch::aarch64::*;

/// [`super::super::isa::Isa::itile`] for a 4 × 8 tile. Per step, B is two q registers of four
/// columns' pairs (`[c0.lo, c0.hi, c1.lo, …]`) and A one pair per row, duplicated across the
/// register; `vmlal_s16` / `vmlal_high_s16` accumulate the products lane by lane (lane `2c` the
/// `lo·lo` products of column `c`, lane `2c+1` the `hi·hi` ones), and a final pairwise add gives
/// each column's sum. 16 accumulators.
///
/// # Safety
/// NEON is available (always on aarch64); `a` holds 4 rows of `kp` pairs `lda` apart, `b` holds
/// `kp·8` pairs, `c` covers the 4 × 8 tile (row stride `ldc`).
#[target_feature(enable = "neon")]
pub(super) unsafe fn itile_4x8(
    kp: usize,
    a: *const i32,
    lda: usize,
    b: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    let z = vdupq_n_s32(0);
    // acc[row][quarter]: columns 0-1, 2-3, 4-5, 6-7 (two lanes per column).
    let mut acc = [[z; 4]; 4];
    for p in 0..kp {
        let b0 = vreinterpretq_s16_s32(vld1q_s32(b.add(p * 8)));
        let b1 = vreinterpretq_s16_s32(vld1q_s32(b.add(p * 8 + 4)));
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = vreinterpretq_s16_s32(vdupq_n_s32(*a.add(i * lda + p)));
            let al = vget_low_s16(av);
            acc[0] = vmlal_s16(acc[0], vget_low_s16(b0), al);
            acc[1] = vmlal_high_s16(acc[1], b0, av);
            acc[2] = vmlal_s16(acc[2], vget_low_s16(b1), al);
            acc[3] = vmlal_high_s16(acc[3], b1, av);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        vst1q_s32(c.add(i * ldc), vpaddq_s32(acc[0], acc[1]));
        vst1q_s32(c.add(i * ldc + 4), vpaddq_s32(acc[2], acc[3]));
    }
}
