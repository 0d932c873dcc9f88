//! Tokenizer tests against HF references (`scripts/gen_tokenizer_fixtures.py`):
//! - the real Llama 3.2 vocabulary, built from the demo GGUF `models/demo/mllama-demo-q4_0.gguf`
//!   (the trained demo of `scripts/train_demo.py`, converted by our `quantize`);
//! - the 512-token fixture vocabulary, loaded from `tests/fixtures/models/base/model/tokenizer.json`;
//! - error handling on synthetic GGUF files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mllama::format::gguf::{Array, GgufFile, GgufWriter, Value};
use mllama::models::mllama::keys;
use mllama::text::tokenizer::{TokenKind, Tokenizer, TOK_IGNORE_MERGES};
use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo_gguf() -> PathBuf {
    root().join("models/demo/mllama-demo-q4_0.gguf")
}

fn load_cases(name: &str) -> Json {
    let p = root().join("tests/fixtures/tokenizer").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn real_tokenizer() -> Tokenizer {
    let f = GgufFile::open(demo_gguf()).expect("open demo GGUF");
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&f).expect("tokenizer from demo GGUF");
    eprintln!(
        "Tokenizer::from_gguf (128257 tokens, 280147 merges): {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    tok
}

fn small_tokenizer() -> Tokenizer {
    let p = root().join("tests/fixtures/models/base/model/tokenizer.json");
    Tokenizer::from_json_file(&p).expect("small fixture tokenizer")
}

/// Feed `ids` one at a time; returns the pieces (the last one from `finish`).
fn stream_pieces(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut s = tok.stream(skip_special);
    let mut pieces: Vec<String> = ids.iter().map(|&i| s.push(i).expect("push")).collect();
    pieces.push(s.finish());
    pieces
}

/// Compare every case of a fixture file; returns (checks, failures) and prints the failures.
fn check_cases(tok: &Tokenizer, cases: &Json) -> (usize, Vec<String>) {
    let mut checks = 0;
    let mut fails = Vec::new();
    let mut check = |ok: bool, what: &str, text: &str, got: String, want: String| {
        checks += 1;
        if !ok {
            fails.push(format!("{what} for {text:?}:\n   got {got}\n  want {want}"));
        }
    };
    for c in cases["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = tok.encode(text, false).unwrap();
        check(
            got == want,
            "encode(add_bos=false)",
            text,
            format!("{got:?}"),
            format!("{want:?}"),
        );

        let want = ids(&c["ids_special"]);
        let got = tok.encode_tokenizer(text, true).unwrap();
        check(
            got == want,
            "encode_tokenizer(true)",
            text,
            format!("{got:?}"),
            format!("{want:?}"),
        );

        let want = c["processor_text"].as_str().unwrap();
        let got = tok.processor_text(text);
        check(
            got == want,
            "processor_text",
            text,
            format!("{got:?}"),
            format!("{want:?}"),
        );

        let want = ids(&c["ids_processor"]);
        let got = tok.encode(text, true).unwrap();
        check(
            got == want,
            "encode(add_bos=true)",
            text,
            format!("{got:?}"),
            format!("{want:?}"),
        );

        let want = ids(&c["ids_processor_nospecial"]);
        let got = tok.encode(&tok.processor_text(text), false).unwrap();
        check(
            got == want,
            "processor, add_special_tokens=False",
            text,
            format!("{got:?}"),
            format!("{want:?}"),
        );

        if let Some(chat) = c.get("ids_chat") {
            let want = ids(chat);
            let got = tok.encode(text, false).unwrap();
            check(
                got == want,
                "chat prompt, add_bos=false",
                text,
                format!("{got:?}"),
                format!("{want:?}"),
            );
        }

        let pids = ids(&c["ids_processor"]);
        for (skip, key) in [(false, "decoded"), (true, "decoded_skip")] {
            let want = c[key].as_str().unwrap();
            let got = tok.decode(&pids, skip).unwrap();
            check(
                got == want,
                &format!("decode(skip={skip})"),
                text,
                format!("{got:?}"),
                format!("{want:?}"),
            );
            let got = stream_pieces(tok, &pids, skip).concat();
            check(
                got == want,
                &format!("stream(skip={skip})"),
                text,
                format!("{got:?}"),
                format!("{want:?}"),
            );
        }
        // The plain ids round-trip to the text.
        let got = tok.decode(&ids(&c["ids"]), false).unwrap();
        check(
            got == text,
            "decode round trip",
            text,
            format!("{got:?}"),
            format!("{text:?}"),
        );
    }
    for c in cases["decode_cases"].as_array().unwrap() {
        let dids = ids(&c["ids"]);
        let label = format!("{dids:?}");
        for (skip, key) in [(false, "text"), (true, "text_skip")] {
            let want = c[key].as_str().unwrap();
            let got = tok.decode(&dids, skip).unwrap();
            check(
                got == want,
                &format!("decode(skip={skip})"),
                &label,
                format!("{got:?}"),
                format!("{want:?}"),
            );
            let pieces = stream_pieces(tok, &dids, skip);
            let got = pieces.concat();
            check(
                got == want,
                &format!("stream(skip={skip})"),
                &label,
                format!("{got:?}"),
                format!("{want:?}"),
            );
        }
    }
    if let Some(d) = cases.get("single_token_digest") {
        let n = d["n"].as_u64().unwrap() as u32;
        for (skip, key) in [(false, "fnv1a64"), (true, "fnv1a64_skip")] {
            let mut joined = Vec::new();
            for i in 0..n {
                if i > 0 {
                    joined.push(0);
                }
                joined.extend_from_slice(tok.decode(&[i], skip).unwrap().as_bytes());
            }
            let got = format!("{:016x}", fnv1a64(&joined));
            let want = d[key].as_str().unwrap().to_owned();
            check(
                got == want,
                &format!("single-token decode digest (skip={skip})"),
                "all ids",
                got,
                want,
            );
        }
    }
    for f in &fails {
        eprintln!("MISMATCH {f}");
    }
    (checks, fails)
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[test]
fn real_vocab_matches_hf() {
    let tok = real_tokenizer();
    let cases = load_cases("llama32_cases.json");
    let n_cases = cases["cases"].as_array().unwrap().len();
    assert!(n_cases >= 300, "only {n_cases} cases");
    let (checks, fails) = check_cases(&tok, &cases);
    eprintln!(
        "real vocabulary: {n_cases} cases, {checks} checks, {} mismatches",
        fails.len()
    );
    assert!(
        fails.is_empty(),
        "{} of {checks} checks differ from HF",
        fails.len()
    );
}

#[test]
fn small_vocab_matches_hf() {
    let tok = small_tokenizer();
    let cases = load_cases("small_cases.json");
    let n_cases = cases["cases"].as_array().unwrap().len();
    let (checks, fails) = check_cases(&tok, &cases);
    eprintln!(
        "small vocabulary: {n_cases} cases, {checks} checks, {} mismatches",
        fails.len()
    );
    assert!(
        fails.is_empty(),
        "{} of {checks} checks differ from HF",
        fails.len()
    );
}

#[test]
fn real_vocab_special_ids() {
    let tok = real_tokenizer();
    let meta = &load_cases("llama32_cases.json")["meta"];
    assert_eq!(tok.vocab_size(), 128257);
    assert_eq!(
        tok.vocab_size() as u64,
        meta["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(tok.bos_id(), Some(128000));
    assert_eq!(tok.eos_id(), Some(128009)); // tokenizer_config eos_token = <|eot_id|>
    assert_eq!(tok.eot_id(), Some(128009));
    assert_eq!(tok.eom_id(), Some(128008));
    assert_eq!(tok.pad_id(), Some(128004));
    assert_eq!(tok.image_id(), Some(128256));
    assert_eq!(tok.eos_ids(), &[128001, 128008, 128009]);
    assert!(tok.is_eos(128001) && tok.is_eos(128009) && !tok.is_eos(128000));
    assert!(tok.adds_bos());
    assert!(tok.chat_template().unwrap().contains("<|start_header_id|>"));
    for (name, id) in [
        ("<|begin_of_text|>", 128000),
        ("<|end_of_text|>", 128001),
        ("<|finetune_right_pad_id|>", 128004),
        ("<|start_header_id|>", 128006),
        ("<|end_header_id|>", 128007),
        ("<|eom_id|>", 128008),
        ("<|eot_id|>", 128009),
        ("<|python_tag|>", 128010),
        ("<|reserved_special_token_246|>", 128255),
        ("<|image|>", 128256),
    ] {
        assert_eq!(tok.id_of(name), Some(id), "{name}");
        assert_eq!(tok.token_str(id), Some(name));
        assert_eq!(tok.token_kind(id), Some(TokenKind::Control));
    }
    let specials: Vec<u32> = ids(&meta["special_ids"]);
    let control: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&i| tok.token_kind(i) == Some(TokenKind::Control))
        .collect();
    assert_eq!(control, specials);
    assert_eq!(tok.id_of("Ġthe"), Some(279));
    assert_eq!(tok.token_str(279), Some("Ġthe"));
    assert_eq!(tok.token_kind(279), Some(TokenKind::Normal));
    assert_eq!(tok.token_bytes(279).unwrap(), b" the");
    assert_eq!(tok.token_str(128257), None);
    assert_eq!(tok.token_kind(128257), None);
    assert_eq!(tok.id_of("no such token"), None);
}

#[test]
fn small_vocab_special_ids() {
    let tok = small_tokenizer();
    assert_eq!(tok.vocab_size(), 513);
    assert_eq!(tok.bos_id(), Some(496));
    assert_eq!(tok.eos_id(), Some(505));
    assert_eq!(tok.eot_id(), Some(505));
    assert_eq!(tok.eom_id(), Some(504));
    assert_eq!(tok.pad_id(), Some(500));
    assert_eq!(tok.image_id(), Some(512));
    assert_eq!(tok.eos_ids(), &[497, 504, 505]);
    assert!(tok.adds_bos());
    assert!(tok.chat_template().is_some());
    assert_eq!(tok.token_str(512), Some("<|image|>"));
}

/// The processor rules on a few hand-picked prompts (the fixtures check them on many more).
#[test]
fn processor_bos_rules() {
    let tok = real_tokenizer();
    let (bos, img) = (128000u32, 128256u32);
    let hi = tok.encode("Hi", false).unwrap();
    assert_eq!(hi, [13347]);
    let cat = |parts: &[&[u32]]| parts.concat();
    // Raw text: the processor prepends BOS to the text and the post-processor adds another.
    assert_eq!(tok.encode("Hi", true).unwrap(), cat(&[&[bos, bos], &hi]));
    // Leading images are moved in front of the processor's BOS.
    assert_eq!(
        tok.encode("<|image|>Hi", true).unwrap(),
        cat(&[&[bos, img, bos], &hi])
    );
    assert_eq!(
        tok.encode("<|image|><|image|>Hi", true).unwrap(),
        cat(&[&[bos, img, img, bos], &hi])
    );
    // BOS already in the text (anywhere): the text is left alone.
    assert_eq!(
        tok.encode("<|begin_of_text|>Hi", true).unwrap(),
        cat(&[&[bos, bos], &hi])
    );
    assert_eq!(
        tok.encode("<|image|><|begin_of_text|>Hi", true).unwrap(),
        cat(&[&[bos, img, bos], &hi])
    );
    // Tokenizer alone: one BOS.
    assert_eq!(
        tok.encode_tokenizer("Hi", true).unwrap(),
        cat(&[&[bos], &hi])
    );
    assert_eq!(
        tok.encode("<|image|>Hi", false).unwrap(),
        cat(&[&[img], &hi])
    );
    assert_eq!(tok.encode("", true).unwrap(), [bos, bos]);
    assert_eq!(tok.encode("", false).unwrap(), Vec::<u32>::new());
}

#[test]
fn stream_holds_back_split_characters() {
    let tok = real_tokenizer();
    let text = "héllo 你好世界 😀👍🏽 🇫🇷 done";
    let ids = tok.encode(text, false).unwrap();
    let pieces = stream_pieces(&tok, &ids, true);
    assert_eq!(pieces.concat(), text);
    // Some token ends inside a character: its push returns nothing, a later one the whole char.
    let mut s = tok.stream(true);
    let mut held_back = 0;
    for &id in &ids {
        let piece = s.push(id).unwrap();
        if !s.pending_bytes().is_empty() {
            held_back += 1;
        }
        assert!(
            !piece.contains('\u{fffd}'),
            "broken UTF-8 emitted: {piece:?}"
        );
    }
    assert!(
        held_back > 0,
        "no token of {text:?} ends inside a character"
    );
    assert_eq!(s.finish(), "");

    // A truncated character at the end becomes U+FFFD, like decode.
    let emoji = tok.encode("😀", false).unwrap();
    assert!(emoji.len() >= 2, "{emoji:?}");
    let head = &emoji[..emoji.len() - 1];
    let mut s = tok.stream(false);
    for &id in head {
        assert_eq!(s.push(id).unwrap(), "");
    }
    let tail = s.finish();
    assert_eq!(tail, tok.decode(head, false).unwrap());
    assert_eq!(tail, "\u{fffd}");
    // Special tokens: kept or skipped.
    let ids = tok.encode("<|begin_of_text|>Hi<|eot_id|>", false).unwrap();
    assert_eq!(
        stream_pieces(&tok, &ids, false).concat(),
        "<|begin_of_text|>Hi<|eot_id|>"
    );
    assert_eq!(stream_pieces(&tok, &ids, true).concat(), "Hi");
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = small_tokenizer();
    let bad_id = |e: &mllama::Error| {
        matches!(
            e,
            mllama::Error::BadArgument {
                name: "token id",
                ..
            }
        )
    };
    let e = tok.decode(&[1, 513], false).unwrap_err();
    assert!(bad_id(&e), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("513") && e.contains("outside"), "{e}");
    let mut s = tok.stream(false);
    let e = s.push(u32::MAX).unwrap_err();
    assert!(bad_id(&e), "{e:?}");
    assert_eq!(s.push(72).unwrap(), "i"); // the stream still works
    let e = tok.token_bytes(9999).unwrap_err();
    assert!(bad_id(&e) && e.to_string().contains("9999"), "{e:?}");
}

// ---- synthetic GGUF files ---------------------------------------------------------------------

/// The GPT-2 byte-level alphabet, indexed by byte.
fn byte_alphabet() -> Vec<String> {
    let mut bytes: Vec<u32> = (0x21..=0x7e)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![String::new(); 256];
    for (b, c) in bytes.into_iter().zip(chars) {
        table[b as usize] = char::from_u32(c).unwrap().to_string();
    }
    table
}

/// A tiny valid tokenizer: 256 byte tokens, "he", "hel", "Ġw", a special BOS and image, an
/// unused id, and a user-defined token.
fn mini_kv() -> Vec<(&'static str, Value)> {
    let mut tokens = byte_alphabet();
    let mut types = vec![1i32; 256];
    for (t, ty) in [
        ("he", 1),
        ("hel", 1),
        ("Ġw", 1),
        ("<|begin_of_text|>", 3),
        ("[PAD260]", 5),
        ("<|image|>", 3),
        ("<tool>", 4),
    ] {
        tokens.push(t.to_owned());
        types.push(ty);
    }
    let merges: Vec<String> = ["h e", "he l", "Ġ w"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vec![
        (keys::TOK_MODEL, Value::String("gpt2".into())),
        (keys::TOK_PRE, Value::String("llama-bpe".into())),
        (keys::TOK_TOKENS, Value::Array(Array::String(tokens))),
        (keys::TOK_TOKEN_TYPE, Value::Array(Array::I32(types))),
        (keys::TOK_MERGES, Value::Array(Array::String(merges))),
        (TOK_IGNORE_MERGES, Value::Bool(false)),
        (keys::TOK_BOS, Value::U32(259)),
        (keys::TOK_ADD_BOS, Value::Bool(true)),
        (keys::IMAGE_TOKEN_INDEX, Value::U32(261)),
    ]
}

fn gguf_from(kv: &[(&str, Value)]) -> GgufFile {
    let mut w = GgufWriter::new("mllama");
    for (k, v) in kv {
        w.add(k, v.clone()).unwrap();
    }
    let mut buf = Vec::new();
    w.write::<_, mllama::GgufError>(&mut buf, |_, _, _| Ok(()))
        .unwrap();
    GgufFile::from_bytes(buf).unwrap()
}

fn with(
    mut kv: Vec<(&'static str, Value)>,
    key: &'static str,
    v: Option<Value>,
) -> Vec<(&'static str, Value)> {
    kv.retain(|(k, _)| *k != key);
    if let Some(v) = v {
        kv.push((key, v));
    }
    kv
}

fn build_err(kv: &[(&str, Value)]) -> String {
    match Tokenizer::from_gguf(&gguf_from(kv)) {
        Ok(_) => panic!("tokenizer built from a bad GGUF"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn synthetic_gguf_tokenizer() {
    let tok = Tokenizer::from_gguf(&gguf_from(&mini_kv())).unwrap();
    assert_eq!(tok.vocab_size(), 263);
    let h = |s: &str| tok.id_of(s).unwrap();
    assert_eq!(
        tok.encode("hello world", false).unwrap(),
        [257, h("l"), h("o"), 258, h("o"), h("r"), h("l"), h("d")]
    );
    assert_eq!(
        tok.encode("<|image|>hel", true).unwrap(),
        [259, 261, 259, 257]
    );
    // The user-defined token is recognised in text, not skipped when decoding.
    assert_eq!(
        tok.encode("a<tool>b", false).unwrap(),
        [h("a"), 262, h("b")]
    );
    assert_eq!(tok.token_kind(262), Some(TokenKind::UserDefined));
    assert_eq!(tok.decode(&[259, 262, 257], true).unwrap(), "<tool>hel");
    // The unused id decodes to nothing and cannot be produced from text.
    assert_eq!(tok.token_kind(260), Some(TokenKind::Unused));
    assert_eq!(tok.token_str(260), Some("[PAD260]"));
    assert_eq!(tok.decode(&[256, 260, 256], false).unwrap(), "hehe");
    assert!(!tok.encode("[PAD260]", false).unwrap().contains(&260));
    assert_eq!(tok.eos_ids(), &[] as &[u32]);
}

#[test]
fn synthetic_gguf_defaults() {
    // No image key: found by name. add_bos_token false: the processor rewrite still inserts the
    // BOS string, but nothing is prepended.
    let kv = with(mini_kv(), keys::IMAGE_TOKEN_INDEX, None);
    let kv = with(kv, keys::TOK_ADD_BOS, Some(Value::Bool(false)));
    let tok = Tokenizer::from_gguf(&gguf_from(&kv)).unwrap();
    assert_eq!(tok.image_id(), Some(261));
    assert!(!tok.adds_bos());
    assert_eq!(tok.encode("<|image|>hel", true).unwrap(), [261, 259, 257]);
    assert_eq!(tok.encode_tokenizer("hel", true).unwrap(), [257]);
    // Generation eos ids are part of the stop set.
    let kv = with(
        mini_kv(),
        keys::G_EOS_IDS,
        Some(Value::Array(Array::U32(vec![262, 259]))),
    );
    let tok = Tokenizer::from_gguf(&gguf_from(&kv)).unwrap();
    assert_eq!(tok.eos_ids(), &[259, 262]);
    let kv = with(
        mini_kv(),
        keys::G_EOS_IDS,
        Some(Value::Array(Array::U32(vec![263]))),
    );
    assert!(build_err(&kv).contains("263"));
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

#[test]
fn gguf_without_tokenizer_is_an_error() {
    let e = build_err(&[("general.name", Value::String("no tokenizer".into()))]);
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
    let e = build_err(&with(mini_kv(), keys::TOK_TOKENS, None));
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("missing"),
        "{e}"
    );
    let e = build_err(&with(mini_kv(), keys::TOK_MERGES, None));
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = build_err(&with(mini_kv(), keys::TOK_TOKEN_TYPE, None));
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
}

#[test]
fn inconsistent_gguf_tokenizers_are_errors() {
    // token_type shorter than tokens
    let kv = with(
        mini_kv(),
        keys::TOK_TOKEN_TYPE,
        Some(Value::Array(Array::I32(vec![1; 200]))),
    );
    let e = build_err(&kv);
    assert!(e.contains("200") && e.contains("263"), "{e}");
    // wrong tokenizer model / pre-tokenizer
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_MODEL,
        Some(Value::String("llama".into())),
    ));
    assert!(e.contains("\"llama\""), "{e}");
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_PRE,
        Some(Value::String("qwen2".into())),
    ));
    assert!(e.contains("qwen2"), "{e}");
    // tokens not a string array
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_TOKENS,
        Some(Value::Array(Array::U32(vec![1, 2]))),
    ));
    assert!(e.contains("not a string array"), "{e}");
    // a merge that references an unknown token / is malformed
    let merges = vec!["h e".to_owned(), "x yz".to_owned()];
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_MERGES,
        Some(Value::Array(Array::String(merges))),
    ));
    assert!(e.contains("yz"), "{e}");
    let merges = vec!["hel".to_owned()];
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_MERGES,
        Some(Value::Array(Array::String(merges))),
    ));
    assert!(e.contains("tokenizer.ggml.merges[0]"), "{e}");
    // special ids outside the vocabulary or on an unused id
    let e = build_err(&with(mini_kv(), keys::TOK_BOS, Some(Value::U32(100_000))));
    assert!(
        e.contains("tokenizer.ggml.bos_token_id") && e.contains("100000"),
        "{e}"
    );
    let e = build_err(&with(
        mini_kv(),
        keys::IMAGE_TOKEN_INDEX,
        Some(Value::U32(260)),
    ));
    assert!(e.contains("260") && e.contains("no token"), "{e}");
    // an invalid token type
    let mut types = vec![1i32; 263];
    types[5] = 9;
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_TOKEN_TYPE,
        Some(Value::Array(Array::I32(types))),
    ));
    assert!(e.contains("token_type[5]"), "{e}");
    // duplicate tokens
    let mut tokens = byte_alphabet();
    tokens.extend(
        [
            "he",
            "hel",
            "Ġw",
            "<|begin_of_text|>",
            "[PAD260]",
            "<|image|>",
            "he",
        ]
        .map(String::from),
    );
    let e = build_err(&with(
        mini_kv(),
        keys::TOK_TOKENS,
        Some(Value::Array(Array::String(tokens))),
    ));
    assert!(e.contains("appears twice"), "{e}");
    // add_bos without a BOS id
    let e = build_err(&with(mini_kv(), keys::TOK_BOS, None));
    assert!(e.contains("add_bos_token"), "{e}");
}

