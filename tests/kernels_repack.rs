//! Repacked (row-interleaved) weight layouts: on every path this CPU has, the decode of a
//! repacked matrix equals the in-place scalar reference bit for bit (row counts that are not a
//! multiple of the group, odd counts, 1–4 and more activation rows, with and without bias), and
//! the rows read back from the repacked layout are the in-place rows.

mod common;

use common::rnd;
use mllama::kernels::tensor::Mat;
use mllama::kernels::{matmul_with, repack, with_path, Path, Regime, Scratch};
use mllama::quant::convert_f32;
use mllama::GgmlType;

fn make(ty: GgmlType, m: usize, k: usize, seed: u64) -> Mat {
    let wf = rnd(m * k, seed);
    let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
    convert_f32(ty, &wf, k, &mut bytes).unwrap();
    Mat::from_bytes(ty, m, k, &bytes)
}

fn run(path: Path, w: &Mat, bias: Option<&[f32]>, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.rows];
    let mut sc = Scratch::new();
    with_path(path, || {
        matmul_with(w, bias, x, n, &mut y, &mut sc, Regime::Decode)
    });
    y
}

/// The types with a repacked layout.
fn repack_types() -> Vec<GgmlType> {
    [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
    ]
    .into_iter()
    .filter(|&t| repack::supports(t))
    .collect()
}

/// Σ|w·x| per output (the scale of a dot product's rounding error).
fn magnitudes(w: &Mat, x: &[f32], n: usize) -> Vec<f64> {
    let (m, k) = (w.rows, w.cols);
    let mut row = vec![0f32; k];
    let mut mag = vec![0f64; n * m];
    for j in 0..m {
        w.row_to_f32(j, &mut row);
        for i in 0..n {
            mag[i * m + j] = row
                .iter()
                .zip(&x[i * k..][..k])
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
        }
    }
    mag
}

/// Every layout but the ×16 ones (Q4_K, Q5_K, Q6_K) and Q4_1 ×8 computes in the in-place order:
/// bit-exact with the in-place scalar decode on every path. Those have their own f32 order: every path
/// bit-exact with the twin (the scalar path on the repacked matrix), the twin within 1e-5 of
/// Σ|w·x| of the in-place decode.
#[test]
fn repacked_decode_is_bit_exact_with_in_place_scalar_on_every_path() {
    let types = repack_types();
    assert!(types.contains(&GgmlType::Q4_0));
    for ty in types {
        let own_order = repack::group_rows(ty) == Some(repack::R16) || ty == GgmlType::Q4_1;
        let group = repack::group_rows(ty).unwrap();
        let ks: &[usize] = if ty.block_size() == 32 {
            &[32, 96, 256, 288, 544, 4096]
        } else {
            &[256, 512, 2304]
        };
        for (ki, &k) in ks.iter().enumerate() {
            for (mi, &m) in [8, 9, 15, 16, 23, 37, 64, 70].iter().enumerate() {
                let seed = (ki * 16 + mi) as u64;
                let plain = make(ty, m, k, seed);
                let mut packed = plain.clone();
                if m < group {
                    assert!(!packed.repack(true), "{ty} [{m}, {k}] repacked");
                    continue;
                }
                assert!(packed.repack(true), "{ty} [{m}, {k}] not repacked");
                assert!(plain.repacked().is_none());
                let bias = rnd(m, seed + 7);
                let ns: Vec<usize> = if own_order && k <= 512 {
                    (1..=17).collect()
                } else {
                    vec![1, 2, 3, 4, 5, 17]
                };
                for n in ns {
                    if n > 5 && k > 544 {
                        continue;
                    }
                    let x = rnd(n * k, 100 + seed * 31 + n as u64);
                    for b in [None, Some(&bias[..])] {
                        let in_place = run(Path::Scalar, &plain, b, &x, n);
                        let want = if own_order {
                            let twin = run(Path::Scalar, &packed, b, &x, n);
                            let mag = magnitudes(&plain, &x, n);
                            for (idx, ((&t, &r), &a)) in
                                twin.iter().zip(&in_place).zip(&mag).enumerate()
                            {
                                let err = (t as f64 - r as f64).abs();
                                assert!(
                                    err <= 1e-5 * a,
                                    "{ty} layout twin n={n} m={m} k={k} [{idx}]: {t} vs in place {r} (error {err:e}, scale {a:e})"
                                );
                            }
                            twin
                        } else {
                            in_place
                        };
                        for p in Path::available() {
                            let got = run(p, &packed, b, &x, n);
                            for (idx, (a, w)) in got.iter().zip(&want).enumerate() {
                                assert_eq!(
                                    a.to_bits(),
                                    w.to_bits(),
                                    "{p} repacked {ty} n={n} m={m} k={k} bias={} [{idx}]: {a} vs scalar {w}",
                                    b.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn repacked_rows_read_back_as_in_place_rows() {
    for ty in repack_types() {
        let k = 512;
        // Smaller than one group for some types (they stay in place), leftover rows for all.
        for m in [8, 13, 24, 37] {
            let plain = make(ty, m, k, m as u64);
            let mut packed = plain.clone();
            assert_eq!(packed.repack(false), m >= repack::group_rows(ty).unwrap());
            let (mut a, mut b) = (vec![0f32; k], vec![0f32; k]);
            for r in 0..m {
                plain.row_to_f32(r, &mut a);
                packed.row_to_f32(r, &mut b);
                assert_eq!(a, b, "{ty} [{m}, {k}] row {r}");
            }
        }
    }
}

#[test]
fn small_or_unsupported_matrices_stay_in_place() {
    // Fewer rows than one group, and a type without a repacked layout.
    let mut w = make(GgmlType::Q4_0, repack::R - 1, 64, 1);
    assert!(!w.repack(true));
    let mut f = Mat::from_f32(16, 4, &rnd(64, 2));
    assert!(!f.repack(true));
}
