//! Model configuration read from the GGUF metadata (every dimension, layer list and token id comes
//! from the file; nothing is assumed about the 11B shapes). `mllama` files give the text decoder,
//! the vision tower and the preprocessing; plain `llama` files (llama.cpp's keys) give the text
//! decoder alone ([`ModelConfig::vision`] is `None`).

use std::path::Path;

use crate::format::gguf::{GgufFile, Value};
use crate::models::mllama::arch::Arch;
use crate::models::mllama::keys;
use crate::nn::RopePairs;
use crate::Error;

/// Text decoder dimensions (the `mllama.*` keys). Values in comments are Llama-3.2-11B-Vision's.
#[derive(Clone, Debug)]
pub struct TextConfig {
    /// Rows of the output projection (tokens that can be produced; 128256).
    pub vocab_size: usize,
    /// Rows of the token embedding table (vocab + the image token's learnable rows; 128264).
    pub embedding_rows: usize,
    /// Hidden size H (4096).
    pub hidden: usize,
    /// Decoder layers, self-attention and cross-attention together (40).
    pub n_layers: usize,
    /// MLP intermediate width F (14336).
    pub ffn: usize,
    /// Query heads (32).
    pub n_heads: usize,
    /// Key/value heads (8; grouped-query attention).
    pub n_kv_heads: usize,
    /// Dimension of one head (128); `n_heads · head_dim == hidden`.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base θ (500000).
    pub rope_theta: f32,
    /// Indices of the cross-attention layers among the `n_layers` (`[3, 8, ..., 38]`).
    pub cross_layers: Vec<usize>,
    /// Longest context the model supports, in tokens (131072).
    pub context_length: usize,
    /// Id of the `<|image|>` token (128256); `None` for a text-only model.
    pub image_token: Option<u32>,
    /// How the RoPE frequencies are scaled by the metadata keys (`rope_freqs.weight`, when the
    /// file has it and no scaling keys, divides them instead).
    pub rope_scaling: RopeScaling,
}

/// RoPE frequency scaling given by `<arch>.rope.scaling.*` keys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// No scaling keys (or type `none`).
    None,
    /// `linear`: every frequency divided by `factor` (llama.cpp's `freq_scale = 1 / factor`).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// `llama3` (HF `_compute_llama3_parameters`): low frequencies divided by `factor`, high
    /// ones kept, a smooth blend between.
    Llama3 {
        /// Divisor of the low frequencies (8).
        factor: f32,
        /// `low_freq_factor` (1).
        low: f32,
        /// `high_freq_factor` (4).
        high: f32,
        /// `original_context_length` (8192).
        orig: f32,
    },
}

/// Vision encoder dimensions (the `mllama.vision.*` keys). Values in comments are
/// Llama-3.2-11B-Vision's.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    /// Hidden size D (1280).
    pub hidden: usize,
    /// Attention heads (16).
    pub n_heads: usize,
    /// MLP intermediate width (5120).
    pub ffn: usize,
    /// Local (ungated) encoder layers (32).
    pub n_local: usize,
    /// Gated global encoder layers after the local ones (8).
    pub n_global: usize,
    /// Local layers whose hidden states feed the projector (`[3, 7, 15, 23, 30]`; see
    /// [`TapConvention`](crate::TapConvention)).
    pub taps: Vec<usize>,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Tile edge in pixels (560).
    pub image_size: usize,
    /// Patch edge in pixels (14).
    pub patch_size: usize,
    /// Tile slots per image (4).
    pub max_tiles: usize,
    /// Input channels (always 3, RGB).
    pub channels: usize,
    /// hidden × (1 + taps): the projector's input width (7680).
    pub output_dim: usize,
}

