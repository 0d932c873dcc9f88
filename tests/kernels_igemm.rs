//! The int8 GEMM (`kernels::igemm`): the scalar reference equals a direct implementation of the
//! numerics; every path this CPU has equals the scalar path bit for bit (floats included) over
//! odd and real shapes, with and without bias, F32 / F16 / Q8_0 sources and every block size; the
//! result is close to the f32 product; `I8Mat` sizes.

mod common;

use common::rnd;
use mllama::kernels::igemm::{matmul_i8, I8Mat, KB};
use mllama::kernels::tensor::Mat;
use mllama::kernels::{with_path, Path};
use mllama::quant::convert_f32;
use mllama::GgmlType;

fn make(ty: GgmlType, m: usize, k: usize, seed: u64) -> Mat {
    let wf = rnd(m * k, seed);
    let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
    convert_f32(ty, &wf, k, &mut bytes).unwrap();
    Mat::from_bytes(ty, m, k, &bytes)
}

fn run(path: Path, w: &I8Mat, bias: Option<&[f32]>, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.rows];
    with_path(path, || matmul_i8(w, bias, x, n, &mut y));
    y
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One block by the rule, written out again: `(d, q)`.
fn quantize(v: &[f32]) -> (f32, Vec<i32>) {
    let mut amax = 0f32;
    for x in v {
        if x.abs() > amax {
            amax = x.abs();
        }
    }
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    (d, v.iter().map(|x| (x * id).round() as i32).collect())
}

/// The numerics as plain loops: per-row block quantization of the dequantized weights and of the
/// activations, exact integer dots, `(((0 + t₀) + t₁) + …) + bias`.
fn direct(w: &Mat, kb: usize, bias: Option<&[f32]>, x: &[f32], n: usize) -> Vec<f32> {
    let (m, k) = (w.rows, w.cols);
    let nb = k.div_ceil(kb);
    let blocks = |row: &[f32]| -> Vec<(f32, Vec<i32>)> {
        (0..nb)
            .map(|b| {
                let mut v = vec![0f32; kb];
                let e = ((b + 1) * kb).min(k);
                v[..e - b * kb].copy_from_slice(&row[b * kb..e]);
                quantize(&v)
            })
            .collect()
    };
    let mut row = vec![0f32; k];
    let wq: Vec<_> = (0..m)
        .map(|j| {
            w.row_to_f32(j, &mut row);
            blocks(&row)
        })
        .collect();
    let mut y = vec![0f32; n * m];
    for i in 0..n {
        let xq = blocks(&x[i * k..(i + 1) * k]);
        for j in 0..m {
            let mut s = 0f32;
            for ((da, qa), (dw, qw)) in xq.iter().zip(&wq[j]) {
                let dot: i32 = qa.iter().zip(qw).map(|(a, b)| a * b).sum();
                s += (da * dw) * dot as f32;
            }
            y[i * m + j] = match bias {
                Some(b) => s + b[j],
                None => s,
            };
        }
    }
    y
}

#[test]
fn scalar_equals_the_direct_formula() {
    for (kb, ty, n, m, k) in [
        (KB, GgmlType::F32, 3, 7, 96),
        (KB, GgmlType::F16, 9, 33, 588),
        (32, GgmlType::Q8_0, 5, 20, 96),
        (64, GgmlType::F16, 8, 32, 200),
        (256, GgmlType::F32, 2, 40, 300),
        (KB, GgmlType::F32, 1, 3, 0),
    ] {
        let w = if k == 0 {
            Mat::from_f32(m, 0, &[])
        } else {
            make(ty, m, k, 11)
        };
        let mut x = rnd(n * k, 13);
        // A zero block and a zero row (scale 0).
        for v in x.iter_mut().take(k.min(40)) {
            *v = 0.0;
        }
        let bias = rnd(m, 17);
        let q = I8Mat::with_block(&w, kb);
        for b in [None, Some(&bias[..])] {
            let want = direct(&w, kb, b, &x, n);
            let got = run(Path::Scalar, &q, b, &x, n);
            assert_eq!(bits(&got), bits(&want), "kb {kb} {ty} {n}×{m}×{k}");
        }
    }
}

