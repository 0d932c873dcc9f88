//! The one declaration of the architecture's tensors: for every tensor of an `mllama` file its
//! GGUF name, its shape as a function of the dimensions, what it is ([`Kind`]), what it does in
//! its layer ([`Role`]), where it sits ([`Scope`], [`Tower`]), the HF checkpoint tensor it comes
//! from ([`Source`]) and the storage transform the converter applies ([`Transform`]).
//!
//! Everything else is derived from [`TENSORS`]: the loaders ask it for names and shapes
//! ([`TensorDecl::name`], [`Tensor`]), `quantize` walks it to plan a conversion
//! ([`expand`] and [`Tensor::storage`]), and the synthetic models (the in-memory benchmark models
//! and the converter's test checkpoints) are built from it.
//!
//! Layer tensors are declared once with a name relative to their layer (`attn_q.weight`); the
//! layer's [`Block`] supplies the prefix (`blk.{i}.`, `v.blk.{i}.`, `v.global.blk.{i}.`) and the
//! HF prefix (`language_model.model.layers.{i}.`, `vision_model.transformer.layers.{i}.`,
//! `vision_model.global_transformer.layers.{i}.`).
//!
//! ```
//! use mllama::models::mllama::spec::ModelSpec;
//! use mllama::models::mllama::tensors::{self, Block, Role};
//!
//! let dims = ModelSpec::tiny().dims();
//! let all = tensors::expand(&dims);
//! let q = all.iter().find(|t| t.name == "blk.0.attn_q.weight").unwrap();
//! assert_eq!((q.decl.role, q.block, q.shape.as_slice()), (Role::AttnQ, Some(Block::text(0)), &[64, 64][..]));
//! assert_eq!(q.hf_name().as_deref(), Some("language_model.model.layers.0.self_attn.q_proj.weight"));
//! assert_eq!(tensors::ATTN_Q.name(Some(Block::text(5))), "blk.5.attn_q.weight");
//! ```

use crate::models::mllama::keys;
use crate::models::mllama::ModelConfig;

/// The numbers tensor shapes depend on, and which layers exist. Built from the GGUF metadata by
/// the loader, from `config.json` by the converter and from a
/// [`ModelSpec`](super::spec::ModelSpec) for synthetic models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Output vocabulary V (rows of `output.weight`).
    pub vocab_size: usize,
    /// Rows of `token_embd.weight` (vocab + the image token's learnable rows).
    pub embedding_rows: usize,
    /// Text hidden size H.
    pub hidden: usize,
    /// Query heads nh.
    pub n_heads: usize,
    /// Key/value heads nkv.
    pub n_kv_heads: usize,
    /// Text head dimension hd.
    pub head_dim: usize,
    /// Text MLP width F.
    pub ffn: usize,
    /// Text decoder layers.
    pub n_layers: usize,
    /// Indices of the cross-attention layers (the others are self-attention layers).
    pub cross_layers: Vec<usize>,
    /// Whether the file holds llama3 RoPE frequency factors (`rope_freqs.weight`).
    pub rope_factors: bool,
    /// Vision hidden size D.
    pub v_hidden: usize,
    /// Vision MLP width.
    pub v_ffn: usize,
    /// Local vision layers.
    pub v_local: usize,
    /// Gated global vision layers.
    pub v_global: usize,
    /// Projector input width: D × (1 + taps).
    pub v_output_dim: usize,
    /// Image channels (3).
    pub channels: usize,
    /// Patch edge in pixels.
    pub patch_size: usize,
    /// Vision tokens per tile P (patches + class token).
    pub tokens_per_tile: usize,
    /// Tile slots per image T.
    pub max_tiles: usize,
    /// Rows of the aspect-ratio tables R (supported ratios + 1: id 0 is padding).
    pub aspect_ratio_rows: usize,
}

impl Dims {
    /// The dimensions of a loaded file's configuration; the aspect-ratio table rows and the
    /// presence of RoPE factors are properties of the file's tensors, given by the caller. A
    /// text-only configuration has every vision dimension 0.
    pub fn from_config(cfg: &ModelConfig, aspect_ratio_rows: usize, rope_factors: bool) -> Dims {
        let t = &cfg.text;
        let Some(v) = &cfg.vision else {
            return Dims {
                vocab_size: t.vocab_size,
                embedding_rows: t.embedding_rows,
                hidden: t.hidden,
                n_heads: t.n_heads,
                n_kv_heads: t.n_kv_heads,
                head_dim: t.head_dim,
                ffn: t.ffn,
                n_layers: t.n_layers,
                cross_layers: t.cross_layers.clone(),
                rope_factors,
                v_hidden: 0,
                v_ffn: 0,
                v_local: 0,
                v_global: 0,
                v_output_dim: 0,
                channels: 0,
                patch_size: 0,
                tokens_per_tile: 0,
                max_tiles: 0,
                aspect_ratio_rows,
            };
        };
        Dims {
            vocab_size: t.vocab_size,
            embedding_rows: t.embedding_rows,
            hidden: t.hidden,
            n_heads: t.n_heads,
            n_kv_heads: t.n_kv_heads,
            head_dim: t.head_dim,
            ffn: t.ffn,
            n_layers: t.n_layers,
            cross_layers: t.cross_layers.clone(),
            rope_factors,
            v_hidden: v.hidden,
            v_ffn: v.ffn,
            v_local: v.n_local,
            v_global: v.n_global,
            v_output_dim: v.output_dim,
            channels: v.channels,
            patch_size: v.patch_size,
            tokens_per_tile: v.tokens_per_tile(),
            max_tiles: v.max_tiles,
            aspect_ratio_rows,
        }
    }
}

