//! Error types. Every error a user can cause is a variant here with a message that names the file
//! or value at fault; the library never panics on bad input.

use std::path::PathBuf;

/// Errors found while parsing or validating a GGUF file. Offsets are byte offsets into the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file does not start with `GGUF` (the first 4 bytes are given).
    #[error("not a GGUF file (starts with {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// The file is a big-endian GGUF.
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    /// The file ends in the middle of something.
    #[error(
        "file is truncated: {what} at offset {offset} needs {need} bytes but only {have} remain"
    )]
    Truncated {
        /// What was being read (e.g. `value of metadata key "general.name"`).
        what: String,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        need: u64,
        /// Bytes left in the file.
        have: u64,
    },
    /// An element count larger than the rest of the file could hold (checked before allocating).
    #[error("{what} at offset {offset}: count {count} cannot fit in the {have} bytes that remain")]
    CountTooLarge {
        /// What was being counted.
        what: String,
        /// Where the count is.
        offset: u64,
        /// The count read.
        count: u64,
        /// Bytes left in the file.
        have: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Which string.
        what: String,
        /// Where it starts.
        offset: u64,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("metadata key {key:?}: unknown value type id {id}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id read.
        id: u32,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](crate::format::gguf::MAX_ARRAY_DEPTH).
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    TooDeep {
        /// The key.
        key: String,
        /// The deepest nesting accepted.
        max: usize,
    },
    /// The same metadata key twice (reading or writing).
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    /// `general.alignment` is not a non-zero `u32` power of two (the value found, debug-printed).
    #[error("general.alignment must be a u32 power of two, found {0}")]
    BadAlignment(String),
    /// A tensor type id ggml does not define (see [`GgmlType::from_id`](crate::GgmlType::from_id)).
    #[error("tensor {name:?}: unknown ggml type id {id}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id read.
        id: u32,
    },
    /// A tensor with 0 or more than 4 dimensions.
    #[error("tensor {name:?}: {n_dims} dimensions (GGUF allows 1 to 4)")]
    BadDimCount {
        /// The tensor.
        name: String,
        /// Its number of dimensions.
        n_dims: u32,
    },
    /// A tensor with a zero dimension or too many elements.
    #[error("tensor {name:?}: dimensions {dims:?} are zero or their product overflows")]
    BadDims {
        /// The tensor.
        name: String,
        /// Its dimensions, innermost first.
        dims: Vec<u64>,
    },
    /// A row length that is not a whole number of blocks of the tensor's type.
    #[error(
        "tensor {name:?}: row length {row_len} is not a multiple of the {ty} block size {block}"
    )]
    BadRowLength {
        /// The tensor.
        name: String,
        /// Its innermost dimension.
        row_len: u64,
        /// Its type.
        ty: crate::GgmlType,
        /// The type's block size.
        block: usize,
    },
    /// Tensor data not at a multiple of the file's alignment.
    #[error("tensor {name:?}: data offset {offset} is not a multiple of the alignment {align}")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Its offset in the data section.
        offset: u64,
        /// The file's alignment.
        align: u64,
    },
    /// Tensor data extending past the end of the file.
    #[error("tensor {name:?}: data [{start}, {end}) lies outside the file ({file_len} bytes)")]
    OutOfRange {
        /// The tensor.
        name: String,
        /// Absolute start of its data.
        start: u64,
        /// Absolute end of its data.
        end: u64,
        /// File size.
        file_len: u64,
    },
    /// A quantized block whose f16 scale (`d`, `m`, `dmin`) is infinite or NaN: every value of
    /// the block would be inf/NaN (found by the model loader's scan of the scale fields,
    /// [`TensorView::check_scales`](crate::format::gguf::TensorView::check_scales)).
    #[error("tensor {name:?}: block {block} of row {row} has a non-finite {ty} scale {field} = {value} (corrupt weights)")]
    NonFiniteScale {
        /// The tensor.
        name: String,
        /// Its type.
        ty: crate::GgmlType,
        /// The row (output feature) of the block.
        row: u64,
        /// The block's index within its row.
        block: u64,
        /// The scale field (`d`, `m`, `dmin`).
        field: &'static str,
        /// Its value (infinite or NaN).
        value: f32,
    },
    /// The same tensor name twice (reading or writing).
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    /// A typed view of a tensor of another type ([`TensorView`](crate::format::gguf::TensorView)).
    #[error("tensor {name:?}: stored as {actual}, cannot be viewed as {wanted}")]
    WrongType {
        /// The tensor.
        name: String,
        /// Its type.
        actual: crate::GgmlType,
        /// The type asked for.
        wanted: &'static str,
    },
    /// A typed view of data that is not aligned for the element type.
    #[error("tensor {name:?}: data is not aligned in memory for a {wanted} view")]
    UnalignedView {
        /// The tensor.
        name: String,
        /// The type asked for.
        wanted: &'static str,
    },
    /// A misuse of the [`GgufWriter`](crate::format::gguf::GgufWriter) (wrong tensor size, alias of an
    /// unknown tensor, alignment set too late), or an in-memory parse error that is not a GGUF
    /// error.
    #[error("writer: {0}")]
    Writer(String),
    /// An I/O error while writing.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Which input limit an [`Error::LimitExceeded`] is about; [`setting`](Limit::setting) names what
/// raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Size of an image file in bytes ([`ImageLimits::max_bytes`](crate::image::ImageLimits::max_bytes)).
    ImageBytes,
    /// Width of an image in pixels ([`ImageLimits::max_width`](crate::image::ImageLimits::max_width)).
    ImageWidth,
    /// Height of an image in pixels ([`ImageLimits::max_height`](crate::image::ImageLimits::max_height)).
    ImageHeight,
    /// Width × height of an image ([`ImageLimits::max_pixels`](crate::image::ImageLimits::max_pixels)).
    ImagePixels,
    /// Bytes an image decoder would allocate ([`ImageLimits::max_alloc`](crate::image::ImageLimits::max_alloc)).
    DecoderMemory,
    /// Entries of a tokenizer's vocabulary or merge list in a model file (`MLLAMA_MAX_VOCAB`).
    Vocabulary,
}

impl Limit {
    /// The CLI flag, library setting or environment variable that raises the limit.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::ImageBytes => "--max-image-bytes, ImageLimits::max_bytes",
            Limit::ImageWidth | Limit::ImageHeight => {
                "--max-image-pixels, ImageLimits::max_width/max_height"
            }
            Limit::ImagePixels => "--max-image-pixels, ImageLimits::max_pixels",
            Limit::DecoderMemory => "--max-image-pixels, ImageLimits::max_alloc",
            Limit::Vocabulary => "MLLAMA_MAX_VOCAB",
        }
    }
}

/// `"{input}: "`, or nothing for an unnamed input.
fn label(input: &str) -> String {
    if input.is_empty() {
        String::new()
    } else {
        format!("{input}: ")
    }
}

/// `bytes` in MiB, for messages.
fn mib(bytes: &u64) -> f64 {
    *bytes as f64 / (1u64 << 20) as f64
}

