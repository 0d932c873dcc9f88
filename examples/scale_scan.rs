//! Cost of the model loader's scan of quantized blocks' f16 scales
//! ([`TensorView::check_scales`]) on a large memory-mapped file, against reading every byte.
//!
//! ```text
//! cargo run --release --example scale_scan -- /tmp/scan.gguf [GiB] [type] [read-first]
//! ```
//!
//! To time a cold start, drop the file's pages from the page cache first (e.g. Python's
//! `os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)`) and look at round 0; `read-first` times
//! the full read before the scan in round 0.
//!
//! Writes (once) a GGUF of `[14336, 4096]` tensors of `type` (default Q4_K) totalling about `GiB`
//! (default 2) with finite scales, then times on fresh maps of the (page-cached) file: the scale
//! scan, a second scan of the same map, and a sum of every byte (what a first forward pass reads).

use std::io::Write;
use std::time::Instant;

use mllama::format::gguf::{GgufFile, GgufWriter};
use mllama::{GgmlType, GgufError};

fn write_file(path: &str, gib: f64, ty: GgmlType) {
    let (rows, cols) = (14336usize, 4096usize);
    let per = ty.tensor_bytes(cols as u64, (rows * cols) as u64).unwrap() as f64;
    let n = ((gib * (1u64 << 30) as f64) / per).ceil() as usize;
    let mut w = GgufWriter::new("scan");
    for i in 0..n {
        w.add_tensor(&format!("t{i}"), &[rows, cols], ty).unwrap();
    }
    let fields = mllama::quant::scales::fields(ty).unwrap();
    let bs = ty.type_size();
    let mut s = 0x1234_5678_9abc_def1u64;
    let out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    w.write::<_, GgufError>(out, |_, t, sink| {
        let mut buf = vec![0u8; t.size as usize];
        for (k, b) in buf.iter_mut().enumerate() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = (s >> 24) as u8 ^ k as u8;
        }
        for blk in buf.chunks_exact_mut(bs) {
            for &(off, _) in fields {
                blk[off..off + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
        }
        sink.write_all(&buf)?;
        Ok(())
    })
    .unwrap();
}

fn scan(f: &GgufFile) -> f64 {
    let t0 = Instant::now();
    for t in f.tensors() {
        f.view(t).check_scales().unwrap();
    }
    t0.elapsed().as_secs_f64()
}

fn read_all(f: &GgufFile) -> (f64, u64) {
    let t0 = Instant::now();
    let mut sum = 0u64;
    for t in f.tensors() {
        let d = f.view(t).data;
        // Touch every cache line, as a forward pass would.
        for c in d.chunks(64) {
            sum = sum.wrapping_add(c[0] as u64);
        }
    }
    (t0.elapsed().as_secs_f64(), std::hint::black_box(sum))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("/tmp/scan.gguf");
    let gib: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let ty = args
        .get(3)
        .and_then(|s| GgmlType::from_name(s))
        .unwrap_or(GgmlType::Q4_K);
    if !std::path::Path::new(path).exists() {
        write_file(path, gib, ty);
    }
    let size = std::fs::metadata(path).unwrap().len() as f64 / (1u64 << 30) as f64;
    println!(
        "{path}: {size:.2} GiB, {} threads",
        rayon::current_num_threads()
    );
    if args.get(4).map(String::as_str) == Some("read-first") {
        let (all, _) = read_all(&GgufFile::open(path).unwrap());
        println!("read first: {all:.3} s ({:.2} GiB/s)", size / all);
    }
    for round in 0..3 {
        let f = GgufFile::open(path).unwrap();
        let first = scan(&f);
        let again = scan(&f);
        let f2 = GgufFile::open(path).unwrap();
        let (all, sum) = read_all(&f2);
        println!(
            "round {round}: scan fresh map {:.3} s ({:.1} GiB/s of file), same map again {:.3} s; \
             reading every cache line of a fresh map {:.3} s ({:.1} GiB/s) [{sum}]",
            first,
            size / first,
            again,
            all,
            size / all
        );
    }
}