/// One symbolic dimension of a declared shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// 1 (scalar gates).
    One,
    /// V.
    Vocab,
    /// Rows of the token embedding table.
    EmbeddingRows,
    /// H.
    Hidden,
    /// nh · hd (query width).
    QueryWidth,
    /// nkv · hd (key/value width).
    KvWidth,
    /// hd.
    HeadDim,
    /// hd / 2 (RoPE frequencies).
    HalfHeadDim,
    /// F.
    Ffn,
    /// D.
    VHidden,
    /// Vision MLP width.
    VFfn,
    /// D × (1 + taps).
    VOutput,
    /// Image channels.
    Channels,
    /// Patch edge.
    Patch,
    /// P.
    Tokens,
    /// R.
    AspectRatios,
    /// T · P · D (tile position table row).
    TileTokensHidden,
    /// T · D (pre/post tile table row).
    TilesHidden,
}

impl Dim {
    /// The dimension's size for `d`.
    pub fn size(self, d: &Dims) -> usize {
        match self {
            Dim::One => 1,
            Dim::Vocab => d.vocab_size,
            Dim::EmbeddingRows => d.embedding_rows,
            Dim::Hidden => d.hidden,
            Dim::QueryWidth => d.n_heads * d.head_dim,
            Dim::KvWidth => d.n_kv_heads * d.head_dim,
            Dim::HeadDim => d.head_dim,
            Dim::HalfHeadDim => d.head_dim / 2,
            Dim::Ffn => d.ffn,
            Dim::VHidden => d.v_hidden,
            Dim::VFfn => d.v_ffn,
            Dim::VOutput => d.v_output_dim,
            Dim::Channels => d.channels,
            Dim::Patch => d.patch_size,
            Dim::Tokens => d.tokens_per_tile,
            Dim::AspectRatios => d.aspect_ratio_rows,
            Dim::TileTokensHidden => d.max_tiles * d.tokens_per_tile * d.v_hidden,
            Dim::TilesHidden => d.max_tiles * d.v_hidden,
        }
    }
}

/// What a tensor is (with its [`Tower`], this decides how it is stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The token embedding table (rows looked up by token id; stored like a text matrix).
    Embedding,
    /// A weight matrix `[out, in]` multiplied with activations.
    Matrix,
    /// The patch convolution `[D, C, p, p]`, used as a `[D, C·p·p]` matrix on unfolded patches.
    Conv,
    /// A norm weight (RMSNorm or LayerNorm scale).
    Norm,
    /// A bias vector (LayerNorm shift or matrix bias).
    Bias,
    /// A scalar gate (`tanh` applied at run time, or stored applied: see the conventions).
    Gate,
    /// A learned table or vector added to activations (class, position, tile embeddings).
    Table,
    /// llama3 RoPE frequency divisors computed from the config.
    RopeFactors,
}

/// Which part of the model a tensor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tower {
    /// The text decoder (embeddings, layers, output head).
    Text,
    /// The vision encoder.
    Vision,
    /// The multi-modal projector (vision features → text hidden size).
    Projector,
}

/// Where a declaration applies: once per model, or in some layers of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Once per model.
    Model,
    /// Every text decoder layer.
    TextLayer,
    /// Self-attention text layers only.
    SelfLayer,
    /// Cross-attention text layers only.
    CrossLayer,
    /// Every vision encoder layer (local and global).
    VisionLayer,
    /// Gated global vision layers only.
    GlobalLayer,
}

/// What a tensor does in its layer (or the model): the handle per-layer rules (K-quant type
/// mixes, other files' layouts) key on. Weight and bias of one operation share a role; [`Kind`]
/// tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Token embedding table.
    TokenEmbd,
    /// RoPE frequency factors.
    RopeFreqs,
    /// Norm before attention (text RMSNorm, vision LayerNorm).
    AttnNorm,
    /// Query projection.
    AttnQ,
    /// Key projection.
    AttnK,
    /// Value projection.
    AttnV,
    /// Attention output projection.
    AttnOutput,
    /// Per-head query norm (cross-attention).
    AttnQNorm,
    /// Per-head key norm (cross-attention).
    AttnKNorm,
    /// Scalar gate of the attention branch.
    AttnGate,
    /// Norm before the MLP.
    FfnNorm,
    /// SwiGLU gate projection (the `ffn_gate` matrix).
    FfnGate,
    /// MLP up projection (vision: `fc1`).
    FfnUp,
    /// MLP down projection (vision: `fc2`).
    FfnDown,
    /// Scalar gate of the MLP branch.
    MlpGate,
    /// Final text norm.
    OutputNorm,
    /// Output head.
    Output,
    /// Patch convolution.
    PatchEmbd,
    /// Class token embedding.
    ClassEmbd,
    /// Position embedding and its gate.
    PosEmbd,
    /// Tile position embedding and its gate.
    TilePosEmbd,
    /// Pre-tile positional embedding and its gate.
    PreTileEmbd,
    /// Post-tile positional embedding and its gate.
    PostTileEmbd,
    /// LayerNorm before the local vision layers.
    PreLn,
    /// LayerNorm after the local vision layers.
    PostLn,
    /// Multi-modal projector.
    Projector,
}

