//! The storage type of every tensor of an `mllama` file under a [`FileType`]: the one rule that
//! `quantize` and the synthetic benchmark models share.
//!
//! * Text decoder matrices (token embedding, self- and cross-attention, MLP, output head) follow
//!   llama.cpp's mix ([`quant::mix::tensor_type`](crate::quant::mix::tensor_type)), with the
//!   counters llama.cpp would keep on this file's tensor names:
//!   - `attn_v` counts the `blk.{i}.attn_v.weight` tensors only, i.e. the **self-attention
//!     layers** (32 of the 11B model's 40 layers, 80 of the 90B's 100), in layer order. The
//!     cross-attention layers' `blk.{i}.cross_attn_v_proj.weight` is not an `attn_v.weight` to
//!     llama.cpp (its category is "other"), so it gets the base type and is not counted.
//!   - `ffn_down` is counted per tensor in file order over `n_layer` = all decoder layers (every
//!     layer, cross or not, has one), so the index is the layer number.
//!   - Vision and projector tensors never move these counters (llama.cpp keeps them in a
//!     separate mmproj file).
//! * Vision tower and projector matrices: F16 for quantized file types; with `quantize_vision`
//!   the file type's **base type** (Q4_K for `q4_k_m` and `q4_k_s`, Q5_K for `q5_k_*`, Q6_K,
//!   Q4_1, ...) on every one of them, with the same row-length [`fallback`]: the vision tower has
//!   no `output`/`attn_v`/`ffn_down` in llama.cpp's sense, and llama.cpp's mmproj quantizer also
//!   uses one type throughout. The patch convolution stays F16.
//! * For float file types every matrix (and the patch convolution) has that type.
//! * Norms, biases, gates, embeddings tables of the vision tower, RoPE factors: F32.

use crate::models::mllama::tensors::{Role, Scope, Storage, Tensor, Tower};
use crate::quant::mix::{fallback, tensor_type, Category, FileType, Position};
use crate::GgmlType;

/// llama.cpp's category of a text-decoder tensor, from its declaration (equal to
/// [`Category::of_name`] of its GGUF name; tested).
pub fn category(t: &Tensor) -> Category {
    let d = t.decl;
    if d.tower != Tower::Text {
        return Category::Other;
    }
    match (d.role, d.scope) {
        (Role::TokenEmbd, _) => Category::TokenEmbd,
        (Role::Output, _) => Category::Output,
        (Role::AttnV, Scope::SelfLayer) => Category::AttnV,
        (Role::FfnDown, _) => Category::FfnDown,
        _ => Category::Other,
    }
}

/// The storage type of each of `tensors` (the list of
/// [`tensors::expand`](super::tensors::expand), in file order) of a model with `n_layers` text
/// layers, under file type `ft`.
///
/// ```
/// use mllama::models::mllama::{mix, spec::ModelSpec, tensors};
/// use mllama::quant::mix::FileType;
/// use mllama::GgmlType;
///
/// let d = ModelSpec::llama32_11b().dims();
/// let all = tensors::expand(&d);
/// let types = mix::storage_types(&all, d.n_layers, FileType::Q4KM, false);
/// let ty = |name: &str| types[all.iter().position(|t| t.name == name).unwrap()];
/// assert_eq!(ty("output.weight"), GgmlType::Q6_K);
/// assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6_K);
/// assert_eq!(ty("blk.5.ffn_down.weight"), GgmlType::Q4_K);
/// assert_eq!(ty("blk.3.cross_attn_v_proj.weight"), GgmlType::Q4_K);
/// assert_eq!(ty("v.blk.0.attn_v.weight"), GgmlType::F16);
/// ```
pub fn storage_types(
    tensors: &[Tensor],
    n_layers: usize,
    ft: FileType,
    quantize_vision: bool,
) -> Vec<GgmlType> {
    let text = |t: &Tensor| t.storage() == Storage::TextMatrix;
    let n_v = tensors
        .iter()
        .filter(|t| text(t) && category(t) == Category::AttnV)
        .count();
    let (mut i_v, mut i_down) = (0, 0);
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let row_len = *t.shape.last().unwrap_or(&1);
        let ty = match t.storage() {
            Storage::TextMatrix => {
                let cat = category(t);
                let pos = match cat {
                    Category::AttnV => counted(&mut i_v, n_v),
                    Category::FfnDown => counted(&mut i_down, n_layers),
                    _ => Position::default(),
                };
                tensor_type(ft, cat, pos, row_len)
            }
            Storage::VisionMatrix if !ft.is_quantized() || quantize_vision => {
                fallback(ft.base(), row_len)
            }
            Storage::VisionMatrix => GgmlType::F16,
            Storage::Patch if ft.is_quantized() => GgmlType::F16,
            Storage::Patch => ft.base(),
            Storage::Small => GgmlType::F32,
        };
        out.push(ty);
    }
    out
}

