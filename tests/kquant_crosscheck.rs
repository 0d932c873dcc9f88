//! Our legacy and K-quant block formats against ggml's own quantizers, dequantizers and dots,
//! recorded by `scripts/kquant_oracle.py` in `tests/fixtures/kquant/` (see its README):
//! every stored block byte-identical to `quantize_row_<t>_ref`, every dequantized value
//! bit-identical to `dequantize_row_<t>` (f32 bits, so −0.0 counts), and the scalar dots
//! against the f64 sum of the dequantized operands.

use bytemuck::Zeroable;
use mllama::quant::{self, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_1, q8_k, QuantBlock};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

fn read(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/tests/fixtures/kquant/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

fn bytes(st: &SafeTensors, name: &str) -> (Vec<u8>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::U8, "{name}");
    (t.data().to_vec(), t.shape().to_vec())
}

/// Blocks stored at any alignment, read into properly aligned structs.
fn blocks<B: QuantBlock>(data: &[u8]) -> Vec<B> {
    let size = std::mem::size_of::<B>();
    assert_eq!(data.len() % size, 0);
    data.chunks_exact(size)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One type's functions under test.
struct Codec<B> {
    name: &'static str,
    quantize: fn(&[f32], &mut [B]),
    dequantize: fn(&[B], &mut [f32]),
}

/// Checks one type against its fixture file; returns (blocks compared, of which identical).
fn check<B: QuantBlock>(c: &Codec<B>) -> usize {
    let inputs = read("inputs");
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let raw = read(c.name);
    let st = SafeTensors::deserialize(&raw).unwrap();
    let per_row = 256 / B::BLOCK;
    let bsize = std::mem::size_of::<B>();
    let mut compared = 0;

    for src in ["model", "synthetic"] {
        let (x, xs) = f32s(&inputs, src);
        assert_eq!(xs[1], 256);
        let (want_q, qs) = bytes(&st, &format!("{src}_q"));
        let rows = qs[0];
        assert_eq!(qs[1], per_row * bsize, "{} {src}_q row bytes", c.name);
        assert!(rows <= xs[0]);

        // Quantize: byte-identical, block by block.
        let mut ours = vec![B::zeroed(); rows * per_row];
        (c.quantize)(&x[..rows * 256], &mut ours);
        let ours_bytes: &[u8] = bytemuck::cast_slice(&ours);
        let mut differ = Vec::new();
        for (i, (a, b)) in ours_bytes
            .chunks_exact(bsize)
            .zip(want_q.chunks_exact(bsize))
            .enumerate()
        {
            if a != b {
                differ.push(i);
            }
        }
        assert!(
            differ.is_empty(),
            "{} {src}: {} of {} blocks differ from ggml (first: block {}: ours {:?}, ggml {:?})",
            c.name,
            differ.len(),
            rows * per_row,
            differ[0],
            &ours_bytes[differ[0] * bsize..][..bsize],
            &want_q[differ[0] * bsize..][..bsize]
        );
        compared += rows * per_row;

        // Dequantize ggml's blocks: bit-identical to ggml's dequantizer.
        let theirs: Vec<B> = blocks(&want_q);
        let mut deq = vec![0f32; rows * 256];
        (c.dequantize)(&theirs, &mut deq);
        if src == "synthetic" {
            let (want, _) = f32s(&st, "synthetic_deq");
            assert_eq!(bits(&deq), bits(&want), "{} synthetic_deq", c.name);
        } else {
            let (sha, _) = bytes(&st, "model_deq_sha256");
            for r in 0..rows {
                let row: &[u8] = bytemuck::cast_slice(&deq[r * 256..r * 256 + 256]);
                let got = Sha256::digest(row);
                assert_eq!(
                    got.as_slice(),
                    &sha[r * 32..r * 32 + 32],
                    "{} model row {r}",
                    c.name
                );
            }
            let (head, hs) = f32s(&st, "model_deq_head");
            assert_eq!(
                bits(&deq[..hs[0] * 256]),
                bits(&head),
                "{} model_deq_head",
                c.name
            );
        }
    }
    eprintln!(
        "{}: {compared} blocks byte-identical to ggml, dequantization bit-identical",
        c.name
    );
    compared
}

#[test]
fn blocks_match_ggml_reference() {
    let mut total = Vec::new();
    // The existing Q4_0/Q8_0 blocks ride along: the same fixture checks them.
    total.push((
        "q4_0",
        check(&Codec::<quant::BlockQ4_0> {
            name: "q4_0",
            quantize: quant::quantize_row,
            dequantize: quant::dequantize_row,
        }),
    ));
    total.push((
        "q8_0",
        check(&Codec::<quant::BlockQ8_0> {
            name: "q8_0",
            quantize: quant::quantize_row,
            dequantize: quant::dequantize_row,
        }),
    ));
    total.push((
        "q4_1",
        check(&Codec {
            name: "q4_1",
            quantize: q4_1::quantize_row_ref,
            dequantize: q4_1::dequantize_row,
        }),
    ));
    total.push((
        "q5_0",
        check(&Codec {
            name: "q5_0",
            quantize: q5_0::quantize_row_ref,
            dequantize: q5_0::dequantize_row,
        }),
    ));
    total.push((
        "q5_1",
        check(&Codec {
            name: "q5_1",
            quantize: q5_1::quantize_row_ref,
            dequantize: q5_1::dequantize_row,
        }),
    ));
    total.push((
        "q4_K",
        check(&Codec {
            name: "q4_K",
            quantize: q4_k::quantize_row_ref,
            dequantize: q4_k::dequantize_row,
        }),
    ));
    total.push((
        "q5_K",
        check(&Codec {
            name: "q5_K",
            quantize: q5_k::quantize_row_ref,
            dequantize: q5_k::dequantize_row,
        }),
    ));
    total.push((
        "q6_K",
        check(&Codec {
            name: "q6_K",
            quantize: q6_k::quantize_row_ref,
            dequantize: q6_k::dequantize_row,
        }),
    ));
    total.push((
        "q8_K",
        check(&Codec {
            name: "q8_K",
            quantize: q8_k::quantize_row_ref,
            dequantize: q8_k::dequantize_row,
        }),
    ));
    // 256 model rows × 8 + 33 × 8 for the 32-blocks, 768 + 33 super-blocks for the K-types.
    for (name, n) in &total {
        let want = if name.ends_with('K') { 801 } else { 2312 };
        assert_eq!(*n, want, "{name}");
    }
}

/// Σ dequant(w)·dequant(x) in f64, and Σ |·| (the scale of the f32 rounding error).
fn f64_dot(w: &[f32], x: &[f32]) -> (f64, f64) {
    let mut s = 0f64;
    let mut a = 0f64;
    for (&p, &q) in w.iter().zip(x) {
        s += p as f64 * q as f64;
        a += (p as f64 * q as f64).abs();
    }
    (s, a)
}

/// The K-type dots on ggml's recorded weight rows and Q8_K activations.
fn check_k_dot<B: QuantBlock>(
    name: &str,
    dot: fn(&[B], &[q8_k::BlockQ8_K]) -> f32,
    deq: fn(&[B], &mut [f32]),
) {
    let di = read("dot_inputs");
    let di = SafeTensors::deserialize(&di).unwrap();
    let (x, xs) = f32s(&di, "x");
    let (xq, _) = bytes(&di, "x_q8_K");
    let raw = read(name);
    let st = SafeTensors::deserialize(&raw).unwrap();
    let (wq, ws) = bytes(&st, "dot_w_q");
    let (f64_ref, _) = f32s(&st, "dot_f64_of_dequantized");
    let (generic, _) = f32s(&st, "dot_generic");
    let (simd, _) = f32s(&st, "dot_simd");
    let (pairs, n) = (xs[0], xs[1]);
    assert_eq!(ws[0], pairs);

    // Our Q8_K activations are ggml's bytes.
    let mut ours = vec![q8_k::BlockQ8_K::zeroed(); pairs * n / 256];
    q8_k::quantize_row_ref(&x, &mut ours);
    assert_eq!(bytemuck::cast_slice::<_, u8>(&ours), &xq[..], "x_q8_K");

    let xb: Vec<q8_k::BlockQ8_K> = blocks(&xq);
    let wb: Vec<B> = blocks(&wq);
    let nb = n / 256;
    let (mut worst, mut worst_generic, mut worst_simd, mut equal_generic) = (0f64, 0f64, 0f64, 0);
    for p in 0..pairs {
        let (w, xp) = (&wb[p * nb..(p + 1) * nb], &xb[p * nb..(p + 1) * nb]);
        let got = dot(w, xp);
        let mut wd = vec![0f32; n];
        let mut xd = vec![0f32; n];
        deq(w, &mut wd);
        q8_k::dequantize_row(xp, &mut xd);
        let (exact, mag) = f64_dot(&wd, &xd);
        // The recorded f64 sum (rounded to f32) is the same number.
        assert!(
            ((exact as f32) - f64_ref[p]).abs() <= f64_ref[p].abs() * 1e-6,
            "{name} pair {p}"
        );
        let err = (got as f64 - exact).abs() / mag;
        assert!(
            err < 4e-6,
            "{name} pair {p}: ours {got}, f64 {exact}, error {err:e} of Σ|w·x|"
        );
        worst = worst.max(err);
        worst_generic = worst_generic.max(((got - generic[p]) / generic[p]).abs() as f64);
        worst_simd = worst_simd.max(((got - simd[p]) / simd[p]).abs() as f64);
        equal_generic += (got.to_bits() == generic[p].to_bits()) as usize;
    }
    eprintln!(
        "{name}·q8_K: {pairs} dots of {n}; |ours − f64| ≤ {worst:.2e}·Σ|w·x|; \
         rel. diff to ggml generic ≤ {worst_generic:.2e} ({equal_generic} bit-equal), \
         to ggml AVX2 ≤ {worst_simd:.2e}"
    );
}

#[test]
fn k_dots_against_ggml() {
    check_k_dot("q4_K", q4_k::vec_dot, q4_k::dequantize_row);
    check_k_dot("q5_K", q5_k::vec_dot, q5_k::dequantize_row);
    check_k_dot("q6_K", q6_k::vec_dot, q6_k::dequantize_row);
}

/// Q5_0·Q8_0, Q4_1·Q8_0 and Q5_1·Q8_0 (no ggml dot was recorded for these): weights = the
/// model super-blocks of the fixture, activations = the dot inputs, against the f64 sum. (ggml
/// dots Q4_1/Q5_1 against Q8_1, whose f16 `s` rounds `d·Σq`; ours keeps `Σq` exact, and the
/// reference is the exact value of that definition.)
#[test]
fn legacy_dots_against_f64() {
    let inputs = read("inputs");
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let (w, _) = f32s(&inputs, "model");
    let di = read("dot_inputs");
    let di = SafeTensors::deserialize(&di).unwrap();
    let (x, xs) = f32s(&di, "x");
    let n = xs[1];
    for p in 0..xs[0] {
        let (wr, xr) = (&w[p * n..(p + 1) * n], &x[p * n..(p + 1) * n]);
        let nb = n / 32;

        let mut x8 = vec![quant::BlockQ8_0::zeroed(); nb];
        quant::quantize_row(xr, &mut x8);
        let mut x8d = vec![0f32; n];
        quant::dequantize_row(&x8, &mut x8d);
        let mut x81 = vec![q8_1::BlockQ8_1::zeroed(); nb];
        q8_1::quantize_row_ref(xr, &mut x81);
        let mut x81d = vec![0f32; n];
        q8_1::dequantize_row(&x81, &mut x81d);
        // Q8_1's values are Q8_0's (same d and rounding); s is (Σq)·d with the f32 d = max|x|/127,
        // rounded to f16.
        assert_eq!(bits(&x8d), bits(&x81d));
        for (b, xb) in x81.iter().zip(xr.chunks_exact(32)) {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            assert_eq!(b.s, half::f16::from_f32(sum as f32 * d));
        }

        let mut wd = vec![0f32; n];
        let mut q50 = vec![q5_0::BlockQ5_0::zeroed(); nb];
        q5_0::quantize_row_ref(wr, &mut q50);
        q5_0::dequantize_row(&q50, &mut wd);
        let (exact, mag) = f64_dot(&wd, &x8d);
        let got = q5_0::vec_dot(&q50, &x8) as f64;
        assert!(
            (got - exact).abs() < 1e-6 * mag,
            "q5_0 pair {p}: {got} vs {exact}"
        );

        // The minimum term is m_w·d_x·Σq_x, so the reference is Σ d_w q_w d_x q_x + m_w d_x Σq_x.
        let min_ref = |d: &[f32], m: Vec<f32>| {
            let mut s = 0f64;
            let mut a = 0f64;
            for (b, blk) in x8.iter().enumerate() {
                let (e, mg) = f64_dot(&d[32 * b..32 * b + 32], &x8d[32 * b..32 * b + 32]);
                let sum: i32 = blk.qs.iter().map(|&q| q as i32).sum();
                let t = m[b] as f64 * blk.d.to_f32() as f64 * sum as f64;
                s += e + t;
                a += mg + t.abs();
            }
            (s, a)
        };
        let mut q41 = vec![q4_1::BlockQ4_1::zeroed(); nb];
        q4_1::quantize_row_ref(wr, &mut q41);
        // The level part alone: dequantized values minus the minimum, exactly d·q in f64.
        let lv: Vec<f32> = (0..n)
            .map(|i| {
                let b = &q41[i / 32];
                let q = if i % 32 < 16 {
                    b.qs[i % 32] & 15
                } else {
                    b.qs[i % 32 - 16] >> 4
                };
                b.d.to_f32() * q as f32
            })
            .collect();
        let (exact, mag) = min_ref(&lv, q41.iter().map(|b| b.m.to_f32()).collect());
        let got = q4_1::vec_dot(&q41, &x8) as f64;
        assert!(
            (got - exact).abs() < 2e-6 * mag,
            "q4_1 pair {p}: {got} vs {exact}"
        );

        let mut q51 = vec![q5_1::BlockQ5_1::zeroed(); nb];
        q5_1::quantize_row_ref(wr, &mut q51);
        let lv: Vec<f32> = (0..n)
            .map(|i| q51[i / 32].d.to_f32() * q51[i / 32].levels()[i % 32] as f32)
            .collect();
        let (exact, mag) = min_ref(&lv, q51.iter().map(|b| b.m.to_f32()).collect());
        let got = q5_1::vec_dot(&q51, &x8) as f64;
        assert!(
            (got - exact).abs() < 2e-6 * mag,
            "q5_1 pair {p}: {got} vs {exact}"
        );
    }
}