/// Where a tensor's values come from in an HF checkpoint. Layer tensors name their checkpoint
/// tensor relative to the layer's HF prefix ([`Block::hf_prefix`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A checkpoint tensor.
    Hf(&'static str),
    /// A checkpoint tensor; when it is absent and the config ties embeddings, the first rows of
    /// the second one (the output head taken from the embedding table).
    HfOrTied(&'static str, &'static str),
    /// Computed by the converter from the config (no checkpoint tensor).
    Computed,
}

/// How the converter changes a checkpoint tensor on the way out (shapes stay the same: the 4-D
/// patch convolution is stored as in HF and viewed as `[D, C·p·p]` by the loader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Copied as is.
    AsIs,
    /// Rows permuted per head of `head_dim` rows from HF's rotate-half order to ggml's adjacent
    /// RoPE pairs (self-attention q and k; `mllama.convention.self_attn_qk = "ggml"`).
    RopePermute,
}

/// The declaration of one tensor (or, for layer scopes, one tensor per layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorDecl {
    /// GGUF name; relative to the layer prefix for layer scopes.
    pub name: &'static str,
    /// Where it applies.
    pub scope: Scope,
    /// Text, vision or projector.
    pub tower: Tower,
    /// What it is.
    pub kind: Kind,
    /// What it does.
    pub role: Role,
    /// Outermost-first shape (PyTorch order).
    pub shape: &'static [Dim],
    /// Where its values come from.
    pub source: Source,
    /// The converter's storage transform.
    pub transform: Transform,
    /// Present only when the model calls for it (`rope_freqs.weight`: llama3 RoPE scaling);
    /// loaders read it when present.
    pub optional: bool,
}

/// The layer stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stack {
    /// Text decoder layers `blk.{i}`.
    Text,
    /// Local vision layers `v.blk.{i}`.
    VisionLocal,
    /// Gated global vision layers `v.global.blk.{i}`.
    VisionGlobal,
}

/// One layer of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Block {
    /// Which stack.
    pub stack: Stack,
    /// Layer index within the stack.
    pub index: usize,
}

impl Block {
    /// Text decoder layer `i`.
    pub fn text(i: usize) -> Block {
        Block {
            stack: Stack::Text,
            index: i,
        }
    }

    /// GGUF name prefix (`blk.3.`).
    pub fn prefix(&self) -> String {
        match self.stack {
            Stack::Text => keys::blk(self.index, ""),
            Stack::VisionLocal => keys::vblk(self.index, ""),
            Stack::VisionGlobal => keys::vgblk(self.index, ""),
        }
    }

    /// HF checkpoint name prefix (`language_model.model.layers.3.`).
    pub fn hf_prefix(&self) -> String {
        let i = self.index;
        match self.stack {
            Stack::Text => format!("language_model.model.layers.{i}."),
            Stack::VisionLocal => format!("vision_model.transformer.layers.{i}."),
            Stack::VisionGlobal => format!("vision_model.global_transformer.layers.{i}."),
        }
    }
}

impl TensorDecl {
    /// The GGUF name in `block` (ignored for [`Scope::Model`]).
    ///
    /// # Panics
    ///
    /// If a layer-scoped declaration is given no block.
    pub fn name(&self, block: Option<Block>) -> String {
        match (self.scope, block) {
            (Scope::Model, _) => self.name.to_owned(),
            (_, Some(b)) => b.prefix() + self.name,
            (_, None) => panic!("{}: a layer tensor needs a block", self.name),
        }
    }

    /// The checkpoint tensor it is read from in `block` (`None`: computed). For
    /// [`Source::HfOrTied`], the primary tensor.
    ///
    /// # Panics
    ///
    /// If a layer-scoped declaration is given no block.
    pub fn hf_name(&self, block: Option<Block>) -> Option<String> {
        let rel = match self.source {
            Source::Hf(n) | Source::HfOrTied(n, _) => n,
            Source::Computed => return None,
        };
        Some(match (self.scope, block) {
            (Scope::Model, _) => rel.to_owned(),
            (_, Some(b)) => b.hf_prefix() + rel,
            (_, None) => panic!("{}: a layer tensor needs a block", self.name),
        })
    }

    /// The shape for `d`.
    pub fn shape(&self, d: &Dims) -> Vec<usize> {
        self.shape.iter().map(|x| x.size(d)).collect()
    }

    /// As `[rows, cols]`: the outermost dimension and the product of the others (a 1-D tensor
    /// is one row).
    pub fn rows_cols(&self, d: &Dims) -> (usize, usize) {
        let s = self.shape(d);
        match s.as_slice() {
            [n] => (1, *n),
            [r, rest @ ..] => (*r, rest.iter().product()),
            [] => (1, 1),
        }
    }