/// The position at counter `i` (then advanced) of `count`.
fn counted(i: &mut usize, count: usize) -> Position {
    let pos = Position { index: *i, count };
    *i += 1;
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::mllama::spec::ModelSpec;
    use crate::models::mllama::tensors::expand;
    use crate::quant::mix::use_more_bits;
    use GgmlType::*;

    fn types_of(spec: &ModelSpec, ft: FileType, qv: bool) -> Vec<(Tensor, GgmlType)> {
        let d = spec.dims();
        let all = expand(&d);
        let ty = storage_types(&all, d.n_layers, ft, qv);
        all.into_iter().zip(ty).collect()
    }

    #[test]
    fn categories_match_llama_cpp_names() {
        for spec in [ModelSpec::llama32_11b(), ModelSpec::llama32_90b()] {
            for t in expand(&spec.dims()) {
                if t.storage() == Storage::TextMatrix {
                    assert_eq!(category(&t), Category::of_name(&t.name), "{}", t.name);
                }
            }
        }
    }

    /// The 11B model (40 layers, cross layers 3, 8, ..., 38) as Q4_K_M, tensor by tensor, from
    /// llama.cpp's rule written out independently: ffn_down of layer i is Q6_K iff i is a
    /// more-bits layer of 40; the k-th self layer's attn_v is Q6_K iff k is one of 32.
    #[test]
    fn q4_k_m_11b_table() {
        let spec = ModelSpec::llama32_11b();
        let self_layers: Vec<usize> = (0..40).filter(|i| i % 5 != 3).collect();
        assert_eq!(spec.cross_layers, [3, 8, 13, 18, 23, 28, 33, 38]);
        let mut q6 = Vec::new();
        for (t, ty) in types_of(&spec, FileType::Q4KM, false) {
            match (t.storage(), ty) {
                (Storage::TextMatrix, Q6_K) => q6.push(t.name.clone()),
                (Storage::TextMatrix, Q4_K) => {}
                (Storage::VisionMatrix | Storage::Patch, F16) | (Storage::Small, F32) => {}
                other => panic!("{}: {other:?}", t.name),
            }
        }
        let mut want = vec!["output.weight".to_string()];
        for i in 0..40 {
            if let Some(k) = self_layers.iter().position(|&l| l == i) {
                if use_more_bits(k, 32) {
                    want.push(format!("blk.{i}.attn_v.weight"));
                }
            }
            if use_more_bits(i, 40) {
                want.push(format!("blk.{i}.ffn_down.weight"));
            }
        }
        q6.sort();
        want.sort();
        assert_eq!(q6, want);
        // 16 attn_v and 20 ffn_down in Q6_K, plus the output head.
        assert_eq!(want.len(), 1 + 16 + 20);
        assert!(q6.contains(&"blk.39.attn_v.weight".to_string()));
        assert!(!q6.contains(&"blk.5.attn_v.weight".to_string())); // 5th self layer (k = 4)
    }

    #[test]
    fn tiny_model_falls_back_and_vision_follows_the_flag() {
        // tiny: hidden 64, ffn 128 (no 256-multiples): K-types fall back.
        let spec = ModelSpec::tiny();
        for (t, ty) in types_of(&spec, FileType::Q4KS, true) {
            let row = *t.shape.last().unwrap();
            let want = match t.storage() {
                Storage::TextMatrix if t.name == "output.weight" => Q8_0,
                // The first 4 value projections get Q5_K, whose fallback is Q5_1.
                Storage::TextMatrix if category(&t) == Category::AttnV => Q5_1,
                Storage::TextMatrix | Storage::VisionMatrix if row % 32 == 0 => Q5_0,
                Storage::TextMatrix | Storage::VisionMatrix => F16,
                Storage::Patch => F16,
                Storage::Small => F32,
            };
            assert_eq!(ty, want, "{} {:?}", t.name, t.shape);
        }
        for (t, ty) in types_of(&spec, FileType::F16, false) {
            let want = if t.storage() == Storage::Small {
                F32
            } else {
                F16
            };
            assert_eq!(ty, want, "{}", t.name);
        }
    }

    #[test]
    fn q4_k_s_first_layers_of_11b() {
        let spec = ModelSpec::llama32_11b();
        let all = types_of(&spec, FileType::Q4KS, false);
        let ty = |n: &str| all.iter().find(|(t, _)| t.name == n).unwrap().1;
        // The first 4 attn_v tensors are layers 0, 1, 2, 4 (layer 3 is a cross layer).
        for i in [0, 1, 2, 4] {
            assert_eq!(ty(&format!("blk.{i}.attn_v.weight")), Q5_K);
        }
        assert_eq!(ty("blk.5.attn_v.weight"), Q4_K);
        for i in 0..5 {
            assert_eq!(ty(&format!("blk.{i}.ffn_down.weight")), Q5_K);
        }
        assert_eq!(ty("blk.5.ffn_down.weight"), Q4_K);
        assert_eq!(ty("token_embd.weight"), Q4_K);
        assert_eq!(ty("output.weight"), Q6_K);
    }
}