impl VisionConfig {
    /// Patches per tile side (`image_size / patch_size`; 40).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Tokens per tile: patches + the class token (1601).
    pub fn tokens_per_tile(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    /// Tokens per tile padded to a multiple of 8 (1608).
    pub fn padded_tokens_per_tile(&self) -> usize {
        self.tokens_per_tile().div_ceil(8) * 8
    }
}

/// How the file stores gates and q/k rows (the `mllama.convention.*` keys; defaults are Ollama's).
#[derive(Clone, Debug)]
pub struct Conventions {
    /// Vision gates hold tanh(g) (position gate: 1 − tanh(g)) instead of g.
    pub vision_gates_tanh: bool,
    /// The global vision layers' `attn_gate`/`ffn_gate` hold tanh(g) instead of g (raw in
    /// Ollama's era-2a blob although its other vision gates are pre-activated).
    pub global_gates_tanh: bool,
    /// Cross-attention gates hold tanh(g) instead of g.
    pub cross_gates_tanh: bool,
    /// Rotation pairs of self-attention q/k.
    pub self_qk: RopePairs,
    /// Cross-attention q/k rows are RoPE-permuted per head (Ollama) while q_norm/k_norm are not.
    pub cross_qk_permuted: bool,
}

pub use crate::text::sampling::GenerationDefaults;

/// Everything read from the metadata, validated (every dimension non-zero and consistent).
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The file's architecture (`mllama`, or `llama` for a text-only model).
    pub arch: Arch,
    /// Text decoder dimensions.
    pub text: TextConfig,
    /// Vision encoder dimensions (`None` for a text-only model).
    pub vision: Option<VisionConfig>,
    /// How gates and q/k rows are stored.
    pub conventions: Conventions,
    /// Image preprocessing parameters (CLIP defaults where the file has none; `None` for a
    /// text-only model).
    pub preprocess: Option<crate::models::mllama::preprocess::PreprocessConfig>,
    /// Generation defaults.
    pub generation: GenerationDefaults,
}

pub(crate) struct Meta<'a> {
    pub f: &'a GgufFile,
    pub path: &'a Path,
}

impl Meta<'_> {
    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::Model {
            path: self.path.to_path_buf(),
            msg: msg.into(),
        }
    }

    fn get(&self, key: &str) -> Result<&Value, Error> {
        self.f
            .get(key)
            .ok_or_else(|| self.err(format!("missing metadata key {key}")))
    }

    pub fn usize(&self, key: &str) -> Result<usize, Error> {
        let v = self.get(key)?;
        v.as_u64()
            .filter(|&x| x <= u32::MAX as u64)
            .map(|x| x as usize)
            .ok_or_else(|| {
                self.err(format!(
                    "metadata key {key}: expected a non-negative integer, found {v:?}"
                ))
            })
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, Error> {
        if self.f.get(key).is_none() {
            return Ok(default);
        }
        self.usize(key)
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32, Error> {
        match self.f.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| {
                self.err(format!(
                    "metadata key {key}: expected a number, found {v:?}"
                ))
            }),
        }
    }

    pub fn list(&self, key: &str) -> Result<Vec<i64>, Error> {
        let v = self.get(key)?;
        v.as_array()
            .and_then(|a| a.to_i64_vec())
            .ok_or_else(|| self.err(format!("metadata key {key}: expected an integer array")))
    }

    pub fn f32_list(&self, key: &str) -> Result<Option<Vec<f32>>, Error> {
        match self.f.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(|a| a.to_f64_vec())
                .map(|v| Some(v.into_iter().map(|x| x as f32).collect()))
                .ok_or_else(|| self.err(format!("metadata key {key}: expected a number array"))),
        }
    }

    pub fn str_or(&self, key: &str, default: &str) -> Result<String, Error> {
        match self.f.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(format!(
                "metadata key {key}: expected a string, found {v:?}"
            ))),
        }
    }
}

