//! Answer a question about an image with the library API, streaming the answer.
//!
//! cargo run --release --example describe -- MODEL.gguf IMAGE "What is in this picture?"

use std::io::Write;

use mllama::{Model, SamplingParams, Session, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, image) = match (args.get(1), args.get(2)) {
        (Some(m), Some(i)) => (m, i),
        _ => return Err("usage: describe MODEL.gguf IMAGE [QUESTION]".into()),
    };
    let question = args
        .get(3)
        .map_or("What is in this picture?", |s| s.as_str());

    let model = Model::load(model)?;
    let mut chat = Session::new(model, SessionOptions::default())?;
    chat.add_image(image)?;
    chat.push_user(question)?;
    let greedy = SamplingParams::default();
    for piece in chat.generate(&greedy, 200, None)? {
        print!("{}", piece?.text);
        std::io::stdout().flush()?;
    }
    println!();
    Ok(())
}
