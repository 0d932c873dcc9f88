//! `quantize INPUT_DIR -o OUTPUT.gguf -t TYPE`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mllama_quantize::convert::{parse_type, Options};

#[derive(Parser)]
#[command(
    name = "quantize",
    version,
    about = "Convert a HuggingFace Llama 3.2 Vision (MllamaForConditionalGeneration) checkpoint to one GGUF file"
)]
struct Cli {
    /// HF checkpoint directory (config.json, *.safetensors, tokenizer.json, tokenizer_config.json,
    /// preprocessor_config.json, generation_config.json).
    input: PathBuf,
    /// Output GGUF file (written atomically: nothing appears here unless conversion succeeds).
    #[arg(short, long)]
    output: PathBuf,
    /// Storage type of the large matrices: f32, f16, bf16, q8_0, q4_0.
    #[arg(short = 't', long = "type", default_value = "q8_0", value_parser = parse_type_arg)]
    ty: mllama::GgmlType,
    /// Also quantize the vision tower and projector matrices (default: F16 for quantized types).
    #[arg(long)]
    quantize_vision: bool,
    /// Do not show a progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_type_arg(s: &str) -> Result<mllama::GgmlType, String> {
    parse_type(s)
        .ok_or_else(|| format!("unknown type {s:?} (expected f32, f16, bf16, q8_0 or q4_0)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = Options {
        input: cli.input,
        output: cli.output,
        ty: cli.ty,
        quantize_vision: cli.quantize_vision,
        progress: !cli.quiet && std::io::stderr().is_terminal(),
    };
    match mllama_quantize::run(&opts) {
        Ok(s) => {
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            let types: Vec<String> = s
                .by_type
                .iter()
                .map(|(t, n, b)| format!("{t} {n} ({:.1} MiB)", *b as f64 / (1 << 20) as f64))
                .collect();
            println!(
                "wrote {}: {} tensors [{}], {:.1} MiB in → {:.1} MiB out, {:.2} s",
                opts.output.display(),
                s.tensors,
                types.join(", "),
                s.bytes_in as f64 / (1 << 20) as f64,
                s.bytes_out as f64 / (1 << 20) as f64,
                s.seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
