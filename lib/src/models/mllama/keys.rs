//! GGUF metadata keys and tensor names of the `mllama` architecture, shared by the converter
//! (`quantize`) and the loader.
//!
//! Names follow the single-file layout of Ollama's `llama3.2-vision` GGUFs (spec §7.2) so that
//! files line up with ones users already have. Everything a loader needs to know about how the
//! weights are stored is written as an explicit `mllama.convention.*` key; files without those keys
//! (Ollama's) are read with the conventions given by the `OLLAMA_*` constants below.

/// The value of `general.architecture` for Llama 3.2 Vision files.
pub const ARCH: &str = "mllama";

/// The standard tokenizer keys, which `mllama` files use too.
pub use crate::format::keys::*;

// ---- text decoder -------------------------------------------------------------------------
/// Output vocabulary size (rows of `output.weight`).
pub const VOCAB_SIZE: &str = "mllama.vocab_size";
/// Longest supported context in tokens.
pub const CONTEXT_LENGTH: &str = "mllama.context_length";
/// Text hidden size.
pub const EMBEDDING_LENGTH: &str = "mllama.embedding_length";
/// Text decoder layers (self- and cross-attention together).
pub const BLOCK_COUNT: &str = "mllama.block_count";
/// Text MLP intermediate width.
pub const FEED_FORWARD_LENGTH: &str = "mllama.feed_forward_length";
/// Text query heads.
pub const HEAD_COUNT: &str = "mllama.attention.head_count";
/// Text key/value heads (defaults to the head count).
pub const HEAD_COUNT_KV: &str = "mllama.attention.head_count_kv";
/// Text head dimension (defaults to hidden / heads).
pub const KEY_LENGTH: &str = "mllama.attention.key_length";
/// RMSNorm epsilon of the text decoder.
pub const RMS_EPS: &str = "mllama.attention.layer_norm_rms_epsilon";
/// Indices of the cross-attention layers (integer array).
pub const CROSS_ATTENTION_LAYERS: &str = "mllama.attention.cross_attention_layers";
/// Dimensions rotated by RoPE (the head dimension).
pub const ROPE_DIMENSION_COUNT: &str = "mllama.rope.dimension_count";
/// RoPE base θ.
pub const ROPE_FREQ_BASE: &str = "mllama.rope.freq_base";
/// RoPE scaling type (`"llama3"`).
pub const ROPE_SCALING_TYPE: &str = "mllama.rope.scaling.type";
/// llama3 RoPE scaling factor.
pub const ROPE_SCALING_FACTOR: &str = "mllama.rope.scaling.factor";
/// llama3 RoPE scaling: pre-training context length.
pub const ROPE_SCALING_ORIG_CTX: &str = "mllama.rope.scaling.original_context_length";
/// llama3 RoPE scaling: low-frequency factor.
pub const ROPE_SCALING_LOW_FREQ: &str = "mllama.rope.scaling.low_freq_factor";
/// llama3 RoPE scaling: high-frequency factor.
pub const ROPE_SCALING_HIGH_FREQ: &str = "mllama.rope.scaling.high_freq_factor";
/// Number of rows of `token_embd.weight` (vocab + 8 learnable rows in Llama 3.2 Vision).
pub const EMBEDDING_ROWS: &str = "mllama.embedding_rows";
/// Id of the `<|image|>` token.
pub const IMAGE_TOKEN_INDEX: &str = "mllama.image_token_index";