/// The library's error type. Its `Display` is one line naming the file or value at fault, e.g.
/// `model.gguf: missing tensor blk.0.attn_q.weight`.
///
/// Match on the variant to act on an error: [`ContextFull`](Error::ContextFull) and
/// [`KvMemory`](Error::KvMemory) (the context or its memory is too small: shorten the input or
/// raise the setting named), [`LimitExceeded`](Error::LimitExceeded) (an input is larger than a
/// configured limit), [`BadArgument`](Error::BadArgument) and [`Conversation`](Error::Conversation)
/// (the caller's mistake: a value or the order of calls), [`BadImage`](Error::BadImage) (the
/// image's own fault), [`Io`](Error::Io), [`Gguf`](Error::Gguf), [`Model`](Error::Model) and
/// [`Unsupported`](Error::Unsupported) (the file or type cannot be used). The enum is
/// `#[non_exhaustive]`: keep a `_` arm.
///
/// ```
/// use mllama::{Error, Model};
///
/// match Model::load("no/such/model.gguf") {
///     Err(Error::Io { path, source }) => {
///         assert_eq!(path.to_str(), Some("no/such/model.gguf"));
///         assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
///     }
///     other => panic!("unexpected: {:?}", other.err()),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written (missing, no permission, ...). Check the path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid GGUF file (truncated, corrupt, not GGUF). Use another file.
    #[error("{}: {source}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: GgufError,
    },
    /// A GGUF parsed fine but does not describe a model we can run (missing key or tensor, wrong
    /// architecture, wrong shape, unsupported type or tokenizer). Use another file.
    #[error("{}: {msg}", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key or tensor.
        msg: String,
    },
    /// The tokens do not fit in the context window (the prompt alone, after dropping old chat
    /// turns). Shorten the input, start a new conversation, or raise `setting`.
    #[error(
        "prompt too long: {needed} tokens do not fit in the context of {context} tokens (raise {setting})"
    )]
    ContextFull {
        /// Tokens the context would have to hold.
        needed: usize,
        /// The context window in tokens.
        context: usize,
        /// What sets the context window.
        setting: &'static str,
    },
    /// The self-attention KV cache of the context asked for does not fit the memory budget (the
    /// smaller of `SessionOptions::max_memory` and the memory the system reports available).
    /// Ask for at most `max_ctx` tokens, or raise the budget.
    #[error(
        "--ctx {ctx} needs a {:.0} MiB KV cache, more than {budget_name} ({:.0} MiB); use --ctx {max_ctx} or less (SessionOptions::ctx)",
        mib(needed),
        mib(budget)
    )]
    KvMemory {
        /// The context asked for, in tokens.
        ctx: usize,
        /// Bytes its KV cache needs.
        needed: u64,
        /// Bytes available.
        budget: u64,
        /// Which budget that is (and the setting that raises it).
        budget_name: &'static str,
        /// The largest context that fits (at least 1).
        max_ctx: usize,
    },
    /// An input (image, file) is larger than a limit checked before using it: `value` of `limit`
    /// against `max`. Refuse the input or raise the setting ([`Limit::setting`], also named in
    /// the message).
    #[error("{}{msg}", label(input))]
    LimitExceeded {
        /// The input (a file name, or empty).
        input: String,
        /// Which limit.
        limit: Limit,
        /// The input's value (bytes, pixels, entries).
        value: u64,
        /// The limit's value.
        max: u64,
        /// The message, naming value, limit and setting.
        msg: String,
    },
    /// An argument out of range or inconsistent with the others (sampling values, context size,
    /// buffer sizes, token ids). Fix the argument.
    #[error("{why}")]
    BadArgument {
        /// The argument (e.g. `top_p`, `ctx`, `token id`).
        name: &'static str,
        /// The whole message, naming the argument and its value.
        why: String,
    },
    /// The calls do not make a valid conversation: a system message after other messages, chat
    /// messages and a raw prompt mixed, images without a message, no user message to answer, or
    /// `<|image|>` markers that do not match the images. Fix the order or count of calls.
    #[error("{0}")]
    Conversation(String),
    /// An image that cannot be decoded: not a supported format, corrupt or truncated, or an
    /// unsupported variant of a supported format. Refuse the input.
    #[error("{}{reason}", label(input))]
    BadImage {
        /// The input (a file name, or empty).
        input: String,
        /// The format recognised (`PNG`, `JPEG`, ...), if any.
        format: Option<&'static str>,
        /// What is wrong (names the format when known).
        reason: String,
    },
    /// The model's chat template does not compile or fails to render the conversation (the
    /// template's own `raise_exception` messages included), or there is none. Use a raw prompt or
    /// change the conversation.
    #[error("{0}")]
    Template(String),
    /// An operation this build does not support for this type (e.g. quantizing to a GGUF type the
    /// library only knows by name).
    #[error("{why}")]
    Unsupported {
        /// The type or feature.
        what: String,
        /// The whole message.
        why: String,
    },
    /// An image was given to a text-only model (a plain Llama GGUF: `general.architecture =
    /// llama`), which has no vision tower. Drop the image or use a Llama 3.2 Vision model.
    #[error("{}: a text-only model (architecture {arch:?}) cannot take images", path.display())]
    TextOnlyModel {
        /// The model file.
        path: PathBuf,
        /// Its `general.architecture`.
        arch: String,
    },
    /// An Ollama model store or Ollama file set that cannot be used: a name that is not
    /// installed, a manifest naming a missing blob, a projector that does not fit the text
    /// model, an era-1 text blob without its projector (see [`OllamaError`]).
    #[error("{0}")]
    Ollama(#[from] OllamaError),
    /// Any other error (message names it).
    #[error("{0}")]
    Invalid(String),
    /// An error while building a GGUF file in memory.
    #[error("GGUF: {0}")]
    GgufWrite(#[from] GgufError),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::BadArgument`].
    pub fn bad_argument(name: &'static str, why: impl Into<String>) -> Self {
        Error::BadArgument {
            name,
            why: why.into(),
        }
    }

    /// The error with `name` as its input when it is about an unnamed input
    /// ([`LimitExceeded`](Error::LimitExceeded), [`BadImage`](Error::BadImage)); other errors
    /// unchanged.
    pub fn for_input(mut self, name: &str) -> Self {
        if let Error::LimitExceeded { input, .. } | Error::BadImage { input, .. } = &mut self {
            if input.is_empty() {
                *input = name.to_string();
            }
        }
        self
    }
}

/// What is wrong with an Ollama model name, model store or file set (one line each, naming the
/// name, file or digest at fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OllamaError {
    /// The model name is not in the store; `installed` lists the tags of the same model that
    /// are (e.g. `llama3.2-vision:latest`), empty when there are none.
    #[error("{name}: not installed in the Ollama store {} ({})", root.display(), installed_list(.installed, .model))]
    NotInstalled {
        /// The name asked for, as given.
        name: String,
        /// The model part of the name (`llama3.2-vision`).
        model: String,
        /// The store (`$OLLAMA_MODELS` or `~/.ollama/models`).
        root: PathBuf,
        /// Installed tags of that model, as `model:tag`.
        installed: Vec<String>,
    },
    /// A string that is not an Ollama model name (`[host/][namespace/]model[:tag]`).
    #[error("{0:?} is neither a file nor an Ollama model name ([host/][namespace/]model[:tag])")]
    BadName(String),
    /// A manifest that cannot be read or parsed.
    #[error("{}: not a valid Ollama manifest: {why}", manifest.display())]
    BadManifest {
        /// The manifest file.
        manifest: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A manifest names a layer whose blob is not in the store.
    #[error("{}: {kind} layer {digest} is missing (no file {})", manifest.display(), blob.display())]
    MissingBlob {
        /// The manifest file.
        manifest: PathBuf,
        /// The layer's role (`model`, `projector`, `template`).
        kind: &'static str,
        /// The layer digest (`sha256:…`).
        digest: String,
        /// Where the blob should be.
        blob: PathBuf,
    },
    /// A manifest without a model layer.
    #[error("{}: no application/vnd.ollama.image.model layer", manifest.display())]
    NoModelLayer {
        /// The manifest file.
        manifest: PathBuf,
    },
    /// An era-1 projector whose dimensions do not fit the text model.
    #[error("{}: projector {what} is {projector}, but the text model {} needs {text}", projector_path.display(), text_path.display())]
    ProjectorMismatch {
        /// The projector file.
        projector_path: PathBuf,
        /// The text model file.
        text_path: PathBuf,
        /// Which dimension (`projection_dim`, `mm.0.weight rows`).
        what: &'static str,
        /// The projector's value.
        projector: u64,
        /// The value the text model needs.
        text: u64,
    },
    /// An era-1 text blob (no vision keys) given without its projector.
    #[error("{}: an Ollama era-1 text blob without its vision projector: pass the projector blob with --mmproj FILE (or load it by Ollama model name)", path.display())]
    NoProjector {
        /// The text blob.
        path: PathBuf,
    },
    /// An era-1 projector given as the model.
    #[error("{}: an Ollama era-1 vision projector, not a model: pass the text blob with -m and this file with --mmproj", path.display())]
    ProjectorAsModel {
        /// The projector blob.
        path: PathBuf,
    },
    /// A projector given with a model that already contains the vision tower.
    #[error("{}: --mmproj {} given, but the model already holds the vision tower ({layout})", path.display(), projector.display())]
    UnexpectedProjector {
        /// The model file.
        path: PathBuf,
        /// The projector file.
        projector: PathBuf,
        /// The model's layout.
        layout: String,
    },
}

fn installed_list(installed: &[String], model: &str) -> String {
    if installed.is_empty() {
        format!("no {model} tags are installed")
    } else {
        format!("installed: {}", installed.join(", "))
    }
}

/// `Result` with the library's [`Error`] as default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
