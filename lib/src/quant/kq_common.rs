//! Helpers shared by the ggml block formats of this folder: ggml's rounding and scale search
//! (`nearest_int`, `make_qkx2_quants`, `make_qx_quants` of `ggml-quants.c`), the 6-bit scale
//! packing of Q4_K/Q5_K, the byte-buffer dequantizer and the integer lanes of the dot products.
//!
//! Every float expression here is written in the order of ggml's C source, one rounding per C
//! operator and no fused multiply-add (ggml-base is compiled without FMA contraction), so the
//! quantizers reproduce ggml's bytes exactly. Integer → float conversions happen where C's usual
//! arithmetic conversions put them (`w*l*l` is `(w·(f32)l)·(f32)l`).

use crate::error::Error;

/// ggml's `nearest_int`: round to nearest, ties to **even**, by adding 1.5·2²³ and reading the
/// mantissa bits. Exact for |x| ≤ 4194303; beyond that (or for NaN) it returns the same
/// meaningless value as ggml's release build (ggml only asserts in debug builds).
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: the scale and minimum of an asymmetric
/// `nmax`-level quantization of `x` (n = `x.len()`), weighted least squares over `nstep + 1`
/// candidate scales `(rmin + rdelta·is + nmax) / (max − min)`.
///
/// Writes the levels (0..=nmax) to `l` (`laux` is scratch of the same length) and returns
/// `(scale, the_min)`, where a value is `scale·l − the_min` (`the_min ≥ 0`). As in ggml, a
/// candidate that wins replaces `min`, and the later candidates use that new `min`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights `x²`): the
/// scale of a symmetric quantization to levels −nmax..nmax−1, searching the 19 inverse scales
/// `−(nmax + 0.1·is)/max`, is = −9..9 (`max` = the value of largest magnitude, first on ties).
/// Writes `level + nmax` (0..2·nmax−1) to `l` and returns the scale (0 for an all-zero group).
pub(crate) fn make_qx_quants_rmse1(x: &[f32], l: &mut [i8], nmax: i32) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmaxf / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = level(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = x[i] * x[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let qf = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (level(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (0..8) from the 12
/// packed bytes of a Q4_K/Q5_K super-block. Bytes 0..4 hold scales 0..3 (low 6 bits), bytes
/// 4..8 mins 0..3; bytes 8..12 hold the low 4 bits of scale (low nibble) and min (high nibble)
/// of sub-blocks 4..7, whose top 2 bits are the top bits of bytes j−4 (scale) and j (min).
#[inline(always)]
#[cfg_attr(not(test), allow(dead_code))] // the per-sub-block meaning, checked against scales_mins_k4
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs of a Q4_K/Q5_K super-block: [`get_scale_min_k4`] for every `j`,
/// four bytes at a time (the decode kernels call it once per super-block).
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let sc_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let m_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    let join = |lo: u32, hi: u32| {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&lo.to_le_bytes());
        b[4..].copy_from_slice(&hi.to_le_bytes());
        b
    };
    (join(w0 & LOW6, sc_hi), join(w1 & LOW6, m_hi))
}

/// The scale-and-min part of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`, shared by
/// both: from the 8 sub-block scales and mins found by [`make_qkx2_quants`], the packed 6-bit
/// bytes and the f16 super-block scales `d = max_scale/63`, `dmin = max_min/63`. A level is
/// `nearest_int(63/max · v)` cast to u8 **then** clamped to 63, as in ggml.
pub(crate) fn pack_scales_k4(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; 12], f32, f32) {
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut out = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            out[j] = ls;
            out[j + 4] = lm;
        } else {
            out[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            out[j - 4] |= (ls >> 4) << 6;
            out[j] |= (lm >> 4) << 6;
        }
    }
    (out, max_scale / 63.0, max_min / 63.0)
}

