//! Ollama's model store: model names resolved through manifests to blob files.
//!
//! The store (`$OLLAMA_MODELS`, else `~/.ollama/models`) holds
//! `manifests/<host>/<namespace>/<model>/<tag>` (JSON: a config and a list of layers, each with
//! a media type and a `sha256:<hex>` digest) and `blobs/sha256-<hex>` (the layers' bytes). A name
//! `[host/][namespace/]model[:tag]` defaults to `registry.ollama.ai/library/…:latest`. Blobs are
//! used where they are; nothing is copied or hashed (a 6 GB blob would take seconds to hash).
//!
//! ```
//! use mllama::format::ollama_store::{ModelName, Store};
//!
//! let n = ModelName::parse("llama3.2-vision:11b").unwrap();
//! assert_eq!(n.to_string(), "llama3.2-vision:11b");
//! assert_eq!(n.manifest_rel().to_str(), Some("registry.ollama.ai/library/llama3.2-vision/11b"));
//! let store = Store::new("/nonexistent/ollama");
//! let err = store.resolve("llama3.2-vision").unwrap_err();
//! assert!(err.to_string().contains("no llama3.2-vision tags are installed"));
//! ```

use std::path::{Path, PathBuf};

use crate::error::OllamaError;
use crate::Error;

/// Media type of the GGUF model layer.
pub const MEDIA_MODEL: &str = "application/vnd.ollama.image.model";
/// Media type of an era-1 vision projector layer.
pub const MEDIA_PROJECTOR: &str = "application/vnd.ollama.image.projector";
/// Media type of the prompt template layer (a Go template).
pub const MEDIA_TEMPLATE: &str = "application/vnd.ollama.image.template";
/// Media type of the default sampling parameters layer (JSON).
pub const MEDIA_PARAMS: &str = "application/vnd.ollama.image.params";

const DEFAULT_HOST: &str = "registry.ollama.ai";
const DEFAULT_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";
/// Largest manifest or template layer read (real ones are under 2 kB).
const MAX_SMALL_FILE: u64 = 1 << 20;

/// A parsed model name: `[host/][namespace/]model[:tag]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelName {
    /// Registry host (`registry.ollama.ai`).
    pub host: String,
    /// Namespace (`library`).
    pub namespace: String,
    /// Model (`llama3.2-vision`).
    pub model: String,
    /// Tag (`latest`, `11b`, …).
    pub tag: String,
}

impl ModelName {
    /// Parse a name; `None` if it is not one (empty parts, characters outside
    /// `[A-Za-z0-9._-]`, more than three path parts).
    pub fn parse(s: &str) -> Option<ModelName> {
        let (path, tag) = match s.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (s, DEFAULT_TAG),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !parts.iter().all(|p| ok(p)) || !ok(tag) {
            return None;
        }
        let (host, namespace, model) = match parts.as_slice() {
            [m] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *m),
            [n, m] => (DEFAULT_HOST, *n, *m),
            [h, n, m] => (*h, *n, *m),
            _ => return None,
        };
        Some(ModelName {
            host: host.into(),
            namespace: namespace.into(),
            model: model.into(),
            tag: tag.into(),
        })
    }

    /// The manifest's path below `manifests/`.
    pub fn manifest_rel(&self) -> PathBuf {
        [&self.host, &self.namespace, &self.model, &self.tag]
            .iter()
            .collect()
    }
}

impl std::fmt::Display for ModelName {
    /// The short form Ollama prints: host and namespace only when not the defaults.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host != DEFAULT_HOST {
            write!(f, "{}/", self.host)?;
        }
        if self.host != DEFAULT_HOST || self.namespace != DEFAULT_NAMESPACE {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}:{}", self.model, self.tag)
    }
}

/// One layer of a manifest, with the blob that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Media type (`application/vnd.ollama.image.model`, …).
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// Size in bytes, as the manifest says.
    pub size: u64,
    /// The blob file.
    pub blob: PathBuf,
}

/// A model name resolved through its manifest: the blobs to load.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The name, completed with defaults.
    pub name: ModelName,
    /// The manifest file.
    pub manifest: PathBuf,
    /// The GGUF model layer.
    pub model: Layer,
    /// The vision projector layer (era 1 of `llama3.2-vision`).
    pub projector: Option<Layer>,
    /// The template layer's text (Ollama's Go template), if the manifest has one.
    pub template: Option<String>,
    /// The params layer's text (JSON sampling defaults such as `{"temperature":0.6}`), if any.
    pub params: Option<String>,
}

/// An Ollama model store directory.
#[derive(Clone, Debug)]
pub struct Store {
    /// The directory holding `manifests/` and `blobs/`.
    pub root: PathBuf,
}

impl Store {
    /// The store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store Ollama uses: `$OLLAMA_MODELS`, else `$HOME/.ollama/models` (`None` if neither
    /// variable is set).
    pub fn default_location() -> Option<Store> {
        if let Some(d) = std::env::var_os("OLLAMA_MODELS").filter(|d| !d.is_empty()) {
            return Some(Store::new(d));
        }
        let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
        Some(Store::new(Path::new(&home).join(".ollama").join("models")))
    }