fn positive(m: &Meta<'_>, what: &str, v: usize) -> Result<usize, Error> {
    if v == 0 {
        return Err(m.err(format!("{what} is 0")));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// The steps of `ModelConfig::from_gguf`.

/// `general.architecture` must be `mllama` or `llama` ([`Error::Unsupported`] naming the file
/// otherwise).
fn check_architecture(m: &Meta<'_>) -> Result<Arch, Error> {
    let arch = m.str_or("general.architecture", "")?;
    if let Some(a) = Arch::from_name(&arch) {
        return Ok(a);
    }
    let what = if arch.is_empty() {
        "has no general.architecture".to_string()
    } else {
        format!("is a {arch:?} model")
    };
    Err(Error::Unsupported {
        why: format!(
            "{}: {what}, not Llama 3.2 Vision (architecture \"mllama\") or a Llama text model \
             (\"llama\")",
            m.path.display()
        ),
        what: arch,
    })
}

/// The text decoder's attention sizes: (hidden, heads, kv heads, head dimension), checked to fit.
fn text_attention_dims(m: &Meta<'_>, a: Arch) -> Result<(usize, usize, usize, usize), Error> {
    let hidden = positive(m, "embedding_length", m.usize(&a.key("embedding_length"))?)?;
    let n_heads = positive(
        m,
        "attention.head_count",
        m.usize(&a.key("attention.head_count"))?,
    )?;
    let n_kv_heads = positive(
        m,
        "attention.head_count_kv",
        m.usize_or(&a.key("attention.head_count_kv"), n_heads)?,
    )?;
    if n_heads % n_kv_heads != 0 {
        return Err(m.err(format!(
            "{n_heads} attention heads are not a multiple of {n_kv_heads} kv heads"
        )));
    }
    let head_dim = m.usize_or(&a.key("attention.key_length"), hidden / n_heads)?;
    if head_dim == 0 || head_dim % 2 != 0 || head_dim * n_heads != hidden {
        return Err(m.err(format!(
            "head dimension {head_dim} × {n_heads} heads does not make hidden size {hidden}"
        )));
    }
    Ok((hidden, n_heads, n_kv_heads, head_dim))
}

/// The cross-attention layers of an `mllama` file (none for `llama`), each below `n_layers`.
fn cross_layers(m: &Meta<'_>, a: Arch, n_layers: usize) -> Result<Vec<usize>, Error> {
    if !a.has_vision() {
        return Ok(Vec::new());
    }
    let mut cross_layers = Vec::new();
    for l in m.list(keys::CROSS_ATTENTION_LAYERS)? {
        if l < 0 || l as usize >= n_layers {
            return Err(m.err(format!(
                "cross-attention layer {l} is out of range (block_count {n_layers})"
            )));
        }
        cross_layers.push(l as usize);
    }
    Ok(cross_layers)
}

/// (vocabulary, embedding rows): `mllama` files give both as keys (rows default to vocab + 8);
/// llama.cpp's `llama` files may omit `vocab_size`, and the embedding table has one row per
/// token, so both come from `token_embd.weight` when the key is absent.
fn vocab_rows(m: &Meta<'_>, a: Arch) -> Result<(usize, usize), Error> {
    if a.has_vision() {
        let vocab = positive(m, "vocab_size", m.usize(keys::VOCAB_SIZE)?)?;
        return Ok((vocab, m.usize_or(keys::EMBEDDING_ROWS, vocab + 8)?));
    }
    let embd = keys::T_TOKEN_EMBD;
    let rows = m.f.tensor_info(embd).map(|t| t.n_rows());
    let rows = rows.ok_or_else(|| m.err(format!("missing tensor {embd}")))?;
    let vocab = positive(m, "vocab_size", m.usize_or(&a.key("vocab_size"), rows)?)?;
    Ok((vocab, rows))
}

/// RoPE: (θ, scaling). The rotated dimensions must be the whole head (`rope.dimension_count`);
/// scaling types other than `none`, `linear` and `llama3` are refused.
fn rope(m: &Meta<'_>, a: Arch, head_dim: usize) -> Result<(f32, RopeScaling), Error> {
    let dims = m.usize_or(&a.key("rope.dimension_count"), head_dim)?;
    if dims != head_dim {
        return Err(Error::Unsupported {
            what: "partial rotary embedding".into(),
            why: format!(
                "{}: {} = {dims}: RoPE on part of the {head_dim}-wide heads is not supported",
                m.path.display(),
                a.key("rope.dimension_count")
            ),
        });
    }
    let theta = m.f32_or(
        &a.key("rope.freq_base"),
        if a.has_vision() { 500000.0 } else { 10000.0 },
    )?;
    let key = a.key("rope.scaling.type");
    let factor = |d| m.f32_or(&a.key("rope.scaling.factor"), d);
    let scaling = match m.str_or(&key, "none")?.as_str() {
        "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: factor(1.0)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: factor(8.0)?,
            low: m.f32_or(&a.key("rope.scaling.low_freq_factor"), 1.0)?,
            high: m.f32_or(&a.key("rope.scaling.high_freq_factor"), 4.0)?,
            orig: m.f32_or(&a.key("rope.scaling.original_context_length"), 8192.0)?,
        },
        other => {
            return Err(Error::Unsupported {
                what: format!("RoPE scaling {other}"),
                why: format!(
                    "{}: {key} = {other:?}: only none, linear and llama3 are supported",
                    m.path.display()
                ),
            })
        }
    };
    let bad = match scaling {
        RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } => {
            !(factor.is_finite() && factor > 0.0)
        }
        RopeScaling::None => false,
    } || !(theta.is_finite() && theta > 0.0);
    if bad {
        return Err(m.err(format!(
            "RoPE base {theta} or scaling {scaling:?} is not positive"
        )));
    }
    Ok((theta, scaling))
}

