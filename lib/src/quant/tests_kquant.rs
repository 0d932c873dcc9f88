//! Unit tests of the legacy and K-quant block formats that need no fixture: bad input, the exact
//! integer parts of the dots, round trips. (Byte-exactness against ggml: the root package's
//! `tests/kquant_crosscheck.rs`.)

use half::f16;

use super::tests::randn;
use super::*;

fn zeroed<B: QuantBlock>(n: usize) -> Vec<B> {
    vec![B::zeroed(); n]
}

/// Quantize → dequantize error of a smooth N(0, 1) row, relative to its RMS.
fn round_trip_rel_rms<B: QuantBlock>(n: usize) -> f64 {
    let x = randn(n, 7, 1.0);
    let mut b = zeroed::<B>(n / B::BLOCK);
    quantize_row(&x, &mut b);
    let mut y = vec![0f32; n];
    dequantize_row(&b, &mut y);
    let err: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (err / den).sqrt()
}

#[test]
fn round_trip_error_shrinks_with_bits() {
    let q41 = round_trip_rel_rms::<q4_1::BlockQ4_1>(4096);
    let q50 = round_trip_rel_rms::<q5_0::BlockQ5_0>(4096);
    let q51 = round_trip_rel_rms::<q5_1::BlockQ5_1>(4096);
    let q4k = round_trip_rel_rms::<q4_k::BlockQ4_K>(4096);
    let q5k = round_trip_rel_rms::<q5_k::BlockQ5_K>(4096);
    let q6k = round_trip_rel_rms::<q6_k::BlockQ6_K>(4096);
    let q8k = round_trip_rel_rms::<q8_k::BlockQ8_K>(4096);
    let q40 = round_trip_rel_rms::<BlockQ4_0>(4096);
    // 4 bits ≈ 10 % of the RMS, each further bit about halves it; K-quants beat their legacy
    // counterparts of the same bit count.
    assert!(q4k < q40 && q4k < 0.11, "q4_K {q4k} q4_0 {q40}");
    assert!(q41 < 0.12 && q50 < 0.07 && q51 < 0.06, "{q41} {q50} {q51}");
    assert!(q5k < q4k / 1.7 && q5k < q50, "q5_K {q5k}");
    assert!(q6k < q5k / 1.7, "q6_K {q6k}");
    assert!(q8k < q6k / 2.0, "q8_K {q8k} q6_K {q6k}");
}

