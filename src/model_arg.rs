//! `-m MODEL`: a GGUF file or an Ollama model name, with the options every command shares
//! (`--mmproj`, `--layout`, `--no-repack`, `--vision-precision`), set once by `main`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mllama::models::mllama::ollama::Layout;
use mllama::models::mllama::open::OpenOptions;
use mllama::{Error, Model, VisionPrecision};

static OPTIONS: OnceLock<OpenOptions> = OnceLock::new();

/// Record `--mmproj`, `--layout`, `--era1-cross-qk`, `--no-repack` and `--vision-precision` (called once, before any
/// command runs).
pub fn set(
    projector: Option<PathBuf>,
    layout: Option<&str>,
    era1_cross_qk: &str,
    no_repack: bool,
    vision_precision: &str,
) -> Result<(), Error> {
    let vision_precision = VisionPrecision::parse(vision_precision).ok_or_else(|| {
        Error::bad_argument(
            "vision-precision",
            format!("--vision-precision {vision_precision}: expected auto, f32, int8 or int16"),
        )
    })?;
    let layout = match layout {
        None => None,
        Some(s) => Some(Layout::parse(s).ok_or_else(|| {
            Error::bad_argument(
                "layout",
                format!("--layout {s}: expected ours, era1, era2a or era2b"),
            )
        })?),
    };
    let _ = OPTIONS.set(OpenOptions {
        projector,
        layout,
        store: None,
        era1_cross_qk_hf: era1_cross_qk == "hf",
        no_repack,
        vision_precision,
    });
    Ok(())
}

/// The options recorded by [`set`].
pub fn options() -> OpenOptions {
    OPTIONS.get().cloned().unwrap_or_default()
}

/// Open `-m MODEL` (a GGUF path or an Ollama name such as `llama3.2-vision:11b`).
pub fn open(model: &Path) -> Result<Model, Error> {
    Model::open(model, &options())
}