/// The text decoder (`<arch>.*` keys).
fn text_config(m: &Meta<'_>, a: Arch) -> Result<TextConfig, Error> {
    let (hidden, n_heads, n_kv_heads, head_dim) = text_attention_dims(m, a)?;
    let n_layers = positive(m, "block_count", m.usize(&a.key("block_count"))?)?;
    let cross_layers = cross_layers(m, a, n_layers)?;
    let (vocab_size, embedding_rows) = vocab_rows(m, a)?;
    let ffn = m.usize(&a.key("feed_forward_length"))?;
    let (rope_theta, rope_scaling) = rope(m, a, head_dim)?;
    let image_token = match a.has_vision() {
        true => Some(image_token(m, vocab_size)?),
        false => None,
    };
    Ok(TextConfig {
        vocab_size,
        embedding_rows,
        hidden,
        n_layers,
        ffn: positive(m, "feed_forward_length", ffn)?,
        n_heads,
        n_kv_heads,
        head_dim,
        rms_eps: m.f32_or(&a.key("attention.layer_norm_rms_epsilon"), 1e-5)?,
        rope_theta,
        cross_layers,
        context_length: m.usize_or(&a.key("context_length"), 131072)?,
        image_token,
        rope_scaling,
    })
}

/// `mllama.image_token_index`; files without it (Ollama's) use the id of `<|image|>` in the
/// vocabulary, else `vocab_size` (where Llama 3.2 Vision puts it).
fn image_token(m: &Meta<'_>, vocab_size: usize) -> Result<u32, Error> {
    if m.f.get(keys::IMAGE_TOKEN_INDEX).is_some() {
        return Ok(m.usize(keys::IMAGE_TOKEN_INDEX)? as u32);
    }
    let tokens = m.f.get(crate::format::keys::TOK_TOKENS);
    let id = tokens
        .and_then(|v| v.as_array())
        .and_then(|a| a.as_strings())
        .and_then(|t| t.iter().position(|s| s == "<|image|>"));
    Ok(id.unwrap_or(vocab_size) as u32)
}

/// The vision layers whose outputs are tapped, each below `n_local`.
fn vision_taps(m: &Meta<'_>, n_local: usize) -> Result<Vec<usize>, Error> {
    let mut taps = Vec::new();
    for t in m.list(keys::V_INTERMEDIATE_LAYERS)? {
        if t < 0 || t as usize >= n_local {
            return Err(m.err(format!(
                "vision intermediate layer {t} is out of range ({n_local} layers)"
            )));
        }
        taps.push(t as usize);
    }
    Ok(taps)
}