/// Reference integer parts from the value levels alone (no `bsums`, no packed scales).
#[test]
fn k_dot_integer_parts_are_exact() {
    let n = 256 * 5;
    let w = randn(n, 11, 0.02);
    let mut x = randn(n, 12, 3.0);
    x[77] = 40.0; // an outlier, as activations have
    let mut xq = zeroed::<q8_k::BlockQ8_K>(n / 256);
    q8_k::quantize_row_ref(&x, &mut xq);
    for b in &xq {
        for k in 0..16 {
            let s: i32 = b.qs[16 * k..16 * k + 16].iter().map(|&q| q as i32).sum();
            assert_eq!(b.bsums[k] as i32, s);
        }
    }

    let mut w4 = zeroed::<q4_k::BlockQ4_K>(n / 256);
    q4_k::quantize_row_ref(&w, &mut w4);
    let mut w5 = zeroed::<q5_k::BlockQ5_K>(n / 256);
    q5_k::quantize_row_ref(&w, &mut w5);
    let mut w6 = zeroed::<q6_k::BlockQ6_K>(n / 256);
    q6_k::quantize_row_ref(&w, &mut w6);
    for (b, xb) in xq.iter().enumerate() {
        let xsub = |j: usize, len: usize| -> i64 {
            xb.qs[len * j..len * j + len]
                .iter()
                .map(|&q| q as i64)
                .sum()
        };
        // Q4_K / Q5_K: Σ_j sc_j Σ q·x and Σ_j m_j Σ x, from the levels.
        let check_k4 = |sc: [u8; 8], m: [u8; 8], q: [u8; 256], got: (i32, i32)| {
            let (mut isum, mut msum) = (0i64, 0i64);
            for j in 0..8 {
                let s: i64 = (32 * j..32 * j + 32)
                    .map(|i| q[i] as i64 * xb.qs[i] as i64)
                    .sum();
                isum += sc[j] as i64 * s;
                msum += m[j] as i64 * xsub(j, 32);
            }
            assert_eq!((got.0 as i64, got.1 as i64), (isum, msum));
        };
        let (sc, m) = w4[b].scales_mins();
        check_k4(sc, m, w4[b].levels(), q4_k::block_isums(&w4[b], xb));
        let (sc, m) = w5[b].scales_mins();
        check_k4(sc, m, w5[b].levels(), q5_k::block_isums(&w5[b], xb));
        let q = w6[b].levels();
        let isum: i64 = (0..256)
            .map(|i| w6[b].scales[i / 16] as i64 * q[i] as i64 * xb.qs[i] as i64)
            .sum();
        assert_eq!(q6_k::block_isum(&w6[b], xb) as i64, isum);
    }

    // The lanes split those integers exactly: Σ lanes = ggml's sums, for every type.
    for b in 0..xq.len() {
        let sum = |l: [i32; 8]| l.iter().map(|&v| v as i64).sum::<i64>();
        let (i, m) = w4[b].lanes(&xq[b]);
        let (gi, gm) = q4_k::block_isums(&w4[b], &xq[b]);
        assert_eq!((sum(i), sum(m)), (gi as i64, gm as i64));
        let (i, m) = w5[b].lanes(&xq[b]);
        let (gi, gm) = q5_k::block_isums(&w5[b], &xq[b]);
        assert_eq!((sum(i), sum(m)), (gi as i64, gm as i64));
        let (i, m) = w6[b].lanes(&xq[b]);
        assert_eq!(
            (sum(i), m),
            (q6_k::block_isum(&w6[b], &xq[b]) as i64, [0; 8])
        );
        // Lane l holds exactly the values p with (p mod 32) / 4 == l.
        let (sc, _) = w4[b].scales_mins();
        let q = w4[b].levels();
        for (l, &got) in i4_lanes(&w4[b], &xq[b]).iter().enumerate() {
            let want: i64 = (0..256)
                .filter(|p| (p % 32) / 4 == l)
                .map(|p| sc[p / 32] as i64 * q[p] as i64 * xq[b].qs[p] as i64)
                .sum();
            assert_eq!(got as i64, want);
        }
    }

    // The dot is the documented f32 combination of the lanes.
    let (mut acc, mut accm) = ([0f32; 8], [0f32; 8]);
    for b in 0..xq.len() {
        let (i, m) = w4[b].lanes(&xq[b]);
        let (d, dm) = (w4[b].d.to_f32() * xq[b].d, w4[b].dmin.to_f32() * xq[b].d);
        for l in 0..8 {
            acc[l] += d * i[l] as f32;
            accm[l] += dm * m[l] as f32;
        }
    }
    let red = |a: [f32; 8]| ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    assert_eq!(
        q4_k::vec_dot(&w4, &xq).to_bits(),
        (red(acc) - red(accm)).to_bits()
    );
}

/// The scale-term lanes of a Q4_K block pair.
fn i4_lanes(w: &q4_k::BlockQ4_K, x: &q8_k::BlockQ8_K) -> [i32; 8] {
    w.lanes(x).0
}

