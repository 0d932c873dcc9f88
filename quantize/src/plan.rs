//! The conversion plan: which GGUF tensor comes from which checkpoint tensor, with what shape,
//! storage type and row transform. Built and fully validated (every tensor present, every shape
//! right) before anything is written.

use std::collections::HashMap;
use std::path::Path;

use mllama::models::mllama::keys::{self, blk, vblk, vgblk};
use mllama::GgmlType;

use crate::checkpoint::{Checkpoint, SrcTensor};
use crate::config::MllamaConfig;
use crate::error::{ConvertError, Result};

/// Where an output tensor's values come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Rows `[0, rows)` of a checkpoint tensor (all rows unless the output is shorter, as for a
    /// tied `output.weight` taken from the embedding table).
    Hf(String),
    /// Values computed by the converter (the llama3 RoPE frequency factors).
    Computed(Vec<f32>),
}

/// How rows are reordered on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOrder {
    /// Rows in checkpoint order.
    AsIs,
    /// HF rotate-half q/k rows → ggml adjacent-pair rows, per head of `head_dim` rows:
    /// output row `2i + j` of a head is HF row `j · head_dim/2 + i`.
    RopePermute {
        /// Rows per head.
        head_dim: usize,
    },
}

/// One tensor of the output file and how to make it.
#[derive(Clone, Debug)]
pub struct OutTensor {
    /// GGUF tensor name.
    pub name: String,
    /// Where its values come from.
    pub source: Source,
    /// Outermost-first shape (PyTorch order).
    pub shape: Vec<usize>,
    /// Storage type.
    pub ty: GgmlType,
    /// Row reordering on the way out.
    pub order: RowOrder,
}

impl OutTensor {
    /// Values per row (the last dimension).
    pub fn row_len(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Number of rows (the product of the other dimensions).
    ///
    /// # Panics
    ///
    /// If the shape is empty.
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len() - 1].iter().product()
    }
}

/// What to store large matrices as.
#[derive(Clone, Copy, Debug)]
pub struct TypePolicy {
    /// The requested type (`-t`): used for text matrices.
    pub text: GgmlType,
    /// Type for vision and projector matrices.
    pub vision: GgmlType,
    /// Type for the 4-D patch convolution (never block-quantized: rows of 14 values).
    pub patch: GgmlType,
}

impl TypePolicy {
    /// Floats stay the requested float type everywhere; for a quantized type the vision tower and
    /// projector stay F16 unless `quantize_vision`.
    pub fn new(ty: GgmlType, quantize_vision: bool) -> Self {
        let float = !ty.is_quantized();
        TypePolicy {
            text: ty,
            vision: if float || quantize_vision {
                ty
            } else {
                GgmlType::F16
            },
            patch: if float { ty } else { GgmlType::F16 },
        }
    }
}

/// `general.file_type` values (llama.cpp's `llama_ftype`).
pub fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q8_0 => 7,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// llama3 RoPE scaling as per-frequency divisors (llama.cpp's `rope_freqs.weight`): the runtime
/// uses `theta^(-2i/d) / factor[i]`.
pub fn llama3_rope_factors(cfg: &MllamaConfig) -> Option<Vec<f32>> {
    let s = cfg.text.rope_scaling.as_ref()?;
    let d = cfg.text.head_dim;
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    Some(
        (0..d / 2)
            .map(|i| {
                let inv = cfg.text.rope_theta.powf(-((2 * i) as f64) / d as f64);
                let wavelen = 2.0 * std::f64::consts::PI / inv;
                let f = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    1.0 / ((1.0 - smooth) / s.factor + smooth)
                };
                f as f32
            })
            .collect(),
    )
}

struct Builder<'a> {
    ckpt: &'a Checkpoint,
    dir: &'a Path,
    out: Vec<OutTensor>,
    used: HashMap<String, ()>,
}

