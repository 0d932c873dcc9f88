//! The model's chat template rendered by us equals what HF rendered for every fixture case.

use mllama::text::chat::{ChatTemplate, Message, Part, Role};

fn messages(v: &serde_json::Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap() {
                "system" => Role::System,
                "user" => Role::User,
                _ => Role::Assistant,
            };
            let content = match &m["content"] {
                serde_json::Value::String(s) => vec![Part::Text { text: s.clone() }],
                serde_json::Value::Array(parts) => parts
                    .iter()
                    .map(|p| match p["type"].as_str().unwrap() {
                        "image" => Part::Image,
                        _ => Part::Text {
                            text: p["text"].as_str().unwrap().to_string(),
                        },
                    })
                    .collect(),
                other => panic!("content {other}"),
            };
            Message { role, content }
        })
        .collect()
}

#[test]
fn renders_like_hf() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = mllama::Model::load(root.join("models/demo/mllama-demo-q4_0.gguf")).unwrap();
    let src = model
        .tokenizer()
        .unwrap()
        .chat_template()
        .unwrap()
        .to_string();
    let mut t = ChatTemplate::new(&src, "<|begin_of_text|>").unwrap();
    t.date_string = Some("26 Jul 2024".into());
    let mut n = 0;
    for entry in glob(&root.join("tests/fixtures/models")) {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&entry).unwrap()).unwrap();
        if case.get("messages").is_none() || case["messages"].is_null() {
            continue;
        }
        let rendered = t.render(&messages(&case["messages"]), true).unwrap();
        assert_eq!(
            rendered,
            case["prompt"].as_str().unwrap(),
            "{}",
            entry.display()
        );
        n += 1;
    }
    assert!(n >= 8, "{n} chat cases");
    // Images with a system message: the template refuses, as HF's does.
    let bad = vec![
        Message::text(Role::System, "Be brief."),
        Message {
            role: Role::User,
            content: vec![Part::Image, Part::Text { text: "hi".into() }],
        },
    ];
    let e = t.render(&bad, true).unwrap_err();
    assert!(matches!(e, mllama::Error::Template(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("incompatible with system messages"), "{e}");
}

fn glob(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for m in std::fs::read_dir(dir).unwrap().flatten() {
        let cases = m.path().join("cases");
        if let Ok(rd) = std::fs::read_dir(cases) {
            for c in rd.flatten() {
                let j = c.path().join("case.json");
                if j.exists() {
                    out.push(j);
                }
            }
        }
    }
    out.sort();
    out
}