#[test]
fn k_dot_extremes_do_not_overflow() {
    // Largest levels and scales against ±127/−128 activations: the i32 sums stay exact.
    let w4 = q4_k::BlockQ4_K {
        d: f16::ONE,
        dmin: f16::ONE,
        scales: [0xFF; 12],
        qs: [0xFF; 128],
    };
    let mut x = q8_k::BlockQ8_K {
        d: 1.0,
        qs: [-128; 256],
        bsums: [-2048; 16],
    };
    assert_eq!(
        q4_k::block_isums(&w4, &x),
        (-63 * 15 * 128 * 256, -63 * 2048 * 16)
    );
    let w6 = q6_k::BlockQ6_K {
        ql: [0; 128],
        qh: [0; 64],
        scales: [-128; 16],
        d: f16::ONE,
    };
    // levels 0 − 32 = −32, scales −128: (−128)·(−32)·(−128) per value
    assert_eq!(q6_k::block_isum(&w6, &x), -128 * 32 * 128 * 256);
    x.qs = [127; 256];
    assert_eq!(q6_k::block_isum(&w6, &x), 128 * 32 * 127 * 256); // (−128)·(−32)·127
}

/// Blocks with NaN, inf and huge f16 scales and random bytes: dequantization and the dots give
/// NaN/inf where ggml would and never panic; quantizing NaN/inf never panics either.
#[test]
fn absurd_scales_and_inputs_do_not_panic() {
    let specials = [
        f16::NAN,
        f16::INFINITY,
        f16::NEG_INFINITY,
        f16::MAX,
        f16::MIN_POSITIVE,
    ];
    let mut rnd = randn(4096, 3, 100.0).into_iter().map(|v| v.to_bits() as u8);
    let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rnd.next().unwrap()).collect() };
    let mut out = vec![0f32; 256];
    for &s in &specials {
        let mut b4: q4_k::BlockQ4_K = bytemuck::pod_read_unaligned(&bytes(144));
        b4.d = s;
        b4.scales = [0x3F; 12]; // non-zero scales, so d·sc keeps the special value
        q4_k::dequantize_row(&[b4], &mut out);
        if s.is_nan() {
            assert!(out.iter().all(|v| v.is_nan()));
        }
        if s.is_infinite() {
            assert!(out.iter().all(|v| !v.is_finite()));
        }
        let mut b5: q5_k::BlockQ5_K = bytemuck::pod_read_unaligned(&bytes(176));
        b5.dmin = s;
        q5_k::dequantize_row(&[b5], &mut out);
        let mut b6: q6_k::BlockQ6_K = bytemuck::pod_read_unaligned(&bytes(210));
        b6.d = s;
        q6_k::dequantize_row(&[b6], &mut out);
        if s.is_nan() {
            assert!(out.iter().all(|v| v.is_nan()));
        }
        let mut x = zeroed::<q8_k::BlockQ8_K>(1);
        q8_k::quantize_row_ref(&randn(256, 5, 1.0), &mut x);
        // A non-finite scale gives a non-finite dot (inf · a zero lane is NaN).
        assert_eq!(q6_k::vec_dot(&[b6], &x).is_finite(), s.is_finite());
        let _ = (q4_k::vec_dot(&[b4], &x), q5_k::vec_dot(&[b5], &x));

        let mut out32 = [0f32; 32];
        let mut a: q4_1::BlockQ4_1 = bytemuck::pod_read_unaligned(&bytes(20));
        a.m = s;
        q4_1::dequantize_row(&[a], &mut out32);
        assert_eq!(out32.iter().all(|v| v.is_nan()), s.is_nan());
        let mut a: q5_0::BlockQ5_0 = bytemuck::pod_read_unaligned(&bytes(22));
        a.d = s;
        q5_0::dequantize_row(&[a], &mut out32);
        let mut a: q5_1::BlockQ5_1 = bytemuck::pod_read_unaligned(&bytes(24));
        a.d = s;
        q5_1::dequantize_row(&[a], &mut out32);
    }
    let mut q8: q8_k::BlockQ8_K = bytemuck::pod_read_unaligned(&bytes(292));
    q8.d = f32::NAN;
    q8_k::dequantize_row(&[q8], &mut out);
    assert!(out.iter().all(|v| v.is_nan()));

    // Quantizing NaN/inf/huge values: undefined in ggml, but no panic here.
    let mut x = randn(256, 9, 1.0);
    x[3] = f32::NAN;
    x[100] = f32::INFINITY;
    x[200] = -3e38;
    let _ = (
        q4_k::BlockQ4_K::quantize(&x),
        q5_k::BlockQ5_K::quantize(&x),
        q6_k::BlockQ6_K::quantize(&x),
        q8_k::BlockQ8_K::quantize(&x),
        q4_1::BlockQ4_1::quantize(&x[..32]),
        q5_0::BlockQ5_0::quantize(&x[..32]),
        q5_1::BlockQ5_1::quantize(&x[..32]),
        q8_1::BlockQ8_1::quantize(&x[..32]),
    );
}