/// The vision tower's image geometry: (image size, patch size, max tiles).
fn vision_geometry(m: &Meta<'_>) -> Result<(usize, usize, usize), Error> {
    let image_size = positive(m, "vision.image_size", m.usize(keys::V_IMAGE_SIZE)?)?;
    let patch_size = positive(m, "vision.patch_size", m.usize(keys::V_PATCH_SIZE)?)?;
    if image_size % patch_size != 0 {
        return Err(m.err(format!(
            "image size {image_size} is not a multiple of patch size {patch_size}"
        )));
    }
    let max_tiles = m.usize_or(keys::V_MAX_NUM_TILES, 4)?;
    let max_tiles = positive(m, "vision.max_num_tiles", max_tiles)?;
    Ok((image_size, patch_size, max_tiles))
}

/// The vision tower (`mllama.vision.*` keys).
fn vision_config(m: &Meta<'_>) -> Result<VisionConfig, Error> {
    let vh = positive(
        m,
        "vision.embedding_length",
        m.usize(keys::V_EMBEDDING_LENGTH)?,
    )?;
    let vheads = positive(
        m,
        "vision.attention.head_count",
        m.usize(keys::V_HEAD_COUNT)?,
    )?;
    if vh % vheads != 0 {
        return Err(m.err(format!(
            "vision hidden size {vh} is not a multiple of {vheads} heads"
        )));
    }
    let n_local = m.usize(keys::V_BLOCK_COUNT)?;
    let taps = vision_taps(m, n_local)?;
    let (image_size, patch_size, max_tiles) = vision_geometry(m)?;
    let ffn = m.usize(keys::V_FEED_FORWARD_LENGTH)?;
    let vision = VisionConfig {
        hidden: vh,
        n_heads: vheads,
        ffn: positive(m, "vision.feed_forward_length", ffn)?,
        n_local,
        n_global: m.usize(keys::V_GLOBAL_BLOCK_COUNT)?,
        output_dim: vh * (1 + taps.len()),
        taps,
        eps: m.f32_or(keys::V_LN_EPS, 1e-5)?,
        image_size,
        patch_size,
        max_tiles,
        channels: m.usize_or(keys::V_NUM_CHANNELS, 3)?,
    };
    check_vision(m, &vision)?;
    Ok(vision)
}

/// RGB input, and the file's `vision.output_dim` (if any) equal to hidden × (1 + taps).
fn check_vision(m: &Meta<'_>, vision: &VisionConfig) -> Result<(), Error> {
    if vision.channels != 3 {
        let c = vision.channels;
        return Err(m.err(format!("{c} image channels: only RGB (3) is supported")));
    }
    if let Ok(d) = m.usize(keys::V_OUTPUT_DIM) {
        if d != vision.output_dim {
            let (vh, n) = (vision.hidden, vision.taps.len());
            return Err(m.err(format!(
                "vision output_dim {d} != hidden {vh} × (1 + {n} taps)"
            )));
        }
    }
    Ok(())
}

/// A 3-value list (per-channel mean or std), `default` when absent.
fn channel_triple(m: &Meta<'_>, key: &str, default: [f32; 3]) -> Result<[f32; 3], Error> {
    match m.f32_list(key)? {
        None => Ok(default),
        Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
        Some(v) => Err(m.err(format!(
            "metadata key {key}: expected 3 values, found {}",
            v.len()
        ))),
    }
}

