//! The Llama 3.2 Vision model: loading from GGUF, and the forward passes.
//!
//! - [`vision`]: image tiles → vision tower → projector → cross-attention states.
//! - [`text`]: the decoder (self-attention and cross-attention layers), its caches, logits.
//! - [`arch`]: `mllama` files, and plain Llama text files (`llama`, run as a text-only mode of
//!   the same decoder: no cross-attention layers, no vision tower).
//!
//! Weights stay in the memory map ([`Mat`]); only small vectors are copied.

pub mod arch;
pub mod config;
pub mod disk_cache;
pub mod image_cache;
pub mod keys;
pub mod mix;
pub mod ollama;
pub mod open;
pub mod preprocess;
pub mod spec;
pub mod synthetic;
pub mod tensors;
pub mod text;
pub mod vision;

use std::path::Path;
use std::sync::Arc;

pub use config::{ModelConfig, TextConfig, VisionConfig};

use crate::format::gguf::GgufFile;
use crate::kernels::tensor::{Bytes, Mat};
use crate::models::mllama::tensors::{Block, Dims, Kind, TensorDecl};
use crate::Error;

/// Run-time choices that change the numerics (both reference behaviours are supported). The
/// default takes the vision taps at layer input (Meta's reference, HF transformers 4.x, Ollama:
/// what the released weights were trained with) and HF's cross-attention for text before the
/// first image; `meta_cross_attn` gives Meta's, `TapConvention::LayerOutput` HF 5.x's taps.
///
/// ```
/// use mllama::{Semantics, TapConvention};
///
/// let hf = Semantics::default();
/// assert!(!hf.meta_cross_attn && hf.taps == TapConvention::LayerInput);
/// let meta = Semantics { meta_cross_attn: true, ..hf };
/// let hf5 = Semantics { taps: TapConvention::LayerOutput, ..hf };
/// # let _ = (meta, hf5);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Semantics {
    /// Meta's handling of text rows that see no image (tokens before the first `<|image|>`): their
    /// cross-attention output is zeroed, so cross layers are the identity for them. Default: HF
    /// transformers, where those rows attend unmasked to every vision token and only the MLP
    /// branch is zeroed.
    pub meta_cross_attn: bool,
    /// Which hidden state of a local vision layer is an intermediate feature.
    pub taps: TapConvention,
    /// Storage of the attention caches (f16 for quantized models by default).
    pub cache: CachePrecision,
}

/// Storage of the attention caches: the self-attention KV cache and the cross-attention K/V of
/// attached images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePrecision {
    /// f16 when the text matrices are quantized (Q4_0/Q8_0: half the memory and half the bytes a
    /// decode step reads from the caches; the rounding is far below the weights' quantization
    /// error), f32 for F32/F16/BF16 models (within float rounding of the reference).
    #[default]
    Auto,
    /// Always f32.
    F32,
    /// Always f16 (cross-attention layers whose values exceed f16's range stay f32).
    F16,
}

impl CachePrecision {
    /// Whether the caches of `text` store f16.
    pub fn half(self, text: &text::TextModel) -> bool {
        match self {
            CachePrecision::Auto => text.quantized(),
            CachePrecision::F32 => false,
            CachePrecision::F16 => true,
        }
    }

    /// Parse `auto`, `f32` or `f16`.
    pub fn parse(s: &str) -> Option<CachePrecision> {
        match s {
            "auto" => Some(CachePrecision::Auto),
            "f32" => Some(CachePrecision::F32),
            "f16" => Some(CachePrecision::F16),
            _ => None,
        }
    }
}

