//! The 12-bit integer GEMM of the vision tower (`kernels::igemm`, 12-bit levels): every path this CPU has
//! equals the scalar path bit for bit (f32 results included), the scalar path equals a plain
//! evaluation of the documented formula, and the result is close to the f32 product.

mod common;

use common::{rel_l2, rnd};
use mllama::kernels::igemm::{matmul_i16, matmul_i16_shared, I16Mat, Int16, Product, Width, KB};

const LEVELS: f32 = Int16::LEVELS;
use mllama::kernels::tensor::Mat;
use mllama::kernels::{matmul_with, with_path, Path, Regime, Scratch};
use mllama::quant::convert_f32;
use mllama::GgmlType;

fn make(ty: GgmlType, m: usize, k: usize, seed: u64) -> (Mat, Vec<f32>) {
    let wf = rnd(m * k, seed);
    let mut bytes = vec![0u8; ty.row_bytes(k as u64).unwrap() as usize * m];
    convert_f32(ty, &wf, k, &mut bytes).unwrap();
    let w = Mat::from_bytes(ty, m, k, &bytes);
    let mut back = vec![0f32; m * k];
    for (r, row) in back.chunks_exact_mut(k).enumerate() {
        w.row_to_f32(r, row);
    }
    (w, back)
}

fn run(path: Path, w: &I16Mat, bias: Option<&[f32]>, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.rows];
    with_path(path, || matmul_i16(w, bias, x, n, &mut y));
    y
}

/// Levels and scales of one row, block by block, as the module docs define them.
fn quantize(v: &[f32]) -> Vec<(Vec<i32>, f32)> {
    v.chunks(KB)
        .map(|b| {
            let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / LEVELS;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q = b.iter().map(|x| (x * id).round() as i32).collect();
            (q, d)
        })
        .collect()
}

