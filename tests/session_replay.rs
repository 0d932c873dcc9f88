//! Replaying a conversation the way chat clients resend it (`Session::rewind`, then every
//! message again with `push_assistant` for earlier answers) reuses the KV cache's longest
//! matching prefix: only the new tokens are prefilled, and the answer equals a fresh session's.

use std::path::PathBuf;
use std::sync::Arc;

use mllama::{Error, Model, SamplingParams, Session, SessionOptions};

fn demo(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/demo")
        .join(file)
}

fn opts() -> SessionOptions {
    SessionOptions {
        ctx: Some(256),
        date_string: Some("26 Jul 2024".into()),
        ..Default::default()
    }
}

fn answer(s: &mut Session, n: usize) -> String {
    let mut g = s.generate(&SamplingParams::default(), n, None).unwrap();
    for p in g.by_ref() {
        p.unwrap();
    }
    g.text().to_string()
}

/// Fill a session with (role, text, with the demo image) messages.
fn fill(s: &mut Session, msgs: &[(&str, &str, bool)], image: &[u8]) {
    for (role, text, with_image) in msgs {
        if *with_image {
            s.add_image_bytes(image, "demo").unwrap();
        }
        match *role {
            "user" => s.push_user(text).unwrap(),
            _ => s.push_assistant(text).unwrap(),
        }
    }
}

#[test]
fn replayed_turns_prefill_only_new_tokens_and_answer_as_fresh() {
    let model = Arc::new(Model::load(demo("mllama-demo-q4_0.gguf")).unwrap());
    let image = std::fs::read(demo("example.jpg")).unwrap();
    for first_has_image in [false, true] {
        let mut kept = Session::new(Arc::clone(&model), opts()).unwrap();
        let mut msgs: Vec<(&str, String, bool)> =
            vec![("user", "Name a colour.".into(), first_has_image)];
        for (turn, next) in ["Another one.", "And a third?"].iter().enumerate() {
            let view: Vec<(&str, &str, bool)> =
                msgs.iter().map(|(r, t, i)| (*r, t.as_str(), *i)).collect();
            kept.rewind();
            fill(&mut kept, &view, &image);
            let got = answer(&mut kept, 6);
            let st = kept.stats().clone();
            let mut fresh = Session::new(Arc::clone(&model), opts()).unwrap();
            fill(&mut fresh, &view, &image);
            assert_eq!(
                got,
                answer(&mut fresh, 6),
                "turn {turn}, image {first_has_image}"
            );
            let full = fresh.stats().prefill_tokens;
            if turn == 0 {
                assert_eq!(st.prefill_tokens, full);
            } else {
                assert!(
                    st.prefill_tokens < full / 2,
                    "turn {turn}: {} of {full} tokens prefilled",
                    st.prefill_tokens
                );
            }
            msgs.push(("assistant", got, false));
            msgs.push(("user", next.to_string(), false));
        }
    }
}

#[test]
fn push_assistant_refuses_raw_prompts_and_waiting_images() {
    let model = Arc::new(Model::load(demo("mllama-demo-q4_0.gguf")).unwrap());
    let mut s = Session::new(Arc::clone(&model), opts()).unwrap();
    s.set_raw_prompt("Once").unwrap();
    assert!(matches!(s.push_assistant("x"), Err(Error::Conversation(_))));
    let mut s = Session::new(model, opts()).unwrap();
    s.add_image(demo("example.jpg")).unwrap();
    assert!(matches!(s.push_assistant("x"), Err(Error::Conversation(_))));
}
