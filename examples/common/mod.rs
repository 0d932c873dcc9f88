//! What the speed examples share (each includes it as `mod common;`): deterministic random
//! inputs and their environment settings.

#![allow(dead_code)] // each example uses a part

use mllama::kernels::Path;

/// `n` values in [-0.5, 0.5), xorshift64 from `seed` (mixed, so nearby seeds differ).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// The environment variable `name` as a number, else `default` (also when it does not parse).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The kernel paths named in the comma-separated variable `name` that this CPU has (unknown or
/// unavailable names are skipped with a warning), else `default`.
pub fn paths_env(name: &str, default: Vec<Path>) -> Vec<Path> {
    let Ok(list) = std::env::var(name) else {
        return default;
    };
    list.split(',')
        .filter_map(|n| {
            let p = Path::available().into_iter().find(|p| p.name() == n.trim());
            if p.is_none() {
                eprintln!("{name}: no path {n:?} on this CPU, skipped");
            }
            p
        })
        .collect()
}
