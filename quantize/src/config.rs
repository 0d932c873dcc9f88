//! Reading the HF checkpoint's JSON files: `config.json`, `preprocessor_config.json`,
//! `generation_config.json`.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{ConvertError, Result};

/// Everything the converter needs from `config.json`. Field names follow HF's keys.
///
/// ```
/// use mllama_quantize::config::MllamaConfig;
/// use mllama_quantize::synthetic::{write_checkpoint, SynthDims};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// write_checkpoint(dir.path(), &SynthDims::tiny(), 1)?;
/// let cfg = MllamaConfig::load(dir.path())?;
/// assert_eq!((cfg.text.hidden_size, cfg.text.head_dim), (64, 16));
/// assert_eq!(cfg.vision.supported_aspect_ratios.len(), 8);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MllamaConfig {
    /// `_name_or_path`, if set (becomes `general.name`).
    pub name: Option<String>,
    /// Id of the `<|image|>` token.
    pub image_token_index: u32,
    /// `text_config`.
    pub text: TextConfig,
    /// `vision_config`.
    pub vision: VisionConfig,
}

/// `config.json` → `text_config`.
#[derive(Clone, Debug)]
pub struct TextConfig {
    /// Output vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP intermediate width.
    pub intermediate_size: usize,
    /// Decoder layers (self- and cross-attention).
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// `hidden_size / num_attention_heads`, as HF's mllama uses (a differing `head_dim` key is
    /// refused).
    pub head_dim: usize,
    /// RMSNorm epsilon (default 1e-5).
    pub rms_norm_eps: f64,
    /// RoPE base θ (`rope_theta`, or from `rope_parameters`; default 500000).
    pub rope_theta: f64,
    /// llama3 RoPE scaling (`rope_scaling` or `rope_parameters`); `None` for default RoPE.
    pub rope_scaling: Option<RopeScaling>,
    /// Longest context (default 131072).
    pub max_position_embeddings: usize,
    /// Indices of the cross-attention layers.
    pub cross_attention_layers: Vec<usize>,
    /// BOS id, used when `tokenizer_config.json` names none.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (an integer or a list), used when `generation_config.json` gives none.
    pub eos_token_ids: Vec<u32>,
    /// Padding id, used when `tokenizer_config.json` names none.
    pub pad_token_id: Option<u32>,
    /// Whether the output head shares the embedding table (then `output.weight` is taken from
    /// it).
    pub tie_word_embeddings: bool,
}

/// llama3 RoPE scaling (`text_config.rope_scaling`).
#[derive(Clone, Debug)]
pub struct RopeScaling {
    /// `rope_type` (always `"llama3"`; other types are refused).
    pub rope_type: String,
    /// Frequency divisor for long wavelengths (default 8).
    pub factor: f64,
    /// Low-frequency factor (default 1).
    pub low_freq_factor: f64,
    /// High-frequency factor (default 4).
    pub high_freq_factor: f64,
    /// Pre-training context length (default 8192).
    pub original_max_position_embeddings: f64,
}

/// `config.json` → `vision_config`.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP intermediate width.
    pub intermediate_size: usize,
    /// Local encoder layers.
    pub num_hidden_layers: usize,
    /// Gated global encoder layers.
    pub num_global_layers: usize,
    /// Attention heads (`attention_heads` or `num_attention_heads`).
    pub attention_heads: usize,
    /// Local layers whose states feed the projector.
    pub intermediate_layers_indices: Vec<usize>,
    /// Projector input width: `hidden_size × (1 + taps)` (checked).
    pub vision_output_dim: usize,
    /// Tile edge in pixels.
    pub image_size: usize,
    /// Patch edge in pixels.
    pub patch_size: usize,
    /// Image channels (default 3).
    pub num_channels: usize,
    /// Tile slots per image (default 4).
    pub max_num_tiles: usize,
    /// LayerNorm epsilon (default 1e-5).
    pub norm_eps: f64,
    /// (tiles_high, tiles_wide) arrangements in aspect-ratio id order (HF's default list when
    /// absent).
    pub supported_aspect_ratios: Vec<(usize, usize)>,
}

