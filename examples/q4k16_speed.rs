//! Prototype of the Q4_K ×16 row-interleaved layout (one `vpdpbusd` serves sixteen rows; now the
//! library's, `kernels::repack`) against the in-place and the library's repacked Q4_K decode
//! (`rp`: ×4 at this example's first commit, ×16 since), rounds interleaved in one process:
//! `cargo run --release --example q4k16_speed` (`KQ_ROWS=32768`: from memory; `KQ_ROUNDS`,
//! `KQ_REPS`). The prototype kernels run on one thread, the library's on rayon's global pool.
//! Prints ns per 256 weights (median and best of the rounds). `x16ymm`: the same on 256-bit
//! registers (two halves of eight rows).
//!
//! Layout, block `b` of a group of 16 rows (2368 bytes, 148 per row as the ×4 layout):
//!
//! ```text
//! { d, dmin: [f16; 16],         row r's d, dmin
//!   sc: [[u8; 16]; 8],          sc[j][r] = row r's 6-bit scale of sub-block j
//!   mn: [[[u8; 2]; 16]; 4],     mn[p][r] = row r's minimums of sub-blocks 2p, 2p + 1
//!   qs: [[[[u8; 4]; 16]; 8]; 4] } qs[g][c][r] = row r's in-place qs[32g + 4c..32g + 4c + 4]
//! ```
//!
//! so the 64 bytes `qs[g][c]` hold values `64g + 4c..+4` (low nibbles, sub-block 2g) and
//! `64g + 32 + 4c..+4` (high, sub-block 2g + 1) of all sixteen rows, 4 bytes per i32 lane.

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;
    use std::time::Instant;

    use half::f16;
    use mllama::kernels::tensor::Mat;
    use mllama::kernels::{matmul_with, with_path, Path, Regime, Scratch};
    use mllama::quant::q4_k::BlockQ4_K;
    use mllama::quant::q8_k::BlockQ8_K;
    use mllama::quant::{lane_vec_dot, quantize_row};
    use mllama::GgmlType;

    const G: usize = 16;

    /// A group kernel of the prototype.
    type Kernel = unsafe fn(*const BlockQ4_Kx16, usize, *const BlockQ8_K) -> [f32; G];

    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    pub struct BlockQ4_Kx16 {
        d: [f16; G],
        dmin: [f16; G],
        sc: [[u8; G]; 8],
        mn: [[[u8; 2]; G]; 4],
        qs: [[[[u8; 4]; G]; 8]; 4],
    }
    const _: () = assert!(std::mem::size_of::<BlockQ4_Kx16>() == G * 148);

    fn build(src: &[BlockQ4_K], m: usize, nb: usize) -> Vec<BlockQ4_Kx16> {
        let mut out = vec![bytemuck::Zeroable::zeroed(); m / G * nb];
        for gi in 0..m / G {
            for b in 0..nb {
                let o: &mut BlockQ4_Kx16 = &mut out[gi * nb + b];
                for r in 0..G {
                    let s = &src[(gi * G + r) * nb + b];
                    o.d[r] = s.d;
                    o.dmin[r] = s.dmin;
                    let (sc, mn) = s.scales_mins();
                    for j in 0..8 {
                        o.sc[j][r] = sc[j];
                        o.mn[j / 2][r][j % 2] = mn[j];
                    }
                    for g in 0..4 {
                        for c in 0..8 {
                            o.qs[g][c][r].copy_from_slice(&s.qs[32 * g + 4 * c..][..4]);
                        }
                    }
                }
            }
        }
        out
    }

    /// The twin: the exact integer sums, then the layout's f32 order per row.
    fn twin(w: &[BlockQ4_Kx16], x: &[BlockQ8_K]) -> [f32; G] {
        std::array::from_fn(|r| {
            let (mut acc, mut accm) = (0f32, 0f32);
            for (a, xb) in w.iter().zip(x) {
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let (g, hi) = (j / 2, j % 2);
                    let mut dot = 0i32;
                    for c in 0..8 {
                        for e in 0..4 {
                            let q = a.qs[g][c][r][e];
                            let l = if hi == 1 { q >> 4 } else { q & 0x0F };
                            dot += l as i32 * xb.qs[64 * g + 32 * hi + 4 * c + e] as i32;
                        }
                    }
                    isum += a.sc[j][r] as i32 * dot;
                    let bs = xb.bsums[2 * j] as i32 + xb.bsums[2 * j + 1] as i32;
                    msum += a.mn[j / 2][r][j % 2] as i32 * bs;
                }
                acc += (a.d[r].to_f32() * xb.d) * isum as f32;
                accm += (a.dmin[r].to_f32() * xb.d) * msum as f32;
            }
            acc - accm
        })
    }

    /// The eight sub-block sums of the activation block (`bsums[2j] + bsums[2j + 1]`).
    #[inline(always)]
    unsafe fn pair_sums(xb: &BlockQ8_K) -> __m128i {
        let bs = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
        _mm_hadd_epi16(
            _mm256_castsi256_si128(bs),
            _mm256_extracti128_si256::<1>(bs),
        )
    }

    /// As [`dot16_vnni`] on 256-bit registers: two halves of eight rows (`vpdpbusd` ymm).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot16_vnni_ymm(w: *const BlockQ4_Kx16, nb: usize, x: *const BlockQ8_K) -> [f32; G] {
        let lo_m = _mm256_set1_epi8(0x0F);
        let hi_m = _mm256_set1_epi8(0xF0u8 as i8);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut accm = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let (wb, xb) = (&*w.add(b), &*x.add(b));
            let xq = xb.qs.as_ptr() as *const u8;
            let ps = pair_sums(xb);
            let dx = _mm256_set1_ps(xb.d);
            for h in 0..2 {
                let mut isum = _mm256_setzero_si256();
                for g in 0..4 {
                    let mut dl = _mm256_setzero_si256();
                    let mut dh = _mm256_setzero_si256();
                    for c in 0..8 {
                        let v = _mm256_loadu_si256(wb.qs[g][c][8 * h].as_ptr() as *const _);
                        let xl = _mm256_set1_epi32(
                            (xq.add(64 * g + 4 * c) as *const i32).read_unaligned(),
                        );
                        let xh = _mm256_set1_epi32(
                            (xq.add(64 * g + 32 + 4 * c) as *const i32).read_unaligned(),
                        );
                        dl = _mm256_dpbusd_epi32(dl, _mm256_and_si256(v, lo_m), xl);
                        dh = _mm256_dpbusd_epi32(dh, _mm256_and_si256(v, hi_m), xh);
                    }
                    let sl = _mm256_cvtepu8_epi32(_mm_loadu_si64(
                        wb.sc[2 * g][8 * h..].as_ptr() as *const _
                    ));
                    let sh = _mm256_cvtepu8_epi32(_mm_loadu_si64(
                        wb.sc[2 * g + 1][8 * h..].as_ptr() as *const _,
                    ));
                    isum = _mm256_add_epi32(
                        isum,
                        _mm256_add_epi32(
                            _mm256_mullo_epi32(dl, sl),
                            _mm256_mullo_epi32(_mm256_srai_epi32::<4>(dh), sh),
                        ),
                    );
                }
                let mut ms = _mm256_setzero_si256();
                for p in 0..4 {
                    let mw =
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(wb.mn[p][8 * h].as_ptr() as *const _));
                    let bp = _mm256_set1_epi32(match p {
                        0 => _mm_extract_epi32::<0>(ps),
                        1 => _mm_extract_epi32::<1>(ps),
                        2 => _mm_extract_epi32::<2>(ps),
                        _ => _mm_extract_epi32::<3>(ps),
                    });
                    ms = _mm256_add_epi32(ms, _mm256_madd_epi16(mw, bp));
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(wb.d[8 * h..].as_ptr() as *const _));
                let dm = _mm256_cvtph_ps(_mm_loadu_si128(wb.dmin[8 * h..].as_ptr() as *const _));
                acc[h] = _mm256_add_ps(
                    acc[h],
                    _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum)),
                );
                accm[h] = _mm256_add_ps(
                    accm[h],
                    _mm256_mul_ps(_mm256_mul_ps(dm, dx), _mm256_cvtepi32_ps(ms)),
                );
            }
        }
        let mut out = [0f32; G];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_sub_ps(acc[0], accm[0]));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_sub_ps(acc[1], accm[1]));
        out
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot16_vnni(w: *const BlockQ4_Kx16, nb: usize, x: *const BlockQ8_K) -> [f32; G] {
        let lo_m = _mm512_set1_epi8(0x0F);
        let hi_m = _mm512_set1_epi8(0xF0u8 as i8);
        let mut acc = _mm512_setzero_ps();
        let mut accm = _mm512_setzero_ps();
        for b in 0..nb {
            let (wb, xb) = (&*w.add(b), &*x.add(b));
            let xq = xb.qs.as_ptr() as *const u8;
            let mut isum = _mm512_setzero_si512();
            for g in 0..4 {
                let mut dl = _mm512_setzero_si512();
                let mut dh = _mm512_setzero_si512();
                for c in 0..8 {
                    let v = _mm512_loadu_si512(wb.qs[g][c].as_ptr() as *const _);
                    let xl =
                        _mm512_set1_epi32((xq.add(64 * g + 4 * c) as *const i32).read_unaligned());
                    let xh = _mm512_set1_epi32(
                        (xq.add(64 * g + 32 + 4 * c) as *const i32).read_unaligned(),
                    );
                    dl = _mm512_dpbusd_epi32(dl, _mm512_and_si512(v, lo_m), xl);
                    dh = _mm512_dpbusd_epi32(dh, _mm512_and_si512(v, hi_m), xh);
                }
                let sl = _mm512_cvtepu8_epi32(_mm_loadu_si128(wb.sc[2 * g].as_ptr() as *const _));
                let sh =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(wb.sc[2 * g + 1].as_ptr() as *const _));
                isum = _mm512_add_epi32(
                    isum,
                    _mm512_add_epi32(
                        _mm512_mullo_epi32(dl, sl),
                        _mm512_mullo_epi32(_mm512_srai_epi32::<4>(dh), sh),
                    ),
                );
            }
            let ps = pair_sums(xb);
            let mut ms = _mm512_setzero_si512();
            for p in 0..4 {
                let mw = _mm512_cvtepu8_epi16(_mm256_loadu_si256(wb.mn[p].as_ptr() as *const _));
                let bp = _mm512_set1_epi32(match p {
                    0 => _mm_extract_epi32::<0>(ps),
                    1 => _mm_extract_epi32::<1>(ps),
                    2 => _mm_extract_epi32::<2>(ps),
                    _ => _mm_extract_epi32::<3>(ps),
                });
                ms = _mm512_dpwssd_epi32(ms, mw, bp);
            }
            let dx = _mm512_set1_ps(xb.d);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(wb.d.as_ptr() as *const _));
            let dm = _mm512_cvtph_ps(_mm256_loadu_si256(wb.dmin.as_ptr() as *const _));
            acc = _mm512_add_ps(
                acc,
                _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum)),
            );
            accm = _mm512_add_ps(
                accm,
                _mm512_mul_ps(_mm512_mul_ps(dm, dx), _mm512_cvtepi32_ps(ms)),
            );
        }
        let mut out = [0f32; G];
        _mm512_storeu_ps(out.as_mut_ptr(), _mm512_sub_ps(acc, accm));
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot16_avx2(w: *const BlockQ4_Kx16, nb: usize, x: *const BlockQ8_K) -> [f32; G] {
        let m4 = _mm256_set1_epi8(0x0F);
        // Row 4h' + i's scale byte into both words of dword i (each 128-bit lane).
        let ctl: [__m256i; 2] = std::array::from_fn(|h| {
            let b: [u8; 32] = std::array::from_fn(|i| {
                if i % 2 == 1 {
                    0x80
                } else {
                    (8 * h + 4 * (i / 16) + (i % 16) / 4) as u8
                }
            });
            _mm256_loadu_si256(b.as_ptr() as *const __m256i)
        });
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut accm = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let (wb, xb) = (&*w.add(b), &*x.add(b));
            let xq = xb.qs.as_ptr() as *const u8;
            let ps = pair_sums(xb);
            let dx = _mm256_set1_ps(xb.d);
            for h in 0..2 {
                let mut isum = _mm256_setzero_si256();
                for g in 0..4 {
                    let mut pl = _mm256_setzero_si256();
                    let mut ph = _mm256_setzero_si256();
                    for c in 0..8 {
                        let v = _mm256_loadu_si256(wb.qs[g][c][8 * h].as_ptr() as *const _);
                        let xl = _mm256_set1_epi32(
                            (xq.add(64 * g + 4 * c) as *const i32).read_unaligned(),
                        );
                        let xh = _mm256_set1_epi32(
                            (xq.add(64 * g + 32 + 4 * c) as *const i32).read_unaligned(),
                        );
                        let lo = _mm256_and_si256(v, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                        pl = _mm256_add_epi16(pl, _mm256_maddubs_epi16(lo, xl));
                        ph = _mm256_add_epi16(ph, _mm256_maddubs_epi16(hi, xh));
                    }
                    let sl = _mm256_shuffle_epi8(
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(
                            wb.sc[2 * g].as_ptr() as *const _
                        )),
                        ctl[h],
                    );
                    let sh = _mm256_shuffle_epi8(
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(
                            wb.sc[2 * g + 1].as_ptr() as *const _
                        )),
                        ctl[h],
                    );
                    isum = _mm256_add_epi32(
                        isum,
                        _mm256_add_epi32(_mm256_madd_epi16(pl, sl), _mm256_madd_epi16(ph, sh)),
                    );
                }
                let mut ms = _mm256_setzero_si256();
                for p in 0..4 {
                    let mw =
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(wb.mn[p][8 * h].as_ptr() as *const _));
                    let bp = _mm256_set1_epi32(match p {
                        0 => _mm_extract_epi32::<0>(ps),
                        1 => _mm_extract_epi32::<1>(ps),
                        2 => _mm_extract_epi32::<2>(ps),
                        _ => _mm_extract_epi32::<3>(ps),
                    });
                    ms = _mm256_add_epi32(ms, _mm256_madd_epi16(mw, bp));
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(wb.d[8 * h..].as_ptr() as *const _));
                let dm = _mm256_cvtph_ps(_mm_loadu_si128(wb.dmin[8 * h..].as_ptr() as *const _));
                acc[h] = _mm256_add_ps(
                    acc[h],
                    _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum)),
                );
                accm[h] = _mm256_add_ps(
                    accm[h],
                    _mm256_mul_ps(_mm256_mul_ps(dm, dx), _mm256_cvtepi32_ps(ms)),
                );
            }
        }
        let mut out = [0f32; G];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_sub_ps(acc[0], accm[0]));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_sub_ps(acc[1], accm[1]));
        out
    }

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }

    pub fn main() {
        let env = |v: &str, d: usize| {
            std::env::var(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(d)
        };
        let (m, k) = (env("KQ_ROWS", 512), 4096usize);
        let (rounds, reps) = (env("KQ_ROUNDS", 7), env("KQ_REPS", 200));
        let nb = k / 256;
        let f = rand_vec(m * k, 7);
        let xf = rand_vec(k, 3);
        let t = mllama::quant::traits(GgmlType::Q4_K).unwrap();
        let mut bytes = vec![0u8; m * k / 256 * 144];
        (t.from_f32)(&f, &mut bytes);
        let src: &[BlockQ4_K] = bytemuck::cast_slice(&bytes);
        let w16 = {
            #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
            #[repr(C, align(64))]
            struct Line([u8; 64]);
            let v = build(src, m, nb);
            let mut lines = vec![Line([0; 64]); v.len() * 37];
            bytemuck::cast_slice_mut::<Line, u8>(&mut lines)
                .copy_from_slice(bytemuck::cast_slice(&v));
            let lines: &'static [Line] = Vec::leak(lines);
            bytemuck::cast_slice::<Line, BlockQ4_Kx16>(lines)
        };
        let mut xq = vec![bytemuck::Zeroable::zeroed(); nb];
        quantize_row::<BlockQ8_K>(&xf, &mut xq);

        // Correctness: SIMD bit-exact with the twin, the twin close to lane_vec_dot.
        let avx512 = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw");
        let mut worst = 0f64;
        for gi in 0..m / G {
            let gw = &w16[gi * nb..][..nb];
            let tw = twin(gw, &xq);
            assert!(is_x86_feature_detected!("avx2"));
            // SAFETY: AVX2 available (checked); nb blocks at both pointers.
            let a2 = unsafe { dot16_avx2(gw.as_ptr(), nb, xq.as_ptr()) };
            assert_eq!(
                a2.map(f32::to_bits),
                tw.map(f32::to_bits),
                "avx2 group {gi}"
            );
            if avx512 {
                // SAFETY: AVX-512 VNNI detected; nb blocks at both pointers.
                let a5 = unsafe { dot16_vnni(gw.as_ptr(), nb, xq.as_ptr()) };
                assert_eq!(
                    a5.map(f32::to_bits),
                    tw.map(f32::to_bits),
                    "vnni group {gi}"
                );
                // SAFETY: as above.
                let a5 = unsafe { dot16_vnni_ymm(gw.as_ptr(), nb, xq.as_ptr()) };
                assert_eq!(
                    a5.map(f32::to_bits),
                    tw.map(f32::to_bits),
                    "vnni ymm group {gi}"
                );
            }
            for (r, &v) in tw.iter().enumerate() {
                let row = &src[(gi * G + r) * nb..][..nb];
                let rf = lane_vec_dot(row, &xq);
                worst = worst.max(((v - rf).abs() / rf.abs().max(1e-3)) as f64);
            }
        }
        println!("q4k16: SIMD == twin bit for bit; twin vs lane_vec_dot worst rel {worst:.2e}");

        let plain = Mat::from_bytes(GgmlType::Q4_K, m, k, &bytes);
        let mut packed = plain.clone();
        assert!(packed.repack(false));
        let mut names: Vec<(String, Box<dyn Fn()>)> = Vec::new();
        let mut paths = vec![Path::Avx2];
        if avx512 {
            paths.insert(0, Path::Avx512);
        }
        let mut y = vec![0f32; m];
        let yp = y.as_mut_ptr() as usize;
        for &path in &paths {
            for (w, tag) in [(plain.clone(), "inplace"), (packed.clone(), "rp")] {
                let xf = xf.clone();
                names.push((
                    format!("{} {tag}", path.name()),
                    Box::new(move || {
                        let mut sc = Scratch::new();
                        // SAFETY: y outlives the closures (they run in this function only).
                        let y = unsafe { std::slice::from_raw_parts_mut(yp as *mut f32, m) };
                        with_path(path, || {
                            for _ in 0..reps {
                                matmul_with(&w, None, &xf, 1, y, &mut sc, Regime::Decode);
                            }
                        })
                    }),
                ));
            }
            let kernels: Vec<(&str, Kernel)> = if path == Path::Avx512 {
                vec![("x16", dot16_vnni), ("x16ymm", dot16_vnni_ymm)]
            } else {
                vec![("x16", dot16_avx2)]
            };
            for (tag, kern) in kernels {
                let xf = xf.clone();
                names.push((
                    format!("{} {tag}", path.name()),
                    Box::new(move || {
                        // SAFETY: y outlives the closures.
                        let y = unsafe { std::slice::from_raw_parts_mut(yp as *mut f32, m) };
                        for _ in 0..reps {
                            // The activation quantization is part of every decode call.
                            let mut xq = vec![bytemuck::Zeroable::zeroed(); nb];
                            quantize_row::<BlockQ8_K>(&xf, &mut xq);
                            for gi in 0..m / G {
                                let gw = w16[gi * nb..].as_ptr();
                                // SAFETY: the CPU features were checked above; nb blocks each.
                                let v = unsafe { kern(gw, nb, xq.as_ptr()) };
                                y[gi * G..][..G].copy_from_slice(&v);
                            }
                        }
                    }),
                ));
            }
        }
        let mut times = vec![Vec::new(); names.len()];
        for _ in 0..rounds {
            for (i, (_, f)) in names.iter().enumerate() {
                let t0 = Instant::now();
                f();
                let s = t0.elapsed().as_secs_f64() / reps as f64;
                times[i].push(s * 1e9 / (m * k / 256) as f64);
            }
        }
        std::hint::black_box(&y);
        for ((name, _), t) in names.iter().zip(&mut times) {
            let best = t.iter().cloned().fold(f64::MAX, f64::min);
            println!(
                "{name:14} median {:6.2} best {:6.2} ns/256",
                median(t),
                best
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    imp::main();
}