    /// Storage class: which type the converter picks ([`Storage`]).
    pub fn storage(&self) -> Storage {
        match (self.kind, self.tower) {
            (Kind::Matrix | Kind::Embedding, Tower::Text) => Storage::TextMatrix,
            (Kind::Matrix | Kind::Embedding, _) => Storage::VisionMatrix,
            (Kind::Conv, _) => Storage::Patch,
            _ => Storage::Small,
        }
    }

    fn applies(&self, block: Option<Block>, d: &Dims) -> bool {
        let cross = |i| d.cross_layers.contains(&i);
        match (self.scope, block) {
            (Scope::Model, None) => {
                !self.optional || (self.role == Role::RopeFreqs && d.rope_factors)
            }
            (Scope::TextLayer, Some(b)) => b.stack == Stack::Text,
            (Scope::SelfLayer, Some(b)) => b.stack == Stack::Text && !cross(b.index),
            (Scope::CrossLayer, Some(b)) => b.stack == Stack::Text && cross(b.index),
            (Scope::VisionLayer, Some(b)) => b.stack != Stack::Text,
            (Scope::GlobalLayer, Some(b)) => b.stack == Stack::VisionGlobal,
            _ => false,
        }
    }
}

/// How a tensor is stored, as far as the converter's type policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A large text matrix (quantized with the requested type).
    TextMatrix,
    /// A vision or projector matrix (F16 unless vision quantization is asked for).
    VisionMatrix,
    /// The 4-D patch convolution (never block-quantized).
    Patch,
    /// Norms, biases, gates, class/position/tile embeddings, RoPE factors: F32.
    Small,
}

/// One tensor of a model: a declaration placed in a layer, with its name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// The declaration.
    pub decl: &'static TensorDecl,
    /// Its layer (`None` for model-wide tensors).
    pub block: Option<Block>,
    /// GGUF name.
    pub name: String,
    /// Outermost-first shape.
    pub shape: Vec<usize>,
}

impl Tensor {
    /// The checkpoint tensor it is read from (`None`: computed).
    pub fn hf_name(&self) -> Option<String> {
        self.decl.hf_name(self.block)
    }

    /// Storage class ([`TensorDecl::storage`]).
    pub fn storage(&self) -> Storage {
        self.decl.storage()
    }
}

macro_rules! decl {
    ($name:expr, $scope:ident, $tower:ident, $kind:ident, $role:ident, [$($dim:ident),*], $src:expr) => {
        decl!($name, $scope, $tower, $kind, $role, [$($dim),*], $src, AsIs)
    };
    ($name:expr, $scope:ident, $tower:ident, $kind:ident, $role:ident, [$($dim:ident),*], $src:expr, $tr:ident) => {
        TensorDecl {
            name: $name,
            scope: Scope::$scope,
            tower: Tower::$tower,
            kind: Kind::$kind,
            role: Role::$role,
            shape: &[$(Dim::$dim),*],
            source: $src,
            transform: Transform::$tr,
            optional: false,
        }
    };
}

use Source::{Hf, HfOrTied};

const EMBED_TOKENS: &str = "language_model.model.embed_tokens.weight";