/// Image preprocessing parameters (`preprocessor_config.json`).
#[derive(Clone, Debug)]
pub struct PreprocessConfig {
    /// Mean per RGB channel (CLIP's when absent).
    pub image_mean: [f32; 3],
    /// Standard deviation per RGB channel (CLIP's when absent).
    pub image_std: [f32; 3],
    /// Factor applied to uint8 values (default 1/255).
    pub rescale_factor: f32,
    /// `max_image_tiles` (defaults to the model's `max_num_tiles`; the model's value wins).
    pub max_image_tiles: usize,
    /// Tile edge in pixels (`size`; must equal the model's `image_size`).
    pub tile_size: usize,
    /// PIL filter name of `resample` (`"bilinear"` by default).
    pub resample: String,
}

/// Generation defaults (`generation_config.json`).
#[derive(Clone, Debug, Default)]
pub struct GenerationConfig {
    /// `do_sample`.
    pub do_sample: Option<bool>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `top_k`.
    pub top_k: Option<i64>,
    /// `eos_token_id` (an integer or a list; empty when absent).
    pub eos_token_ids: Vec<u32>,
}

/// Read and parse a JSON file, naming it in every error.
///
/// # Errors
///
/// [`ConvertError::File`] if the file is missing, unreadable or not valid JSON.
pub fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let msg = if e.kind() == std::io::ErrorKind::NotFound {
            "file not found".to_string()
        } else {
            format!("cannot read: {e}")
        };
        ConvertError::file(path, msg)
    })?;
    serde_json::from_str(&text).map_err(|e| ConvertError::file(path, format!("invalid JSON: {e}")))
}

/// Typed access to a JSON object with errors that name the file and key.
///
/// ```
/// use std::path::Path;
/// use mllama_quantize::config::Fields;
///
/// let obj = serde_json::json!({"hidden_size": 64, "eos_token_id": [1, 2]});
/// let f = Fields { path: Path::new("config.json"), prefix: "text_config.", obj: &obj };
/// assert_eq!(f.usize(&["hidden_size"]).unwrap(), 64);
/// assert_eq!(f.id_list("eos_token_id").unwrap(), [1, 2]);
/// let err = f.usize(&["vocab_size"]).unwrap_err();
/// assert_eq!(err.to_string(), "config.json: text_config.vocab_size: missing");
/// ```
pub struct Fields<'a> {
    /// The file, for error messages.
    pub path: &'a Path,
    /// Prepended to key names in errors (e.g. `"text_config."`).
    pub prefix: &'a str,
    /// The JSON object.
    pub obj: &'a Json,
}

impl<'a> Fields<'a> {
    fn err(&self, key: &str, msg: &str) -> ConvertError {
        ConvertError::file(self.path, format!("{}{key}: {msg}", self.prefix))
    }

    /// The value of `key`; `None` if absent or `null`.
    pub fn get(&self, key: &str) -> Option<&'a Json> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// The first of `keys` that is present (HF renamed some keys across versions).
    pub fn any(&self, keys: &[&str]) -> Option<&'a Json> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// A required non-negative integer under the first present of `keys`.
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] naming `keys[0]` if none is present or the value is not a
    /// non-negative integer.
    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        match self.any(keys) {
            None => Err(self.err(keys[0], "missing")),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                self.err(
                    keys[0],
                    &format!("expected a non-negative integer, found {v}"),
                )
            }),
        }
    }

    /// An optional non-negative integer (`default` when absent).
    ///
    /// # Errors
    ///
    /// As for [`Fields::usize`] when present with another type.
    pub fn usize_or(&self, keys: &[&str], default: usize) -> Result<usize> {
        if self.any(keys).is_none() {
            return Ok(default);
        }
        self.usize(keys)
    }

    /// An optional number (`default` when absent).
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] if present but not a number.
    pub fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        match self.any(keys) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(keys[0], &format!("expected a number, found {v}"))),
        }
    }

    /// A required list of non-negative integers.
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] if missing or not such a list.
    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let v = self.get(key).ok_or_else(|| self.err(key, "missing"))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| self.err(key, &format!("expected a list of integers, found {v}")))
    }

    /// An integer or a list of integers (token ids); empty when absent.
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] if present but neither.
    pub fn id_list(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Json::Number(n)) => n
                .as_u64()
                .map(|x| vec![x as u32])
                .ok_or_else(|| self.err(key, "expected a token id")),
            Some(Json::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().map(|x| x as u32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.err(key, "expected token ids")),
            Some(v) => Err(self.err(key, &format!("expected token id(s), found {v}"))),
        }
    }
}

