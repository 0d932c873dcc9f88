//! Helpers for `scripts/quantize_oracle.py` (the ggml / gguf-py cross-check of `quantize`):
//!
//! ```text
//! oracle_dump plan CKPT_DIR TYPE      the conversion plan as JSON on stdout: per output tensor its
//!                                     GGUF name, checkpoint source, shape, type and row order
//! oracle_dump dequant GGUF OUT_DIR    our dequantization of every tensor, as OUT_DIR/<name>.f32
//!                                     (raw little-endian f32)
//! ```

use std::path::Path;

use mllama::format::gguf::GgufFile;
use mllama_quantize::checkpoint::Checkpoint;
use mllama_quantize::config::MllamaConfig;
use mllama_quantize::plan::{self, RowOrder, Source};
use serde_json::json;

type Res = Result<(), Box<dyn std::error::Error>>;

fn plan_json(dir: &Path, ty: &str) -> Res {
    let ft = mllama_quantize::convert::parse_type(ty).ok_or(format!("unknown type {ty}"))?;
    let cfg = MllamaConfig::load(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let (tensors, _) = plan::build(&cfg, &ckpt, dir, ft, false)?;
    let rows: Vec<_> = tensors
        .iter()
        .map(|t| {
            let source = match &t.source {
                Source::Hf(n) => json!(n),
                Source::Computed(_) => json!(null),
            };
            let head_dim = match t.order {
                RowOrder::AsIs => json!(null),
                RowOrder::RopePermute { head_dim } => json!(head_dim),
            };
            json!({"name": t.name, "source": source, "shape": t.shape,
                   "type": t.ty.name(), "rope_head_dim": head_dim})
        })
        .collect();
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}

fn dequant(gguf: &Path, out: &Path) -> Res {
    let f = GgufFile::open(gguf)?;
    std::fs::create_dir_all(out)?;
    for t in f.tensors() {
        let mut v = vec![0f32; t.n_elements() as usize];
        mllama::quant::dequantize(t.ty, f.view(t).data, &mut v)?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(out.join(format!("{}.f32", t.name)), bytes)?;
    }
    Ok(())
}

fn main() -> Res {
    let a: Vec<String> = std::env::args().collect();
    match (a.get(1).map(String::as_str), a.get(2), a.get(3)) {
        (Some("plan"), Some(dir), Some(ty)) => plan_json(Path::new(dir), ty),
        (Some("dequant"), Some(g), Some(o)) => dequant(Path::new(g), Path::new(o)),
        _ => Err("usage: oracle_dump plan CKPT TYPE | oracle_dump dequant GGUF OUT_DIR".into()),
    }
}
