//! Opening a model from what a user has: one GGUF, an era-1 text blob with its projector, or an
//! Ollama model name resolved through the store's manifests ([`Model::open`](super::Model::open)). The layout is
//! detected ([`super::ollama`]) and its conventions undone while loading; weights stay
//! in the memory maps.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::OllamaError;
use crate::format::gguf::GgufFile;
use crate::format::ollama_store::{Resolved, Store};
use crate::models::mllama::ollama::{self, Contents, Layout, TensorNames};
use crate::models::mllama::{keys, ModelConfig};
use crate::Error;

/// The Llama 3.2 Vision Instruct chat template (HF's Jinja), used when neither the file nor an
/// Ollama manifest gives one.
pub const LLAMA32_VISION_TEMPLATE: &str = include_str!("llama32_vision_template.jinja");

/// sha256 of Ollama's `llama3.2-vision` template layer (a Go template, 269 bytes).
pub const OLLAMA_TEMPLATE_SHA256: &str =
    "715415638c9c4c0cb2b78783da041b97bd1205f8b9f9494bd7e5a850cb443602";

/// Ollama's `llama3.2-vision` Go template (layer [`OLLAMA_TEMPLATE_SHA256`]) in HF's Jinja
/// dialect: the same text for every conversation (a header per message, `<|eot_id|>` between
/// messages, the assistant header after a last non-assistant message; no system block, no
/// date), with `<|image|>` where the message's images are and the BOS token Ollama's tokenizer
/// adds.
pub const OLLAMA_TEMPLATE_JINJA: &str = "{{- bos_token }}
{%- for message in messages %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
{%- if message['content'] is string %}
{{- message['content'] }}
{%- else %}
{%- for part in message['content'] %}
{%- if part['type'] == 'image' %}{{- '<|image|>' }}{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}
{%- endfor %}
{%- endif %}
{%- if not loop.last %}
{{- '<|eot_id|>' }}
{%- elif message['role'] != 'assistant' %}
{{- '<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
{%- endfor %}";

/// Choices for [`Model::open`](super::Model::open).
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// The vision projector of an era-1 Ollama text blob (`--mmproj`).
    pub projector: Option<PathBuf>,
    /// Use this layout instead of detecting it (e.g. [`Layout::Era2a`] for a 2a blob renamed
    /// away from its digest).
    pub layout: Option<Layout>,
    /// The Ollama store to resolve names in (default: `$OLLAMA_MODELS`, else
    /// `~/.ollama/models`).
    pub store: Option<PathBuf>,
    /// Era 1 only: the text blob's cross-attention q/k rows are in HF order instead of permuted.
    /// No era-1 blob has been inspected; Ollama's converter history says permuted (the default,
    /// see `scripts/ollama_fixtures.md` §3.4), this reads the other possibility.
    pub era1_cross_qk_hf: bool,
    /// Keep every weight in place in the memory map instead of repacking the decoder's matrices
    /// into row-interleaved layouts at load ([`crate::Model::repack`]; `--no-repack`).
    pub no_repack: bool,
    /// Arithmetic of the vision tower ([`crate::Model::set_vision_precision`];
    /// `--vision-precision`).
    pub vision_precision: crate::VisionPrecision,
}

/// Where the chat template came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// `tokenizer.chat_template` in the file.
    File,
    /// Ollama's template layer (recognised by its digest, rendered by its Jinja equivalent).
    OllamaLayer,
    /// The built-in Llama 3.2 Vision Instruct template (the file has none; `why` says more).
    Default {
        /// Why (no template in the file, an unrecognised template layer).
        why: String,
    },
}

/// Where a model came from and how its files are stored: what `mllama info` prints.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// The detected (or forced) layout.
    pub layout: Layout,
    /// How the layout was decided.
    pub detected_by: String,
    /// The Ollama name it was resolved from, as `model:tag`.
    pub ollama_name: Option<String>,
    /// The model file (text blob for era 1).
    pub model_file: PathBuf,
    /// The era-1 projector file.
    pub projector_file: Option<PathBuf>,
    /// Every storage convention undone at load, one line each.
    pub conventions: Vec<String>,
    /// Where the chat template came from.
    pub template: TemplateSource,
}