// ---- text decoder ---------------------------------------------------------------------------
/// `token_embd.weight` `[embedding_rows, H]`.
pub const TOKEN_EMBD: TensorDecl = decl!(
    keys::T_TOKEN_EMBD,
    Model,
    Text,
    Embedding,
    TokenEmbd,
    [EmbeddingRows, Hidden],
    Hf(EMBED_TOKENS)
);
/// `rope_freqs.weight` `[hd/2]`: llama3 RoPE divisors (llama.cpp's layout), computed.
pub const ROPE_FREQS: TensorDecl = TensorDecl {
    optional: true,
    ..decl!(
        keys::T_ROPE_FREQS,
        Model,
        Text,
        RopeFactors,
        RopeFreqs,
        [HalfHeadDim],
        Source::Computed
    )
};
/// `blk.{i}.attn_norm.weight` `[H]`.
pub const ATTN_NORM: TensorDecl = decl!(
    "attn_norm.weight",
    TextLayer,
    Text,
    Norm,
    AttnNorm,
    [Hidden],
    Hf("input_layernorm.weight")
);
/// `blk.{i}.ffn_norm.weight` `[H]`.
pub const FFN_NORM: TensorDecl = decl!(
    "ffn_norm.weight",
    TextLayer,
    Text,
    Norm,
    FfnNorm,
    [Hidden],
    Hf("post_attention_layernorm.weight")
);
/// `blk.{i}.cross_attn_q_proj.weight` `[nh·hd, H]` (rows in HF order).
pub const CROSS_Q: TensorDecl = decl!(
    "cross_attn_q_proj.weight",
    CrossLayer,
    Text,
    Matrix,
    AttnQ,
    [QueryWidth, Hidden],
    Hf("cross_attn.q_proj.weight")
);
/// `blk.{i}.cross_attn_k_proj.weight` `[nkv·hd, H]`.
pub const CROSS_K: TensorDecl = decl!(
    "cross_attn_k_proj.weight",
    CrossLayer,
    Text,
    Matrix,
    AttnK,
    [KvWidth, Hidden],
    Hf("cross_attn.k_proj.weight")
);
/// `blk.{i}.cross_attn_v_proj.weight` `[nkv·hd, H]`.
pub const CROSS_V: TensorDecl = decl!(
    "cross_attn_v_proj.weight",
    CrossLayer,
    Text,
    Matrix,
    AttnV,
    [KvWidth, Hidden],
    Hf("cross_attn.v_proj.weight")
);
/// `blk.{i}.cross_attn_o_proj.weight` `[H, nh·hd]`.
pub const CROSS_O: TensorDecl = decl!(
    "cross_attn_o_proj.weight",
    CrossLayer,
    Text,
    Matrix,
    AttnOutput,
    [Hidden, QueryWidth],
    Hf("cross_attn.o_proj.weight")
);
/// `blk.{i}.cross_attn_q_norm.weight` `[hd]`.
pub const CROSS_Q_NORM: TensorDecl = decl!(
    "cross_attn_q_norm.weight",
    CrossLayer,
    Text,
    Norm,
    AttnQNorm,
    [HeadDim],
    Hf("cross_attn.q_norm.weight")
);
/// `blk.{i}.cross_attn_k_norm.weight` `[hd]`.
pub const CROSS_K_NORM: TensorDecl = decl!(
    "cross_attn_k_norm.weight",
    CrossLayer,
    Text,
    Norm,
    AttnKNorm,
    [HeadDim],
    Hf("cross_attn.k_norm.weight")
);
/// `blk.{i}.cross_attn_attn_gate` `[1]`.
pub const CROSS_ATTN_GATE: TensorDecl = decl!(
    "cross_attn_attn_gate",
    CrossLayer,
    Text,
    Gate,
    AttnGate,
    [One],
    Hf("cross_attn_attn_gate")
);
/// `blk.{i}.cross_attn_mlp_gate` `[1]`.
pub const CROSS_MLP_GATE: TensorDecl = decl!(
    "cross_attn_mlp_gate",
    CrossLayer,
    Text,
    Gate,
    MlpGate,
    [One],
    Hf("cross_attn_mlp_gate")
);
/// `blk.{i}.attn_q.weight` `[nh·hd, H]`, RoPE-permuted.
pub const ATTN_Q: TensorDecl = decl!(
    "attn_q.weight",
    SelfLayer,
    Text,
    Matrix,
    AttnQ,
    [QueryWidth, Hidden],
    Hf("self_attn.q_proj.weight"),
    RopePermute
);
/// `blk.{i}.attn_k.weight` `[nkv·hd, H]`, RoPE-permuted.
pub const ATTN_K: TensorDecl = decl!(
    "attn_k.weight",
    SelfLayer,
    Text,
    Matrix,
    AttnK,
    [KvWidth, Hidden],
    Hf("self_attn.k_proj.weight"),
    RopePermute
);
/// `blk.{i}.attn_v.weight` `[nkv·hd, H]`.
pub const ATTN_V: TensorDecl = decl!(
    "attn_v.weight",
    SelfLayer,
    Text,
    Matrix,
    AttnV,
    [KvWidth, Hidden],
    Hf("self_attn.v_proj.weight")
);
/// `blk.{i}.attn_output.weight` `[H, nh·hd]`.
pub const ATTN_OUTPUT: TensorDecl = decl!(
    "attn_output.weight",
    SelfLayer,
    Text,
    Matrix,
    AttnOutput,
    [Hidden, QueryWidth],
    Hf("self_attn.o_proj.weight")
);
/// `blk.{i}.ffn_gate.weight` `[F, H]`.
pub const FFN_GATE: TensorDecl = decl!(
    "ffn_gate.weight",
    TextLayer,
    Text,
    Matrix,
    FfnGate,
    [Ffn, Hidden],
    Hf("mlp.gate_proj.weight")
);
/// `blk.{i}.ffn_up.weight` `[F, H]`.
pub const FFN_UP: TensorDecl = decl!(
    "ffn_up.weight",
    TextLayer,
    Text,
    Matrix,
    FfnUp,
    [Ffn, Hidden],
    Hf("mlp.up_proj.weight")
);
/// `blk.{i}.ffn_down.weight` `[H, F]`.
pub const FFN_DOWN: TensorDecl = decl!(
    "ffn_down.weight",
    TextLayer,
    Text,
    Matrix,
    FfnDown,
    [Hidden, Ffn],
    Hf("mlp.down_proj.weight")
);
/// `output_norm.weight` `[H]`.
pub const OUTPUT_NORM: TensorDecl = decl!(
    keys::T_OUTPUT_NORM,
    Model,
    Text,
    Norm,
    OutputNorm,
    [Hidden],
    Hf("language_model.model.norm.weight")
);
/// `output.weight` `[V, H]` (tied checkpoints: the first V rows of the embedding table).
pub const OUTPUT: TensorDecl = decl!(
    keys::T_OUTPUT,
    Model,
    Text,
    Matrix,
    Output,
    [Vocab, Hidden],
    HfOrTied("language_model.lm_head.weight", EMBED_TOKENS)
);

