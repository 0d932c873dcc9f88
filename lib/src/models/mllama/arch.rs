//! Which GGUF architecture a file holds, and its architecture-prefixed metadata keys.
//!
//! Two are run: `mllama` (Llama 3.2 Vision: the text decoder with cross-attention layers, the
//! vision tower and the projector) and `llama` (Llama 3.x, SmolLM2 and other plain Llama text
//! models as llama.cpp writes them): the same text decoder without cross-attention layers, run as
//! a text-only mode of the same model ([`Model::vision`](super::Model::vision) is `None`).
//!
//! ```
//! use mllama::models::mllama::arch::Arch;
//!
//! assert_eq!(Arch::from_name("llama"), Some(Arch::Llama));
//! assert_eq!(Arch::Llama.key("block_count"), "llama.block_count");
//! assert!(Arch::Mllama.has_vision() && !Arch::Llama.has_vision());
//! ```

/// A GGUF `general.architecture` this runtime runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 3.2 Vision (`mllama`).
    Mllama,
    /// A plain Llama text model (`llama`): Llama 3.x, SmolLM2, ...
    Llama,
}

impl Arch {
    /// The architecture of `general.architecture = name`, if it is one we run.
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "mllama" => Some(Arch::Mllama),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }

    /// The `general.architecture` value (and the prefix of the architecture's keys).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mllama => "mllama",
            Arch::Llama => "llama",
        }
    }

    /// The architecture-prefixed key `<arch>.<suffix>`.
    pub fn key(self, suffix: &str) -> String {
        format!("{}.{suffix}", self.name())
    }

    /// Whether files of this architecture hold a vision tower (and take images).
    pub fn has_vision(self) -> bool {
        self == Arch::Mllama
    }
}