impl Builder<'_> {
    fn src(&self, hf: &str) -> Result<&SrcTensor> {
        self.ckpt.get(hf).ok_or_else(|| {
            ConvertError::file(self.dir, format!("missing tensor {hf:?} in the checkpoint"))
        })
    }

    fn check_shape(&self, hf: &str, want: &[usize]) -> Result<()> {
        let t = self.src(hf)?;
        if t.shape != want {
            return Err(ConvertError::tensor(
                self.ckpt.shard_path(t),
                hf,
                format!("shape {:?}, expected {:?} from config.json", t.shape, want),
            ));
        }
        Ok(())
    }

    /// Add a tensor copied from `hf` with the expected shape.
    fn add(
        &mut self,
        name: String,
        hf: &str,
        shape: &[usize],
        ty: GgmlType,
        order: RowOrder,
    ) -> Result<()> {
        self.check_shape(hf, shape)?;
        // A block type needs whole blocks per row; otherwise fall back to F16.
        let ty = if ty.row_bytes(*shape.last().unwrap_or(&1) as u64).is_some() {
            ty
        } else {
            GgmlType::F16
        };
        self.used.insert(hf.to_owned(), ());
        self.out.push(OutTensor {
            name,
            source: Source::Hf(hf.to_owned()),
            shape: shape.to_vec(),
            ty,
            order,
        });
        Ok(())
    }

    fn f32(&mut self, name: String, hf: &str, shape: &[usize]) -> Result<()> {
        self.add(name, hf, shape, GgmlType::F32, RowOrder::AsIs)
    }
}