/// Arithmetic of the vision tower's and projector's matrix products (`--vision-precision`).
///
/// ```
/// use mllama::kernels::Path;
/// use mllama::VisionPrecision as P;
///
/// // Float files keep exact f32; a quantized file gets 16-bit integer products on x86-64
/// // (`vpdpwssd` with AVX-512 VNNI, `vpmaddwd` with AVX2), f32 where they are not faster.
/// assert_eq!(P::Auto.resolve(false, Path::Avx512), P::F32);
/// assert_eq!(P::Auto.resolve(true, Path::Avx512), P::Int16);
/// assert_eq!(P::Auto.resolve(true, Path::Avx2), P::Int16);
/// assert_eq!(P::Auto.resolve(true, Path::Neon), P::F32);
/// assert_eq!(P::Int8.resolve(false, Path::Scalar), P::Int8);
/// assert_eq!(P::parse("int8"), Some(P::Int8));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VisionPrecision {
    /// [`VisionPrecision::F32`] for float files (F32/F16/BF16 text matrices: results within
    /// float rounding of the reference); for quantized files the fastest precision of the kernel
    /// path that holds the fidelity bound ([`VisionPrecision::resolve`]).
    #[default]
    Auto,
    /// f32 arithmetic (weights of any stored type widened to f32 as they are used).
    F32,
    /// Weights quantized once to int8 per block of values (kept in memory), activations
    /// quantized per row and block at every product, integer dot products
    /// ([`crate::kernels::igemm`]), attention as [`VisionPrecision::Int16`]. The fastest, and the
    /// least faithful: it moves the fixture models' cross-attention states by 1.5–1.8% (relative
    /// L2, over issue 14's 1% bound), so `Auto` does not pick it.
    Int8,
    /// Weights (once, kept in memory) and activations quantized to 12-bit integers per block of
    /// values, exact 32-bit integer dot products ([`crate::kernels::igemm::matmul_i16`]), and the
    /// attention in 16-bit integers ([`crate::nn::attention_lowp`]): within 0.2% of f32 on the
    /// fixtures' cross-attention states, twice the multiply-adds per instruction of an f32 FMA
    /// with AVX-512 VNNI (`vpdpwssd`).
    Int16,
}

impl VisionPrecision {
    /// The precision a pass runs in: `Auto` resolved for a file whose text matrices are
    /// `quantized` on kernel `path` (int16 where the whole tower measured faster than f32: the
    /// `avx512` and `avx2` paths, 2.3× and ~1.6×; else f32), anything else as asked.
    pub fn resolve(self, quantized: bool, path: crate::kernels::Path) -> VisionPrecision {
        use crate::kernels::Path;
        match self {
            VisionPrecision::Auto if quantized && matches!(path, Path::Avx512 | Path::Avx2) => {
                VisionPrecision::Int16
            }
            VisionPrecision::Auto => VisionPrecision::F32,
            p => p,
        }
    }

    /// The arithmetic of the tower's attention in this (resolved) precision: 16-bit integer
    /// scores and `P·V` for both integer precisions (8-bit scores alone move one layer's
    /// attention output by ~1e-2), f32 otherwise.
    pub fn attention(self) -> crate::nn::AttnPrecision {
        match self {
            VisionPrecision::Int8 | VisionPrecision::Int16 => crate::nn::AttnPrecision::Int16,
            _ => crate::nn::AttnPrecision::F32,
        }
    }

    /// `auto`, `f32`, `int8` or `int16`.
    pub fn name(self) -> &'static str {
        match self {
            VisionPrecision::Auto => "auto",
            VisionPrecision::F32 => "f32",
            VisionPrecision::Int8 => "int8",
            VisionPrecision::Int16 => "int16",
        }
    }

    /// Parse a [`VisionPrecision::name`].
    pub fn parse(s: &str) -> Option<VisionPrecision> {
        use VisionPrecision::*;
        [Auto, F32, Int8, Int16].into_iter().find(|p| p.name() == s)
    }
}

/// The vision tower's intermediate features ("taps") are taken at local layers
/// `intermediate_layers_indices`; implementations disagree on which side of the layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TapConvention {
    /// The input of layer k (= output of layer k − 1): Meta's reference code, HF transformers
    /// 4.x and Ollama; the convention the released weights were trained with.
    #[default]
    LayerInput,
    /// The output of layer k: HF transformers 5.x compatibility.
    LayerOutput,
}

/// Reads tensors from a GGUF with shape and type checks; errors name the file and tensor. Names
/// and shapes come from the [`tensors`] table, evaluated at `dims`; `names` maps them to the
/// file (`f`, or `proj` for the vision tower of a two-file model) and stored name.
pub(crate) struct Loader<'a> {
    pub f: &'a GgufFile,
    pub path: &'a Path,
    pub dims: Dims,
    pub proj: Option<&'a GgufFile>,
    pub names: ollama::TensorNames,
}

/// An [`Error::Model`] naming `f`.
fn file_err(f: &GgufFile, msg: String) -> Error {
    Error::Model {
        path: f.path().to_path_buf(),
        msg,
    }
}

/// A [`Loader`] placed in one layer (or at model level): reads declared tensors by their table
/// entry.
pub(crate) struct At<'l, 'a> {
    l: &'l Loader<'a>,
    block: Option<Block>,
}