#[test]
fn truncated_data_is_an_error_not_a_panic() {
    let data = vec![0u8; 144 * 2];
    let mut out = vec![0f32; 512];
    assert!(q4_k::dequantize_bytes_to(&data, &mut out).is_ok());
    let e = q4_k::dequantize_bytes_to(&data[..287], &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: 287 bytes given for 512 values (288 needed)"
    );
    assert!(q4_k::dequantize_bytes_to(&data, &mut out[..300]).is_err());
    assert!(q6_k::dequantize_bytes_to(&data[..209], &mut out[..256]).is_err());
    assert!(q5_k::dequantize_bytes_to(&data[..175], &mut out[..256]).is_err());
    assert!(q8_k::dequantize_bytes_to(&data[..200], &mut out[..256]).is_err());
    assert!(q4_1::dequantize_bytes_to(&data[..19], &mut out[..32]).is_err());
    assert!(q5_0::dequantize_bytes_to(&data[..21], &mut out[..32]).is_err());
    assert!(q5_1::dequantize_bytes_to(&data[..23], &mut out[..32]).is_err());
    assert!(q8_1::dequantize_bytes_to(&data[..35], &mut out[..32]).is_err());
    // Unaligned data at an odd offset decodes like aligned data.
    let x = randn(256, 4, 1.0);
    let b = q6_k::BlockQ6_K::quantize(&x);
    let mut buf = vec![0u8; 211];
    buf[1..].copy_from_slice(bytemuck::bytes_of(&b));
    let (mut u, mut a) = (vec![0f32; 256], vec![0f32; 256]);
    q6_k::dequantize_bytes_to(&buf[1..], &mut u).unwrap();
    q6_k::dequantize_row(&[b], &mut a);
    assert_eq!(u, a);
    // Row functions with too few blocks or too short an output write what fits.
    let mut short = vec![7f32; 300];
    q6_k::dequantize_row(&[b, b], &mut short);
    assert_eq!(&short[..256], &a[..]);
    assert_eq!(short[256], 7.0);
    let mut none: Vec<q4_k::BlockQ4_K> = Vec::new();
    q4_k::quantize_row_ref(&x[..100], &mut none);
}

/// ggml's integer sum of a Q4_1/Q5_1 block (`vec_dot_q4_1_q8_1`/`q5_1`'s `sumi`: low nibbles
/// with `y[j]`, high ones with `y[j + 16]`, fifth bits from `qh`) or, with `offset` 16, of a Q5_0
/// block (`vec_dot_q5_0_q8_0`), from the packed bytes.
fn ggml_isum(qs: &[u8; 16], qh: Option<[u8; 4]>, offset: i32, y: &[i8; 32]) -> i32 {
    let qh = qh.map_or(0, u32::from_le_bytes);
    let mut sumi = 0;
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as i32;
        let xh1 = ((qh >> (j + 12)) & 0x10) as i32;
        let x0 = ((qs[j] & 0x0F) as i32 | xh0) - offset;
        let x1 = ((qs[j] >> 4) as i32 | xh1) - offset;
        sumi += x0 * y[j] as i32 + x1 * y[j + 16] as i32;
    }
    sumi
}