// ---- vision encoder -----------------------------------------------------------------------
/// Local vision encoder layers.
pub const V_BLOCK_COUNT: &str = "mllama.vision.block_count";
/// Gated global vision encoder layers.
pub const V_GLOBAL_BLOCK_COUNT: &str = "mllama.vision.global.block_count";
/// Local vision layers whose states feed the projector (integer array).
pub const V_INTERMEDIATE_LAYERS: &str = "mllama.vision.intermediate_layers_indices";
/// Vision hidden size.
pub const V_EMBEDDING_LENGTH: &str = "mllama.vision.embedding_length";
/// Vision MLP intermediate width.
pub const V_FEED_FORWARD_LENGTH: &str = "mllama.vision.feed_forward_length";
/// Vision attention heads.
pub const V_HEAD_COUNT: &str = "mllama.vision.attention.head_count";
/// Vision LayerNorm epsilon.
pub const V_LN_EPS: &str = "mllama.vision.attention.layer_norm_epsilon";
/// Tile edge in pixels.
pub const V_IMAGE_SIZE: &str = "mllama.vision.image_size";
/// Patch edge in pixels.
pub const V_PATCH_SIZE: &str = "mllama.vision.patch_size";
/// Tile slots per image.
pub const V_MAX_NUM_TILES: &str = "mllama.vision.max_num_tiles";
/// Image channels (3).
pub const V_NUM_CHANNELS: &str = "mllama.vision.num_channels";
/// Vision feature width fed to the projector (hidden × (1 + taps)).
pub const V_OUTPUT_DIM: &str = "mllama.vision.output_dim";

// ---- image preprocessing ------------------------------------------------------------------
/// Preprocessing mean per RGB channel (3 floats).
pub const P_IMAGE_MEAN: &str = "mllama.vision.image_mean";
/// Preprocessing standard deviation per RGB channel (3 floats).
pub const P_IMAGE_STD: &str = "mllama.vision.image_std";
/// Factor applied to uint8 pixel values (1/255).
pub const P_RESCALE_FACTOR: &str = "mllama.vision.rescale_factor";
/// Flat i32 array of (tiles_high, tiles_wide) pairs, in the order that defines aspect-ratio ids.
pub const P_SUPPORTED_ASPECT_RATIOS: &str = "mllama.vision.supported_aspect_ratios";
/// Resize filter name (`"bilinear"`).
pub const P_RESAMPLE: &str = "mllama.vision.resample";

// ---- generation defaults (from generation_config.json) ------------------------------------
/// Generation default: sample (`true`) or decode greedily.
pub const G_DO_SAMPLE: &str = "mllama.generation.do_sample";
/// Generation default: temperature.
pub const G_TEMPERATURE: &str = "mllama.generation.temperature";
/// Generation default: top-p.
pub const G_TOP_P: &str = "mllama.generation.top_p";
/// Generation default: top-k.
pub const G_TOP_K: &str = "mllama.generation.top_k";
/// Token ids that end generation (array).
pub const G_EOS_IDS: &str = "mllama.generation.eos_token_ids";

// ---- storage conventions ------------------------------------------------------------------
/// How vision gates are stored: `"raw"` (as in HF, tanh applied at run time) or `"tanh"`
/// (Ollama: attention/ffn/tile gates hold tanh(g), `v.position_embd.gate` holds 1 − tanh(g)).
pub const CONV_VISION_GATES: &str = "mllama.convention.vision_gates";
/// How text cross-attention gates are stored: `"raw"` or `"tanh"`.
pub const CONV_CROSS_GATES: &str = "mllama.convention.cross_attn_gates";
/// Row order of self-attention q/k weights: `"ggml"` (adjacent pairs rotate together; permuted
/// from HF like llama.cpp does) or `"hf"` (rotate-half pairs (i, i + d/2)).
pub const CONV_SELF_QK: &str = "mllama.convention.self_attn_qk";
/// Row order of cross-attention q/k weights: `"hf"` (as in the checkpoint) or `"ggml"`
/// (RoPE-permuted per head like Ollama's converter does, with q_norm/k_norm left unpermuted).
pub const CONV_CROSS_QK: &str = "mllama.convention.cross_attn_qk";

// Conventions assumed when a file has no `mllama.convention.*` keys (Ollama's converter).
/// [`CONV_VISION_GATES`] assumed when a file has no `mllama.convention.*` keys (Ollama's
/// converter).
pub const OLLAMA_VISION_GATES: &str = "tanh";
/// [`CONV_CROSS_GATES`] assumed when a file has no convention keys.
pub const OLLAMA_CROSS_GATES: &str = "raw";
/// [`CONV_SELF_QK`] assumed when a file has no convention keys.
pub const OLLAMA_SELF_QK: &str = "ggml";
/// [`CONV_CROSS_QK`] assumed when a file has no convention keys.
pub const OLLAMA_CROSS_QK: &str = "ggml";

