//! Instruction-rate ceilings of the vision tower's arithmetic on this CPU, as multiples of the f32
//! FMA peak that `mllama bench` reports (`cargo run --release --example dot_peak`): independent
//! chains of `vpdpwssd` (12-bit GEMM and attention: two i16 multiply-adds per 32-bit lane),
//! `vpdpbusd` (int8: four per lane), `vdpbf16ps` (bf16: two per lane, where the CPU has
//! AVX-512 BF16) and `vfmadd231ps`, on zmm registers, on every core at once.
//! A precision's whole-tower rate can approach but never pass its ceiling here (issue 14 asks for
//! 1.8× the FMA peak).

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::time::Instant;

    /// `iters` rounds of 12 independent `$ins zmm` chains; returns seconds.
    macro_rules! chains {
        ($name:ident, $ins:literal, $features:literal) => {
            #[target_feature(enable = $features)]
            unsafe fn $name(iters: u64) -> f64 {
                let t = Instant::now();
                // SAFETY: the caller checked the CPU features; registers only.
                unsafe {
                    asm!(
                        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1",
                        "vpxord zmm2, zmm2, zmm2", "vpxord zmm3, zmm3, zmm3",
                        "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
                        "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7",
                        "vpxord zmm8, zmm8, zmm8", "vpxord zmm9, zmm9, zmm9",
                        "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
                        "vpternlogd zmm12, zmm12, zmm12, 0xff", "vpternlogd zmm13, zmm13, zmm13, 0xff",
                        "2:",
                        concat!($ins, " zmm0, zmm12, zmm13"), concat!($ins, " zmm1, zmm12, zmm13"),
                        concat!($ins, " zmm2, zmm12, zmm13"), concat!($ins, " zmm3, zmm12, zmm13"),
                        concat!($ins, " zmm4, zmm12, zmm13"), concat!($ins, " zmm5, zmm12, zmm13"),
                        concat!($ins, " zmm6, zmm12, zmm13"), concat!($ins, " zmm7, zmm12, zmm13"),
                        concat!($ins, " zmm8, zmm12, zmm13"), concat!($ins, " zmm9, zmm12, zmm13"),
                        concat!($ins, " zmm10, zmm12, zmm13"), concat!($ins, " zmm11, zmm12, zmm13"),
                        "dec {n}", "jnz 2b",
                        n = inout(reg) iters => _,
                        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                        out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                        out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                        out("zmm12") _, out("zmm13") _,
                        options(nostack, nomem),
                    );
                }
                t.elapsed().as_secs_f64()
            }
        };
    }
    chains!(fma, "vfmadd231ps", "avx512f,avx512bw,avx512vnni");
    chains!(dpwssd, "vpdpwssd", "avx512f,avx512bw,avx512vnni");
    chains!(dpbusd, "vpdpbusd", "avx512f,avx512bw,avx512vnni");
    chains!(
        dpbf16,
        "vdpbf16ps",
        "avx512f,avx512bw,avx512vnni,avx512bf16"
    );

    /// Operations per second (a multiply-add is two) of `f` on every core at once, each running
    /// `iters` rounds of 12 instructions of `ops` operations.
    fn rate(f: unsafe fn(u64) -> f64, ops: f64, iters: u64, threads: usize) -> f64 {
        let secs: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || unsafe { f(iters) }))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let slowest = secs.iter().fold(0f64, |a, &b| a.max(b));
        threads as f64 * iters as f64 * 12.0 * ops / slowest / 1e9
    }

    pub fn main() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            println!("no AVX-512 VNNI on this CPU: nothing to measure");
            return;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let iters = 100_000_000;
        println!("{threads} threads, zmm, medians of 3 interleaved rounds (Gop/s)");
        let bf16 = is_x86_feature_detected!("avx512bf16");
        let (mut f, mut w, mut b, mut h) = (vec![], vec![], vec![], vec![0.0; 3]);
        for hr in h.iter_mut() {
            f.push(rate(fma, 32.0, iters, threads));
            w.push(rate(dpwssd, 64.0, iters, threads));
            b.push(rate(dpbusd, 128.0, iters, threads));
            if bf16 {
                *hr = rate(dpbf16, 64.0, iters, threads);
            }
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[1]
        };
        let (f, w, b, h) = (med(f), med(w), med(b), med(h));
        println!("vfmadd231ps {f:8.0}   1.00× the FMA peak");
        println!("vpdpwssd    {w:8.0}   {:.2}×  (int16 ceiling)", w / f);
        println!("vpdpbusd    {b:8.0}   {:.2}×  (int8 ceiling)", b / f);
        if bf16 {
            println!("vdpbf16ps   {h:8.0}   {:.2}×  (bf16 ceiling)", h / f);
        } else {
            println!("vdpbf16ps   (no AVX-512 BF16 on this CPU)");
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86-64 only");
}