impl At<'_, '_> {
    /// The matrix `t` declares, viewed as `[outermost, product of the rest]`.
    pub fn mat(&self, t: &TensorDecl) -> Result<Mat, Error> {
        debug_assert!(matches!(
            t.kind,
            Kind::Matrix | Kind::Embedding | Kind::Conv | Kind::Table
        ));
        let (rows, cols) = t.rows_cols(&self.l.dims);
        self.l.mat_named(&t.name(self.block), rows, cols)
    }

    /// The small tensor `t` declares (norm weight, bias, gate, vector), as f32.
    pub fn vec(&self, t: &TensorDecl) -> Result<Vec<f32>, Error> {
        debug_assert!(!matches!(
            t.kind,
            Kind::Matrix | Kind::Embedding | Kind::Conv
        ));
        let n = t.shape(&self.l.dims).iter().product();
        self.l.vec_named(&t.name(self.block), n)
    }

    /// The one-value tensor `t` declares (a gate).
    pub fn scalar(&self, t: &TensorDecl) -> Result<f32, Error> {
        debug_assert!(t.kind == Kind::Gate);
        Ok(self.vec(t)?[0])
    }

    /// Whether the file holds `t` (for optional tensors).
    pub fn has(&self, t: &TensorDecl) -> bool {
        self.l.locate(&t.name(self.block)).is_ok()
    }
}

impl<'a> Loader<'a> {
    /// A loader for `f` with the tensor dimensions of `cfg`; the aspect-ratio table rows are read
    /// from the file's pre-tile table.
    pub fn new(
        f: &'a GgufFile,
        proj: Option<&'a GgufFile>,
        names: ollama::TensorNames,
        cfg: &ModelConfig,
    ) -> Result<Self, Error> {
        let mut l = Loader {
            f,
            path: f.path(),
            dims: Dims::from_config(cfg, 0, false),
            proj,
            names,
        };
        if cfg.vision.is_some() {
            let pre_tile = tensors::V_PRE_TILE_EMBD.name(None);
            l.dims.aspect_ratio_rows = l.info(&pre_tile)?.n_rows();
        }
        l.dims.rope_factors = l.at(None).has(&tensors::ROPE_FREQS);
        Ok(l)
    }

    /// Read declared tensors of `block` (`None`: model-wide tensors).
    pub fn at(&self, block: Option<Block>) -> At<'_, 'a> {
        At { l: self, block }
    }
}

impl Loader<'_> {
    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::Model {
            path: self.path.to_path_buf(),
            msg: msg.into(),
        }
    }

    fn info(&self, name: &str) -> Result<&crate::format::gguf::TensorInfo, Error> {
        Ok(self.locate(name)?.1)
    }

    /// The file holding tensor `name` (one of our names), its entry there, and an error
    /// constructor naming that file.
    fn locate(&self, name: &str) -> Result<(&GgufFile, &crate::format::gguf::TensorInfo), Error> {
        let (in_proj, stored) = self.names.locate(name);
        let f = match (in_proj, self.proj) {
            (true, Some(p)) => p,
            _ => self.f,
        };
        let renamed = if stored == name {
            String::new()
        } else {
            format!(" (stored as {stored})")
        };
        f.tensor_info(&stored)
            .map(|t| (f, t))
            .ok_or_else(|| Error::Model {
                path: f.path().to_path_buf(),
                msg: format!("missing tensor {name}{renamed}"),
            })
    }

    /// A matrix `[rows, cols]` (any 2-D or higher tensor whose innermost dimension is `cols`).
    fn mat_named(&self, name: &str, rows: usize, cols: usize) -> Result<Mat, Error> {
        let (f, t) = self.locate(name)?;
        // A float tensor of more dimensions may be viewed as [outermost, product of the rest]
        // (the 4-D patch convolution [D, 3, p, p] is a [D, 3·p·p] matrix).
        let flat_ok = !t.ty.is_quantized()
            && t.dims.last().copied() == Some(rows as u64)
            && t.n_elements() == (rows * cols) as u64;
        if (t.row_len() != cols || t.n_rows() != rows) && !flat_ok {
            return Err(file_err(
                f,
                format!(
                    "tensor {name} has shape {:?}, expected [{rows}, {cols}]",
                    t.shape()
                ),
            ));
        }
        // The kernel table decides which types can be multiplied with.
        if let Err(e) = crate::kernels::lookup(t.ty) {
            return Err(file_err(f, format!("tensor {name} is stored as {e}")));
        }
        self.check_scales(f, t)?;
        let bytes = Bytes::new(Arc::clone(f.bytes()), f.tensor_range(t))
            .ok_or_else(|| file_err(f, format!("tensor {name}: data out of range")))?;
        Mat::new(t.ty, rows, cols, bytes)
            .ok_or_else(|| file_err(f, format!("tensor {name}: size or alignment mismatch")))
    }

    /// A small tensor of `len` values, converted to f32 (norm weights, biases, gates).
    fn vec_named(&self, name: &str, len: usize) -> Result<Vec<f32>, Error> {
        let (f, t) = self.locate(name)?;
        if t.n_elements() as usize != len {
            return Err(file_err(
                f,
                format!(
                    "tensor {name} has shape {:?}, expected {len} values",
                    t.shape()
                ),
            ));
        }
        self.check_scales(f, t)?;
        f.view(t)
            .to_f32_vec()
            .map_err(|e| file_err(f, format!("tensor {name}: {e}")))
    }

    /// [`Error::Gguf`] ([`GgufError::NonFiniteScale`](crate::GgufError::NonFiniteScale)) if a
    /// block of `t` has an infinite or NaN scale: one such block would make the answers NaN.
    fn check_scales(&self, f: &GgufFile, t: &crate::format::gguf::TensorInfo) -> Result<(), Error> {
        f.view(t).check_scales().map_err(|source| Error::Gguf {
            path: f.path().to_path_buf(),
            source,
        })
    }
}

