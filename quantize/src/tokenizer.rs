//! `tokenizer.json` + `tokenizer_config.json` → the GGUF `tokenizer.*` keys.
//!
//! The Llama 3 tokenizer is byte-level BPE ("gpt2" in GGUF terms) with the `llama-bpe`
//! pre-tokenizer regex. We store the vocabulary by id, ggml token types, the merges as
//! `"left right"` strings, the special ids and the chat template.

use std::path::Path;

use mllama::format::gguf::{Array, Value};
use mllama::models::mllama::keys;
use serde_json::Value as Json;

use crate::config::read_json;
use crate::error::{ConvertError, Result};

/// The Llama 3 pre-tokenizer split regex (as written in HF `tokenizer.json`).
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer ready to be written as GGUF metadata.
#[derive(Debug)]
pub struct TokenizerKv {
    /// The `tokenizer.*` keys and values, in the order to write them.
    pub kv: Vec<(&'static str, Value)>,
    /// Number of token ids (highest id + 1).
    pub vocab_size: usize,
    /// Problems that did not stop the conversion (holes in the ids, an unexpected
    /// pre-tokenizer, no chat template).
    pub warnings: Vec<String>,
}

fn token_id(vocab_lookup: &dyn Fn(&str) -> Option<u32>, v: Option<&Json>) -> Option<u32> {
    let s = match v? {
        Json::String(s) => s.as_str(),
        Json::Object(o) => o.get("content")?.as_str()?,
        _ => return None,
    };
    vocab_lookup(s)
}

/// Read `dir/tokenizer.json`, `dir/tokenizer_config.json` and the chat template
/// (`tokenizer_config.json`, `chat_template.json` or `chat_template.jinja`) and build the GGUF
/// `tokenizer.*` keys: tokens by id (holes filled with unused `[PADn]` entries), ggml token types,
/// merges, special ids, `add_bos_token` and the chat template. `bos_fallback` / `pad_fallback`
/// (from `config.json`) are used when `tokenizer_config.json` names no BOS / padding token.
///
/// # Errors
///
/// [`ConvertError::File`] naming the file: missing or not JSON, not a BPE model, a malformed
/// vocabulary, added token or merge.
pub fn convert(
    dir: &Path,
    bos_fallback: Option<u32>,
    pad_fallback: Option<u32>,
) -> Result<TokenizerKv> {
    let path = dir.join("tokenizer.json");
    let j = read_json(&path)?;
    let err = |m: String| ConvertError::file(&path, m);
    let model = j.get("model").ok_or_else(|| err("model: missing".into()))?;
    let mtype = model.get("type").and_then(Json::as_str).unwrap_or("");
    if mtype != "BPE" {
        return Err(err(format!(
            "model.type {mtype:?}: only byte-level BPE tokenizers (Llama 3) are supported"
        )));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| err("model.vocab: missing or not an object".into()))?;

    // id → (token, type)
    let mut max_id: i64 = -1;
    let mut entries: Vec<(u32, String, i32)> = Vec::with_capacity(vocab.len() + 300);
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .filter(|&i| i < (1 << 24))
            .ok_or_else(|| err(format!("model.vocab[{tok:?}]: bad id {id}")))?
            as u32;
        entries.push((id, tok.clone(), keys::token_type::NORMAL));
        max_id = max_id.max(id as i64);
    }
    if let Some(added) = j.get("added_tokens").and_then(Json::as_array) {
        for a in added {
            let id = a
                .get("id")
                .and_then(Json::as_u64)
                .filter(|&i| i < (1 << 24))
                .ok_or_else(|| err(format!("added_tokens: bad entry {a}")))?
                as u32;
            let content = a
                .get("content")
                .and_then(Json::as_str)
                .ok_or_else(|| err(format!("added_tokens: entry without content: {a}")))?;
            let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
            let ty = if special {
                keys::token_type::CONTROL
            } else {
                keys::token_type::USER_DEFINED
            };
            // An added token may repeat a vocab entry; the added definition wins.
            entries.retain(|e| e.0 != id);
            entries.push((id, content.to_owned(), ty));
            max_id = max_id.max(id as i64);
        }
    }
    let n = (max_id + 1) as usize;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; n];
    for (id, tok, ty) in entries {
        tokens[id as usize] = Some((tok, ty));
    }
    let mut warnings = Vec::new();
    let holes = tokens.iter().filter(|t| t.is_none()).count();
    if holes > 0 {
        warnings.push(format!(
            "{holes} token ids have no token; stored as unused [PADn] entries"
        ));
    }
    let (strings, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), keys::token_type::UNUSED)))
        .unzip();

    let merges_json = model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| err("model.merges: missing".into()))?;
    let mut merges = Vec::with_capacity(merges_json.len());
    for m in merges_json {
        match m {
            Json::String(s) => merges.push(s.clone()),
            Json::Array(p) if p.len() == 2 => {
                let a = p[0].as_str();
                let b = p[1].as_str();
                match (a, b) {
                    (Some(a), Some(b)) => merges.push(format!("{a} {b}")),
                    _ => return Err(err(format!("model.merges: bad entry {m}"))),
                }
            }
            _ => return Err(err(format!("model.merges: bad entry {m}"))),
        }
    }
    let ignore_merges = model
        .get("ignore_merges")
        .and_then(Json::as_bool)
        .unwrap_or(false);

    // Pre-tokenizer: we support the Llama 3 split.
    let pre_ok = j
        .get("pre_tokenizer")
        .map(|p| {
            p.to_string()
                .contains(&serde_json::to_string(LLAMA3_REGEX).unwrap_or_default())
        })
        .unwrap_or(false);
    if !pre_ok {
        warnings.push(
            "pre-tokenizer is not the Llama 3 regex split; writing \"llama-bpe\" anyway, tokenization may differ from HF"
                .into(),
        );
    }
    // BOS added by the post-processor when special tokens are requested?
    let post = j
        .get("post_processor")
        .map(|p| p.to_string())
        .unwrap_or_default();

    let lookup = |s: &str| strings.iter().position(|t| t == s).map(|i| i as u32);
    let cfg_path = dir.join("tokenizer_config.json");
    let tc = read_json(&cfg_path)?;
    let bos = token_id(&lookup, tc.get("bos_token")).or(bos_fallback);
    let eos = token_id(&lookup, tc.get("eos_token"));
    let pad = token_id(&lookup, tc.get("pad_token")).or(pad_fallback);
    let eot = lookup("<|eot_id|>");
    let eom = lookup("<|eom_id|>");
    let add_bos = bos
        .map(|b| post.contains("TemplateProcessing") && post.contains(&format!("[{b}]")))
        .unwrap_or(false);

    // Chat template: tokenizer_config.json, chat_template.json or chat_template.jinja.
    let mut template = match tc.get("chat_template") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Array(list)) => list
            .iter()
            .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|e| e.get("template"))
            .and_then(Json::as_str)
            .map(str::to_owned),
        _ => None,
    };
    if template.is_none() {
        let ct = dir.join("chat_template.json");
        if ct.exists() {
            template = read_json(&ct)?
                .get("chat_template")
                .and_then(Json::as_str)
                .map(str::to_owned);
        }
    }
    if template.is_none() {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            template = Some(
                std::fs::read_to_string(&jinja)
                    .map_err(|e| ConvertError::file(&jinja, format!("cannot read: {e}")))?,
            );
        }
    }
    if template.is_none() {
        warnings.push("no chat template found (base model?): `mllama run` will need --raw".into());
    }

    let vocab_size = strings.len();
    let mut kv: Vec<(&'static str, Value)> = vec![
        (keys::TOK_MODEL, Value::String("gpt2".into())),
        (keys::TOK_PRE, Value::String("llama-bpe".into())),
        (keys::TOK_TOKENS, Value::Array(Array::String(strings))),
        (keys::TOK_TOKEN_TYPE, Value::Array(Array::I32(types))),
        (keys::TOK_MERGES, Value::Array(Array::String(merges))),
        ("tokenizer.ggml.ignore_merges", Value::Bool(ignore_merges)),
    ];
    if let Some(b) = bos {
        kv.push((keys::TOK_BOS, Value::U32(b)));
    }
    if let Some(e) = eos {
        kv.push((keys::TOK_EOS, Value::U32(e)));
    }
    if let Some(e) = eot {
        kv.push((keys::TOK_EOT, Value::U32(e)));
    }
    if let Some(e) = eom {
        kv.push((keys::TOK_EOM, Value::U32(e)));
    }
    if let Some(p) = pad {
        kv.push((keys::TOK_PAD, Value::U32(p)));
    }
    kv.push((keys::TOK_ADD_BOS, Value::Bool(add_bos)));
    kv.push((keys::TOK_ADD_EOS, Value::Bool(false)));
    if let Some(t) = template {
        kv.push((keys::TOK_CHAT_TEMPLATE, Value::String(t)));
    }
    Ok(TokenizerKv {
        kv,
        vocab_size,
        warnings,
    })
}