/// The files of one model, before loading.
pub(crate) struct FileSet {
    pub text: GgufFile,
    pub projector: Option<GgufFile>,
    /// The model layer's digest from a manifest.
    pub digest: Option<String>,
    pub layout: Option<Layout>,
    /// Ollama's template layer text.
    pub go_template: Option<String>,
    /// Ollama's params layer text (JSON).
    pub params: Option<String>,
    /// [`OpenOptions::era1_cross_qk_hf`].
    pub era1_cross_qk_hf: bool,
    pub ollama_name: Option<String>,
}

/// Everything [`Model`](super::Model) needs beyond the file: the configuration with the layout's
/// conventions, tensor names, template and provenance.
pub(crate) struct Prepared {
    pub cfg: ModelConfig,
    pub names: TensorNames,
    pub chat_template: Option<String>,
    pub provenance: Provenance,
}

/// Decide the layout of a file set and the configuration it implies; checks that the files
/// belong together.
pub(crate) fn prepare(set: &FileSet) -> Result<Prepared, Error> {
    let text = &set.text;
    let (layout, detected_by) = layout_of(set)?;
    let vision_file = set.projector.as_ref().unwrap_or(text);
    let mut cfg = ModelConfig::from_pair(text, vision_file)?;
    if let Some(c) = ollama::conventions(layout) {
        cfg.conventions = c;
    }
    if layout == Layout::Era1 && set.era1_cross_qk_hf {
        cfg.conventions.cross_qk_permuted = false;
    }
    ollama_generation_defaults(text, set.params.as_deref(), &mut cfg);
    let names = match &set.projector {
        Some(p) => {
            check_projector(text, p, &cfg)?;
            let v = cfg.vision.as_ref().ok_or_else(|| Error::Model {
                path: p.path().to_path_buf(),
                msg: "a projector for a model without a vision tower".into(),
            })?;
            TensorNames::era1(p, v.ffn, v.hidden)
        }
        None => TensorNames::single(),
    };
    let (chat_template, template) = chat_template(set);
    let mut conventions = ollama::describe_conventions(layout, &cfg.conventions, &names);
    conventions.extend(ollama::describe_missing_keys(text));
    Ok(Prepared {
        cfg,
        names,
        chat_template,
        provenance: Provenance {
            layout,
            detected_by,
            ollama_name: set.ollama_name.clone(),
            model_file: text.path().to_path_buf(),
            projector_file: set.projector.as_ref().map(|p| p.path().to_path_buf()),
            conventions,
            template,
        },
    })
}

/// Sampling defaults and stop ids where Ollama keeps them, for files without our
/// `mllama.generation.*` keys: the manifest's params layer (`temperature`, `top_p`, `top_k`) and
/// `tokenizer.ggml.eos_token_ids`. Malformed values are ignored, as for our keys.
fn ollama_generation_defaults(text: &GgufFile, params: Option<&str>, cfg: &mut ModelConfig) {
    let g = &mut cfg.generation;
    if g.eos_ids.is_empty() {
        let ids = text
            .get("tokenizer.ggml.eos_token_ids")
            .and_then(|v| v.as_array())
            .and_then(|a| a.to_i64_vec())
            .unwrap_or_default();
        g.eos_ids = ids
            .into_iter()
            .filter_map(|x| u32::try_from(x).ok())
            .collect();
    }
    let Some(p) = params.and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()) else {
        return;
    };
    let num = |k: &str| p.get(k).and_then(|v| v.as_f64());
    g.temperature = g.temperature.or(num("temperature").map(|x| x as f32));
    g.top_p = g.top_p.or(num("top_p").map(|x| x as f32));
    let top_k = num("top_k").filter(|&k| k >= 1.0).map(|k| k as usize);
    g.top_k = g.top_k.or(top_k);
}