/// A loaded model: configuration, vision tower, text decoder, tokenizer, and the cache of encoded
/// images. A plain Llama text file (`general.architecture = llama`) loads as a text-only model:
/// [`Model::vision`] is `None` and images are refused ([`Error::TextOnlyModel`]). `Model` is `Send + Sync`: share it across threads in an `Arc<Model>` (what a
/// [`Session`](crate::Session) holds) or by reference.
///
/// Weights are used in place from the memory-mapped file, so loading is fast and costs little
/// memory beyond the file's pages; the file must not be modified while the model is alive. Run it
/// through a [`Session`](crate::Session).
pub struct Model {
    /// Dimensions, conventions, preprocessing and generation defaults read from the file.
    pub cfg: ModelConfig,
    /// Vision tower and projector (`None` for a text-only model).
    pub vision: Option<vision::VisionModel>,
    /// Text decoder.
    pub text: text::TextModel,
    tokenizer: Option<crate::text::tokenizer::Tokenizer>,
    /// Encoded images (cross-attention K/V), keyed by a hash of the image bytes, shared by every
    /// session of this model; bounded by
    /// [`DEFAULT_IMAGE_CACHE_BYTES`](crate::models::mllama::image_cache::DEFAULT_IMAGE_CACHE_BYTES) until changed with
    /// [`ImageCache::set_max_bytes`](crate::ImageCache::set_max_bytes).
    pub image_cache: crate::models::mllama::image_cache::ImageCache,
    file: GgufFile,
    projector_file: Option<GgufFile>,
    chat_template: Option<String>,
    provenance: open::Provenance,
    /// [`Model::repack_stats`].
    repacked: (usize, usize, f64),
}

