//! The `mllama` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mllama",
    version,
    about = "Run Llama 3.2 Vision (mllama) GGUF models on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a prompt (and images) through the model; write input ids, logits at every prompt
    /// position, greedy tokens and vision states to a safetensors file.
    Eval {
        /// The model GGUF.
        #[arg(short, long)]
        model: PathBuf,
        /// An image for each <|image|> token of the prompt, in order.
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        /// The prompt text; special tokens written in it (<|image|>, <|eot_id|>, ...) are recognised.
        #[arg(long)]
        prompt: String,
        /// Tokenize like HF with add_special_tokens=True (BOS added, processor rules applied).
        #[arg(long)]
        add_bos: bool,
        /// Greedy tokens to generate through the caches.
        #[arg(long, default_value_t = 0)]
        generate: usize,
        /// Meta's cross-attention semantics for text before the first image (default: HF's).
        #[arg(long)]
        meta_cross_attn: bool,
        /// Which side of local vision layer k is intermediate feature k: `output` (HF
        /// transformers 5.x, the default) or `input` (Meta's reference and HF 4.x).
        #[arg(long, default_value = "output", value_parser = ["output", "input"])]
        vision_taps: String,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Print timings and peak memory to stderr.
        #[arg(long)]
        stats: bool,
    },
    /// Describe a GGUF file: architecture, dimensions, tensors by type, tokenizer, conventions.
    Info {
        /// The GGUF file (any architecture).
        file: PathBuf,
        /// Also list every metadata key.
        #[arg(long)]
        keys: bool,
        /// List every tensor with its type and shape.
        #[arg(long)]
        tensors: bool,
    },
}

fn run(cli: Cli) -> mllama::Result<()> {
    match cli.cmd {
        Cmd::Eval {
            model,
            images,
            prompt,
            add_bos,
            generate,
            meta_cross_attn,
            vision_taps,
            out,
            stats,
        } => {
            let req = mllama::eval::EvalRequest {
                model,
                images,
                prompt,
                add_bos,
                generate,
                semantics: mllama::model::Semantics {
                    meta_cross_attn,
                    taps: if vision_taps == "input" {
                        mllama::model::TapConvention::LayerInput
                    } else {
                        mllama::model::TapConvention::LayerOutput
                    },
                },
                out,
            };
            let s = mllama::eval::run(&req)?;
            if stats {
                eprintln!("{}", s.summary());
            }
            Ok(())
        }
        Cmd::Info {
            file,
            keys,
            tensors,
        } => {
            let f = mllama::gguf::GgufFile::open(&file)?;
            print!("{}", mllama::info::summary(&f, keys));
            if tensors {
                println!("\ntensor list:");
                for t in f.tensors() {
                    println!("  {:<48} {:<6} {:?}", t.name, t.ty.name(), t.shape());
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