/// The layout and how it was found; errors for files that do not go together.
fn layout_of(set: &FileSet) -> Result<(Layout, String), Error> {
    let text = &set.text;
    let path = text.path().to_path_buf();
    if text.get("general.architecture").and_then(|v| v.as_str()) == Some("llama") {
        if let Some(p) = &set.projector {
            return Err(Error::Model {
                path,
                msg: format!(
                    "a text-only Llama model takes no projector (got {})",
                    p.path().display()
                ),
            });
        }
        return Ok((Layout::LlamaText, "general.architecture = llama".into()));
    }
    check_mllama(text)?;
    let contents = ollama::contents(text);
    match (contents, &set.projector) {
        (Contents::Projector, _) => return Err(OllamaError::ProjectorAsModel { path }.into()),
        (Contents::Text, None) => return Err(OllamaError::NoProjector { path }.into()),
        (Contents::Full, Some(p)) => {
            let layout = ollama::detect_single(text, set.digest.as_deref());
            return Err(OllamaError::UnexpectedProjector {
                path,
                projector: p.path().to_path_buf(),
                layout: layout.describe().into(),
            }
            .into());
        }
        (Contents::Text, Some(p)) => {
            check_mllama(p)?;
            if ollama::contents(p) != Contents::Projector {
                return Err(Error::Model {
                    path: p.path().to_path_buf(),
                    msg: "not a vision projector: expected mllama.vision.* keys and no mllama.block_count".into(),
                });
            }
        }
        (Contents::Full, None) => {}
    }
    if let Some(l) = set.layout {
        return Ok((l, "forced by the caller (--layout)".into()));
    }
    if contents == Contents::Text {
        return Ok((
            Layout::Era1,
            "text blob without mllama.vision.* keys, with a projector blob".into(),
        ));
    }
    let layout = ollama::detect_single(text, set.digest.as_deref());
    let why = match layout {
        Layout::Ours => "mllama.convention.* keys",
        Layout::Era2a => "blob digest is a known era-2a digest",
        _ => "one blob without mllama.convention.* keys, not a known era-2a digest",
    };
    Ok((layout, why.into()))
}

/// [`Error::Unsupported`] for a GGUF of another architecture (before any other check, so that a
/// Llama text file is not mistaken for an era-1 blob).
fn check_mllama(f: &GgufFile) -> Result<(), Error> {
    let arch = f
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if arch == keys::ARCH {
        return Ok(());
    }
    let what = if arch.is_empty() {
        "has no general.architecture".to_string()
    } else {
        format!("is a {arch:?} model")
    };
    Err(Error::Unsupported {
        why: format!(
            "{}: {what}, not Llama 3.2 Vision (architecture \"mllama\")",
            f.path().display()
        ),
        what: arch.into(),
    })
}

/// An era-1 projector must produce the text model's hidden size.
fn check_projector(text: &GgufFile, proj: &GgufFile, cfg: &ModelConfig) -> Result<(), Error> {
    let hidden = cfg.text.hidden as u64;
    let mismatch = |what, projector| OllamaError::ProjectorMismatch {
        projector_path: proj.path().to_path_buf(),
        text_path: text.path().to_path_buf(),
        what,
        projector,
        text: hidden,
    };
    if let Some(d) = proj
        .get("mllama.vision.projection_dim")
        .and_then(|v| v.as_u64())
    {
        if d != hidden {
            return Err(mismatch("mllama.vision.projection_dim", d).into());
        }
    }
    if let Some(t) = proj.tensor_info(keys::T_MM_W) {
        if t.n_rows() as u64 != hidden {
            return Err(mismatch("mm.0.weight rows", t.n_rows() as u64).into());
        }
    }
    Ok(())
}

