//! Low-precision attention (`nn::attention_lowp`, `kernels::iattn`): the integer tile of every
//! path this CPU has equals the scalar reference bit for bit; every path's output is within
//! 10⁻⁴ relative L2 of the scalar path's; and the output is within the stated bound of the f32
//! `nn::attention` on layernormed Gaussian Q/K/V, on peaked attention, and with the vision mask of
//! one and four tiles (pad queries see only real keys; rows with no visible key get zeros).

mod common;

use std::ops::Range;

use common::rnd;
use mllama::kernels::iattn::{igemm_pairs, pair, QMAX};
use mllama::kernels::{with_path, Path};
use mllama::nn::{attention_lowp, AttnPrecision, Heads, KeysValues, Mask};

/// Relative L2 bound of `Int16` against f32 (the per-layer budget is ~2·10⁻³).
const BOUND: f64 = 2e-3;

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut e, mut t) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        e += (*x as f64 - *y as f64).powi(2);
        t += (*y as f64).powi(2);
    }
    (e / t.max(1e-30)).sqrt()
}

/// `n` rows of `dim` Gaussian values (Box–Muller on `rnd`), each layernormed (mean 0, variance 1).
fn ln_gauss(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let u = rnd(2 * n * dim, seed);
    let mut x: Vec<f32> = u
        .chunks_exact(2)
        .map(|p| {
            let a = ((p[0] + 1.0) * 0.5).max(1e-7) as f64;
            let b = ((p[1] + 1.0) * 0.5) as f64;
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
        })
        .collect();
    for r in x.chunks_exact_mut(dim) {
        let m = r.iter().sum::<f32>() / dim as f32;
        let v = r.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / dim as f32;
        let s = 1.0 / (v + 1e-5).sqrt();
        r.iter_mut().for_each(|a| *a = (*a - m) * s);
    }
    x
}

/// Token-major `[n, heads·hd]` → head-major `[heads][n][hd]`.
fn head_major(x: &[f32], n: usize, heads: usize, hd: usize) -> Vec<f32> {
    let mut o = vec![0f32; x.len()];
    for t in 0..n {
        for h in 0..heads {
            o[(h * n + t) * hd..][..hd].copy_from_slice(&x[t * heads * hd + h * hd..][..hd]);
        }
    }
    o
}

struct Case {
    n: usize,
    heads: usize,
    hd: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    pad_query: Vec<bool>,
    real_keys: Vec<Range<usize>>,
}

/// `tiles` tiles of `tile` tokens of which the last `pad` are padding; `peak`: queries scaled by
/// 3 and every 97th key by 4 (a few large scores per row).
fn case(tiles: usize, tile: usize, pad: usize, heads: usize, peak: bool, seed: u64) -> Case {
    let (n, hd) = (tiles * tile, 80);
    let mut q = ln_gauss(n, heads * hd, seed);
    let mut k = ln_gauss(n, heads * hd, seed + 1);
    let v = ln_gauss(n, heads * hd, seed + 2);
    if peak {
        q.iter_mut().for_each(|x| *x *= 3.0);
        for (j, r) in k.chunks_exact_mut(heads * hd).enumerate() {
            if j % 97 == 5 {
                r.iter_mut().for_each(|x| *x *= 4.0);
            }
        }
    }
    let pad_query = (0..n).map(|i| i % tile >= tile - pad).collect();
    let real_keys = (0..tiles).map(|t| t * tile..(t + 1) * tile - pad).collect();
    Case {
        n,
        heads,
        hd,
        q,
        k: head_major(&k, n, heads, hd),
        v: head_major(&v, n, heads, hd),
        pad_query,
        real_keys,
    }
}

fn run(c: &Case, mask: Mask<'_>, prec: AttnPrecision, path: Path) -> Vec<f32> {
    let mut out = vec![f32::NAN; c.q.len()];
    let kv = KeysValues::new(&c.k, &c.v, c.n, c.n);
    let heads = Heads::new(c.heads, c.heads, c.hd);
    with_path(path, || {
        attention_lowp(&c.q, kv, heads, mask, &mut out, prec)
    });
    out
}

fn vision(c: &Case) -> Mask<'_> {
    Mask::Vision {
        pad_query: &c.pad_query,
        real_keys: &c.real_keys,
    }
}

