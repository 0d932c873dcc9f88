//! The architecture as plain numbers: writes the `mllama.*` metadata every file of ours carries
//! (the converter and synthetic benchmark models share it) and gives the dimensions of the tensors
//! such a file holds ([`super::tensors`] declares them).

use crate::format::gguf::{Array, GgufWriter, Value};
use crate::models::mllama::keys;
use crate::models::mllama::tensors::{self, Dims};
use crate::GgufError;

/// llama3 RoPE scaling parameters (HF `rope_scaling` with `rope_type: "llama3"`; the
/// `mllama.rope.scaling.*` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    /// Frequency divisor for long wavelengths (8).
    pub factor: f32,
    /// Wavelengths above `original_context_length / low_freq_factor` are divided by `factor` (1).
    pub low_freq_factor: f32,
    /// Wavelengths below `original_context_length / high_freq_factor` are kept (4).
    pub high_freq_factor: f32,
    /// Context length of pre-training (8192).
    pub original_context_length: u32,
}

/// Dimensions of an mllama model as plain numbers: what
/// [`write_metadata`](ModelSpec::write_metadata) writes and [`tensors`](ModelSpec::tensors)
/// lists. Fields mirror [`TextConfig`](super::TextConfig) (no prefix),
/// [`VisionConfig`](super::VisionConfig) (`v_` prefix) and
/// [`PreprocessConfig`](crate::models::mllama::preprocess::PreprocessConfig).
///
/// ```
/// use mllama::models::mllama::spec::ModelSpec;
///
/// let spec = ModelSpec::llama32_11b();
/// assert_eq!((spec.head_dim(), spec.tokens_per_tile()), (128, 1601));
/// let (name, shape, _) = &spec.tensors()[0];
/// assert_eq!((name.as_str(), shape.as_slice()), ("token_embd.weight", &[128264, 4096][..]));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Output vocabulary (rows of `output.weight`).
    pub vocab_size: usize,
    /// Rows of `token_embd.weight` (vocab + 8 learnable rows).
    pub embedding_rows: usize,
    /// Text hidden size.
    pub hidden: usize,
    /// Text decoder layers (self- and cross-attention).
    pub n_layers: usize,
    /// Text MLP intermediate width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// llama3 RoPE scaling (`None`: unscaled RoPE, and no `rope_freqs.weight` tensor).
    pub rope_scaling: Option<RopeScaling>,
    /// Longest supported context in tokens.
    pub context_length: usize,
    /// Indices of the cross-attention layers.
    pub cross_layers: Vec<usize>,
    /// Id of the `<|image|>` token.
    pub image_token: u32,
    /// Vision hidden size.
    pub v_hidden: usize,
    /// Vision attention heads.
    pub v_heads: usize,
    /// Vision MLP intermediate width.
    pub v_ffn: usize,
    /// Local vision layers.
    pub v_local: usize,
    /// Gated global vision layers.
    pub v_global: usize,
    /// Local vision layers whose states feed the projector.
    pub v_taps: Vec<usize>,
    /// Vision LayerNorm epsilon.
    pub v_eps: f32,
    /// Tile edge in pixels.
    pub image_size: usize,
    /// Patch edge in pixels.
    pub patch_size: usize,
    /// Tile slots per image.
    pub max_tiles: usize,
    /// Preprocessing mean per RGB channel.
    pub mean: [f32; 3],
    /// Preprocessing standard deviation per RGB channel.
    pub std: [f32; 3],
    /// Factor applied to uint8 pixel values (1/255).
    pub rescale_factor: f32,
    /// (tiles_high, tiles_wide), aspect-ratio id = 1 + index.
    pub aspect_ratios: Vec<(usize, usize)>,
}

/// How a tensor is stored (the converter's and synthetic models' type choice): see
/// [`Storage`](super::tensors::Storage).
pub use super::tensors::Storage as TensorKind;