/// The weights of `quantize_row_q4_K_ref`/`q5_K_ref` for one sub-block of 32:
/// `sqrt(Σx²/32) + |x[l]|`, the sum taken in index order.
#[inline]
pub(crate) fn k4_weights(x: &[f32]) -> [f32; 32] {
    let mut sum_x2 = 0f32;
    for &v in &x[..32] {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    let mut w = [0f32; 32];
    for (w, &v) in w.iter_mut().zip(x) {
        *w = av_x + v.abs();
    }
    w
}

/// Dequantize blocks stored in `data` at any alignment: `data` must be exactly
/// `out.len() / values · size_of::<B>()` bytes with `out.len()` a multiple of `values`.
pub(crate) fn dequantize_bytes<B: bytemuck::Pod>(
    name: &str,
    values: usize,
    data: &[u8],
    out: &mut [f32],
    deq: impl Fn(&B, &mut [f32]),
) -> Result<(), Error> {
    let size = std::mem::size_of::<B>();
    let n = out.len();
    if !n.is_multiple_of(values) {
        return Err(Error::Invalid(format!(
            "{n} values are not a whole number of {name} blocks ({values} values each)"
        )));
    }
    if data.len() != n / values * size {
        return Err(Error::Invalid(format!(
            "{name}: {} bytes given for {n} values ({} needed)",
            data.len(),
            n / values * size
        )));
    }
    for (b, o) in data.chunks_exact(size).zip(out.chunks_exact_mut(values)) {
        let block: B = bytemuck::pod_read_unaligned(b);
        deq(&block, o);
    }
    Ok(())
}

/// The eight [`LaneDot`](super::LaneDot) lanes of `Σ_p scale(p)·q[p]·x[p]` over a super-block.
#[inline(always)]
pub(super) fn level_lanes(q: &[i32; 256], scale: impl Fn(usize) -> i32, x: &[i8; 256]) -> [i32; 8] {
    // Value p = 32c + 4l + k is in lane l = lane_of(p); looping over (c, l, k) keeps the lane
    // index static, which lets the compiler vectorise this.
    let mut lanes = [0i32; 8];
    for c in (0..256).step_by(32) {
        for (l, lane) in lanes.iter_mut().enumerate() {
            for k in 0..4 {
                let p = c + 4 * l + k;
                *lane += scale(p) * q[p] * x[p] as i32;
            }
        }
    }
    lanes
}

/// The eight [`LaneDot`](super::LaneDot) lanes of `Σ_p q[p]·x[p]` and of `Σ_p x[p]` over a block
/// of 32 values (products first, then the lane sums: a shape the portable path vectorises).
#[inline(always)]
pub(super) fn lanes32<T: Copy + Into<i32>>(q: &[T; 32], x: &[i8; 32]) -> ([i32; 8], [i32; 8]) {
    let mut prod = [0i32; 32];
    for p in 0..32 {
        prod[p] = q[p].into() * x[p] as i32;
    }
    let lane = |v: &[i32; 32], l: usize| (v[4 * l] + v[4 * l + 1]) + (v[4 * l + 2] + v[4 * l + 3]);
    let xs: [i32; 32] = std::array::from_fn(|p| x[p] as i32);
    (
        std::array::from_fn(|l| lane(&prod, l)),
        std::array::from_fn(|l| lane(&xs, l)),
    )
}

/// The [`LaneDot`](super::LaneDot) of a 32-value type with a minimum (Q4_1, Q5_1) against
/// Q8_0: lanes `(Σ q·x, −Σ x)` ([`lanes32`]); with [`min_block_scales`] `(d·d_x, m·d_x)`,
/// `lane_vec_dot`'s `acc − acc_min` adds the minimum term `m·d_x·Σ x`.
#[inline(always)]
pub(super) fn min_block_lanes(levels: &[u8; 32], x: &super::BlockQ8_0) -> ([i32; 8], [i32; 8]) {
    let (qx, sx) = lanes32(levels, &x.qs);
    (qx, sx.map(|v| -v))
}

/// The scales `(d·d_x, m·d_x)` that go with [`min_block_lanes`].
#[inline(always)]
pub(super) fn min_block_scales(d: half::f16, m: half::f16, x: &super::BlockQ8_0) -> (f32, f32) {
    let dx = super::f16_as_f32(x.d);
    (super::f16_as_f32(d) * dx, super::f16_as_f32(m) * dx)
}

/// Lane `l` = `bsums[2l]·w[2l] + bsums[2l+1]·w[2l+1]`: the 16 activation sums weighted per
/// sub-block of 16, in [`LaneDot`](super::LaneDot) lanes (what `vpmaddwd` of the sums makes).
#[inline(always)]
pub(super) fn bsum_lanes(bsums: &[i16; 16], w: impl Fn(usize) -> i32) -> [i32; 8] {
    std::array::from_fn(|l| bsums[2 * l] as i32 * w(2 * l) + bsums[2 * l + 1] as i32 * w(2 * l + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.6, -8),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    #[test]
    fn scales_mins_k4_equals_get_scale_min_k4_on_every_byte_pattern() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let q: [u8; 12] = std::array::from_fn(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            });
            let (sc, m) = scales_mins_k4(&q);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), get_scale_min_k4(j, &q), "{q:?} j={j}");
            }
        }
    }

    #[test]
    fn scale_packing_round_trips_through_get_scale_min_k4() {
        // Scales and mins whose levels cover 0..63, so every bit position of the packing is used.
        let scales: [f32; 8] = std::array::from_fn(|j| 1.0 + 9.0 * j as f32);
        let mins: [f32; 8] = std::array::from_fn(|j| 64.0 - 9.0 * j as f32);
        let (packed, d, dmin) = pack_scales_k4(&scales, &mins);
        let (sc, m) = scales_mins_k4(&packed);
        for j in 0..8 {
            assert_eq!(
                sc[j] as i32,
                nearest_int(63.0 / 64.0 * scales[j]).min(63),
                "scale {j}"
            );
            assert_eq!(
                m[j] as i32,
                nearest_int(63.0 / 64.0 * mins[j]).min(63),
                "min {j}"
            );
        }
        assert_eq!((d, dmin), (64.0 / 63.0, 64.0 / 63.0));
    }
}
