//! Synthetic mllama checkpoints with random weights: for tests of the converter (any shape, from
//! tiny to many GB) without shipping real weights. Tensors are streamed to disk, so a checkpoint
//! larger than memory can be written.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::bf16;
use mllama::models::mllama::tensors::{self, Dims, Kind};
use serde_json::json;

/// Shapes of a synthetic checkpoint.
#[derive(Clone, Debug)]
pub struct SynthDims {
    /// Vocabulary size (the `<|image|>` token gets id `vocab`).
    pub vocab: usize,
    /// Text hidden size.
    pub hidden: usize,
    /// Text MLP intermediate width.
    pub intermediate: usize,
    /// Text decoder layers.
    pub layers: usize,
    /// Indices of the cross-attention layers.
    pub cross_layers: Vec<usize>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vision hidden size.
    pub v_hidden: usize,
    /// Vision attention heads.
    pub v_heads: usize,
    /// Vision MLP intermediate width.
    pub v_intermediate: usize,
    /// Local vision layers.
    pub v_layers: usize,
    /// Gated global vision layers.
    pub v_global_layers: usize,
    /// Local vision layers feeding the projector.
    pub v_taps: Vec<usize>,
    /// Tile edge in pixels.
    pub tile: usize,
    /// Patch edge in pixels.
    pub patch: usize,
    /// Number of safetensors shards (1 = a single `model.safetensors`).
    pub shards: usize,
}

impl SynthDims {
    /// A model small enough for unit tests (≈ 100 KB).
    pub fn tiny() -> Self {
        SynthDims {
            vocab: 300,
            hidden: 64,
            intermediate: 96,
            layers: 3,
            cross_layers: vec![1],
            heads: 4,
            kv_heads: 2,
            v_hidden: 32,
            v_heads: 2,
            v_intermediate: 64,
            v_layers: 2,
            v_global_layers: 1,
            v_taps: vec![0],
            tile: 28,
            patch: 14,
            shards: 2,
        }
    }

    /// A small model whose text matrices have rows of 256 or 512 values, so the K-quant types
    /// themselves (not their fallbacks) store them: 8 text layers (cross layer 3), hidden 256,
    /// MLP 512, head_dim 64; tiny vision tower. About 11 MB of bf16.
    pub fn k256() -> Self {
        SynthDims {
            vocab: 504,
            hidden: 256,
            intermediate: 512,
            layers: 8,
            cross_layers: vec![3],
            heads: 4,
            kv_heads: 2,
            ..SynthDims::tiny()
        }
    }

    /// Llama-3.2-11B-Vision shapes with `layers` text layers (every 5th a cross layer) and
    /// `v_layers` vision layers: about 2 GB + 0.5 GB per text layer in bf16.
    pub fn like_11b(layers: usize, v_layers: usize) -> Self {
        SynthDims {
            vocab: 128256,
            hidden: 4096,
            intermediate: 14336,
            layers,
            cross_layers: (0..layers).filter(|i| i % 5 == 3).collect(),
            heads: 32,
            kv_heads: 8,
            v_hidden: 1280,
            v_heads: 16,
            v_intermediate: 5120,
            v_layers,
            v_global_layers: 2,
            v_taps: vec![0],
            tile: 560,
            patch: 14,
            shards: 3,
        }
    }

    /// The tensor dimensions of this checkpoint.
    pub fn dims(&self) -> Dims {
        let grid = self.tile / self.patch;
        Dims {
            vocab_size: self.vocab,
            embedding_rows: self.vocab + 8,
            hidden: self.hidden,
            n_heads: self.heads,
            n_kv_heads: self.kv_heads,
            head_dim: self.hidden / self.heads,
            ffn: self.intermediate,
            n_layers: self.layers,
            cross_layers: self.cross_layers.clone(),
            rope_factors: true,
            v_hidden: self.v_hidden,
            v_ffn: self.v_intermediate,
            v_local: self.v_layers,
            v_global: self.v_global_layers,
            v_output_dim: self.v_hidden * (1 + self.v_taps.len()),
            channels: 3,
            patch_size: self.patch,
            tokens_per_tile: grid * grid + 1,
            max_tiles: 4,
            aspect_ratio_rows: 9,
        }
    }

    /// Every tensor (HF name, shape), in a fixed order: the checkpoint sources of the
    /// [`tensors`] table, each once (the output head untied).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.sources().into_iter().map(|(n, s, _)| (n, s)).collect()
    }

    /// [`tensors`](SynthDims::tensors) with each tensor's kind.
    fn sources(&self) -> Vec<(String, Vec<usize>, Kind)> {
        let mut seen = HashSet::new();
        tensors::expand(&self.dims())
            .into_iter()
            .filter_map(|t| {
                let hf = t.hf_name()?;
                seen.insert(hf.clone())
                    .then_some((hf, t.shape, t.decl.kind))
            })
            .collect()
    }

    /// The checkpoint's `config.json` (HF `MllamaForConditionalGeneration` layout).
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["MllamaForConditionalGeneration"],
            "model_type": "mllama",
            "image_token_index": self.vocab,
            "text_config": {
                "model_type": "mllama_text_model",
                "vocab_size": self.vocab,
                "hidden_size": self.hidden,
                "intermediate_size": self.intermediate,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads,
                "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                "max_position_embeddings": 131072,
                "cross_attention_layers": self.cross_layers,
                "bos_token_id": self.vocab - 16,
                "eos_token_id": self.vocab - 15,
                "pad_token_id": self.vocab - 12,
                "tie_word_embeddings": false,
            },
            "vision_config": {
                "model_type": "mllama_vision_model",
                "hidden_size": self.v_hidden,
                "attention_heads": self.v_heads,
                "intermediate_size": self.v_intermediate,
                "num_hidden_layers": self.v_layers,
                "num_global_layers": self.v_global_layers,
                "intermediate_layers_indices": self.v_taps,
                "vision_output_dim": self.v_hidden * (1 + self.v_taps.len()),
                "image_size": self.tile,
                "patch_size": self.patch,
                "num_channels": 3,
                "max_num_tiles": 4,
                "norm_eps": 1e-5,
                "supported_aspect_ratios": [[1,1],[1,2],[1,3],[1,4],[2,1],[2,2],[3,1],[4,1]],
            }
        })
    }
}