#[test]
fn legacy_dots_follow_the_lane_order() {
    // 11 blocks (not a multiple of 8: no block order is involved any more).
    let nb = 11;
    let n = 32 * nb;
    let mut w = randn(n, 21, 0.05);
    w[5] = 0.4; // an outlier: a large minimum next to small levels
    let x = randn(n, 22, 2.0);
    let mut x8 = zeroed::<BlockQ8_0>(nb);
    quantize_row(&x, &mut x8);
    let mut w50 = zeroed::<q5_0::BlockQ5_0>(nb);
    q5_0::quantize_row_ref(&w, &mut w50);
    let mut w41 = zeroed::<q4_1::BlockQ4_1>(nb);
    q4_1::quantize_row_ref(&w, &mut w41);
    let mut w51 = zeroed::<q5_1::BlockQ5_1>(nb);
    q5_1::quantize_row_ref(&w, &mut w51);

    // The definition, from each block's dequantized values (levels (y − m)/d) and the
    // activations' integers: lane l of a block holds its values 4l..4l+4.
    let lanes_of = |y: [f32; 32], d: f16, m: f16, xb: &BlockQ8_0| {
        let (mut i, mut mm) = ([0i32; 8], [0i32; 8]);
        for p in 0..32 {
            let q = ((y[p] - m.to_f32()) / d.to_f32()).round() as i32;
            i[p / 4] += q * xb.qs[p] as i32;
            mm[p / 4] -= xb.qs[p] as i32;
        }
        (i, mm)
    };
    let deq = |f: &dyn Fn(&mut [f32])| {
        let mut y = [0f32; 32];
        f(&mut y);
        y
    };
    let red = |a: [f32; 8]| ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    let sum = |l: [i32; 8]| l.iter().sum::<i32>();
    let (mut a50, mut a41, mut m41, mut a51, mut m51) =
        ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
    for b in 0..nb {
        let xb = &x8[b];
        let dx = xb.d.to_f32();

        // Q5_0: value (q − 16)·d, no minimum.
        let y = deq(&|o| w50[b].dequantize(o));
        let (want, _) = lanes_of(y, w50[b].d, f16::ZERO, xb);
        assert_eq!(w50[b].lanes(xb), (want, [0; 8]), "q5_0 block {b}");
        let g = ggml_isum(&w50[b].qs, Some(w50[b].qh), 16, &xb.qs);
        assert_eq!(sum(want), g);
        let d = w50[b].d.to_f32() * dx;
        for l in 0..8 {
            a50[l] += d * want[l] as f32;
        }

        // Q4_1 / Q5_1: value q·d + m; minimum lanes −Σ x.
        let y = deq(&|o| w41[b].dequantize(o));
        let want = lanes_of(y, w41[b].d, w41[b].m, xb);
        assert_eq!(w41[b].lanes(xb), want, "q4_1 block {b}");
        assert_eq!(sum(want.0), ggml_isum(&w41[b].qs, None, 0, &xb.qs));
        let (d, dm) = (w41[b].d.to_f32() * dx, w41[b].m.to_f32() * dx);
        for l in 0..8 {
            a41[l] += d * want.0[l] as f32;
            m41[l] += dm * want.1[l] as f32;
        }

        let y = deq(&|o| w51[b].dequantize(o));
        let want = lanes_of(y, w51[b].d, w51[b].m, xb);
        assert_eq!(w51[b].lanes(xb), want, "q5_1 block {b}");
        let g = ggml_isum(&w51[b].qs, Some(w51[b].qh), 0, &xb.qs);
        assert_eq!(sum(want.0), g);
        let (d, dm) = (w51[b].d.to_f32() * dx, w51[b].m.to_f32() * dx);
        for l in 0..8 {
            a51[l] += d * want.0[l] as f32;
            m51[l] += dm * want.1[l] as f32;
        }
    }
    // The dots are the documented f32 combination of the lanes: one accumulator per lane across
    // all blocks, reduced once; the minimum lanes subtracted.
    assert_eq!(q5_0::vec_dot(&w50, &x8).to_bits(), red(a50).to_bits());
    assert_eq!(
        q4_1::vec_dot(&w41, &x8).to_bits(),
        (red(a41) - red(m41)).to_bits()
    );
    assert_eq!(
        q5_1::vec_dot(&w51, &x8).to_bits(),
        (red(a51) - red(m51)).to_bits()
    );
}