// ---- vision encoder ---------------------------------------------------------------------------
/// `v.patch_embd.weight` `[D, C, p, p]`.
pub const V_PATCH_EMBD: TensorDecl = decl!(
    keys::T_V_PATCH_EMBD,
    Model,
    Vision,
    Conv,
    PatchEmbd,
    [VHidden, Channels, Patch, Patch],
    Hf("vision_model.patch_embedding.weight")
);
/// `v.class_embd` `[D]`.
pub const V_CLASS_EMBD: TensorDecl = decl!(
    keys::T_V_CLASS_EMBD,
    Model,
    Vision,
    Table,
    ClassEmbd,
    [VHidden],
    Hf("vision_model.class_embedding")
);
/// `v.position_embd.weight` `[P, D]`.
pub const V_POS_EMBD: TensorDecl = decl!(
    keys::T_V_POS_EMBD,
    Model,
    Vision,
    Table,
    PosEmbd,
    [Tokens, VHidden],
    Hf("vision_model.gated_positional_embedding.embedding")
);
/// `v.position_embd.gate` `[1]` (raw g; Ollama's files: 1 − tanh g).
pub const V_POS_GATE: TensorDecl = decl!(
    keys::T_V_POS_GATE,
    Model,
    Vision,
    Gate,
    PosEmbd,
    [One],
    Hf("vision_model.gated_positional_embedding.gate")
);
/// `v.tile_position_embd.weight` `[R, T·P·D]`.
pub const V_TILE_POS_EMBD: TensorDecl = decl!(
    keys::T_V_TILE_POS_EMBD,
    Model,
    Vision,
    Table,
    TilePosEmbd,
    [AspectRatios, TileTokensHidden],
    Hf("vision_model.gated_positional_embedding.tile_embedding.weight")
);
/// `v.tile_position_embd.gate` `[1]`: the same checkpoint gate as [`V_POS_GATE`] (raw g in our
/// files, tanh g in Ollama's).
pub const V_TILE_POS_GATE: TensorDecl = decl!(
    keys::T_V_TILE_POS_GATE,
    Model,
    Vision,
    Gate,
    TilePosEmbd,
    [One],
    Hf("vision_model.gated_positional_embedding.gate")
);
/// `v.pre_tile_position_embd.weight` `[R, T·D]`.
pub const V_PRE_TILE_EMBD: TensorDecl = decl!(
    keys::T_V_PRE_TILE_EMBD,
    Model,
    Vision,
    Table,
    PreTileEmbd,
    [AspectRatios, TilesHidden],
    Hf("vision_model.pre_tile_positional_embedding.embedding.weight")
);
/// `v.pre_tile_position_embd.gate` `[1]`.
pub const V_PRE_TILE_GATE: TensorDecl = decl!(
    keys::T_V_PRE_TILE_GATE,
    Model,
    Vision,
    Gate,
    PreTileEmbd,
    [One],
    Hf("vision_model.pre_tile_positional_embedding.gate")
);
/// `v.post_tile_position_embd.weight` `[R, T·D]`.
pub const V_POST_TILE_EMBD: TensorDecl = decl!(
    keys::T_V_POST_TILE_EMBD,
    Model,
    Vision,
    Table,
    PostTileEmbd,
    [AspectRatios, TilesHidden],
    Hf("vision_model.post_tile_positional_embedding.embedding.weight")
);
/// `v.post_tile_position_embd.gate` `[1]`.
pub const V_POST_TILE_GATE: TensorDecl = decl!(
    keys::T_V_POST_TILE_GATE,
    Model,
    Vision,
    Gate,
    PostTileEmbd,
    [One],
    Hf("vision_model.post_tile_positional_embedding.gate")
);
/// `v.pre_ln.weight` `[D]`.
pub const V_PRE_LN_W: TensorDecl = decl!(
    keys::T_V_PRE_LN_W,
    Model,
    Vision,
    Norm,
    PreLn,
    [VHidden],
    Hf("vision_model.layernorm_pre.weight")
);
/// `v.pre_ln.bias` `[D]`.
pub const V_PRE_LN_B: TensorDecl = decl!(
    keys::T_V_PRE_LN_B,
    Model,
    Vision,
    Bias,
    PreLn,
    [VHidden],
    Hf("vision_model.layernorm_pre.bias")
);
/// `v.post_ln.weight` `[D]`.
pub const V_POST_LN_W: TensorDecl = decl!(
    keys::T_V_POST_LN_W,
    Model,
    Vision,
    Norm,
    PostLn,
    [VHidden],
    Hf("vision_model.layernorm_post.weight")
);
/// `v.post_ln.bias` `[D]`.
pub const V_POST_LN_B: TensorDecl = decl!(
    keys::T_V_POST_LN_B,
    Model,
    Vision,
    Bias,
    PostLn,
    [VHidden],
    Hf("vision_model.layernorm_post.bias")
);
/// `v[.global].blk.{i}.attn_q.weight` `[D, D]`.
pub const V_ATTN_Q: TensorDecl = decl!(
    "attn_q.weight",
    VisionLayer,
    Vision,
    Matrix,
    AttnQ,
    [VHidden, VHidden],
    Hf("self_attn.q_proj.weight")
);
/// `v[.global].blk.{i}.attn_k.weight` `[D, D]`.
pub const V_ATTN_K: TensorDecl = decl!(
    "attn_k.weight",
    VisionLayer,
    Vision,
    Matrix,
    AttnK,
    [VHidden, VHidden],
    Hf("self_attn.k_proj.weight")
);
/// `v[.global].blk.{i}.attn_v.weight` `[D, D]`.
pub const V_ATTN_V: TensorDecl = decl!(
    "attn_v.weight",
    VisionLayer,
    Vision,
    Matrix,
    AttnV,
    [VHidden, VHidden],
    Hf("self_attn.v_proj.weight")
);
/// `v[.global].blk.{i}.attn_output.weight` `[D, D]`.
pub const V_ATTN_OUTPUT: TensorDecl = decl!(
    "attn_output.weight",
    VisionLayer,
    Vision,
    Matrix,
    AttnOutput,
    [VHidden, VHidden],
    Hf("self_attn.o_proj.weight")
);
/// `v[.global].blk.{i}.attn_norm.weight` `[D]`.
pub const V_ATTN_NORM_W: TensorDecl = decl!(
    "attn_norm.weight",
    VisionLayer,
    Vision,
    Norm,
    AttnNorm,
    [VHidden],
    Hf("input_layernorm.weight")
);
/// `v[.global].blk.{i}.attn_norm.bias` `[D]`.
pub const V_ATTN_NORM_B: TensorDecl = decl!(
    "attn_norm.bias",
    VisionLayer,
    Vision,
    Bias,
    AttnNorm,
    [VHidden],
    Hf("input_layernorm.bias")
);
/// `v[.global].blk.{i}.ffn_norm.weight` `[D]`.
pub const V_FFN_NORM_W: TensorDecl = decl!(
    "ffn_norm.weight",
    VisionLayer,
    Vision,
    Norm,
    FfnNorm,
    [VHidden],
    Hf("post_attention_layernorm.weight")
);
/// `v[.global].blk.{i}.ffn_norm.bias` `[D]`.
pub const V_FFN_NORM_B: TensorDecl = decl!(
    "ffn_norm.bias",
    VisionLayer,
    Vision,
    Bias,
    FfnNorm,
    [VHidden],
    Hf("post_attention_layernorm.bias")
);
/// `v[.global].blk.{i}.ffn_up.weight` `[F_v, D]` (HF `fc1`).
pub const V_FFN_UP_W: TensorDecl = decl!(
    "ffn_up.weight",
    VisionLayer,
    Vision,
    Matrix,
    FfnUp,
    [VFfn, VHidden],
    Hf("mlp.fc1.weight")
);
/// `v[.global].blk.{i}.ffn_up.bias` `[F_v]`.
pub const V_FFN_UP_B: TensorDecl = decl!(
    "ffn_up.bias",
    VisionLayer,
    Vision,
    Bias,
    FfnUp,
    [VFfn],
    Hf("mlp.fc1.bias")
);
/// `v[.global].blk.{i}.ffn_down.weight` `[D, F_v]` (HF `fc2`).
pub const V_FFN_DOWN_W: TensorDecl = decl!(
    "ffn_down.weight",
    VisionLayer,
    Vision,
    Matrix,
    FfnDown,
    [VHidden, VFfn],
    Hf("mlp.fc2.weight")
);
/// `v[.global].blk.{i}.ffn_down.bias` `[D]`.
pub const V_FFN_DOWN_B: TensorDecl = decl!(
    "ffn_down.bias",
    VisionLayer,
    Vision,
    Bias,
    FfnDown,
    [VHidden],
    Hf("mlp.fc2.bias")
);
/// `v.global.blk.{i}.attn_gate` `[1]`.
pub const V_ATTN_GATE: TensorDecl = decl!(
    "attn_gate",
    GlobalLayer,
    Vision,
    Gate,
    AttnGate,
    [One],
    Hf("gate_attn")
);
/// `v.global.blk.{i}.ffn_gate` `[1]` (a scalar gate, unlike the text `ffn_gate` matrix).
pub const V_MLP_GATE: TensorDecl = decl!(
    "ffn_gate",
    GlobalLayer,
    Vision,
    Gate,
    MlpGate,
    [One],
    Hf("gate_ffn")
);

