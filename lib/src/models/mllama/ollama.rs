//! Which layout an `mllama` GGUF has, and the storage conventions that follow from it.
//!
//! Three layouts of Ollama's `llama3.2-vision` files exist besides our own (which says how it
//! stores things in `mllama.convention.*` keys); `scripts/ollama_fixtures.md` is the spec, with
//! sources:
//!
//! | layout | files | self q/k | cross q/k | vision gates | global gates | vision names |
//! |---|---|---|---|---|---|---|
//! | era 1 (Ollama 0.4–0.6) | text blob + projector blob | permuted | permuted | pre-activated | pre-activated | `ln1`, `ln2`, `attn_out`, fc1/fc2 under swapped names |
//! | era 2a (the 0.7.0 push) | one blob | permuted | HF order | pre-activated | **raw** | ours |
//! | era 2b (0.7.1 on) | one blob | permuted | permuted | pre-activated | pre-activated | ours |
//!
//! "Permuted" q/k rows are in ggml's adjacent-pair RoPE order; the loader rotates adjacent pairs
//! (self-attention) or permutes the 128-float `q_norm`/`k_norm` the same way (cross-attention),
//! so the matrices stay in the memory map. "Pre-activated" gates hold `tanh(g)` (the position
//! gate `1 − tanh(g)`) and are used as stored. Era 2a and 2b have the same keys and names: only
//! the blob's digest tells them apart ([`ERA2A_DIGESTS`]).

use std::path::Path;

use crate::format::gguf::{GgufFile, TensorInfo};
use crate::models::mllama::config::Conventions;
use crate::models::mllama::keys;
use crate::nn::RopePairs;

/// Digests (sha256 of the whole blob) of the era-2a blobs Ollama published: the first
/// `llama3.2-vision` push of Ollama 0.7.0 (11B, Q4_K_M).
pub const ERA2A_DIGESTS: &[&str] =
    &["7633fdffe14c0f7acc115402376be5bd6052220c348676c5133dc011b35e2429"];

/// How an `mllama` model's files are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Our converter's single file: conventions from its `mllama.convention.*` keys.
    Ours,
    /// Ollama 0.4–0.6: a text blob and a vision projector blob.
    Era1,
    /// Ollama 0.7.0's first single blob: raw global vision gates, cross q/k in HF order.
    Era2a,
    /// Ollama 0.7.1 and later: one blob, every vision gate pre-activated, cross q/k permuted.
    Era2b,
    /// A plain Llama text GGUF (`general.architecture = llama`, llama.cpp's names and keys).
    LlamaText,
}

impl Layout {
    /// Parse `ours`, `era1`, `era2a`, `era2b` or `llama`.
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "ours" => Some(Layout::Ours),
            "era1" => Some(Layout::Era1),
            "era2a" => Some(Layout::Era2a),
            "era2b" => Some(Layout::Era2b),
            "llama" => Some(Layout::LlamaText),
            _ => None,
        }
    }

    /// A short description (`Ollama era 2b (one blob, Ollama ≥ 0.7.1)`).
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Ours => "mllama quantize (conventions in mllama.convention.* keys)",
            Layout::Era1 => "Ollama era 1 (text blob + projector blob, Ollama 0.4-0.6)",
            Layout::Era2a => "Ollama era 2a (one blob, Ollama 0.7.0's first push)",
            Layout::Era2b => "Ollama era 2b (one blob, Ollama 0.7.1 and later)",
            Layout::LlamaText => "llama.cpp Llama text model (no vision tower)",
        }
    }
}

/// What one GGUF file of `mllama` architecture holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Text decoder and vision tower (our files, Ollama era 2).
    Full,
    /// Text decoder only (`mllama.block_count`, no `mllama.vision.*` keys): an era-1 text blob.
    Text,
    /// Vision tower and projector only (`mllama.vision.*` keys, no `mllama.block_count`): an
    /// era-1 projector blob.
    Projector,
}

/// What a file holds, from its keys.
pub fn contents(f: &GgufFile) -> Contents {
    let vision = f
        .metadata()
        .iter()
        .any(|(k, _)| k.starts_with("mllama.vision."));
    match (f.get(keys::BLOCK_COUNT).is_some(), vision) {
        (true, false) => Contents::Text,
        (false, true) => Contents::Projector,
        _ => Contents::Full,
    }
}

/// Whether a file carries our `mllama.convention.*` keys.
pub fn is_ours(f: &GgufFile) -> bool {
    f.metadata()
        .iter()
        .any(|(k, _)| k.starts_with("mllama.convention."))
}