/// The supported (tiles high, tiles wide) arrangements: the file's list, or every arrangement of
/// at most `max_tiles` tiles.
fn aspect_ratios(m: &Meta<'_>, max_tiles: usize) -> Result<Vec<(usize, usize)>, Error> {
    if m.f.get(keys::P_SUPPORTED_ASPECT_RATIOS).is_none() {
        let all = (1..=max_tiles).flat_map(|h| (1..=max_tiles).map(move |w| (h, w)));
        return Ok(all.filter(|&(h, w)| h * w <= max_tiles).collect());
    }
    let flat = m.list(keys::P_SUPPORTED_ASPECT_RATIOS)?;
    if flat.len() % 2 != 0 || flat.iter().any(|&x| x <= 0) {
        return Err(m.err("supported_aspect_ratios must be positive (h, w) pairs"));
    }
    let r: Vec<(usize, usize)> = flat
        .chunks(2)
        .map(|p| (p[0] as usize, p[1] as usize))
        .collect();
    if let Some(&(h, w)) = r.iter().find(|&&(h, w)| h * w > max_tiles) {
        return Err(m.err(format!(
            "aspect ratio {h}×{w} needs more than {max_tiles} tiles"
        )));
    }
    Ok(r)
}

/// Preprocessing: CLIP constants unless the file says otherwise (the class defaults of HF differ,
/// but every released checkpoint uses these).
fn preprocess_config(
    m: &Meta<'_>,
    image_size: usize,
    max_tiles: usize,
) -> Result<crate::models::mllama::preprocess::PreprocessConfig, Error> {
    #[allow(clippy::excessive_precision)]
    let (mean, std) = (
        [0.48145466, 0.4578275, 0.40821073],
        [0.26862954, 0.26130258, 0.27577711],
    );
    let preprocess = crate::models::mllama::preprocess::PreprocessConfig {
        tile_size: image_size,
        max_tiles,
        mean: channel_triple(m, keys::P_IMAGE_MEAN, mean)?,
        std: channel_triple(m, keys::P_IMAGE_STD, std)?,
        rescale_factor: m.f32_or(keys::P_RESCALE_FACTOR, 1.0 / 255.0)?,
        supported_aspect_ratios: aspect_ratios(m, max_tiles)?,
    };
    preprocess.validate().map_err(|e| m.err(e.to_string()))?;
    Ok(preprocess)
}

/// A convention key's value (`default` when absent), one of `allowed`.
fn convention(m: &Meta<'_>, key: &str, default: &str, allowed: &[&str]) -> Result<String, Error> {
    let v = m.str_or(key, default)?;
    if !allowed.contains(&v.as_str()) {
        return Err(m.err(format!("{key} = {v:?}: expected one of {allowed:?}")));
    }
    Ok(v)
}

/// A `llama` file as llama.cpp writes it: q/k rows permuted to adjacent-pair RoPE order (its
/// converter's `LlamaModel.permute`); it has no gates and no cross-attention.
const TEXT_ONLY_CONVENTIONS: Conventions = Conventions {
    vision_gates_tanh: false,
    global_gates_tanh: false,
    cross_gates_tanh: false,
    self_qk: RopePairs::Adjacent,
    cross_qk_permuted: false,
};

/// How gates and q/k rows are stored (`mllama.convention.*`, Ollama's when absent).
fn conventions(m: &Meta<'_>) -> Result<Conventions, Error> {
    let gates = ["raw", "tanh"];
    let qk = ["ggml", "hf"];
    let vision_gates = convention(
        m,
        keys::CONV_VISION_GATES,
        keys::OLLAMA_VISION_GATES,
        &gates,
    )?;
    let cross_gates = convention(m, keys::CONV_CROSS_GATES, keys::OLLAMA_CROSS_GATES, &gates)?;
    let self_qk = convention(m, keys::CONV_SELF_QK, keys::OLLAMA_SELF_QK, &qk)?;
    let cross_qk = convention(m, keys::CONV_CROSS_QK, keys::OLLAMA_CROSS_QK, &qk)?;
    Ok(Conventions {
        vision_gates_tanh: vision_gates == "tanh",
        global_gates_tanh: vision_gates == "tanh",
        cross_gates_tanh: cross_gates == "tanh",
        self_qk: if self_qk == "ggml" {
            RopePairs::Adjacent
        } else {
            RopePairs::Half
        },
        cross_qk_permuted: cross_qk == "ggml",
    })
}