// ---- projector --------------------------------------------------------------------------------
/// `mm.0.weight` `[H, D·(1+K)]`.
pub const MM_W: TensorDecl = decl!(
    keys::T_MM_W,
    Model,
    Projector,
    Matrix,
    Projector,
    [Hidden, VOutput],
    Hf("multi_modal_projector.weight")
);
/// `mm.0.bias` `[H]`.
pub const MM_B: TensorDecl = decl!(
    keys::T_MM_B,
    Model,
    Projector,
    Bias,
    Projector,
    [Hidden],
    Hf("multi_modal_projector.bias")
);

/// Every declaration, in file order. Consecutive text-layer declarations are repeated per text
/// layer, consecutive vision-layer ones per local then per global layer ([`expand`]).
pub static TENSORS: [TensorDecl; 51] = [
    TOKEN_EMBD,
    ROPE_FREQS,
    ATTN_NORM,
    FFN_NORM,
    CROSS_Q,
    CROSS_K,
    CROSS_V,
    CROSS_O,
    CROSS_Q_NORM,
    CROSS_K_NORM,
    CROSS_ATTN_GATE,
    CROSS_MLP_GATE,
    ATTN_Q,
    ATTN_K,
    ATTN_V,
    ATTN_OUTPUT,
    FFN_GATE,
    FFN_UP,
    FFN_DOWN,
    OUTPUT_NORM,
    OUTPUT,
    V_PATCH_EMBD,
    V_CLASS_EMBD,
    V_POS_EMBD,
    V_POS_GATE,
    V_TILE_POS_EMBD,
    V_TILE_POS_GATE,
    V_PRE_TILE_EMBD,
    V_PRE_TILE_GATE,
    V_POST_TILE_EMBD,
    V_POST_TILE_GATE,
    V_PRE_LN_W,
    V_PRE_LN_B,
    V_POST_LN_W,
    V_POST_LN_B,
    V_ATTN_Q,
    V_ATTN_K,
    V_ATTN_V,
    V_ATTN_OUTPUT,
    V_ATTN_NORM_W,
    V_ATTN_NORM_B,
    V_FFN_NORM_W,
    V_FFN_NORM_B,
    V_FFN_UP_W,
    V_FFN_UP_B,
    V_FFN_DOWN_W,
    V_FFN_DOWN_B,
    V_ATTN_GATE,
    V_MLP_GATE,
    MM_W,
    MM_B,
];

