//! The conversion plan: which GGUF tensor comes from which checkpoint tensor, with what shape,
//! storage type and row transform. Built and fully validated (every tensor present, every shape
//! right) before anything is written.

use std::collections::HashMap;
use std::path::Path;

use mllama::models::mllama::mix;
use mllama::models::mllama::tensors::{self, Dims, Source as TSource, Tensor, Transform};
use mllama::quant::mix::FileType;
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

    /// Add `t` copied from checkpoint tensor `hf` (whose shape must be `t.shape`).
    fn add(&mut self, t: Tensor, hf: String, ty: GgmlType, order: RowOrder) -> Result<()> {
        self.check_shape(&hf, &t.shape)?;
        self.used.insert(hf.clone(), ());
        self.push(t, Source::Hf(hf), ty, order);
        Ok(())
    }

    fn push(&mut self, t: Tensor, source: Source, ty: GgmlType, order: RowOrder) {
        self.out.push(OutTensor {
            name: t.name,
            source,
            shape: t.shape,
            ty,
            order,
        });
    }
}

/// The tensor dimensions of a checkpoint whose embedding table has `embedding_rows` rows.
pub fn dims(cfg: &MllamaConfig, embedding_rows: usize) -> Dims {
    let (t, v) = (&cfg.text, &cfg.vision);
    let grid = v.image_size / v.patch_size;
    Dims {
        vocab_size: t.vocab_size,
        embedding_rows,
        hidden: t.hidden_size,
        n_heads: t.num_attention_heads,
        n_kv_heads: t.num_key_value_heads,
        head_dim: t.head_dim,
        ffn: t.intermediate_size,
        n_layers: t.num_hidden_layers,
        cross_layers: t.cross_attention_layers.clone(),
        rope_factors: t.rope_scaling.is_some(),
        v_hidden: v.hidden_size,
        v_ffn: v.intermediate_size,
        v_local: v.num_hidden_layers,
        v_global: v.num_global_layers,
        v_output_dim: v.vision_output_dim,
        channels: v.num_channels,
        patch_size: v.patch_size,
        tokens_per_tile: grid * grid + 1,
        max_tiles: v.max_num_tiles,
        aspect_ratio_rows: v.supported_aspect_ratios.len() + 1,
    }
}

/// Build and validate the plan: every output tensor of the [`tensors`] table with its source,
/// shape and type (the file type's per-tensor mix, [`mix::storage_types`]; vision and projector
/// matrices F16 for quantized types unless `quantize_vision`), plus the names of checkpoint
/// tensors left unused.
///
/// # Errors
///
/// [`ConvertError`] naming the checkpoint tensor if one is missing or its shape differs from
/// what `config.json` implies.
pub fn build(
    cfg: &MllamaConfig,
    ckpt: &Checkpoint,
    dir: &Path,
    ft: FileType,
    quantize_vision: bool,
) -> Result<(Vec<OutTensor>, Vec<String>)> {
    let mut b = Builder {
        ckpt,
        dir,
        out: Vec::new(),
        used: HashMap::new(),
    };
    // Token embeddings: Llama 3.2 Vision has vocab + 8 rows (the image token has its own row).
    let emb = tensors::TOKEN_EMBD.hf_name(None).unwrap_or_default();
    let emb_rows = b.src(&emb)?.shape.first().copied().unwrap_or(0);
    let vocab = cfg.text.vocab_size;
    if emb_rows < vocab || (cfg.image_token_index as usize) >= emb_rows {
        return Err(ConvertError::tensor(
            ckpt.shard_path(b.src(&emb)?),
            &emb,
            format!(
                "{emb_rows} rows: needs at least vocab_size {vocab} rows and a row for image_token_index {}",
                cfg.image_token_index
            ),
        ));
    }
    let head_dim = cfg.text.head_dim;
    let all = tensors::expand(&dims(cfg, emb_rows));
    let types = mix::storage_types(&all, cfg.text.num_hidden_layers, ft, quantize_vision);
    for (t, ty) in all.into_iter().zip(types) {
        let order = match t.decl.transform {
            Transform::AsIs => RowOrder::AsIs,
            Transform::RopePermute => RowOrder::RopePermute { head_dim },
        };
        let hf = t.hf_name();
        match (t.decl.source, hf) {
            (TSource::Computed, _) => {
                if let Some(f) = llama3_rope_factors(cfg) {
                    b.push(t, Source::Computed(f), ty, order);
                }
            }
            (TSource::HfOrTied(_, tied), Some(hf))
                if ckpt.get(&hf).is_none() && cfg.text.tie_word_embeddings =>
            {
                // Tied head: the first rows of the embedding table.
                b.push(t, Source::Hf(tied.into()), ty, order);
            }
            (_, Some(hf)) => b.add(t, hf, ty, order)?,
            (_, None) => unreachable!("only computed tensors have no checkpoint name"),
        }
    }
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
