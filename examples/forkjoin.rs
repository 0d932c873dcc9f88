//! What one parallel section costs on this machine beyond its work, the way decode uses them:
//! `gap` µs of single-threaded work (norms, RoPE) then a section of sixteen tasks worth `work` µs
//! on two threads, through rayon and through the kernels' spinning team
//! (`mllama::kernels::team`). `cargo run --release --example forkjoin`. A rayon worker that went
//! to sleep during the gap has to be woken, which in a VM can take ~100 µs.

use rayon::prelude::*;
use std::time::Instant;

/// Busy work for `us` microseconds.
fn spin(us: f64) {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < us * 1e-6 {
        std::hint::spin_loop();
    }
}
fn main() {
    for gap in [0.0, 10.0, 30.0, 100.0] {
        for work in [50.0, 200.0] {
            for team in [false, true] {
                let n = 2000;
                let t = Instant::now();
                for _ in 0..n {
                    spin(gap);
                    if team {
                        mllama::kernels::team::for_each(16, &|_| spin(work / 8.0));
                    } else {
                        (0..16).into_par_iter().for_each(|_| spin(work / 8.0));
                    }
                }
                let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
                println!(
                    "{:5} gap {gap:5} us, work {work:5} us (2 threads ideal {:.0}): {per:.1} us per section → overhead {:.1} us",
                    if team { "team" } else { "rayon" },
                    gap + work,
                    per - gap - work
                );
            }
        }
    }
}
