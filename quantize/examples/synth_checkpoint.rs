//! Write a synthetic mllama checkpoint with random bf16 weights (for converter tests and memory
//! measurements on multi-GB inputs).
//!
//! cargo run --release -p quantize --example synth_checkpoint -- DIR [tiny | k256 | 11b TEXT_LAYERS VISION_LAYERS]

use mllama_quantize::synthetic::{write_checkpoint, SynthDims};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: synth_checkpoint DIR [tiny | k256 | 11b TEXT_LAYERS VISION_LAYERS]");
        std::process::exit(2);
    };
    let dims = match args.get(2).map(String::as_str) {
        None | Some("tiny") => SynthDims::tiny(),
        Some("k256") => SynthDims::k256(),
        Some("11b") => {
            let l = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
            let v = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4);
            SynthDims::like_11b(l, v)
        }
        Some(other) => {
            eprintln!("unknown preset {other:?}");
            std::process::exit(2);
        }
    };
    if let Err(e) = write_checkpoint(std::path::Path::new(dir), &dims, 42) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let bytes: u64 = dims
        .tensors()
        .iter()
        .map(|(_, s)| 2 * s.iter().product::<usize>() as u64)
        .sum();
    println!(
        "wrote {dir}: {} tensors, {:.2} GiB",
        dims.tensors().len(),
        bytes as f64 / (1u64 << 30) as f64
    );
}