impl MllamaConfig {
    /// Read and validate `dir/config.json`.
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] naming `config.json` and the key: file missing or not JSON,
    /// `model_type` not `"mllama"`, a required key missing, inconsistent values (heads not
    /// dividing the hidden size, a layer index out of range, an unsupported RoPE type, ...).
    pub fn load(dir: &Path) -> Result<MllamaConfig> {
        let path: PathBuf = dir.join("config.json");
        let root = read_json(&path)?;
        let path = path.as_path();
        if !root.is_object() {
            return Err(ConvertError::file(path, "expected a JSON object"));
        }
        let model_type = root.get("model_type").and_then(Json::as_str).unwrap_or("");
        let archs: Vec<&str> = root
            .get("architectures")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        if model_type != "mllama" {
            let what = if model_type.is_empty() {
                "no model_type".to_string()
            } else {
                format!("model_type {model_type:?}")
            };
            return Err(ConvertError::file(
                path,
                format!(
                    "not a Llama 3.2 Vision (mllama) checkpoint: {what}{}, expected \"mllama\" (MllamaForConditionalGeneration)",
                    if archs.is_empty() { String::new() } else { format!(" ({})", archs.join(", ")) }
                ),
            ));
        }
        let top = Fields {
            path,
            prefix: "",
            obj: &root,
        };
        let tj = root
            .get("text_config")
            .ok_or_else(|| ConvertError::file(path, "text_config: missing"))?;
        let vj = root
            .get("vision_config")
            .ok_or_else(|| ConvertError::file(path, "vision_config: missing"))?;
        let t = Fields {
            path,
            prefix: "text_config.",
            obj: tj,
        };
        let v = Fields {
            path,
            prefix: "vision_config.",
            obj: vj,
        };

        let hidden_size = t.usize(&["hidden_size"])?;
        let num_attention_heads = t.usize(&["num_attention_heads"])?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(ConvertError::file(
                path,
                format!("text_config: hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
            ));
        }
        // HF's mllama attention uses hidden_size / num_attention_heads whatever `head_dim` says.
        let head_dim = hidden_size / num_attention_heads;
        if let Some(hd) = t.get("head_dim").and_then(Json::as_u64) {
            if hd as usize != head_dim {
                return Err(ConvertError::file(
                    path,
                    format!("text_config.head_dim {hd} differs from hidden_size / num_attention_heads = {head_dim}, which HF's mllama uses"),
                ));
            }
        }
        let num_key_value_heads = t.usize_or(&["num_key_value_heads"], num_attention_heads)?;
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(ConvertError::file(
                path,
                format!("text_config: num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(ConvertError::file(
                path,
                format!("text_config.head_dim {head_dim} must be even for RoPE"),
            ));
        }
        // RoPE: `rope_scaling` + `rope_theta` (release layout) or `rope_parameters` (transformers 5).
        let rope_obj = t.get("rope_scaling").or_else(|| t.get("rope_parameters"));
        let rope_theta = match t.get("rope_theta") {
            Some(x) => x.as_f64().ok_or_else(|| {
                ConvertError::file(path, "text_config.rope_theta: expected a number")
            })?,
            None => rope_obj
                .and_then(|r| r.get("rope_theta"))
                .and_then(Json::as_f64)
                .unwrap_or(500000.0),
        };
        let rope_scaling = match rope_obj {
            None => None,
            Some(r) => {
                let f = Fields {
                    path,
                    prefix: "text_config.rope_scaling.",
                    obj: r,
                };
                let rope_type = f
                    .any(&["rope_type", "type"])
                    .and_then(Json::as_str)
                    .unwrap_or("default")
                    .to_string();
                match rope_type.as_str() {
                    "default" => None,
                    "llama3" => Some(RopeScaling {
                        rope_type,
                        factor: f.f64_or(&["factor"], 8.0)?,
                        low_freq_factor: f.f64_or(&["low_freq_factor"], 1.0)?,
                        high_freq_factor: f.f64_or(&["high_freq_factor"], 4.0)?,
                        original_max_position_embeddings: f.f64_or(&["original_max_position_embeddings"], 8192.0)?,
                    }),
                    other => {
                        return Err(ConvertError::file(
                            path,
                            format!("text_config.rope_scaling: rope type {other:?} is not supported (only \"llama3\")"),
                        ))
                    }
                }
            }
        };
        let num_hidden_layers = t.usize(&["num_hidden_layers"])?;
        let cross_attention_layers = t.usize_list("cross_attention_layers")?;
        if let Some(&bad) = cross_attention_layers
            .iter()
            .find(|&&l| l >= num_hidden_layers)
        {
            return Err(ConvertError::file(
                path,
                format!("text_config.cross_attention_layers: layer {bad} is out of range (num_hidden_layers {num_hidden_layers})"),
            ));
        }
        let text = TextConfig {
            vocab_size: t.usize(&["vocab_size"])?,
            hidden_size,
            intermediate_size: t.usize(&["intermediate_size"])?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: t.f64_or(&["rms_norm_eps"], 1e-5)?,
            rope_theta,
            rope_scaling,
            max_position_embeddings: t.usize_or(&["max_position_embeddings"], 131072)?,
            cross_attention_layers,
            bos_token_id: t
                .get("bos_token_id")
                .and_then(Json::as_u64)
                .map(|x| x as u32),
            eos_token_ids: t.id_list("eos_token_id")?,
            pad_token_id: t
                .get("pad_token_id")
                .and_then(Json::as_u64)
                .map(|x| x as u32),
            tie_word_embeddings: t
                .get("tie_word_embeddings")
                .or_else(|| top.get("tie_word_embeddings"))
                .and_then(Json::as_bool)
                .unwrap_or(false),
        };

        let vhidden = v.usize(&["hidden_size"])?;
        let vheads = v.usize(&["attention_heads", "num_attention_heads"])?;
        if vheads == 0 || vhidden % vheads != 0 {
            return Err(ConvertError::file(
                path,
                format!("vision_config: hidden_size {vhidden} is not a multiple of attention_heads {vheads}"),
            ));
        }
        let taps = v.usize_list("intermediate_layers_indices")?;
        let n_local = v.usize(&["num_hidden_layers"])?;
        if let Some(&bad) = taps.iter().find(|&&l| l >= n_local) {
            return Err(ConvertError::file(
                path,
                format!("vision_config.intermediate_layers_indices: layer {bad} is out of range ({n_local} layers)"),
            ));
        }
        let image_size = v.usize(&["image_size"])?;
        let patch_size = v.usize(&["patch_size"])?;
        if patch_size == 0 || image_size % patch_size != 0 {
            return Err(ConvertError::file(
                path,
                format!("vision_config: image_size {image_size} is not a multiple of patch_size {patch_size}"),
            ));
        }
        let max_num_tiles = v.usize_or(&["max_num_tiles"], 4)?;
        let ratios = match v.get("supported_aspect_ratios") {
            Some(r) => r
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|p| {
                            let p = p.as_array()?;
                            if p.len() != 2 {
                                return None;
                            }
                            Some((p[0].as_u64()? as usize, p[1].as_u64()? as usize))
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    ConvertError::file(
                        path,
                        "vision_config.supported_aspect_ratios: expected a list of [h, w] pairs",
                    )
                })?,
            None => {
                // HF's default: every (h, w) with h·w ≤ max_num_tiles, h-major.
                let mut r = Vec::new();
                for h in 1..=max_num_tiles {
                    for w in 1..=max_num_tiles {
                        if h * w <= max_num_tiles {
                            r.push((h, w));
                        }
                    }
                }
                r
            }
        };
        let vision = VisionConfig {
            hidden_size: vhidden,
            intermediate_size: v.usize(&["intermediate_size"])?,
            num_hidden_layers: n_local,
            num_global_layers: v.usize(&["num_global_layers"])?,
            attention_heads: vheads,
            vision_output_dim: v.usize_or(&["vision_output_dim"], vhidden * (1 + taps.len()))?,
            intermediate_layers_indices: taps,
            image_size,
            patch_size,
            num_channels: v.usize_or(&["num_channels"], 3)?,
            max_num_tiles,
            norm_eps: v.f64_or(&["norm_eps"], 1e-5)?,
            supported_aspect_ratios: ratios,
        };
        if vision.vision_output_dim
            != vision.hidden_size * (1 + vision.intermediate_layers_indices.len())
        {
            return Err(ConvertError::file(
                path,
                format!(
                    "vision_config.vision_output_dim {} != hidden_size × (1 + number of intermediate layers) = {}",
                    vision.vision_output_dim,
                    vision.hidden_size * (1 + vision.intermediate_layers_indices.len())
                ),
            ));
        }
        let image_token_index = top.usize(&["image_token_index"])? as u32;
        let name = root
            .get("_name_or_path")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(MllamaConfig {
            name,
            image_token_index,
            text,
            vision,
        })
    }
}