/// Generation defaults (`<arch>.generation.*`); values of the wrong type are ignored.
fn generation_defaults(f: &GgufFile, a: Arch) -> GenerationDefaults {
    let eos_ids = f
        .get(&a.key("generation.eos_token_ids"))
        .and_then(|v| v.as_array())
        .and_then(|a| a.to_i64_vec())
        .map(|v| {
            v.into_iter()
                .filter(|&x| x >= 0)
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default();
    let f32_key = |key: &str| f.get(&a.key(key)).and_then(Value::as_f64).map(|x| x as f32);
    GenerationDefaults {
        do_sample: f
            .get(&a.key("generation.do_sample"))
            .and_then(Value::as_bool),
        temperature: f32_key("generation.temperature"),
        top_p: f32_key("generation.top_p"),
        top_k: f
            .get(&a.key("generation.top_k"))
            .and_then(Value::as_i64)
            .filter(|&x| x > 0)
            .map(|x| x as usize),
        eos_ids,
    }
}

impl ModelConfig {
    /// Read and validate the configuration from a GGUF's metadata (no tensor data is touched).
    /// Optional keys take the Llama 3.2 Vision defaults; files without `mllama.convention.*`
    /// keys get Ollama's conventions. A `llama` file (llama.cpp's keys: Llama 3.x, SmolLM2) gives
    /// a text-only configuration: no vision, no cross-attention layers, no image token, q/k rows
    /// in llama.cpp's adjacent-pair RoPE order; its vocabulary defaults to the rows of
    /// `token_embd.weight` when `llama.vocab_size` is absent.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if `general.architecture` is neither `mllama` nor `llama`, or for
    /// RoPE on part of the head or a scaling type other than none, linear and llama3; [`Error::Model`] naming
    /// the key if a required key is missing or has the wrong type, or the values are inconsistent (heads not dividing the
    /// hidden size, a layer index out of range, an aspect ratio needing more than `max_tiles`
    /// tiles, ...).
    ///
    /// ```
    /// use mllama::format::gguf::GgufFile;
    /// use mllama::models::mllama::ModelConfig;
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let f = GgufFile::open("models/demo/mllama-demo-q4_0.gguf")?;
    /// let cfg = ModelConfig::from_gguf(&f)?;
    /// // The demo's 112-px tiles: 8x8 patches of 14 px and the class token.
    /// assert_eq!(cfg.vision.as_ref().unwrap().tokens_per_tile(), 65);
    /// assert_eq!(cfg.preprocess.as_ref().unwrap().supported_aspect_ratios.len(), 8);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, Error> {
        Self::from_pair(f, f)
    }

    /// As [`from_gguf`](Self::from_gguf) for a model in two files (Ollama's era 1): text keys,
    /// conventions and generation defaults from `text`, vision and preprocessing keys from
    /// `vision` (a text-only `llama` file ignores `vision`).
    ///
    /// # Errors
    ///
    /// As [`from_gguf`](Self::from_gguf), naming the file the key is missing from.
    pub fn from_pair(text_file: &GgufFile, vision_file: &GgufFile) -> Result<ModelConfig, Error> {
        let m = Meta {
            f: text_file,
            path: text_file.path(),
        };
        let arch = check_architecture(&m)?;
        let text = text_config(&m, arch)?;
        let generation = generation_defaults(text_file, arch);
        if !arch.has_vision() {
            return Ok(ModelConfig {
                arch,
                text,
                vision: None,
                conventions: TEXT_ONLY_CONVENTIONS,
                preprocess: None,
                generation,
            });
        }
        let mv = Meta {
            f: vision_file,
            path: vision_file.path(),
        };
        check_architecture(&mv)?;
        let vision = vision_config(&mv)?;
        let preprocess = preprocess_config(&mv, vision.image_size, vision.max_tiles)?;
        let conventions = conventions(&m)?;
        Ok(ModelConfig {
            arch,
            text,
            vision: Some(vision),
            conventions,
            preprocess: Some(preprocess),
            generation,
        })
    }
}