/// The hex digest in a blob name (`sha256-<hex>` or `sha256:<hex>`), if it is one.
pub fn digest_of_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let hex = name
        .strip_prefix("sha256-")
        .or_else(|| name.strip_prefix("sha256:"))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_lowercase())
}

/// The layout of a single-file model (`Full` contents): ours if it has convention keys, else era
/// 2a if its digest (from the store's manifest, else from its `sha256-<hex>` file name) is a
/// known era-2a digest, else era 2b.
pub fn detect_single(f: &GgufFile, digest: Option<&str>) -> Layout {
    if is_ours(f) {
        return Layout::Ours;
    }
    let from_name = digest_of_name(f.path());
    let d = digest
        .map(|d| d.trim_start_matches("sha256:").to_lowercase())
        .or(from_name);
    match d {
        Some(d) if ERA2A_DIGESTS.contains(&d.as_str()) => Layout::Era2a,
        _ => Layout::Era2b,
    }
}

/// The storage conventions of an Ollama layout (`None` for ours: read from its keys).
pub fn conventions(layout: Layout) -> Option<Conventions> {
    let (global_gates_tanh, cross_qk_permuted) = match layout {
        Layout::Ours | Layout::LlamaText => return None,
        Layout::Era1 | Layout::Era2b => (true, true),
        Layout::Era2a => (false, false),
    };
    Some(Conventions {
        vision_gates_tanh: true,
        global_gates_tanh,
        cross_gates_tanh: false,
        self_qk: RopePairs::Adjacent,
        cross_qk_permuted,
    })
}

/// One line per storage convention the loader undoes, for `mllama info`.
pub fn describe_conventions(layout: Layout, c: &Conventions, names: &TensorNames) -> Vec<String> {
    let mut out = Vec::new();
    out.push(match c.self_qk {
        RopePairs::Adjacent => {
            "self-attention q/k rows in ggml's adjacent-pair RoPE order: RoPE rotates adjacent pairs (rows used in place)".to_string()
        }
        RopePairs::Half => "self-attention q/k rows in HF order (rotate-half RoPE)".to_string(),
    });
    out.push(if c.cross_qk_permuted {
        "cross-attention q/k rows permuted per head, q_norm/k_norm not: the norm weights are permuted to match (rows used in place)".to_string()
    } else {
        "cross-attention q/k rows in HF order: q_norm/k_norm apply as stored".to_string()
    });
    out.push(if c.vision_gates_tanh {
        "vision gates pre-activated: position gate = 1 − tanh(g), tile / pre-tile / post-tile gates = tanh(g), used as stored".to_string()
    } else {
        "vision gates raw: tanh applied at load (position table: 1 − tanh(g))".to_string()
    });
    out.push(if c.global_gates_tanh {
        "global vision layer gates (attn_gate, ffn_gate) pre-activated = tanh(g), used as stored"
            .to_string()
    } else {
        "global vision layer gates (attn_gate, ffn_gate) raw: tanh applied at load".to_string()
    });
    out.push(if c.cross_gates_tanh {
        "cross-attention gates pre-activated = tanh(g), used as stored".to_string()
    } else {
        "cross-attention gates raw: tanh applied at load".to_string()
    });
    if layout == Layout::Era1 {
        out.push(format!(
            "era-1 projector names: ln1 → attn_norm, ln2 → ffn_norm, attn_out → attn_output; fc1 is stored as {}, fc2 as {} (told apart by shape)",
            names.era1_fc1, names.era1_fc2
        ));
    }
    out
}

/// The metadata an Ollama file lacks and where the loader takes it from instead.
pub fn describe_missing_keys(f: &GgufFile) -> Vec<String> {
    let mut out = Vec::new();
    let scaling = f.get(keys::ROPE_SCALING_TYPE).is_some();
    if !scaling && f.tensor_info(keys::T_ROPE_FREQS).is_some() {
        out.push("no rope.scaling keys: llama3 RoPE factors read from rope_freqs.weight".into());
    }
    if f.get(keys::IMAGE_TOKEN_INDEX).is_none() {
        out.push("no mllama.image_token_index: the id of <|image|> in the vocabulary".into());
    }
    if f.get(keys::P_SUPPORTED_ASPECT_RATIOS).is_none() {
        out.push(
            "no preprocessing keys: CLIP mean/std and every tile arrangement up to max_num_tiles (HF's)"
                .into(),
        );
    }
    out
}