/// Which layers a run of declarations of `scope` repeats over.
fn blocks(scope: Scope, d: &Dims) -> Vec<Option<Block>> {
    let stack = |stack, n| (0..n).map(move |index| Some(Block { stack, index }));
    match scope {
        Scope::Model => vec![None],
        Scope::TextLayer | Scope::SelfLayer | Scope::CrossLayer => {
            stack(Stack::Text, d.n_layers).collect()
        }
        Scope::VisionLayer | Scope::GlobalLayer => stack(Stack::VisionLocal, d.v_local)
            .chain(stack(Stack::VisionGlobal, d.v_global))
            .collect(),
    }
}

/// Whether two scopes repeat over the same layers (belong to one run of [`TENSORS`]).
fn same_run(a: Scope, b: Scope) -> bool {
    let family = |s| match s {
        Scope::Model => 0,
        Scope::TextLayer | Scope::SelfLayer | Scope::CrossLayer => 1,
        Scope::VisionLayer | Scope::GlobalLayer => 2,
    };
    family(a) == family(b)
}

/// Every tensor of a model with dimensions `d`, in file order (the order our converter writes).
pub fn expand(d: &Dims) -> Vec<Tensor> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < TENSORS.len() {
        let scope = TENSORS[start].scope;
        let end = (start..TENSORS.len())
            .find(|&k| !same_run(scope, TENSORS[k].scope))
            .unwrap_or(TENSORS.len());
        for block in blocks(scope, d) {
            for decl in TENSORS[start..end].iter().filter(|t| t.applies(block, d)) {
                out.push(Tensor {
                    decl,
                    block,
                    name: decl.name(block),
                    shape: decl.shape(d),
                });
            }
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::mllama::spec::ModelSpec;

    #[test]
    fn names_are_unique_and_layers_complete() {
        let d = ModelSpec::tiny().dims();
        let all = expand(&d);
        let mut names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate names");
        // 2 model-wide text + per layer (2 norms + 3 mlp + 4 self or 8 cross) + 2 at the end.
        let n_cross = d.cross_layers.len();
        let text = 2 + (d.n_layers - n_cross) * 9 + n_cross * 13 + 2;
        let vision = 14 + (d.v_local + d.v_global) * 12 + d.v_global * 2;
        assert_eq!(n, text + vision + 2);
    }

    #[test]
    fn without_rope_scaling_no_rope_factors() {
        let d = Dims {
            rope_factors: false,
            ..ModelSpec::tiny().dims()
        };
        assert!(expand(&d).iter().all(|t| t.decl.role != Role::RopeFreqs));
        assert!(expand(&ModelSpec::tiny().dims())
            .iter()
            .any(|t| t.name == keys::T_ROPE_FREQS));
    }

    #[test]
    fn shapes_follow_the_dims() {
        let d = ModelSpec::llama32_11b().dims();
        assert_eq!(V_PATCH_EMBD.shape(&d), [1280, 3, 14, 14]);
        assert_eq!(V_PATCH_EMBD.rows_cols(&d), (1280, 588));
        assert_eq!(V_TILE_POS_EMBD.shape(&d), [9, 4 * 1601 * 1280]);
        assert_eq!(ATTN_K.shape(&d), [1024, 4096]);
        assert_eq!(CROSS_Q_NORM.rows_cols(&d), (1, 128));
        assert_eq!(MM_W.shape(&d), [4096, 7680]);
    }
}