/// Build and validate the plan: every output tensor with its source, shape and type, plus the
/// names of checkpoint tensors left unused.
///
/// # Errors
///
/// [`ConvertError`] naming the checkpoint tensor if one is missing or its shape differs from
/// what `config.json` implies.
pub fn build(
    cfg: &MllamaConfig,
    ckpt: &Checkpoint,
    dir: &Path,
    policy: TypePolicy,
) -> Result<(Vec<OutTensor>, Vec<String>)> {
    let mut b = Builder {
        ckpt,
        dir,
        out: Vec::new(),
        used: HashMap::new(),
    };
    let t = &cfg.text;
    let (h, hd, nh, nkv, ff) = (
        t.hidden_size,
        t.head_dim,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.intermediate_size,
    );
    let tt = policy.text;

    // Token embeddings: Llama 3.2 Vision has vocab + 8 rows (the image token has its own row).
    let emb = "language_model.model.embed_tokens.weight";
    let emb_rows = b.src(emb)?.shape.first().copied().unwrap_or(0);
    if emb_rows < t.vocab_size || (cfg.image_token_index as usize) >= emb_rows {
        return Err(ConvertError::tensor(
            ckpt.shard_path(b.src(emb)?),
            emb,
            format!(
                "{emb_rows} rows: needs at least vocab_size {} rows and a row for image_token_index {}",
                t.vocab_size, cfg.image_token_index
            ),
        ));
    }
    b.add(
        keys::T_TOKEN_EMBD.into(),
        emb,
        &[emb_rows, h],
        tt,
        RowOrder::AsIs,
    )?;
    if let Some(f) = llama3_rope_factors(cfg) {
        b.out.push(OutTensor {
            name: keys::T_ROPE_FREQS.into(),
            shape: vec![f.len()],
            source: Source::Computed(f),
            ty: GgmlType::F32,
            order: RowOrder::AsIs,
        });
    }

    for i in 0..t.num_hidden_layers {
        let p = format!("language_model.model.layers.{i}");
        b.f32(
            blk(i, "attn_norm.weight"),
            &format!("{p}.input_layernorm.weight"),
            &[h],
        )?;
        b.f32(
            blk(i, "ffn_norm.weight"),
            &format!("{p}.post_attention_layernorm.weight"),
            &[h],
        )?;
        if t.cross_attention_layers.contains(&i) {
            let c = format!("{p}.cross_attn");
            let keep = RowOrder::AsIs;
            b.add(
                blk(i, "cross_attn_q_proj.weight"),
                &format!("{c}.q_proj.weight"),
                &[nh * hd, h],
                tt,
                keep,
            )?;
            b.add(
                blk(i, "cross_attn_k_proj.weight"),
                &format!("{c}.k_proj.weight"),
                &[nkv * hd, h],
                tt,
                keep,
            )?;
            b.add(
                blk(i, "cross_attn_v_proj.weight"),
                &format!("{c}.v_proj.weight"),
                &[nkv * hd, h],
                tt,
                keep,
            )?;
            b.add(
                blk(i, "cross_attn_o_proj.weight"),
                &format!("{c}.o_proj.weight"),
                &[h, nh * hd],
                tt,
                keep,
            )?;
            b.f32(
                blk(i, "cross_attn_q_norm.weight"),
                &format!("{c}.q_norm.weight"),
                &[hd],
            )?;
            b.f32(
                blk(i, "cross_attn_k_norm.weight"),
                &format!("{c}.k_norm.weight"),
                &[hd],
            )?;
            b.f32(
                blk(i, "cross_attn_attn_gate"),
                &format!("{p}.cross_attn_attn_gate"),
                &[1],
            )?;
            b.f32(
                blk(i, "cross_attn_mlp_gate"),
                &format!("{p}.cross_attn_mlp_gate"),
                &[1],
            )?;
        } else {
            let a = format!("{p}.self_attn");
            let perm = RowOrder::RopePermute { head_dim: hd };
            b.add(
                blk(i, "attn_q.weight"),
                &format!("{a}.q_proj.weight"),
                &[nh * hd, h],
                tt,
                perm,
            )?;
            b.add(
                blk(i, "attn_k.weight"),
                &format!("{a}.k_proj.weight"),
                &[nkv * hd, h],
                tt,
                perm,
            )?;
            b.add(
                blk(i, "attn_v.weight"),
                &format!("{a}.v_proj.weight"),
                &[nkv * hd, h],
                tt,
                RowOrder::AsIs,
            )?;
            b.add(
                blk(i, "attn_output.weight"),
                &format!("{a}.o_proj.weight"),
                &[h, nh * hd],
                tt,
                RowOrder::AsIs,
            )?;
        }
        let m = format!("{p}.mlp");
        b.add(
            blk(i, "ffn_gate.weight"),
            &format!("{m}.gate_proj.weight"),
            &[ff, h],
            tt,
            RowOrder::AsIs,
        )?;
        b.add(
            blk(i, "ffn_up.weight"),
            &format!("{m}.up_proj.weight"),
            &[ff, h],
            tt,
            RowOrder::AsIs,
        )?;
        b.add(
            blk(i, "ffn_down.weight"),
            &format!("{m}.down_proj.weight"),
            &[h, ff],
            tt,
            RowOrder::AsIs,
        )?;
    }
    b.f32(
        keys::T_OUTPUT_NORM.into(),
        "language_model.model.norm.weight",
        &[h],
    )?;
    let head = "language_model.lm_head.weight";
    if ckpt.get(head).is_some() || !t.tie_word_embeddings {
        b.add(
            keys::T_OUTPUT.into(),
            head,
            &[t.vocab_size, h],
            tt,
            RowOrder::AsIs,
        )?;
    } else {
        // Tied head: the first vocab_size rows of the embedding table.
        b.out.push(OutTensor {
            name: keys::T_OUTPUT.into(),
            source: Source::Hf(emb.into()),
            shape: vec![t.vocab_size, h],
            ty: tt,
            order: RowOrder::AsIs,
        });
    }

    // Vision tower.
    let v = &cfg.vision;
    let d = v.hidden_size;
    let vt = policy.vision;
    let grid = v.image_size / v.patch_size;
    let n_pos = grid * grid + 1;
    let n_ratios = v.supported_aspect_ratios.len() + 1;
    let tiles = v.max_num_tiles;
    let vm = "vision_model";
    b.add(
        keys::T_V_PATCH_EMBD.into(),
        &format!("{vm}.patch_embedding.weight"),
        &[d, v.num_channels, v.patch_size, v.patch_size],
        policy.patch,
        RowOrder::AsIs,
    )?;
    b.f32(
        keys::T_V_CLASS_EMBD.into(),
        &format!("{vm}.class_embedding"),
        &[d],
    )?;
    let gpe = format!("{vm}.gated_positional_embedding");
    b.f32(
        keys::T_V_POS_EMBD.into(),
        &format!("{gpe}.embedding"),
        &[n_pos, d],
    )?;
    b.f32(keys::T_V_POS_GATE.into(), &format!("{gpe}.gate"), &[1])?;
    b.f32(
        keys::T_V_TILE_POS_EMBD.into(),
        &format!("{gpe}.tile_embedding.weight"),
        &[n_ratios, tiles * n_pos * d],
    )?;
    b.f32(keys::T_V_TILE_POS_GATE.into(), &format!("{gpe}.gate"), &[1])?;
    for (which, w, g) in [
        ("pre", keys::T_V_PRE_TILE_EMBD, keys::T_V_PRE_TILE_GATE),
        ("post", keys::T_V_POST_TILE_EMBD, keys::T_V_POST_TILE_GATE),
    ] {
        let p = format!("{vm}.{which}_tile_positional_embedding");
        b.f32(
            w.into(),
            &format!("{p}.embedding.weight"),
            &[n_ratios, tiles * d],
        )?;
        b.f32(g.into(), &format!("{p}.gate"), &[1])?;
    }
    b.f32(
        keys::T_V_PRE_LN_W.into(),
        &format!("{vm}.layernorm_pre.weight"),
        &[d],
    )?;
    b.f32(
        keys::T_V_PRE_LN_B.into(),
        &format!("{vm}.layernorm_pre.bias"),
        &[d],
    )?;
    b.f32(
        keys::T_V_POST_LN_W.into(),
        &format!("{vm}.layernorm_post.weight"),
        &[d],
    )?;
    b.f32(
        keys::T_V_POST_LN_B.into(),
        &format!("{vm}.layernorm_post.bias"),
        &[d],
    )?;
    let fv = v.intermediate_size;
    for (global, n) in [(false, v.num_hidden_layers), (true, v.num_global_layers)] {
        for i in 0..n {
            let p = if global {
                format!("{vm}.global_transformer.layers.{i}")
            } else {
                format!("{vm}.transformer.layers.{i}")
            };
            let name = |s: &str| if global { vgblk(i, s) } else { vblk(i, s) };
            let keep = RowOrder::AsIs;
            b.add(
                name("attn_q.weight"),
                &format!("{p}.self_attn.q_proj.weight"),
                &[d, d],
                vt,
                keep,
            )?;
            b.add(
                name("attn_k.weight"),
                &format!("{p}.self_attn.k_proj.weight"),
                &[d, d],
                vt,
                keep,
            )?;
            b.add(
                name("attn_v.weight"),
                &format!("{p}.self_attn.v_proj.weight"),
                &[d, d],
                vt,
                keep,
            )?;
            b.add(
                name("attn_output.weight"),
                &format!("{p}.self_attn.o_proj.weight"),
                &[d, d],
                vt,
                keep,
            )?;
            b.f32(
                name("attn_norm.weight"),
                &format!("{p}.input_layernorm.weight"),
                &[d],
            )?;
            b.f32(
                name("attn_norm.bias"),
                &format!("{p}.input_layernorm.bias"),
                &[d],
            )?;
            b.f32(
                name("ffn_norm.weight"),
                &format!("{p}.post_attention_layernorm.weight"),
                &[d],
            )?;
            b.f32(
                name("ffn_norm.bias"),
                &format!("{p}.post_attention_layernorm.bias"),
                &[d],
            )?;
            b.add(
                name("ffn_up.weight"),
                &format!("{p}.mlp.fc1.weight"),
                &[fv, d],
                vt,
                keep,
            )?;
            b.f32(name("ffn_up.bias"), &format!("{p}.mlp.fc1.bias"), &[fv])?;
            b.add(
                name("ffn_down.weight"),
                &format!("{p}.mlp.fc2.weight"),
                &[d, fv],
                vt,
                keep,
            )?;
            b.f32(name("ffn_down.bias"), &format!("{p}.mlp.fc2.bias"), &[d])?;
            if global {
                b.f32(name("attn_gate"), &format!("{p}.gate_attn"), &[1])?;
                b.f32(name("ffn_gate"), &format!("{p}.gate_ffn"), &[1])?;
            }
        }
    }
    b.add(
        keys::T_MM_W.into(),
        "multi_modal_projector.weight",
        &[h, v.vision_output_dim],
        vt,
        RowOrder::AsIs,
    )?;
    b.f32(keys::T_MM_B.into(), "multi_modal_projector.bias", &[h])?;

    let unused: Vec<String> = ckpt.unused(&b.used).map(str::to_owned).collect();
    Ok((b.out, unused))
}

/// Source row for output row `r` under `order`.
///
/// ```
/// use mllama_quantize::plan::{source_row, RowOrder};
///
/// let order = RowOrder::RopePermute { head_dim: 8 };
/// let rows: Vec<usize> = (0..8).map(|r| source_row(order, r)).collect();
/// assert_eq!(rows, [0, 4, 1, 5, 2, 6, 3, 7]); // HF pairs (i, i + 4) become adjacent rows
/// ```
pub fn source_row(order: RowOrder, r: usize) -> usize {
    match order {
        RowOrder::AsIs => r,
        RowOrder::RopePermute { head_dim } => {
            let head = r / head_dim;
            let k = r % head_dim;
            head * head_dim + (k % 2) * (head_dim / 2) + k / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_pairs_rotate_half_rows() {
        // head_dim 8: HF pairs (i, i+4) become ggml rows (2i, 2i+1).
        let rows: Vec<usize> = (0..16)
            .map(|r| source_row(RowOrder::RopePermute { head_dim: 8 }, r))
            .collect();
        assert_eq!(
            rows,
            vec![0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
        );
    }
}