#[test]
fn integer_tile_is_bit_exact_on_every_path() {
    let q = QMAX as i32;
    for (m, n, kp) in [
        (1, 1, 1),
        (8, 32, 40),
        (13, 37, 64),
        (24, 96, 3),
        (5, 80, 17),
    ] {
        let mk = |len: usize, seed: u64| -> Vec<i32> {
            rnd(2 * len, seed)
                .chunks_exact(2)
                .enumerate()
                .map(|(i, p)| {
                    // Every 11th value at the bound, the rest uniform in ±QMAX.
                    let f = |x: f32, s: i32| {
                        if i % 11 == 0 {
                            s * q
                        } else {
                            (x * QMAX).round() as i32
                        }
                    };
                    pair(f(p[0], 1) as i16, f(p[1], -1) as i16)
                })
                .collect()
        };
        let (a, b) = (mk(m * kp, 3 + m as u64), mk(n * kp, 7 + n as u64));
        // The plain i64 sums.
        let want: Vec<i32> = (0..m * n)
            .map(|t| {
                let (i, j) = (t / n, t % n);
                (0..kp)
                    .map(|p| {
                        let (x, y) = (a[i * kp + p], b[j * kp + p]);
                        (x as i16 as i64) * (y as i16 as i64)
                            + ((x >> 16) as i16 as i64) * ((y >> 16) as i16 as i64)
                    })
                    .sum::<i64>() as i32
            })
            .collect();
        for path in Path::available() {
            assert_eq!(
                igemm_pairs(path, m, n, kp, &a, &b),
                want,
                "{path} {m}×{n}×{kp}"
            );
        }
    }
}

#[test]
fn every_path_agrees_with_scalar() {
    let c = case(2, 150, 7, 2, false, 11);
    let p = case(1, 300, 7, 2, true, 12);
    for c in [&c, &p] {
        let want = run(c, vision(c), AttnPrecision::Int16, Path::Scalar);
        for path in Path::available() {
            let got = run(c, vision(c), AttnPrecision::Int16, path);
            let e = rel_l2(&got, &want);
            assert!(e <= 1e-4, "{path}: {e:.2e} from scalar");
        }
    }
}

/// Relative L2 of `Int16` against f32 on the active path.
fn fidelity(c: &Case, mask: Mask<'_>) -> f64 {
    let path = mllama::kernels::active_path();
    let want = run(c, mask, AttnPrecision::F32, path);
    let got = run(c, mask, AttnPrecision::Int16, path);
    // Same treatment of rows with no visible key: exactly zero in both.
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(*w == 0.0, *g == 0.0);
    }
    rel_l2(&got, &want)
}

#[test]
fn close_to_f32_on_vision_masks() {
    // One tile of 1608 (1601 real) and four smaller tiles (pad queries see only real keys).
    for (tiles, tile, peak) in [
        (1, 1608, false),
        (1, 1608, true),
        (4, 408, false),
        (4, 408, true),
    ] {
        let c = case(tiles, tile, 7, 2, peak, 21 + tiles as u64);
        let e = fidelity(&c, vision(&c));
        eprintln!("{tiles} × {tile} peak {peak}: rel L2 {e:.2e}");
        assert!(e < BOUND, "{tiles} tiles of {tile}, peak {peak}: {e:.2e}");
    }
}

#[test]
fn rows_without_keys_are_zero_and_other_masks_hold() {
    let c = case(1, 300, 0, 2, false, 31);
    // Row i sees keys 0..i (row 0: none), every third row also 200..300.
    let rows: Vec<Vec<Range<usize>>> = (0..c.n)
        .map(|i| {
            let mut r = Vec::new();
            if i > 0 {
                r.push(0..i.min(200));
            }
            if i % 3 == 0 {
                r.push(200..300);
            }
            r
        })
        .collect();
    let mut rows = rows;
    rows[0].clear();
    for mask in [Mask::None, Mask::Causal { offset: 0 }, Mask::Rows(&rows)] {
        let e = fidelity(&c, mask);
        assert!(e < BOUND, "{mask:?}: {e:.2e}");
    }
    let out = run(&c, Mask::Rows(&rows), AttnPrecision::Int16, Path::Scalar);
    assert!(out[..c.heads * c.hd].iter().all(|&x| x == 0.0));
}

/// A head dimension the integer tiles cannot take (odd, or above 128, as an unusual file may
/// declare) runs the f32 attention instead of panicking: the same bits as `attention`.
#[test]
fn unsupported_head_dims_fall_back_to_f32() {
    for (heads, hd) in [(2, 5), (1, 130)] {
        let n = 9;
        let q = rnd(n * heads * hd, 1);
        let (k, v) = (rnd(n * heads * hd, 2), rnd(n * heads * hd, 3));
        let kv = KeysValues::new(&k, &v, n, n);
        let h = Heads::new(heads, heads, hd);
        let (mut a, mut b) = (vec![0f32; q.len()], vec![1f32; q.len()]);
        mllama::nn::attention(&q, kv, h, Mask::None, &mut a);
        attention_lowp(&q, kv, h, Mask::None, &mut b, AttnPrecision::Int16);
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "hd {hd}");
    }
}