impl Model {
    /// Load a model from an `mllama` GGUF (as written by `quantize`, or Ollama's single-file
    /// `llama3.2-vision` layout), or a plain Llama text GGUF as llama.cpp writes it
    /// (`general.architecture = llama`: Llama 3.x, SmolLM2), which loads text-only (see
    /// [`arch`]). The file is memory-mapped; weights are used in place. Matrices
    /// may be F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K. The f16 scales of
    /// every quantized block are checked once at load (two bytes per block read in place, in
    /// parallel: about one pass over the weights in memory).
    ///
    /// # Errors
    ///
    /// - [`Error::Io`] if the file cannot be opened or mapped.
    /// - [`Error::Gguf`] if it is not a valid GGUF file (a row length that is not a whole number
    ///   of blocks, tensor data past the end of the file, ...), or if a quantized block has an
    ///   infinite or NaN scale ([`GgufError::NonFiniteScale`](crate::GgufError::NonFiniteScale)).
    /// - [`Error::Model`] if it is a GGUF but not a model this runtime can run: another
    ///   architecture, a missing or malformed metadata key, a missing tensor, a wrong shape, an
    ///   unsupported tensor type, or broken tokenizer data. The message names the key or tensor.
    ///
    /// ```
    /// use mllama::Model;
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let t = &model.cfg.text;
    /// assert_eq!((t.hidden, t.n_layers, t.cross_layers.clone()), (32, 6, vec![1, 3, 5]));
    /// assert_eq!(model.cfg.vision.as_ref().unwrap().image_size, 112);
    ///
    /// let missing = Model::load("no/such/model.gguf");
    /// assert!(matches!(missing, Err(mllama::Error::Io { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Model, Error> {
        let file = GgufFile::open(path.as_ref())?;
        Self::from_gguf(file)
    }

    /// Build a model over an opened GGUF (e.g. one parsed from memory with
    /// [`GgufFile::from_map`]). Files without tokenizer data load without a tokenizer
    /// ([`Model::tokenizer`] then fails).
    ///
    /// # Errors
    ///
    /// [`Error::Model`] as for [`Model::load`].
    ///
    /// ```
    /// use mllama::format::gguf::GgufFile;
    /// use mllama::Model;
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let file = GgufFile::open("models/demo/mllama-demo-q4_0.gguf")?;
    /// let model = Model::from_gguf(file)?;
    /// let arch = model.gguf().get("general.architecture").and_then(|v| v.as_str());
    /// assert_eq!(arch, Some("mllama"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_gguf(file: GgufFile) -> Result<Model, Error> {
        Self::from_file_set(open::FileSet {
            text: file,
            projector: None,
            digest: None,
            layout: None,
            go_template: None,
            params: None,
            era1_cross_qk_hf: false,
            ollama_name: None,
        })
    }

    /// Open a model by GGUF path or Ollama model name (`llama3.2-vision`,
    /// `llama3.2-vision:11b`, resolved through the manifests of `opts.store`, else
    /// `$OLLAMA_MODELS`, else `~/.ollama/models`). An era-1 text blob needs its projector:
    /// `opts.projector`, or the manifest's projector layer. The layout (ours, Ollama era 1, 2a,
    /// 2b) is detected and its storage conventions undone at load ([`Model::provenance`]); the
    /// weights stay memory-mapped.
    ///
    /// # Errors
    ///
    /// Those of [`Model::load`], and [`Error::Ollama`] for a name that is not installed (listing
    /// the installed tags), a manifest naming a missing blob, a projector that does not fit the
    /// text model, an era-1 text blob without a projector, a projector given as the model;
    /// [`Error::Unsupported`] for a GGUF of another architecture.
    ///
    /// ```
    /// use mllama::models::mllama::open::OpenOptions;
    /// use mllama::{Error, Model, OllamaError};
    ///
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let opts = OpenOptions { store: Some("/nonexistent".into()), ..Default::default() };
    /// let err = Model::open("llama3.2-vision:11b", &opts).err().unwrap();
    /// assert!(matches!(err, Error::Ollama(OllamaError::NotInstalled { .. })));
    /// let demo = Model::open("models/demo/mllama-demo-q4_0.gguf", &opts).unwrap();
    /// assert_eq!(demo.provenance().layout, mllama::models::mllama::ollama::Layout::Ours);
    /// ```
    pub fn open(model: impl AsRef<Path>, opts: &open::OpenOptions) -> Result<Model, Error> {
        let mut model = Self::from_file_set(open::file_set(model.as_ref(), opts)?)?;
        model.set_vision_precision(opts.vision_precision);
        if !opts.no_repack {
            model.repack();
        }
        Ok(model)
    }

    /// Repack the text decoder's matrices into the row-interleaved layouts of the decode kernels
    /// ([`crate::kernels::repack`]: Q4_0, Q4_K), built into anonymous memory, giving back the mapped
    /// originals' pages as it goes (so peak memory grows by about one matrix). [`Model::open`]
    /// does this unless [`open::OpenOptions::no_repack`]; [`Model::load`] and
    /// [`Model::from_gguf`] leave every weight in place. Results are bit-identical either way;
    /// repacking costs load time and makes decode faster. Returns `(matrices, bytes)` repacked.
    pub fn repack(&mut self) -> (usize, usize) {
        let t0 = std::time::Instant::now();
        let (n, bytes) = self.text.repack(true);
        self.repacked = (n, bytes, t0.elapsed().as_secs_f64());
        (n, bytes)
    }

    /// Ask for the vision tower's precision ([`VisionPrecision::Auto`] by default, also
    /// [`open::OpenOptions::vision_precision`]). An int8 precision quantizes the vision weights
    /// into memory before the first image ([`Model::vision_prepared_bytes`]).
    pub fn set_vision_precision(&mut self, p: VisionPrecision) {
        let quantized = self.text.quantized();
        if let Some(v) = &mut self.vision {
            v.set_precision(p, quantized);
        }
    }

    /// The precision images are encoded in on the calling thread's kernel path (`F32` or `Int8`;
    /// `F32` for a text-only model).
    pub fn vision_precision(&self) -> VisionPrecision {
        self.vision
            .as_ref()
            .map_or(VisionPrecision::F32, |v| v.precision())
    }

    /// Bytes of in-memory vision weights the precision built (int8 copies), 0 if none yet.
    pub fn vision_prepared_bytes(&self) -> usize {
        self.vision.as_ref().map_or(0, |v| v.prepared_bytes())
    }

    /// What [`Model::repack`] did: matrices and bytes repacked, and the seconds it took (zeros
    /// when the weights stayed in place).
    pub fn repack_stats(&self) -> (usize, usize, f64) {
        self.repacked
    }

    fn from_file_set(set: open::FileSet) -> Result<Model, Error> {
        let p = open::prepare(&set)?;
        let (file, projector_file) = (set.text, set.projector);
        let cfg = p.cfg;
        let l = Loader::new(&file, projector_file.as_ref(), p.names, &cfg)?;
        let vision = match cfg.vision {
            Some(_) => Some(vision::VisionModel::load(&l, &cfg)?),
            None => None,
        };
        let text = text::TextModel::load(&l, &cfg)?;
        let mut vision = vision;
        if let Some(v) = &mut vision {
            v.set_precision(VisionPrecision::Auto, text.quantized());
        }
        // Files without tokenizer data (synthetic benchmark models) load without one.
        let tokenizer = if file.get(crate::format::keys::TOK_TOKENS).is_some() {
            Some(crate::text::tokenizer::Tokenizer::from_gguf(&file)?)
        } else {
            None
        };
        Ok(Model {
            cfg,
            vision,
            text,
            tokenizer,
            image_cache: crate::models::mllama::image_cache::ImageCache::new(
                crate::models::mllama::image_cache::DEFAULT_IMAGE_CACHE_BYTES,
            ),
            file,
            projector_file,
            chat_template: p.chat_template,
            provenance: p.provenance,
            repacked: (0, 0, 0.0),
        })
    }

    /// Where the model came from: layout, files, Ollama name, the storage conventions undone at
    /// load, and the chat template's source.
    pub fn provenance(&self) -> &open::Provenance {
        &self.provenance
    }

    /// The chat template (HF Jinja) sessions render: the file's `tokenizer.chat_template`, or for
    /// an Ollama model loaded by name the Jinja form of its template layer, or the Llama 3.2
    /// Vision Instruct default when there is neither ([`open::TemplateSource`]).
    pub fn chat_template(&self) -> Option<&str> {
        match &self.chat_template {
            Some(t) => Some(t),
            None => self.tokenizer.as_ref().and_then(|t| t.chat_template()),
        }
    }

    /// The era-1 projector file, when the vision tower came from one.
    pub fn projector_gguf(&self) -> Option<&GgufFile> {
        self.projector_file.as_ref()
    }

    /// The tokenizer built from the file's `tokenizer.ggml.*` data (built once, at load).
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the file has no tokenizer data (synthetic benchmark models).
    ///
    /// ```
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let tok = model.tokenizer()?;
    /// let ids = tok.encode("Hello, world!", false)?;
    /// assert_eq!(ids, [9906, 11, 1917, 0]);
    /// assert_eq!(tok.decode(&ids, false)?, "Hello, world!");
    /// assert_eq!(tok.image_id(), model.cfg.text.image_token);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tokenizer(&self) -> Result<&crate::text::tokenizer::Tokenizer, Error> {
        self.tokenizer.as_ref().ok_or_else(|| Error::Model {
            path: self.file.path().to_path_buf(),
            msg: "the file has no tokenizer (tokenizer.ggml.* keys)".into(),
        })
    }

    /// Run the vision tower on a preprocessed image and compute its cross-attention K/V for every
    /// cross layer (all tile slots kept; sequences drop padding tiles when that is exact), and
    /// time both steps ([`EncodeStats`](crate::models::mllama::image_cache::EncodeStats)). This
    /// bypasses the [`ImageCache`](crate::ImageCache);
    /// [`Session::add_image`](crate::Session::add_image) is the usual way in.
    ///
    /// `pre` must come from [`preprocess`](crate::models::mllama::preprocess::preprocess) with this model's
    /// `cfg.preprocess`; `taps` chooses which side of each tapped vision layer is used
    /// ([`Semantics::taps`]).
    ///
    /// # Panics
    ///
    /// If `pre.pixel_values` does not hold `max_tiles · 3 · image_size²` values for this model,
    /// or the model is text-only (see [`Model::vision_tower`]).
    ///
    /// ```
    /// use mllama::image::{load_image, ImageLimits};
    /// use mllama::models::mllama::preprocess::preprocess;
    /// use mllama::{Model, TapConvention};
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let img = load_image("models/demo/example.jpg".as_ref(), &ImageLimits::default())?;
    /// let pre = preprocess(&img, model.cfg.preprocess.as_ref().unwrap())?;
    /// let (enc, took) = model.encode_image(&pre, TapConvention::LayerOutput);
    /// assert!(took.vision_s > 0.0 && took.cross_kv_s > 0.0);
    ///
    /// // 224x168 → 2x2 tiles of 112 px (the demo's tile), 4 tile slots of 65 vision tokens.
    /// assert_eq!((enc.n_tiles, enc.tile_slots, enc.tokens_per_tile), (4, 4, 65));
    /// let t = &model.cfg.text;
    /// assert_eq!(enc.kv.len(), t.cross_layers.len());
    /// assert_eq!(enc.kv[0].0.len(), t.n_kv_heads * 4 * 65 * t.head_dim);
    /// # Ok(())
    /// # }
    /// ```
    pub fn encode_image(
        &self,
        pre: &crate::models::mllama::preprocess::Preprocessed,
        taps: TapConvention,
    ) -> (
        crate::models::mllama::image_cache::EncodedImage,
        crate::models::mllama::image_cache::EncodeStats,
    ) {
        let (tower, vc) = self
            .vision_tower()
            .expect("encode_image needs a model with a vision tower");
        let (_, prepare_s) = tower.prepare();
        let t = std::time::Instant::now();
        let out = tower.forward(&pre.pixel_values, pre.aspect_ratio_id, pre.num_tiles, taps);
        let vision_s = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let n = vc.max_tiles * vc.tokens_per_tile();
        let kv = self.text.cross_kv(&out.states, n);
        let image = crate::models::mllama::image_cache::EncodedImage {
            kv,
            n_tiles: pre.num_tiles,
            tile_slots: vc.max_tiles,
            tokens_per_tile: vc.tokens_per_tile(),
        };
        let took = crate::models::mllama::image_cache::EncodeStats {
            vision_s,
            cross_kv_s: t.elapsed().as_secs_f64(),
            prepare_s,
        };
        (image, took)
    }

    /// The underlying GGUF file (metadata, tokenizer data, tensor table).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The vision tower and its configuration.
    ///
    /// # Errors
    ///
    /// [`Error::TextOnlyModel`] for a text-only model (a `llama` file), which cannot take images.
    ///
    /// ```
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// let (_tower, cfg) = model.vision_tower()?;
    /// assert_eq!(cfg.max_tiles, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn vision_tower(&self) -> Result<(&vision::VisionModel, &VisionConfig), Error> {
        match (&self.vision, &self.cfg.vision) {
            (Some(v), Some(c)) => Ok((v, c)),
            _ => Err(Error::TextOnlyModel {
                path: self.file.path().to_path_buf(),
                arch: self.cfg.arch.name().to_string(),
            }),
        }
    }

    /// Bytes of text weights read per decoded token (everything but the embedding table, vision
    /// and projector; cross-attention K/V projections are precomputed per image).
    pub fn text_bytes_per_token(&self) -> usize {
        self.text.bytes_per_token()
    }
}

/// tanh of a gate stored raw, or the stored value when the file holds it transformed.
pub(crate) fn gate(raw_or_tanh: f32, stored_tanh: bool) -> f32 {
    if stored_tanh {
        raw_or_tanh
    } else {
        raw_or_tanh.tanh()
    }
}