#[test]
fn json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let e = Tokenizer::from_json_file(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{not json").unwrap();
    let e = Tokenizer::from_json_file(&bad).unwrap_err().to_string();
    assert!(e.contains("JSON"), "{e}");
    std::fs::write(&bad, r#"{"model": {"type": "Unigram"}}"#).unwrap();
    let e = Tokenizer::from_json_file(&bad).unwrap_err().to_string();
    assert!(e.contains("Unigram"), "{e}");
}

/// The real `tokenizer.json` through `from_json_file` agrees with the GGUF path. Needs the shared
/// fixtures next to the repository (as in CI) or MLLAMA_LLAMA32_TOKENIZER_JSON; a fresh clone
/// without them skips this one comparison (the GGUF path itself is checked above).
#[test]
fn real_json_matches_gguf() {
    let p = std::env::var("MLLAMA_LLAMA32_TOKENIZER_JSON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/tiny-mllama/model/tokenizer.json"
        )
        .into()
    });
    let p = Path::new(&p);
    if !p.exists() {
        eprintln!("{} not found; skipped", p.display());
        return;
    }
    let t0 = Instant::now();
    let json = Tokenizer::from_json_file(p).unwrap();
    eprintln!(
        "Tokenizer::from_json_file: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let gguf = real_tokenizer();
    assert_eq!(json.vocab_size(), gguf.vocab_size());
    for i in 0..gguf.vocab_size() as u32 {
        assert_eq!(json.token_str(i), gguf.token_str(i));
        assert_eq!(json.token_kind(i), gguf.token_kind(i));
    }
    assert_eq!(json.bos_id(), gguf.bos_id());
    assert_eq!(json.eos_ids(), gguf.eos_ids());
    let (checks, fails) = check_cases(&json, &load_cases("llama32_cases.json"));
    assert!(
        fails.is_empty(),
        "{} of {checks} checks differ",
        fails.len()
    );
}
