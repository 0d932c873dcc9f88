//! The grouped decode attention ([`super::group_scores`], [`super::group_pv`]) in sixteen-lane
//! AVX-512 registers: the same loops as the AVX2 forms with half the multiply-adds (an image's
//! cross-attention K/V, 6404 keys of f16 per kv head, are dotted with every query head of the
//! group at each decode step). Twins: the plain loops in `attention::group_scores_body` and
//! `group_pv_body` (within float rounding: FMA here, sums in another order).

use std::arch::x86_64::*;

use super::{lanes8x8, prefetch_rows, Wf, PV_KEYS};

// `group_scores` and `group_pv` (the AVX2 forms' drivers) over this module's row kernels.

group_drivers!("avx512f,avx2,fma,f16c");

/// The low and high eight lanes of `v` added (lane `i` + lane `i + 8`).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn fold8(v: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), hi)
}

/// Rows `r0..r0 + R` of [`group_scores`]: keys two at a time (eight sixteen-lane FMA chains),
/// each chain folded to eight lanes (low half plus high half) and the eight summed by
/// [`lanes8x8`]; the part of a row past its last sixteen values added one by one.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn scores_rows<T: Wf, const R: usize>(
    q: &[f32],
    r0: usize,
    kb: &[T],
    hd: usize,
    scale: f32,
    s: &mut [f32],
    ahead: &[u8],
) {
    let nb = kb.len() / hd;
    let full = hd / 16 * 16;
    assert!(q.len() >= (r0 + R) * hd && s.len() >= (r0 + R) * nb);
    let row = hd * std::mem::size_of::<T>();
    let mut j = 0;
    while j < nb {
        let keys = (nb - j).min(2);
        prefetch_rows(kb.as_ptr() as *const u8, row, nb, j, keys, ahead);
        let k0 = kb.as_ptr().add(j * hd);
        let k1 = if keys == 2 { k0.add(hd) } else { k0 };
        let mut x = [_mm512_setzero_ps(); 8];
        for c in (0..full).step_by(16) {
            let (x0, x1) = (T::load16(k0.add(c)), T::load16(k1.add(c)));
            for r in 0..R {
                let q16 = _mm512_loadu_ps(q.as_ptr().add((r0 + r) * hd + c));
                x[r] = _mm512_fmadd_ps(q16, x0, x[r]);
                x[4 + r] = _mm512_fmadd_ps(q16, x1, x[4 + r]);
            }
        }
        // Lane 4t + r: row r, key j + t.
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), lanes8x8(x.map(|x| fold8(x))));
        for r in 0..R {
            let qr = &q[(r0 + r) * hd..][..hd];
            for t in 0..keys {
                let kj = &kb[(j + t) * hd..][..hd];
                let mut sum = v[4 * t + r];
                for d in full..hd {
                    sum += qr[d] * kj[d].get();
                }
                s[(r0 + r) * nb + j + t] = sum * scale;
            }
        }
        j += keys;
    }
}

/// Rows `r0..r0 + R` and keys `keys` of [`group_pv`]: thirty-two columns at a time (then sixteen,
/// then one by one), the sums in registers while the keys pass; with `pf`, the first pass over
/// the keys issues their prefetches.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn pv_rows<T: Wf, const R: usize>(
    p: &[f32],
    r0: usize,
    vb: &[T],
    hd: usize,
    keys: std::ops::Range<usize>,
    o: &mut [f32],
    pf: Option<&[u8]>,
) {
    let nb = vb.len() / hd;
    let (full32, full16) = (hd / 32 * 32, hd / 16 * 16);
    let row = hd * std::mem::size_of::<T>();
    assert!(o.len() >= (r0 + R) * hd && p.len() >= (r0 + R) * nb && keys.end <= nb);
    let (pp, vp, op) = (p.as_ptr(), vb.as_ptr(), o.as_mut_ptr());
    let orow = |r: usize, c: usize| op.add((r0 + r) * hd + c);
    let pj = |r: usize, j: usize| _mm512_set1_ps(*pp.add((r0 + r) * nb + j));
    for c in (0..full32).step_by(32) {
        let mut a: [[__m512; 2]; R] = std::array::from_fn(|r| {
            [
                _mm512_loadu_ps(orow(r, c)),
                _mm512_loadu_ps(orow(r, c + 16)),
            ]
        });
        for j in keys.clone() {
            if let (0, Some(ahead)) = (c, pf) {
                prefetch_rows(vp as *const u8, row, nb, j, 1, ahead);
            }
            let v = vp.add(j * hd + c);
            let (v0, v1) = (T::load16(v), T::load16(v.add(16)));
            for (r, ar) in a.iter_mut().enumerate() {
                let w = pj(r, j);
                ar[0] = _mm512_fmadd_ps(w, v0, ar[0]);
                ar[1] = _mm512_fmadd_ps(w, v1, ar[1]);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            _mm512_storeu_ps(orow(r, c), ar[0]);
            _mm512_storeu_ps(orow(r, c + 16), ar[1]);
        }
    }
    if full32 < full16 {
        let c = full32;
        let mut a: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(orow(r, c)));
        for j in keys.clone() {
            if let (0, Some(ahead)) = (full32, pf) {
                prefetch_rows(vp as *const u8, row, nb, j, 1, ahead);
            }
            let v0 = T::load16(vp.add(j * hd + c));
            for (r, ar) in a.iter_mut().enumerate() {
                *ar = _mm512_fmadd_ps(pj(r, j), v0, *ar);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            _mm512_storeu_ps(orow(r, c), *ar);
        }
    }
    for r in 0..R {
        for j in keys.clone() {
            let w = *pp.add((r0 + r) * nb + j);
            for d in full16..hd {
                *orow(r, d) += w * (*vp.add(j * hd + d)).get();
            }
        }
    }
}
