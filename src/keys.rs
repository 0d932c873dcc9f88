//! GGUF metadata keys and tensor names of the `mllama` architecture, shared by the converter
//! (`quantize`) and the loader.
//!
//! Names follow the single-file layout of Ollama's `llama3.2-vision` GGUFs (spec §7.2) so that
//! files line up with ones users already have. Everything a loader needs to know about how the
//! weights are stored is written as an explicit `mllama.convention.*` key; files without those keys
//! (Ollama's) are read with the conventions given by the `OLLAMA_*` constants below.

pub const ARCH: &str = "mllama";

// ---- text decoder -------------------------------------------------------------------------
pub const VOCAB_SIZE: &str = "mllama.vocab_size";
pub const CONTEXT_LENGTH: &str = "mllama.context_length";
pub const EMBEDDING_LENGTH: &str = "mllama.embedding_length";
pub const BLOCK_COUNT: &str = "mllama.block_count";
pub const FEED_FORWARD_LENGTH: &str = "mllama.feed_forward_length";
pub const HEAD_COUNT: &str = "mllama.attention.head_count";
pub const HEAD_COUNT_KV: &str = "mllama.attention.head_count_kv";
pub const KEY_LENGTH: &str = "mllama.attention.key_length";
pub const RMS_EPS: &str = "mllama.attention.layer_norm_rms_epsilon";
pub const CROSS_ATTENTION_LAYERS: &str = "mllama.attention.cross_attention_layers";
pub const ROPE_DIMENSION_COUNT: &str = "mllama.rope.dimension_count";
pub const ROPE_FREQ_BASE: &str = "mllama.rope.freq_base";
pub const ROPE_SCALING_TYPE: &str = "mllama.rope.scaling.type";
pub const ROPE_SCALING_FACTOR: &str = "mllama.rope.scaling.factor";
pub const ROPE_SCALING_ORIG_CTX: &str = "mllama.rope.scaling.original_context_length";
pub const ROPE_SCALING_LOW_FREQ: &str = "mllama.rope.scaling.low_freq_factor";
pub const ROPE_SCALING_HIGH_FREQ: &str = "mllama.rope.scaling.high_freq_factor";
/// Number of rows of `token_embd.weight` (vocab + 8 learnable rows in Llama 3.2 Vision).
pub const EMBEDDING_ROWS: &str = "mllama.embedding_rows";
pub const IMAGE_TOKEN_INDEX: &str = "mllama.image_token_index";

// ---- vision encoder -----------------------------------------------------------------------
pub const V_BLOCK_COUNT: &str = "mllama.vision.block_count";
pub const V_GLOBAL_BLOCK_COUNT: &str = "mllama.vision.global.block_count";
pub const V_INTERMEDIATE_LAYERS: &str = "mllama.vision.intermediate_layers_indices";
pub const V_EMBEDDING_LENGTH: &str = "mllama.vision.embedding_length";
pub const V_FEED_FORWARD_LENGTH: &str = "mllama.vision.feed_forward_length";
pub const V_HEAD_COUNT: &str = "mllama.vision.attention.head_count";
pub const V_LN_EPS: &str = "mllama.vision.attention.layer_norm_epsilon";
pub const V_IMAGE_SIZE: &str = "mllama.vision.image_size";
pub const V_PATCH_SIZE: &str = "mllama.vision.patch_size";
pub const V_MAX_NUM_TILES: &str = "mllama.vision.max_num_tiles";
pub const V_NUM_CHANNELS: &str = "mllama.vision.num_channels";
/// Vision feature width fed to the projector (hidden × (1 + taps)).
pub const V_OUTPUT_DIM: &str = "mllama.vision.output_dim";

// ---- image preprocessing ------------------------------------------------------------------
pub const P_IMAGE_MEAN: &str = "mllama.vision.image_mean";
pub const P_IMAGE_STD: &str = "mllama.vision.image_std";
pub const P_RESCALE_FACTOR: &str = "mllama.vision.rescale_factor";
/// Flat i32 array of (tiles_high, tiles_wide) pairs, in the order that defines aspect-ratio ids.
pub const P_SUPPORTED_ASPECT_RATIOS: &str = "mllama.vision.supported_aspect_ratios";
pub const P_RESAMPLE: &str = "mllama.vision.resample";

// ---- generation defaults (from generation_config.json) ------------------------------------
pub const G_DO_SAMPLE: &str = "mllama.generation.do_sample";
pub const G_TEMPERATURE: &str = "mllama.generation.temperature";
pub const G_TOP_P: &str = "mllama.generation.top_p";
pub const G_TOP_K: &str = "mllama.generation.top_k";
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

/// Conventions assumed when a file has no `mllama.convention.*` keys (Ollama's converter).
pub const OLLAMA_VISION_GATES: &str = "tanh";
pub const OLLAMA_CROSS_GATES: &str = "raw";
pub const OLLAMA_SELF_QK: &str = "ggml";
pub const OLLAMA_CROSS_QK: &str = "ggml";

// ---- tokenizer (standard GGUF keys) -------------------------------------------------------
pub const TOK_MODEL: &str = "tokenizer.ggml.model";
pub const TOK_PRE: &str = "tokenizer.ggml.pre";
pub const TOK_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOK_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOK_MERGES: &str = "tokenizer.ggml.merges";
pub const TOK_BOS: &str = "tokenizer.ggml.bos_token_id";
pub const TOK_EOS: &str = "tokenizer.ggml.eos_token_id";
pub const TOK_EOT: &str = "tokenizer.ggml.eot_token_id";
pub const TOK_EOM: &str = "tokenizer.ggml.eom_token_id";
pub const TOK_PAD: &str = "tokenizer.ggml.padding_token_id";
pub const TOK_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOK_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const TOK_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// ggml token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

// ---- tensor names -------------------------------------------------------------------------
pub const T_TOKEN_EMBD: &str = "token_embd.weight";
pub const T_ROPE_FREQS: &str = "rope_freqs.weight";
pub const T_OUTPUT_NORM: &str = "output_norm.weight";
pub const T_OUTPUT: &str = "output.weight";
pub const T_V_PATCH_EMBD: &str = "v.patch_embd.weight";
pub const T_V_CLASS_EMBD: &str = "v.class_embd";
pub const T_V_POS_EMBD: &str = "v.position_embd.weight";
pub const T_V_POS_GATE: &str = "v.position_embd.gate";
pub const T_V_TILE_POS_EMBD: &str = "v.tile_position_embd.weight";
pub const T_V_TILE_POS_GATE: &str = "v.tile_position_embd.gate";
pub const T_V_PRE_TILE_EMBD: &str = "v.pre_tile_position_embd.weight";
pub const T_V_PRE_TILE_GATE: &str = "v.pre_tile_position_embd.gate";
pub const T_V_POST_TILE_EMBD: &str = "v.post_tile_position_embd.weight";
pub const T_V_POST_TILE_GATE: &str = "v.post_tile_position_embd.gate";
pub const T_V_PRE_LN_W: &str = "v.pre_ln.weight";
pub const T_V_PRE_LN_B: &str = "v.pre_ln.bias";
pub const T_V_POST_LN_W: &str = "v.post_ln.weight";
pub const T_V_POST_LN_B: &str = "v.post_ln.bias";
pub const T_MM_W: &str = "mm.0.weight";
pub const T_MM_B: &str = "mm.0.bias";

/// `blk.{i}.{suffix}`
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