impl ModelSpec {
    /// Llama-3.2-11B-Vision.
    #[allow(clippy::excessive_precision)]
    pub fn llama32_11b() -> Self {
        ModelSpec {
            vocab_size: 128256,
            embedding_rows: 128264,
            hidden: 4096,
            n_layers: 40,
            ffn: 14336,
            n_heads: 32,
            n_kv_heads: 8,
            rms_eps: 1e-5,
            rope_theta: 500000.0,
            rope_scaling: Some(RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context_length: 8192,
            }),
            context_length: 131072,
            cross_layers: vec![3, 8, 13, 18, 23, 28, 33, 38],
            image_token: 128256,
            v_hidden: 1280,
            v_heads: 16,
            v_ffn: 5120,
            v_local: 32,
            v_global: 8,
            v_taps: vec![3, 7, 15, 23, 30],
            v_eps: 1e-5,
            image_size: 560,
            patch_size: 14,
            max_tiles: 4,
            mean: [0.48145466, 0.4578275, 0.40821073],
            std: [0.26862954, 0.26130258, 0.27577711],
            rescale_factor: 1.0 / 255.0,
            aspect_ratios: vec![
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (2, 1),
                (2, 2),
                (3, 1),
                (4, 1),
            ],
        }
    }

    /// Llama-3.2-90B-Vision (text 8192 wide, 100 layers with 20 cross layers).
    pub fn llama32_90b() -> Self {
        ModelSpec {
            hidden: 8192,
            n_layers: 100,
            ffn: 28672,
            n_heads: 64,
            cross_layers: (0..20).map(|i| 3 + 5 * i).collect(),
            ..Self::llama32_11b()
        }
    }

    /// A tiny model with the real structure (for quick runs and tests).
    pub fn tiny() -> Self {
        ModelSpec {
            vocab_size: 512,
            embedding_rows: 520,
            hidden: 64,
            n_layers: 6,
            ffn: 224,
            n_heads: 4,
            n_kv_heads: 2,
            cross_layers: vec![1, 4],
            image_token: 512,
            v_hidden: 32,
            v_heads: 2,
            v_ffn: 128,
            v_local: 4,
            v_global: 2,
            v_taps: vec![1, 3],
            image_size: 56,
            ..Self::llama32_11b()
        }
    }

    /// Text head dimension: `hidden / n_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.n_heads
    }

    /// Vision tokens per tile (patches + class token).
    pub fn tokens_per_tile(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g + 1
    }

    /// Write every `mllama.*` architecture and preprocessing key, and the convention keys for
    /// files laid out as our converter writes them (the caller adds `general.*`, tokenizer and
    /// generation keys).
    ///
    /// # Errors
    ///
    /// [`GgufError::DuplicateKey`] if `w` already holds one of these keys.
    pub fn write_metadata(&self, w: &mut GgufWriter) -> Result<(), GgufError> {
        let u = |x: usize| Value::U32(x as u32);
        let i32s = |v: &[usize]| Value::Array(Array::I32(v.iter().map(|&x| x as i32).collect()));
        w.add(keys::VOCAB_SIZE, u(self.vocab_size))?;
        w.add(keys::EMBEDDING_ROWS, u(self.embedding_rows))?;
        w.add(keys::CONTEXT_LENGTH, u(self.context_length))?;
        w.add(keys::EMBEDDING_LENGTH, u(self.hidden))?;
        w.add(keys::BLOCK_COUNT, u(self.n_layers))?;
        w.add(keys::FEED_FORWARD_LENGTH, u(self.ffn))?;
        w.add(keys::HEAD_COUNT, u(self.n_heads))?;
        w.add(keys::HEAD_COUNT_KV, u(self.n_kv_heads))?;
        w.add(keys::KEY_LENGTH, u(self.head_dim()))?;
        w.add(keys::RMS_EPS, Value::F32(self.rms_eps))?;
        w.add(keys::CROSS_ATTENTION_LAYERS, i32s(&self.cross_layers))?;
        w.add(keys::ROPE_DIMENSION_COUNT, u(self.head_dim()))?;
        w.add(keys::ROPE_FREQ_BASE, Value::F32(self.rope_theta))?;
        if let Some(s) = &self.rope_scaling {
            w.add(keys::ROPE_SCALING_TYPE, Value::String("llama3".into()))?;
            w.add(keys::ROPE_SCALING_FACTOR, Value::F32(s.factor))?;
            w.add(
                keys::ROPE_SCALING_ORIG_CTX,
                Value::U32(s.original_context_length),
            )?;
            w.add(keys::ROPE_SCALING_LOW_FREQ, Value::F32(s.low_freq_factor))?;
            w.add(keys::ROPE_SCALING_HIGH_FREQ, Value::F32(s.high_freq_factor))?;
        }
        w.add(keys::IMAGE_TOKEN_INDEX, Value::U32(self.image_token))?;
        w.add(keys::V_BLOCK_COUNT, u(self.v_local))?;
        w.add(keys::V_GLOBAL_BLOCK_COUNT, u(self.v_global))?;
        w.add(keys::V_INTERMEDIATE_LAYERS, i32s(&self.v_taps))?;
        w.add(keys::V_EMBEDDING_LENGTH, u(self.v_hidden))?;
        w.add(keys::V_FEED_FORWARD_LENGTH, u(self.v_ffn))?;
        w.add(keys::V_HEAD_COUNT, u(self.v_heads))?;
        w.add(keys::V_LN_EPS, Value::F32(self.v_eps))?;
        w.add(keys::V_IMAGE_SIZE, u(self.image_size))?;
        w.add(keys::V_PATCH_SIZE, u(self.patch_size))?;
        w.add(keys::V_MAX_NUM_TILES, u(self.max_tiles))?;
        w.add(keys::V_NUM_CHANNELS, u(3))?;
        w.add(
            keys::V_OUTPUT_DIM,
            u(self.v_hidden * (1 + self.v_taps.len())),
        )?;
        w.add(
            keys::P_IMAGE_MEAN,
            Value::Array(Array::F32(self.mean.to_vec())),
        )?;
        w.add(
            keys::P_IMAGE_STD,
            Value::Array(Array::F32(self.std.to_vec())),
        )?;
        w.add(keys::P_RESCALE_FACTOR, Value::F32(self.rescale_factor))?;
        let flat: Vec<usize> = self
            .aspect_ratios
            .iter()
            .flat_map(|&(h, w)| [h, w])
            .collect();
        w.add(keys::P_SUPPORTED_ASPECT_RATIOS, i32s(&flat))?;
        w.add(keys::P_RESAMPLE, Value::String("bilinear".into()))?;
        w.add(keys::CONV_VISION_GATES, Value::String("raw".into()))?;
        w.add(keys::CONV_CROSS_GATES, Value::String("raw".into()))?;
        w.add(keys::CONV_SELF_QK, Value::String("ggml".into()))?;
        w.add(keys::CONV_CROSS_QK, Value::String("hf".into()))?;
        Ok(())
    }

    /// The dimensions the tensor shapes depend on (the files our converter writes).
    pub fn dims(&self) -> Dims {
        Dims {
            vocab_size: self.vocab_size,
            embedding_rows: self.embedding_rows,
            hidden: self.hidden,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim(),
            ffn: self.ffn,
            n_layers: self.n_layers,
            cross_layers: self.cross_layers.clone(),
            rope_factors: self.rope_scaling.is_some(),
            v_hidden: self.v_hidden,
            v_ffn: self.v_ffn,
            v_local: self.v_local,
            v_global: self.v_global,
            v_output_dim: self.v_hidden * (1 + self.v_taps.len()),
            channels: 3,
            patch_size: self.patch_size,
            tokens_per_tile: self.tokens_per_tile(),
            max_tiles: self.max_tiles,
            aspect_ratio_rows: self.aspect_ratios.len() + 1,
        }
    }

    /// Every tensor of the file (GGUF name, outermost-first shape, storage class), in the order
    /// our converter writes them: [`tensors::expand`] of [`ModelSpec::dims`].
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, TensorKind)> {
        tensors::expand(&self.dims())
            .into_iter()
            .map(|t| {
                let kind = t.storage();
                (t.name, t.shape, kind)
            })
            .collect()
    }
}
