//! The file-type table of `quantize --help`: bits per weight of each type's base tensor type and
//! of the whole text decoder of Llama-3.2-11B-Vision under the type's per-tensor mix.

use mllama::models::mllama::mix::storage_types;
use mllama::models::mllama::spec::ModelSpec;
use mllama::models::mllama::tensors::{self, Storage};
use mllama::quant::mix::FileType;
use mllama::GgmlType;

/// Bits per weight of `ty` (block bytes · 8 / block values).
pub fn bits_per_weight(ty: GgmlType) -> f64 {
    ty.type_size() as f64 * 8.0 / ty.block_size() as f64
}

/// Average bits per weight of the 11B text decoder's matrices (embedding, layers, output head)
/// under `ft`.
pub fn text_bits_11b(ft: FileType) -> f64 {
    let d = ModelSpec::llama32_11b().dims();
    let all = tensors::expand(&d);
    let types = storage_types(&all, d.n_layers, ft, false);
    let (mut bits, mut values) = (0f64, 0f64);
    for (t, ty) in all.iter().zip(types) {
        if t.storage() == Storage::TextMatrix {
            let n = t.shape.iter().product::<usize>() as f64;
            bits += n * bits_per_weight(ty);
            values += n;
        }
    }
    bits / values
}

/// What each file type stores, one line per type.
fn description(ft: FileType) -> &'static str {
    match ft {
        FileType::Q4KM | FileType::Q5KM => {
            "output Q6_K; attn_v, ffn_down Q6_K on llama.cpp's more-bits layers"
        }
        FileType::Q4KS => "output Q6_K; first 4 attn_v and first n/8 ffn_down Q5_K",
        FileType::Q5KS | FileType::Q4_1 | FileType::Q5_0 | FileType::Q5_1 => "output Q6_K",
        _ => "uniform",
    }
}

/// The table printed after `--help`.
///
/// ```
/// let t = mllama_quantize::help::types_table();
/// assert!(t.contains("q4_k_m"));
/// ```
pub fn types_table() -> String {
    let mut s = String::from(
        "File types (-t): base tensor type and its bits/weight; bits/weight of the whole 11B text\n\
         decoder under the type's per-tensor mix (rows not a multiple of 256 fall back: Q4_K -> Q5_0,\n\
         Q5_K -> Q5_1, Q6_K -> Q8_0); general.file_type (llama.cpp's llama_ftype):\n",
    );
    for ft in FileType::ALL {
        let base = ft.base();
        s += &format!(
            "  {:<7} {:<5} {:>6.3} bpw  11B text {:>6.3} bpw  ftype {:>2}  {}\n",
            ft.name(),
            base.name(),
            bits_per_weight(base),
            text_bits_11b(ft),
            ft.llama_ftype(),
            description(ft)
        );
    }
    s + "Vision tower and projector: F16 for quantized types (--quantize-vision: the base type)."
}