/// A minimal byte-level BPE tokenizer: the 256 byte symbols, no merges, then 16 special tokens
/// (`<|begin_of_text|>` at vocab − 16, …) and `<|image|>` at `vocab`.
pub fn tokenizer_json(vocab: usize) -> serde_json::Value {
    // GPT-2 byte → unicode mapping.
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut v = serde_json::Map::new();
    let n_normal = vocab - 16;
    for (i, c) in cs.iter().enumerate().take(256.min(n_normal)) {
        v.insert(char::from_u32(*c).unwrap_or('?').to_string(), json!(i));
    }
    for i in 256..n_normal {
        v.insert(format!("<unused{i}>"), json!(i));
    }
    let names = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ];
    let mut added = Vec::new();
    for k in 0..16 {
        let content = names
            .get(k)
            .map(|s| s.to_string())
            .unwrap_or(format!("<|reserved_special_token_{}|>", k));
        added.push(
            json!({"id": n_normal + k, "content": content, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}),
        );
    }
    added.push(
        json!({"id": vocab, "content": "<|image|>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}),
    );
    let bos = n_normal;
    json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": crate::tokenizer::LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos], "tokens": ["<|begin_of_text|>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                  "vocab": v, "merges": []}
    })
}

/// xorshift64* stream of bf16 values ≈ U(−scale, scale).
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Write a complete synthetic HF checkpoint directory (bf16 weights): `config.json`,
/// `tokenizer.json`, `tokenizer_config.json` (with a small chat template),
/// `preprocessor_config.json`, `generation_config.json` and the safetensors shards (with an
/// index when `dims.shards > 1`). The same `seed` gives the same files. Creates `dir` if needed.
///
/// # Errors
///
/// Any I/O error creating or writing the files.
///
/// ```
/// use mllama_quantize::synthetic::{write_checkpoint, SynthDims};
///
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// write_checkpoint(dir.path(), &SynthDims::tiny(), 7)?;
/// assert!(dir.path().join("model.safetensors.index.json").exists());
/// # Ok(())
/// # }
/// ```
pub fn write_checkpoint(dir: &Path, dims: &SynthDims, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let js = |name: &str, v: serde_json::Value| -> std::io::Result<()> {
        std::fs::write(
            dir.join(name),
            serde_json::to_string_pretty(&v).map_err(std::io::Error::other)?,
        )
    };
    js("config.json", dims.config_json())?;
    js("tokenizer.json", tokenizer_json(dims.vocab))?;
    js(
        "tokenizer_config.json",
        json!({
            "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>",
            "chat_template": "{{- bos_token }}{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
        }),
    )?;
    js(
        "preprocessor_config.json",
        json!({
            "do_convert_rgb": true, "do_normalize": true, "do_pad": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "max_image_tiles": 4, "resample": 2, "rescale_factor": 1.0 / 255.0,
            "size": {"height": dims.tile, "width": dims.tile}
        }),
    )?;
    js(
        "generation_config.json",
        json!({"do_sample": true, "temperature": 0.6, "top_p": 0.9,
        "eos_token_id": [dims.vocab - 15, dims.vocab - 8, dims.vocab - 7]}),
    )?;

    let tensors = dims.sources();
    let shards = dims.shards.max(1);
    let per = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for (si, group) in tensors.chunks(per).enumerate() {
        let fname = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", si + 1, shards)
        };
        let mut header = serde_json::Map::new();
        let mut off = 0usize;
        for (name, shape, _) in group {
            let n: usize = shape.iter().product();
            header.insert(
                name.clone(),
                json!({"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * n]}),
            );
            off += 2 * n;
            weight_map.insert(name.clone(), json!(fname));
        }
        let mut h = serde_json::to_string(&header).map_err(std::io::Error::other)?;
        while h.len() % 8 != 0 {
            h.push(' ');
        }
        let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join(&fname))?);
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(h.as_bytes())?;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        for (_, shape, kind) in group {
            let n: usize = shape.iter().product();
            let fan_in = *shape.last().unwrap_or(&1) as f32;
            // Norm weights near 1, gates non-zero, matrices ~ U(-1,1)/sqrt(fan_in).
            let (base, scale) = match kind {
                Kind::Norm => (1.0, 0.1),
                Kind::Gate => (0.5, 0.3),
                _ if shape.len() == 1 => (0.0, 0.05),
                _ => (0.0, 1.7 / fan_in.sqrt()),
            };
            let mut left = n;
            while left > 0 {
                let k = left.min(1 << 19);
                buf.clear();
                for _ in 0..k {
                    buf.extend_from_slice(
                        &bf16::from_f32(base + scale * rng.next_f32()).to_le_bytes(),
                    );
                }
                w.write_all(&buf)?;
                left -= k;
            }
        }
        w.flush()?;
    }
    if shards > 1 {
        js(
            "model.safetensors.index.json",
            json!({"metadata": {}, "weight_map": weight_map}),
        )?;
    }
    Ok(())
}