#[test]
fn every_path_equals_scalar_bit_for_bit() {
    let paths: Vec<Path> = Path::available()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect();
    for rows in [7, 32, 1280] {
        for k in [32usize, 96, 588, 1280] {
            for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0] {
                if ty == GgmlType::Q8_0 && !k.is_multiple_of(32) {
                    continue;
                }
                let w = I8Mat::new(&make(ty, rows, k, (rows * k) as u64));
                let bias = rnd(rows, 5);
                for n in [1, 3, 8, 33, 100] {
                    // The large shapes once per type (the scalar reference is slow under qemu).
                    if rows == 1280 && k == 1280 && n > 8 && ty != GgmlType::F16 {
                        continue;
                    }
                    let x = rnd(n * k, (n + k) as u64);
                    for b in [None, Some(&bias[..])] {
                        let want = bits(&run(Path::Scalar, &w, b, &x, n));
                        for &p in &paths {
                            let got = bits(&run(p, &w, b, &x, n));
                            assert!(
                                got == want,
                                "{p} vs scalar: {ty} n {n} rows {rows} k {k} bias {}",
                                b.is_some()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_block_size_on_every_path() {
    for kb in [32, 64, 128, 256] {
        for (n, m, k) in [(5, 40, 588), (17, 64, 256), (1, 3, 1000)] {
            let w = I8Mat::with_block(&make(GgmlType::F16, m, k, 3), kb);
            let x = rnd(n * k, 7);
            let bias = rnd(m, 9);
            let want = bits(&run(Path::Scalar, &w, Some(&bias), &x, n));
            for p in Path::available() {
                let got = bits(&run(p, &w, Some(&bias), &x, n));
                assert!(got == want, "{p} vs scalar: kb {kb} n {n} m {m} k {k}");
            }
        }
    }
}

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let u = rnd(2 * n, seed);
    u.chunks_exact(2)
        .map(|p| {
            let (a, b) = ((p[0] * 0.5 + 0.5).max(1e-7), p[1] * std::f32::consts::PI);
            (-2.0 * a.ln()).sqrt() * b.cos()
        })
        .collect()
}

#[test]
fn close_to_the_f32_product() {
    let (n, m, k) = (64, 96, 1280);
    let wf = gaussian(m * k, 21);
    let x = gaussian(n * k, 23);
    let w = Mat::from_f32(m, k, &wf);
    let mut want = vec![0f64; n * m];
    for i in 0..n {
        for j in 0..m {
            want[i * m + j] = (0..k)
                .map(|t| x[i * k + t] as f64 * wf[j * k + t] as f64)
                .sum();
        }
    }
    let norm: f64 = want.iter().map(|v| v * v).sum::<f64>().sqrt();
    for kb in [32, 64, 128, 256] {
        let y = run(Path::best(), &I8Mat::with_block(&w, kb), None, &x, n);
        let err: f64 = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let rel = err / norm;
        eprintln!("kb {kb}: relative L2 error vs f32 {rel:.2e}");
        // Two 8-bit roundings of Gaussian data (block maximum ≈ 3σ) give about 1e-2.
        assert!(rel < 1.2e-2, "kb {kb}: relative L2 {rel}");
    }
}

#[test]
fn i8mat_shapes_and_bytes() {
    for ty in [GgmlType::Q8_0, GgmlType::F16] {
        for (m, k) in [(7, 96), (32, 1280), (40, 64)] {
            let w = I8Mat::new(&make(ty, m, k, 1));
            assert_eq!((w.rows, w.cols, w.block()), (m, k, KB));
            // Rows padded to 32, blocks of KB bytes plus an f32 scale per row and block.
            let nb = k.div_ceil(KB);
            assert_eq!(
                w.nbytes(),
                m.next_multiple_of(32) * nb * (KB + 4),
                "{ty} {m}×{k}"
            );
        }
    }
}