impl PreprocessConfig {
    /// Read `dir/preprocessor_config.json`, checked against the model's vision config.
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] naming the file: missing or not JSON, a tile size that differs
    /// from `vision.image_size`, a malformed mean/std, an unknown resample filter.
    // The CLIP constants are written as published.
    #[allow(clippy::excessive_precision)]
    pub fn load(dir: &Path, vision: &VisionConfig) -> Result<PreprocessConfig> {
        let path = dir.join("preprocessor_config.json");
        let j = read_json(&path)?;
        let f = Fields {
            path: &path,
            prefix: "",
            obj: &j,
        };
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match f.get(key) {
                None => Ok(default),
                Some(v) => {
                    let a: Option<Vec<f32>> = v
                        .as_array()
                        .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
                    match a {
                        Some(a) if a.len() == 3 => Ok([a[0], a[1], a[2]]),
                        _ => Err(ConvertError::file(
                            &path,
                            format!("{key}: expected 3 numbers, found {v}"),
                        )),
                    }
                }
            }
        };
        let tile_size = match f.get("size") {
            Some(s) => {
                let h = s.get("height").and_then(Json::as_u64);
                let w = s.get("width").and_then(Json::as_u64);
                match (h, w) {
                    (Some(h), Some(w)) if h == w => h as usize,
                    _ => {
                        return Err(ConvertError::file(
                            &path,
                            format!("size: expected equal height and width, found {s}"),
                        ))
                    }
                }
            }
            None => vision.image_size,
        };
        if tile_size != vision.image_size {
            return Err(ConvertError::file(
                &path,
                format!(
                    "size {tile_size} does not match the model's vision_config.image_size {}",
                    vision.image_size
                ),
            ));
        }
        let resample = match f.get("resample").and_then(Json::as_u64) {
            None | Some(2) => "bilinear",
            Some(3) => "bicubic",
            Some(0) => "nearest",
            Some(1) => "lanczos",
            Some(other) => {
                return Err(ConvertError::file(
                    &path,
                    format!("resample: unknown PIL filter {other}"),
                ));
            }
        };
        // The class default is ImageNet 0.5/0.5; every released checkpoint stores the CLIP values.
        Ok(PreprocessConfig {
            image_mean: triple("image_mean", [0.48145466, 0.4578275, 0.40821073])?,
            image_std: triple("image_std", [0.26862954, 0.26130258, 0.27577711])?,
            rescale_factor: f.f64_or(&["rescale_factor"], 1.0 / 255.0)? as f32,
            max_image_tiles: f.usize_or(&["max_image_tiles"], vision.max_num_tiles)?,
            tile_size,
            resample: resample.to_string(),
        })
    }
}

impl GenerationConfig {
    /// Read `generation_config.json`; absent file → no defaults (the runtime's own apply).
    ///
    /// # Errors
    ///
    /// [`ConvertError::File`] if the file exists but is not valid JSON or has a malformed
    /// `eos_token_id`.
    pub fn load(dir: &Path) -> Result<Option<GenerationConfig>> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(None);
        }
        let j = read_json(&path)?;
        let f = Fields {
            path: &path,
            prefix: "",
            obj: &j,
        };
        Ok(Some(GenerationConfig {
            do_sample: f.get("do_sample").and_then(Json::as_bool),
            temperature: f.get("temperature").and_then(Json::as_f64),
            top_p: f.get("top_p").and_then(Json::as_f64),
            top_k: f.get("top_k").and_then(Json::as_i64),
            eos_token_ids: f.id_list("eos_token_id")?,
        }))
    }
}