// ---- tensor names -------------------------------------------------------------------------
/// Token embedding table `[embedding_rows, H]`.
pub const T_TOKEN_EMBD: &str = "token_embd.weight";
/// llama3 RoPE frequency divisors `[head_dim / 2]` (llama.cpp's layout).
pub const T_ROPE_FREQS: &str = "rope_freqs.weight";
/// Final RMSNorm weight `[H]`.
pub const T_OUTPUT_NORM: &str = "output_norm.weight";
/// Output head `[vocab_size, H]`.
pub const T_OUTPUT: &str = "output.weight";
/// Patch convolution `[D, 3, patch, patch]`.
pub const T_V_PATCH_EMBD: &str = "v.patch_embd.weight";
/// Class token embedding `[D]`.
pub const T_V_CLASS_EMBD: &str = "v.class_embd";
/// Position embedding `[tokens_per_tile, D]`.
pub const T_V_POS_EMBD: &str = "v.position_embd.weight";
/// Gate of the gated positional embedding `[1]` (raw g; Ollama stores 1 − tanh(g)).
pub const T_V_POS_GATE: &str = "v.position_embd.gate";
/// Tile position embedding per aspect ratio `[R, max_tiles · tokens_per_tile · D]`.
pub const T_V_TILE_POS_EMBD: &str = "v.tile_position_embd.weight";
/// Gate of the tile position embedding `[1]`: the same raw g as [`T_V_POS_GATE`] in our files,
/// tanh(g) in Ollama's (only read then).
pub const T_V_TILE_POS_GATE: &str = "v.tile_position_embd.gate";
/// Pre-tile positional embedding per aspect ratio `[R, max_tiles · D]`.
pub const T_V_PRE_TILE_EMBD: &str = "v.pre_tile_position_embd.weight";
/// Gate of the pre-tile embedding `[1]`.
pub const T_V_PRE_TILE_GATE: &str = "v.pre_tile_position_embd.gate";
/// Post-tile positional embedding per aspect ratio `[R, max_tiles · D]`.
pub const T_V_POST_TILE_EMBD: &str = "v.post_tile_position_embd.weight";
/// Gate of the post-tile embedding `[1]`.
pub const T_V_POST_TILE_GATE: &str = "v.post_tile_position_embd.gate";
/// LayerNorm before the local layers: weight `[D]`.
pub const T_V_PRE_LN_W: &str = "v.pre_ln.weight";
/// LayerNorm before the local layers: bias `[D]`.
pub const T_V_PRE_LN_B: &str = "v.pre_ln.bias";
/// LayerNorm after the local layers: weight `[D]`.
pub const T_V_POST_LN_W: &str = "v.post_ln.weight";
/// LayerNorm after the local layers: bias `[D]`.
pub const T_V_POST_LN_B: &str = "v.post_ln.bias";
/// Multi-modal projector weight `[H, D · (1 + taps)]`.
pub const T_MM_W: &str = "mm.0.weight";
/// Multi-modal projector bias `[H]`.
pub const T_MM_B: &str = "mm.0.bias";

/// `blk.{i}.{suffix}` (text decoder layer `i`).
///
/// ```
/// assert_eq!(mllama::models::mllama::keys::blk(3, "attn_q.weight"), "blk.3.attn_q.weight");
/// ```
pub fn blk(i: usize, suffix: &str) -> String {
    format!("blk.{i}.{suffix}")
}

/// `v.blk.{i}.{suffix}` (local vision layers)
pub fn vblk(i: usize, suffix: &str) -> String {
    format!("v.blk.{i}.{suffix}")
}

/// `v.global.blk.{i}.{suffix}` (gated global vision layers)
pub fn vgblk(i: usize, suffix: &str) -> String {
    format!("v.global.blk.{i}.{suffix}")
}
