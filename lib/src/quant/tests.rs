use super::*;

/// Deterministic pseudo-random f32s (xorshift), roughly N(0, scale) shaped.
pub(crate) fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * scale * 1.7
        })
        .collect()
}

#[test]
fn q8_0_known_block() {
    let mut x = [0f32; 32];
    for (i, v) in x.iter_mut().enumerate() {
        *v = i as f32 - 16.0;
    }
    let b = BlockQ8_0::quantize(&x);
    let d = 16.0f32 / 127.0;
    assert_eq!(b.d, f16::from_f32(d));
    assert_eq!(b.qs[0], -127);
    assert_eq!(b.qs[16], 0);
    // 1 / d * 1 = 7.9375 → 8
    assert_eq!(b.qs[17], 8);
    let mut y = [0f32; 32];
    b.dequantize(&mut y);
    for (a, b) in x.iter().zip(&y) {
        assert!((a - b).abs() <= d / 2.0 + 16.0 * 1e-3, "{a} {b}");
    }
}

#[test]
fn q4_0_known_block() {
    let mut x = [0f32; 32];
    x[3] = -4.0; // largest magnitude, negative: d = -4 / -8 = 0.5
    x[5] = 2.0;
    x[20] = 1.25;
    let b = BlockQ4_0::quantize(&x);
    assert_eq!(b.d.to_f32(), 0.5);
    let mut y = [0f32; 32];
    b.dequantize(&mut y);
    assert_eq!(y[3], -4.0);
    assert_eq!(y[5], 2.0);
    // 1.25 / 0.5 = 2.5 → trunc(2.5 + 8.5) = 11 → (11 − 8) · 0.5 = 1.5
    assert_eq!(y[20], 1.5);
    assert_eq!(y[0], 0.0);
}

#[test]
fn q4_0_positive_max_saturates_at_15() {
    let mut x = [0f32; 32];
    x[0] = 8.0; // d = -1; x / d + 8.5 = 0.5 → 0 → -8 · -1 = 8
    x[1] = -8.0; // -8 / -1 + 8.5 = 16.5 → clamp to 15 → 7 · -1 = -7
    let b = BlockQ4_0::quantize(&x);
    let mut y = [0f32; 32];
    b.dequantize(&mut y);
    assert_eq!(y[0], 8.0);
    assert_eq!(y[1], -7.0);
}

#[test]
fn zero_blocks() {
    let x = [0f32; 32];
    let b = BlockQ8_0::quantize(&x);
    assert_eq!(b.d.to_f32(), 0.0);
    assert!(b.qs.iter().all(|&q| q == 0));
    let b = BlockQ4_0::quantize(&x);
    assert!(b.qs.iter().all(|&q| q == 0x88));
}

#[test]
fn error_bounds_on_random_rows() {
    let x = randn(4096, 7, 1.0);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ] {
        let mut bytes = vec![0u8; ty.row_bytes(4096).unwrap() as usize];
        convert_f32(ty, &x, 4096, &mut bytes).unwrap();
        let mut y = vec![0f32; 4096];
        dequantize(ty, &bytes, &mut y).unwrap();
        let num: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        let bound = match ty {
            GgmlType::Q8_0 => 0.01,
            GgmlType::Q4_0 => 0.15,
            GgmlType::BF16 => 0.005,
            GgmlType::F16 => 0.001,
            _ => 0.0,
        };
        assert!(rel <= bound, "{ty}: relative error {rel}");
    }
}

#[test]
fn parallel_conversion_equals_serial() {
    let row = 256;
    let x = randn(row * 1024, 3, 2.0);
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::F16] {
        let rb = ty.row_bytes(row as u64).unwrap() as usize;
        let mut par = vec![0u8; rb * 1024];
        convert_f32(ty, &x, row, &mut par).unwrap();
        let mut ser = vec![0u8; rb * 1024];
        convert_rows(ty, &x, &mut ser);
        assert_eq!(par, ser);
        let mut a = vec![0f32; x.len()];
        dequantize(ty, &par, &mut a).unwrap();
        let mut b = vec![0f32; x.len()];
        dequantize_chunk(ty, &par, &mut b);
        assert_eq!(a, b);
    }
}

#[test]
fn conversion_refuses_bad_sizes() {
    let x = vec![1f32; 33];
    let mut out = vec![0u8; 100];
    let bad = |r: Result<_, Error>, arg: &str| match r {
        Err(Error::BadArgument { name, .. }) => assert_eq!(name, arg),
        other => panic!("expected a bad {arg}, got {other:?}"),
    };
    let unsupported = |r: Result<_, Error>, ty: &str| match r {
        Err(Error::Unsupported { what, .. }) => assert_eq!(what, ty),
        other => panic!("expected {ty} unsupported, got {other:?}"),
    };
    bad(convert_f32(GgmlType::Q8_0, &x, 33, &mut out), "row_len");
    bad(
        convert_f32(GgmlType::Q4_K, &x[..32], 32, &mut out),
        "row_len",
    );
    bad(convert_f32(GgmlType::Q8_0, &x[..32], 32, &mut out), "out");
    // K-types this crate does not store (Q4_K, Q5_K, Q6_K are in the table now).
    let mut q2k = vec![0u8; 84];
    unsupported(
        convert_f32(GgmlType::Q2_K, &[1f32; 256], 256, &mut q2k),
        "Q2_K",
    );
    let mut y = vec![0f32; 32];
    bad(dequantize(GgmlType::Q8_0, &[0u8; 33], &mut y), "data");
    bad(dequantize(GgmlType::Q8_0, &[0u8; 34], &mut y[..31]), "out");
    unsupported(
        dequantize(GgmlType::Q3_K, &[0u8; 110], &mut vec![0f32; 256]),
        "Q3_K",
    );
}

#[test]
fn round_half_away_matches_roundf() {
    let mut v = vec![
        0.5f32,
        -0.5,
        1.5,
        -1.5,
        2.5,
        0.49999997,
        -0.49999997,
        126.5,
        -127.0,
        0.0,
        -0.0,
        1e-30,
        // Beyond callers' range (a subnormal scale's inverse is inf): saturating, no overflow.
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        3e9,
        -3e9,
        2147483520.0,
        -2147483648.0,
    ];
    v.extend(randn(10_000, 11, 60.0));
    let mut x = 0.0f32;
    while x < 128.0 {
        v.push(x);
        v.push(-x);
        x += 0.125;
    }
    for &x in &v {
        assert_eq!(round_half_away(x), x.round() as i32, "{x}");
    }
}

#[test]
fn f16_to_f32_is_exact_for_every_bit_pattern() {
    for bits in 0..=u16::MAX {
        let h = half::f16::from_bits(bits);
        let (a, b) = (crate::quant::f16_as_f32(h), h.to_f32());
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{bits:#06x}: {a} vs {b}"
        );
    }
}