/// `y[i, j] = ((0 + (da·dw)·s₀) + (da·dw)·s₁ …) + bias[j]`, plainly.
fn formula(w: &[f32], m: usize, k: usize, bias: Option<&[f32]>, x: &[f32], n: usize) -> Vec<f32> {
    let wq: Vec<_> = w.chunks_exact(k).map(quantize).collect();
    let mut y = vec![0f32; n * m];
    for i in 0..n {
        let xq = quantize(&x[i * k..(i + 1) * k]);
        for j in 0..m {
            let mut acc = 0f32;
            for ((qa, da), (qw, dw)) in xq.iter().zip(&wq[j]) {
                let s: i32 = qa.iter().zip(qw).map(|(a, b)| a * b).sum();
                acc += (da * dw) * s as f32;
            }
            y[i * m + j] = match bias {
                Some(b) => acc + b[j],
                None => acc,
            };
        }
    }
    y
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_path_equals_the_formula_bit_for_bit() {
    let paths = Path::available();
    assert!(paths.contains(&Path::Scalar));
    let mut cases = 0;
    for (ti, ty) in [GgmlType::F16, GgmlType::F32, GgmlType::Q8_0]
        .into_iter()
        .enumerate()
    {
        for &k in &[32, 96, 128, 300, 588] {
            if k % ty.block_size() != 0 {
                continue;
            }
            for &m in &[7, 32, 33, 70] {
                for &n in &[1, 3, 7, 8, 13] {
                    let seed = (ti * 1000 + k * 7 + m * 3 + n) as u64;
                    let (w, wf) = make(ty, m, k, seed);
                    let x: Vec<f32> = rnd(n * k, seed + 1).iter().map(|v| v * 3.0).collect();
                    let bias = rnd(m, seed + 2);
                    let q = I16Mat::new(&w);
                    assert_eq!((q.rows, q.cols), (m, k));
                    for b in [None, Some(&bias[..])] {
                        let want = bits(&formula(&wf, m, k, b, &x, n));
                        for &p in &paths {
                            let got = bits(&run(p, &q, b, &x, n));
                            assert!(
                                got == want,
                                "{p} {ty} m={m} k={k} n={n} bias={}",
                                b.is_some()
                            );
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 500);
}

/// Products sharing one input (`matmul_i16_shared`, the q/k/v of a vision layer) equal the
/// single products bit for bit, on every path, with and without bias, rows of any count.
#[test]
fn shared_input_products_equal_single_ones() {
    let (k, n) = (300, 13);
    let x = rnd(n * k, 9);
    let mats: Vec<(Mat, usize)> = [7, 40, 33]
        .iter()
        .enumerate()
        .map(|(i, &m)| (make(GgmlType::F16, m, k, 20 + i as u64).0, m))
        .collect();
    let qs: Vec<I16Mat> = mats.iter().map(|(w, _)| I16Mat::new(w)).collect();
    let bias = rnd(40, 5);
    for p in Path::available() {
        let single: Vec<Vec<f32>> = qs
            .iter()
            .enumerate()
            .map(|(i, q)| run(p, q, (i == 1).then_some(&bias[..]), &x, n))
            .collect();
        let mut ys: Vec<Vec<f32>> = qs.iter().map(|q| vec![f32::NAN; n * q.rows]).collect();
        let mut products: Vec<Product<'_, Int16>> = qs
            .iter()
            .zip(ys.iter_mut())
            .enumerate()
            .map(|(i, (w, y))| Product {
                w,
                bias: (i == 1).then_some(&bias[..]),
                y,
            })
            .collect();
        with_path(p, || matmul_i16_shared(&x, n, &mut products));
        for (a, b) in single.iter().zip(&ys) {
            assert_eq!(bits(a), bits(b), "{p}");
        }
    }
}

#[test]
fn zero_rows_and_blocks_give_zeros() {
    let (m, k, n) = (40, 256, 5);
    let w = Mat::from_f32(m, k, &vec![0.0; m * k]);
    let q = I16Mat::new(&w);
    let mut x = rnd(n * k, 3);
    x[..k].fill(0.0);
    for p in Path::available() {
        let y = run(p, &q, None, &x, n);
        assert!(y.iter().all(|&v| v == 0.0), "{p}");
    }
}

#[test]
fn close_to_the_f32_product() {
    let (m, k, n) = (96, 1280, 37);
    let (w, _) = make(GgmlType::F16, m, k, 11);
    let x = rnd(n * k, 12);
    let mut want = vec![0f32; n * m];
    matmul_with(
        &w,
        None,
        &x,
        n,
        &mut want,
        &mut Scratch::new(),
        Regime::Gemm,
    );
    let got = run(
        mllama::kernels::active_path(),
        &I16Mat::new(&w),
        None,
        &x,
        n,
    );
    let e = rel_l2(&got, &want);
    // 12-bit levels: about amax/2047/√12 per value, ~3e-4 relative on uniform data.
    assert!(e < 1e-3, "relative L2 {e}");
    assert!(e > 0.0);
}

#[test]
fn shape_mismatch_panics_with_a_message() {
    let q = I16Mat::new(&Mat::from_f32(4, 32, &[0.5; 128]));
    let r = std::panic::catch_unwind(|| {
        let mut y = vec![0f32; 4];
        matmul_i16(&q, None, &[0.0; 31], 1, &mut y)
    });
    assert!(r.is_err());
}

/// Speed at the 11B vision shapes against the f32 GEMM and the FMA peak (`cargo test --release
/// --test kernels_i16gemm -- --ignored --nocapture`); prints, asserts nothing about time.
#[test]
#[ignore]
fn speed_at_vision_shapes() {
    use std::time::Instant;
    let n = 6432;
    let path = mllama::kernels::active_path();
    let peak = mllama::kernels::probe::fma_peak_gflops(path, 0.5);
    for (m, k) in [(1280, 1280), (5120, 1280), (1280, 5120)] {
        let (w, _) = make(GgmlType::F16, m, k, 5);
        let q = I16Mat::new(&w);
        let x = rnd(n * k, 6);
        let mut y = vec![0f32; n * m];
        let flops = 2.0 * (n * m * k) as f64;
        let (mut ti, mut tf) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let t = Instant::now();
            matmul_i16(&q, None, &x, n, &mut y);
            ti = ti.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            matmul_with(&w, None, &x, n, &mut y, &mut Scratch::new(), Regime::Gemm);
            tf = tf.min(t.elapsed().as_secs_f64());
        }
        let (gi, gf) = (flops / ti / 1e9, flops / tf / 1e9);
        eprintln!(
            "{path} [{m}×{k}] n={n}: int16 {gi:.0} GFLOP/s = {:.2}× FMA peak, f32 {gf:.0} = {:.2}×, int16/f32 {:.2}",
            gi / peak,
            gf / peak,
            gi / gf
        );
    }
}
