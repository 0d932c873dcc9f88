//! The models a server serves: each loaded once (memory-mapped) into an `Arc<Model>` shared by
//! every request, with the facts `/api/tags`, `/api/show`, `/api/ps` and `/v1/models` report.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mllama::format::gguf::Value;
use mllama::quant::mix::FileType;
use mllama::Model;
use serde_json::{json, Map};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One served model.
pub struct ServedModel {
    /// The name requests use (`NAME` of `-m NAME=PATH`, else the file's stem), with a tag
    /// (`:latest` unless given).
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// The loaded model, shared by every session.
    pub model: Arc<Model>,
    /// File size in bytes.
    pub size: u64,
    /// `sha256:` of the file's length and first MiB (an identity for the file, cheap to compute;
    /// not the hash of the whole blob as Ollama's is).
    pub digest: String,
    /// The file's modification time, RFC 3339.
    pub modified_at: String,
    /// Seconds the load took.
    pub load_s: f64,
    /// Total parameters (elements of every tensor).
    pub parameters: u64,
}

/// Split `-m` values `NAME=PATH` or `PATH` into a name and a path.
pub fn parse_spec(spec: &str) -> (Option<String>, PathBuf) {
    match spec.split_once('=') {
        Some((n, p)) if !n.is_empty() && !n.contains('/') && !Path::new(spec).exists() => {
            (Some(n.to_string()), PathBuf::from(p))
        }
        _ => (None, PathBuf::from(spec)),
    }
}

/// `name` with `:latest` when it has no tag.
pub fn with_tag(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

impl ServedModel {
    /// Load the model at `path` (a GGUF file, or an Ollama model name resolved through its
    /// store), served as `name` (default: the file stem, or the Ollama name).
    pub fn load(name: Option<String>, path: &Path) -> Result<ServedModel, mllama::Error> {
        let t = Instant::now();
        let opts = mllama::models::mllama::open::OpenOptions::default();
        let model = Model::open(path, &opts)?;
        let load_s = t.elapsed().as_secs_f64();
        let path = model.provenance().model_file.clone();
        let path = path.as_path();
        let meta = std::fs::metadata(path).map_err(|e| mllama::Error::io(path, e))?;
        let mut head = Vec::with_capacity(1 << 20);
        std::fs::File::open(path)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
            .map_err(|e| mllama::Error::io(path, e))?;
        let mut h = Sha256::new();
        h.update(meta.len().to_le_bytes());
        h.update(&head);
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let modified_at = meta
            .modified()
            .map(crate::time::rfc3339)
            .unwrap_or_else(|_| crate::time::rfc3339_now());
        let stem = match &model.provenance().ollama_name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "mllama".into()),
        };
        let parameters = model.gguf().tensors().iter().map(|t| t.n_elements()).sum();
        Ok(ServedModel {
            name: with_tag(&name.unwrap_or(stem)),
            path: path.to_path_buf(),
            model: Arc::new(model),
            size: meta.len(),
            digest,
            modified_at,
            load_s,
            parameters,
        })
    }

    /// The quantization name from `general.file_type` (`Q4_0`, `Q4_K_M`, ...).
    pub fn quantization(&self) -> String {
        let ft = self
            .model
            .gguf()
            .get("general.file_type")
            .and_then(Value::as_u64);
        FileType::ALL
            .into_iter()
            .find(|f| Some(u64::from(f.llama_ftype())) == ft)
            .map(|f| f.name().to_ascii_uppercase())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Ollama's `details` object.
    pub fn details(&self) -> serde_json::Value {
        let p = self.parameters as f64;
        let size = if p >= 1e9 {
            format!("{:.1}B", p / 1e9)
        } else {
            format!("{:.1}M", p / 1e6)
        };
        json!({
            "parent_model": "",
            "format": "gguf",
            "family": "mllama",
            "families": ["mllama"],
            "parameter_size": size,
            "quantization_level": self.quantization(),
        })
    }

    /// Ollama's `model_info`: the GGUF metadata's scalar keys (arrays such as the vocabulary are
    /// left out), plus `general.parameter_count`.
    pub fn model_info(&self) -> serde_json::Value {
        let mut m = Map::new();
        for (k, v) in self.model.gguf().metadata() {
            let j = match v {
                Value::String(s) if k == "tokenizer.chat_template" => continue,
                Value::String(s) => json!(s),
                Value::Bool(b) => json!(b),
                Value::F32(x) => json!(x),
                Value::F64(x) => json!(x),
                Value::Array(_) => continue,
                other => match other.as_i64() {
                    Some(i) => json!(i),
                    None => continue,
                },
            };
            m.insert(k.clone(), j);
        }
        m.insert("general.parameter_count".into(), json!(self.parameters));
        serde_json::Value::Object(m)
    }

    /// The chat template's source (empty if the file has none).
    pub fn template(&self) -> String {
        self.model
            .tokenizer()
            .ok()
            .and_then(|t| t.chat_template())
            .unwrap_or("")
            .to_string()
    }

    /// The generation defaults as Ollama's `parameters` text (one `name value` per line).
    pub fn parameters_text(&self) -> String {
        let g = &self.model.cfg.generation;
        let mut l = Vec::new();
        if let Some(t) = g.temperature {
            l.push(format!("temperature {t}"));
        }
        if let Some(p) = g.top_p {
            l.push(format!("top_p {p}"));
        }
        if let Some(k) = g.top_k {
            l.push(format!("top_k {k}"));
        }
        if let Ok(tok) = self.model.tokenizer() {
            for id in g.eos_ids.iter().chain(tok.eos_ids()) {
                if let Some(s) = tok.token_str(*id) {
                    let line = format!("stop \"{s}\"");
                    if !l.contains(&line) {
                        l.push(line);
                    }
                }
            }
        }
        l.join("\n")
    }

    /// The model's context length.
    pub fn context_length(&self) -> usize {
        self.model.text.cfg.context_length
    }
}

/// Every served model.
pub struct Registry {
    /// In the order given on the command line.
    pub models: Vec<Arc<ServedModel>>,
}

impl Registry {
    /// The model a request names: exactly, or without `:latest`.
    pub fn find(&self, name: &str) -> Result<Arc<ServedModel>, ApiError> {
        let want = with_tag(name.trim());
        self.models
            .iter()
            .find(|m| m.name == want)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<String> = self.models.iter().map(|m| m.name.clone()).collect();
                if name.trim().is_empty() {
                    ApiError::bad_request(
                        "missing_model",
                        format!("no model given; this server has: {}", names.join(", ")),
                    )
                } else {
                    ApiError::unknown_model(name, &names)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_tags() {
        assert_eq!(
            parse_spec("llama3.2-vision=/m/x.gguf"),
            (Some("llama3.2-vision".into()), PathBuf::from("/m/x.gguf"))
        );
        assert_eq!(parse_spec("/m/x.gguf"), (None, PathBuf::from("/m/x.gguf")));
        assert_eq!(with_tag("a"), "a:latest");
        assert_eq!(with_tag("a:11b"), "a:11b");
    }
}
