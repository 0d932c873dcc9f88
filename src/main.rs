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