    /// The blob file of a digest (`sha256:<hex>` or `sha256-<hex>`); `None` for a malformed one.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .or_else(|| digest.strip_prefix("sha256-"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.root.join("blobs").join(format!("sha256-{hex}")))
    }

    /// The installed tags of `name`'s model (same host and namespace), as `model:tag`, sorted.
    pub fn installed_tags(&self, name: &ModelName) -> Vec<String> {
        let dir = self
            .root
            .join("manifests")
            .join(&name.host)
            .join(&name.namespace)
            .join(&name.model);
        let mut tags: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .map(|tag| {
                ModelName {
                    tag,
                    ..name.clone()
                }
                .to_string()
            })
            .collect();
        tags.sort();
        tags
    }

    /// Resolve a model name to its blobs.
    ///
    /// # Errors
    ///
    /// [`Error::Ollama`] with [`OllamaError::BadName`] (not a name),
    /// [`OllamaError::NotInstalled`] (no manifest; lists the installed tags of the model),
    /// [`OllamaError::BadManifest`], [`OllamaError::NoModelLayer`] or
    /// [`OllamaError::MissingBlob`] (a layer's blob is not in `blobs/`).
    pub fn resolve(&self, name: &str) -> Result<Resolved, Error> {
        let parsed = ModelName::parse(name).ok_or_else(|| OllamaError::BadName(name.into()))?;
        let manifest = self.root.join("manifests").join(parsed.manifest_rel());
        if !manifest.is_file() {
            return Err(OllamaError::NotInstalled {
                name: name.into(),
                model: parsed.model.clone(),
                root: self.root.clone(),
                installed: self.installed_tags(&parsed),
            }
            .into());
        }
        let layers = self.layers(&manifest)?;
        let find = |media: &str| layers.iter().find(|l| l.media_type == media).cloned();
        let model = find(MEDIA_MODEL).ok_or_else(|| OllamaError::NoModelLayer {
            manifest: manifest.clone(),
        })?;
        let small = |media| -> Result<Option<String>, Error> {
            find(media).map(|l| read_small(&l.blob)).transpose()
        };
        let (template, params) = (small(MEDIA_TEMPLATE)?, small(MEDIA_PARAMS)?);
        Ok(Resolved {
            name: parsed,
            model,
            projector: find(MEDIA_PROJECTOR),
            template,
            params,
            manifest,
        })
    }

    /// The layers of a manifest, each checked to have its blob (model, projector, template and
    /// params layers; others are ignored).
    fn layers(&self, manifest: &Path) -> Result<Vec<Layer>, Error> {
        let bad = |why: String| OllamaError::BadManifest {
            manifest: manifest.to_path_buf(),
            why,
        };
        let text = read_small(manifest)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("JSON: {e}")))?;
        let list = json
            .get("layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| bad("no \"layers\" list".into()))?;
        let mut out = Vec::new();
        for l in list {
            let media = l.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
            let kind = match media {
                MEDIA_MODEL => "model",
                MEDIA_PROJECTOR => "projector",
                MEDIA_TEMPLATE => "template",
                MEDIA_PARAMS => "params",
                _ => continue,
            };
            let digest = l.get("digest").and_then(|d| d.as_str()).unwrap_or("");
            let blob = self
                .blob_path(digest)
                .ok_or_else(|| bad(format!("{kind} layer has a malformed digest {digest:?}")))?;
            if !blob.is_file() {
                return Err(OllamaError::MissingBlob {
                    manifest: manifest.to_path_buf(),
                    kind,
                    digest: digest.into(),
                    blob,
                }
                .into());
            }
            out.push(Layer {
                media_type: media.into(),
                digest: digest.into(),
                size: l.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
                blob,
            });
        }
        Ok(out)
    }
}

/// A small text file (manifest, template), refused above 1 MiB.
fn read_small(path: &Path) -> Result<String, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_SMALL_FILE {
        return Err(OllamaError::BadManifest {
            manifest: path.to_path_buf(),
            why: format!(
                "{} bytes, more than a manifest or template can be",
                meta.len()
            ),
        }
        .into());
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| {
        OllamaError::BadManifest {
            manifest: path.to_path_buf(),
            why: "not UTF-8 text".into(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = ModelName::parse("llama3.2-vision").unwrap();
        assert_eq!(
            (n.host.as_str(), n.namespace.as_str(), n.tag.as_str()),
            ("registry.ollama.ai", "library", "latest")
        );
        let n = ModelName::parse("example.com/me/m:q4").unwrap();
        assert_eq!((n.host.as_str(), n.tag.as_str()), ("example.com", "q4"));
        assert_eq!(n.to_string(), "example.com/me/m:q4");
        assert_eq!(ModelName::parse("me/m:q4").unwrap().to_string(), "me/m:q4");
        for bad in ["", "a//b", "../x", "a/b/c/d", "m:", "m:a/b", "sp ace"] {
            assert!(ModelName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn blob_paths() {
        let s = Store::new("/s");
        let hex = "ab".repeat(32);
        assert_eq!(
            s.blob_path(&format!("sha256:{hex}")).unwrap(),
            Path::new("/s/blobs").join(format!("sha256-{hex}"))
        );
        assert!(s.blob_path("sha256:../../etc/passwd").is_none());
        assert!(s.blob_path("md5:00").is_none());
    }
}
