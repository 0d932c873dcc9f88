//! `quantize INPUT_DIR -o OUTPUT.gguf -t TYPE`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mllama::quant::mix::FileType;
use mllama_quantize::convert::{parse_type, Options};

#[derive(Parser)]
#[command(
    name = "quantize",
    version,
    about = "Convert a HuggingFace Llama 3.2 Vision (MllamaForConditionalGeneration) checkpoint to one GGUF file",
    after_help = mllama_quantize::help::types_table()
)]
struct Cli {
    /// HF checkpoint directory (config.json, *.safetensors, tokenizer.json, tokenizer_config.json,
    /// preprocessor_config.json, generation_config.json).
    input: PathBuf,
    /// Output GGUF file (written atomically: nothing appears here unless conversion succeeds).
    #[arg(short, long)]
    output: PathBuf,
    /// File type: f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, q4_k_m, q4_k_s, q4_1,
    /// q4_0 (the _m/_s K-mixes follow llama.cpp's per-tensor rules; see the table below).
    #[arg(short = 't', long = "type", default_value = "q8_0", value_parser = parse_type_arg)]
    ty: FileType,
    /// Also quantize the vision tower and projector matrices, with the file type's base type
    /// (Q4_K for q4_k_m/q4_k_s, Q5_K for q5_k_*; default: F16 for quantized types).
    #[arg(long)]
    quantize_vision: bool,
    /// Do not show a progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_type_arg(s: &str) -> Result<FileType, String> {
    parse_type(s)
        .ok_or_else(|| format!("unknown type {s:?} (expected one of {})", FileType::names()))
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