/// The chat template: Ollama's template layer (through a manifest), else the file's, else the
/// Llama 3.2 Vision default. `None` means "the file's own" (the tokenizer has it).
fn chat_template(set: &FileSet) -> (Option<String>, TemplateSource) {
    let in_file = set
        .text
        .get(crate::format::keys::TOK_CHAT_TEMPLATE)
        .is_some();
    let mut why = "no tokenizer.chat_template in the file".to_string();
    if let Some(go) = &set.go_template {
        if hex(&Sha256::digest(go.as_bytes())) == OLLAMA_TEMPLATE_SHA256 {
            return (
                Some(OLLAMA_TEMPLATE_JINJA.into()),
                TemplateSource::OllamaLayer,
            );
        }
        why = "the manifest's template layer is not Ollama's llama3.2-vision template".into();
    }
    if in_file {
        return (None, TemplateSource::File);
    }
    (
        Some(LLAMA32_VISION_TEMPLATE.into()),
        TemplateSource::Default { why },
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Detect the layout of what `model` names (a GGUF path or an Ollama model name, as for
/// [`Model::open`](super::Model::open)) without loading tensors: what `mllama info` prints.
///
/// # Errors
///
/// Those of [`Model::open`](super::Model::open) that concern files, names and metadata.
pub fn inspect(model: impl AsRef<Path>, opts: &OpenOptions) -> Result<Provenance, Error> {
    Ok(prepare(&file_set(model.as_ref(), opts)?)?.provenance)
}

/// The file set `model` names: a GGUF path (with `opts.projector`), or an Ollama model name.
pub(crate) fn file_set(path: &Path, opts: &OpenOptions) -> Result<FileSet, Error> {
    let name = path.to_str().filter(|s| ollama_name_candidate(s).is_some());
    let Some(model) = name.filter(|_| !path.exists()) else {
        return Ok(FileSet {
            text: GgufFile::open(path)?,
            projector: open_opt(opts.projector.as_deref())?,
            digest: None,
            layout: opts.layout,
            go_template: None,
            params: None,
            era1_cross_qk_hf: opts.era1_cross_qk_hf,
            ollama_name: None,
        });
    };
    let store = match &opts.store {
        Some(root) => Store::new(root),
        None => Store::default_location().ok_or_else(|| {
            Error::bad_argument(
                "model",
                format!("{model}: no such file, and no Ollama store to look it up in (set OLLAMA_MODELS)"),
            )
        })?,
    };
    from_resolved(store.resolve(model)?, opts)
}

/// Whether `s` looks like an Ollama name rather than a file path (no path separators beyond
/// the name's own, no `.gguf` extension).
fn ollama_name_candidate(s: &str) -> Option<()> {
    let looks_like_file = s.ends_with(".gguf") || s.starts_with('.') || s.starts_with('/');
    (!looks_like_file && crate::format::ollama_store::ModelName::parse(s).is_some()).then_some(())
}

fn from_resolved(r: Resolved, opts: &OpenOptions) -> Result<FileSet, Error> {
    let projector = match (&opts.projector, &r.projector) {
        (Some(p), _) => Some(GgufFile::open(p)?),
        (None, Some(l)) => Some(GgufFile::open(&l.blob)?),
        (None, None) => None,
    };
    Ok(FileSet {
        text: GgufFile::open(&r.model.blob)?,
        projector,
        digest: Some(r.model.digest.clone()),
        layout: opts.layout,
        go_template: r.template,
        params: r.params,
        era1_cross_qk_hf: opts.era1_cross_qk_hf,
        ollama_name: Some(r.name.to_string()),
    })
}

fn open_opt(p: Option<&Path>) -> Result<Option<GgufFile>, Error> {
    p.map(GgufFile::open).transpose()
}

/// The `layout:` section of `mllama info`: the detected layout, how it was decided, the files,
/// and every convention undone; an error line when the model cannot be opened; nothing for a
/// file of another architecture.
pub fn layout_report(p: &Result<Provenance, Error>) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("\nlayout:\n");
    let p = match p {
        Ok(p) => p,
        Err(Error::Unsupported { .. }) => return String::new(),
        Err(e) => {
            let _ = writeln!(s, "  cannot be loaded: {e}");
            return s;
        }
    };
    let _ = writeln!(s, "  {} ({})", p.layout.describe(), p.detected_by);
    if let Some(n) = &p.ollama_name {
        let _ = writeln!(s, "  ollama name: {n}");
    }
    let _ = writeln!(s, "  model file:  {}", p.model_file.display());
    if let Some(f) = &p.projector_file {
        let _ = writeln!(s, "  projector:   {}", f.display());
    }
    let template = match &p.template {
        TemplateSource::File => "tokenizer.chat_template in the file".to_string(),
        TemplateSource::OllamaLayer => {
            "Ollama's template layer (llama3.2-vision, rendered by its Jinja equivalent)".into()
        }
        TemplateSource::Default { why } => format!("Llama 3.2 Vision Instruct default ({why})"),
    };
    let _ = writeln!(s, "  chat template: {template}");
    let _ = writeln!(s, "  conventions undone at load:");
    for c in &p.conventions {
        let _ = writeln!(s, "    - {c}");
    }
    s
}
