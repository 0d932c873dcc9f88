//! The architecture as plain numbers: writes the `mllama.*` metadata every file of ours carries
//! (the converter and synthetic benchmark models share it) and lists the tensors such a file holds.

use crate::format::gguf::{Array, GgufWriter, Value};
use crate::models::mllama::keys::{self, blk, vblk, vgblk};
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

/// What a tensor is, which decides its storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// A large text matrix (quantized with the requested type).
    TextMatrix,
    /// A vision or projector matrix (F16 unless vision quantization is asked for).
    VisionMatrix,
    /// The 4-D patch convolution (never block-quantized).
    Patch,
    /// Norms, biases, gates, class/position/tile embeddings, RoPE factors: F32.
    Small,
}

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

    /// Every tensor of the file (GGUF name, outermost-first shape, kind), in the order our
    /// converter writes them.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, TensorKind)> {
        use TensorKind::*;
        let (h, hd, f) = (self.hidden, self.head_dim(), self.ffn);
        let (q, kv) = (self.n_heads * hd, self.n_kv_heads * hd);
        let mut t: Vec<(String, Vec<usize>, TensorKind)> = Vec::new();
        t.push((
            keys::T_TOKEN_EMBD.into(),
            vec![self.embedding_rows, h],
            TextMatrix,
        ));
        if self.rope_scaling.is_some() {
            t.push((keys::T_ROPE_FREQS.into(), vec![hd / 2], Small));
        }
        for i in 0..self.n_layers {
            t.push((blk(i, "attn_norm.weight"), vec![h], Small));
            t.push((blk(i, "ffn_norm.weight"), vec![h], Small));
            if self.cross_layers.contains(&i) {
                t.push((blk(i, "cross_attn_q_proj.weight"), vec![q, h], TextMatrix));
                t.push((blk(i, "cross_attn_k_proj.weight"), vec![kv, h], TextMatrix));
                t.push((blk(i, "cross_attn_v_proj.weight"), vec![kv, h], TextMatrix));
                t.push((blk(i, "cross_attn_o_proj.weight"), vec![h, q], TextMatrix));
                t.push((blk(i, "cross_attn_q_norm.weight"), vec![hd], Small));
                t.push((blk(i, "cross_attn_k_norm.weight"), vec![hd], Small));
                t.push((blk(i, "cross_attn_attn_gate"), vec![1], Small));
                t.push((blk(i, "cross_attn_mlp_gate"), vec![1], Small));
            } else {
                t.push((blk(i, "attn_q.weight"), vec![q, h], TextMatrix));
                t.push((blk(i, "attn_k.weight"), vec![kv, h], TextMatrix));
                t.push((blk(i, "attn_v.weight"), vec![kv, h], TextMatrix));
                t.push((blk(i, "attn_output.weight"), vec![h, q], TextMatrix));
            }
            t.push((blk(i, "ffn_gate.weight"), vec![f, h], TextMatrix));
            t.push((blk(i, "ffn_up.weight"), vec![f, h], TextMatrix));
            t.push((blk(i, "ffn_down.weight"), vec![h, f], TextMatrix));
        }
        t.push((keys::T_OUTPUT_NORM.into(), vec![h], Small));
        t.push((keys::T_OUTPUT.into(), vec![self.vocab_size, h], TextMatrix));
        let (d, vf, tiles, p) = (
            self.v_hidden,
            self.v_ffn,
            self.max_tiles,
            self.tokens_per_tile(),
        );
        let r = self.aspect_ratios.len() + 1;
        t.push((
            keys::T_V_PATCH_EMBD.into(),
            vec![d, 3, self.patch_size, self.patch_size],
            Patch,
        ));
        t.push((keys::T_V_CLASS_EMBD.into(), vec![d], Small));
        t.push((keys::T_V_POS_EMBD.into(), vec![p, d], Small));
        t.push((keys::T_V_POS_GATE.into(), vec![1], Small));
        t.push((
            keys::T_V_TILE_POS_EMBD.into(),
            vec![r, tiles * p * d],
            Small,
        ));
        t.push((keys::T_V_TILE_POS_GATE.into(), vec![1], Small));
        for (w, g) in [
            (keys::T_V_PRE_TILE_EMBD, keys::T_V_PRE_TILE_GATE),
            (keys::T_V_POST_TILE_EMBD, keys::T_V_POST_TILE_GATE),
        ] {
            t.push((w.into(), vec![r, tiles * d], Small));
            t.push((g.into(), vec![1], Small));
        }
        for n in [
            keys::T_V_PRE_LN_W,
            keys::T_V_PRE_LN_B,
            keys::T_V_POST_LN_W,
            keys::T_V_POST_LN_B,
        ] {
            t.push((n.into(), vec![d], Small));
        }
        for (global, n) in [(false, self.v_local), (true, self.v_global)] {
            for i in 0..n {
                let name = |s: &str| if global { vgblk(i, s) } else { vblk(i, s) };
                for m in ["attn_q", "attn_k", "attn_v", "attn_output"] {
                    t.push((name(&format!("{m}.weight")), vec![d, d], VisionMatrix));
                }
                for m in ["attn_norm", "ffn_norm"] {
                    t.push((name(&format!("{m}.weight")), vec![d], Small));
                    t.push((name(&format!("{m}.bias")), vec![d], Small));
                }
                t.push((name("ffn_up.weight"), vec![vf, d], VisionMatrix));
                t.push((name("ffn_up.bias"), vec![vf], Small));
                t.push((name("ffn_down.weight"), vec![d, vf], VisionMatrix));
                t.push((name("ffn_down.bias"), vec![d], Small));
                if global {
                    t.push((name("attn_gate"), vec![1], Small));
                    t.push((name("ffn_gate"), vec![1], Small));
                }
            }
        }
        t.push((
            keys::T_MM_W.into(),
            vec![h, d * (1 + self.v_taps.len())],
            VisionMatrix,
        ));
        t.push((keys::T_MM_B.into(), vec![h], Small));
        t
    }
}