/// Where the loader finds a tensor: which file and under which stored name.
#[derive(Clone, Debug)]
pub struct TensorNames {
    /// Vision tower and projector tensors live in a second file (era 1).
    pub split: bool,
    /// Era 1: the stored suffix of HF `fc1` (`ffn_down` in every era-1 projector seen).
    pub era1_fc1: &'static str,
    /// Era 1: the stored suffix of HF `fc2`.
    pub era1_fc2: &'static str,
}

impl TensorNames {
    /// Our names, one file.
    pub fn single() -> TensorNames {
        TensorNames {
            split: false,
            era1_fc1: "ffn_up",
            era1_fc2: "ffn_down",
        }
    }

    /// Era 1's names over a text blob and `projector`: fc1 is the MLP matrix with `v_ffn` rows
    /// (`ffn_down` as Ollama's projector stores it; `ffn_up` if a file stores it the other way).
    pub fn era1(projector: &GgufFile, v_ffn: usize, v_hidden: usize) -> TensorNames {
        let rows = |n: &str| projector.tensor_info(n).map(TensorInfo::n_rows);
        let down = rows(&keys::vblk(0, "ffn_down.weight"));
        let unswapped = v_ffn != v_hidden && down == Some(v_hidden);
        let (era1_fc1, era1_fc2) = if unswapped {
            ("ffn_up", "ffn_down")
        } else {
            ("ffn_down", "ffn_up")
        };
        TensorNames {
            split: true,
            era1_fc1,
            era1_fc2,
        }
    }

    /// The stored name of `name` (one of ours) and whether it is in the projector file.
    pub fn locate(&self, name: &str) -> (bool, String) {
        let vision = name.starts_with("v.") || name.starts_with("mm.");
        if !self.split || !vision {
            return (false, name.to_string());
        }
        let Some((prefix, suffix)) = split_layer(name) else {
            return (true, name.to_string());
        };
        let stored = match suffix.split_once('.') {
            Some(("attn_norm", rest)) => format!("ln1.{rest}"),
            Some(("ffn_norm", rest)) => format!("ln2.{rest}"),
            Some(("attn_output", rest)) => format!("attn_out.{rest}"),
            Some(("ffn_up", rest)) => format!("{}.{rest}", self.era1_fc1),
            Some(("ffn_down", rest)) => format!("{}.{rest}", self.era1_fc2),
            _ => suffix.to_string(),
        };
        (true, format!("{prefix}{stored}"))
    }
}

/// `v.blk.3.attn_q.weight` → (`v.blk.3.`, `attn_q.weight`); `None` outside vision layers.
fn split_layer(name: &str) -> Option<(&str, &str)> {
    let rest = name
        .strip_prefix("v.global.blk.")
        .or_else(|| name.strip_prefix("v.blk."))?;
    let dot = rest.find('.')?;
    let cut = name.len() - rest.len() + dot + 1;
    Some((&name[..cut], &name[cut..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn era1_names() {
        let n = TensorNames {
            split: true,
            era1_fc1: "ffn_down",
            era1_fc2: "ffn_up",
        };
        let l = |s: &str| n.locate(s);
        assert_eq!(
            l("blk.1.attn_q.weight"),
            (false, "blk.1.attn_q.weight".into())
        );
        assert_eq!(
            l("v.blk.3.attn_norm.bias"),
            (true, "v.blk.3.ln1.bias".into())
        );
        assert_eq!(
            l("v.global.blk.0.ffn_norm.weight"),
            (true, "v.global.blk.0.ln2.weight".into())
        );
        assert_eq!(
            l("v.blk.12.attn_output.weight"),
            (true, "v.blk.12.attn_out.weight".into())
        );
        assert_eq!(
            l("v.blk.0.ffn_up.bias"),
            (true, "v.blk.0.ffn_down.bias".into())
        );
        assert_eq!(
            l("v.blk.0.ffn_down.weight"),
            (true, "v.blk.0.ffn_up.weight".into())
        );
        assert_eq!(
            l("v.global.blk.1.attn_gate"),
            (true, "v.global.blk.1.attn_gate".into())
        );
        assert_eq!(l("mm.0.weight"), (true, "mm.0.weight".into()));
        assert_eq!(
            l("v.position_embd.gate"),
            (true, "v.position_embd.gate".into())
        );
    }

    #[test]
    fn digests_from_names() {
        let hex = ERA2A_DIGESTS[0];
        let p = format!("/x/blobs/sha256-{hex}");
        assert_eq!(digest_of_name(Path::new(&p)).as_deref(), Some(hex));
        assert_eq!(digest_of_name(Path::new("/x/model.gguf")), None);
        assert_eq!(digest_of_name(Path::new("/x/sha256-abc")), None);
    }
}
