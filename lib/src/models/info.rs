//! `mllama info`: a readable summary of any GGUF file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::format::gguf::{Array, GgufFile, Value};
use crate::models::mllama::keys;
use crate::quant::mix::FileType;
use crate::GgmlType;

/// Render a value for display, eliding long arrays.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let mut t: String = s.chars().take(80).collect();
            if t.len() < s.len() {
                t.push_str(&format!("… ({} bytes)", s.len()));
            }
            format!("{t:?}")
        }
        Value::Array(a) => format_array(a),
        Value::F32(x) => format!("{x}"),
        Value::F64(x) => format!("{x}"),
        Value::Bool(b) => format!("{b}"),
        other => other
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| other.as_u64().map(|u| u.to_string()))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

fn format_array(a: &Array) -> String {
    const SHOW: usize = 8;
    let n = a.len();
    let items: Vec<String> = match a {
        Array::String(v) => v.iter().take(SHOW).map(|s| format!("{s:?}")).collect(),
        Array::F32(v) => v.iter().take(SHOW).map(|x| x.to_string()).collect(),
        Array::F64(v) => v.iter().take(SHOW).map(|x| x.to_string()).collect(),
        Array::Bool(v) => v.iter().take(SHOW).map(|x| x.to_string()).collect(),
        Array::Array(v) => v.iter().take(SHOW).map(format_array).collect(),
        other => other
            .to_i64_vec()
            .unwrap_or_default()
            .into_iter()
            .take(SHOW)
            .map(|x| x.to_string())
            .collect(),
    };
    let more = if n > SHOW {
        format!(", … ({n} items)")
    } else {
        String::new()
    };
    format!("[{}{}]", items.join(", "), more)
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut i = 0;
    while x >= 1024.0 && i < U.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", U[i])
    }
}

/// The summary printed by `mllama info`. With `all_keys`, every metadata key is listed.
pub fn summary(f: &GgufFile, all_keys: bool) -> String {
    let mut s = String::new();
    let arch = f
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("(none)");
    let _ = writeln!(s, "file:          {}", f.path().display());
    let _ = writeln!(
        s,
        "format:        GGUF v{}, {} bytes ({}), alignment {}",
        f.version,
        f.file_len(),
        human_bytes(f.file_len()),
        f.alignment()
    );
    let _ = writeln!(s, "architecture:  {arch}");
    if let Some(name) = f.get("general.name").and_then(Value::as_str) {
        let _ = writeln!(s, "name:          {name}");
    }
    if let Some(ft) = f.get("general.file_type") {
        let name = ft
            .as_u64()
            .and_then(|id| {
                FileType::ALL
                    .into_iter()
                    .find(|f| f.llama_ftype() as u64 == id)
            })
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        let _ = writeln!(s, "file type:     {}{name}", format_value(ft));
    }

    // Dimensions: every `<arch>.*` key that is a number or short array, grouped by section.
    let prefix = format!("{arch}.");
    let dims: Vec<_> = f
        .metadata()
        .iter()
        .filter(|(k, v)| {
            k.starts_with(&prefix)
                && !k.contains(".convention.")
                && !matches!(v, Value::String(_))
                && v.as_array().is_none_or(|a| a.len() <= 16)
        })
        .collect();
    if !dims.is_empty() {
        let _ = writeln!(s, "\ndimensions:");
        for (k, v) in dims {
            let _ = writeln!(s, "  {:<48} {}", &k[prefix.len()..], format_value(v));
        }
    }

    let conv: Vec<_> = f
        .metadata()
        .iter()
        .filter(|(k, _)| k.contains(".convention."))
        .collect();
    let _ = writeln!(s, "\nconventions:");
    if conv.is_empty() {
        if arch == keys::ARCH {
            let _ = writeln!(
                s,
                "  (no convention keys: an Ollama file; its era decides them, see layout below)"
            );
        } else if arch == "llama" {
            let has = |t: &str| f.tensor_info(t).is_some();
            let _ = writeln!(
                s,
                "  (llama.cpp layout, run text-only: q/k rows in adjacent-pair RoPE order; output head {}; RoPE factors {})",
                if has(keys::T_OUTPUT) { "output.weight" } else { "tied to token_embd.weight" },
                if has(keys::T_ROPE_FREQS) { "from rope_freqs.weight" } else { "from the rope.* keys" }
            );
        } else {
            let _ = writeln!(s, "  (none)");
        }
    }
    for (k, v) in conv {
        let _ = writeln!(s, "  {:<48} {}", k, format_value(v));
    }

    // Tokenizer.
    let tokens = f
        .get(keys::TOK_TOKENS)
        .and_then(Value::as_array)
        .map(Array::len);
    let _ = writeln!(s, "\ntokenizer:");
    match tokens {
        Some(n) => {
            let model = f
                .get(keys::TOK_MODEL)
                .and_then(Value::as_str)
                .unwrap_or("?");
            let merges = f
                .get(keys::TOK_MERGES)
                .and_then(Value::as_array)
                .map(Array::len);
            let _ = writeln!(
                s,
                "  model {model}, vocabulary {n} tokens{}",
                merges.map(|m| format!(", {m} merges")).unwrap_or_default()
            );
            for (label, key) in [
                ("bos", keys::TOK_BOS),
                ("eos", keys::TOK_EOS),
                ("eot", keys::TOK_EOT),
                ("eom", keys::TOK_EOM),
                ("pad", keys::TOK_PAD),
            ] {
                if let Some(v) = f.get(key) {
                    let _ = writeln!(s, "  {label:<4} {}", format_value(v));
                }
            }
            if let Some(t) = f.get(keys::TOK_CHAT_TEMPLATE).and_then(Value::as_str) {
                let _ = writeln!(s, "  chat template: {} bytes", t.len());
            }
        }
        None => {
            let _ = writeln!(s, "  (none)");
        }
    }

    // Tensors by type.
    let mut by_type: BTreeMap<u32, (GgmlType, usize, u64, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = by_type.entry(t.ty.id()).or_insert((t.ty, 0, 0, 0));
        e.1 += 1;
        e.2 += t.size;
        e.3 += t.n_elements();
    }
    let total_bytes: u64 = f.tensors().iter().map(|t| t.size).sum();
    let total_params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    let _ = writeln!(
        s,
        "\ntensors:       {} ({} parameters, {} of data)",
        f.tensors().len(),
        total_params,
        human_bytes(total_bytes)
    );
    for (_, (ty, n, bytes, params)) in by_type {
        let _ = writeln!(
            s,
            "  {:<8} {:>6} tensors {:>14} params {:>12}",
            ty.name(),
            n,
            params,
            human_bytes(bytes)
        );
    }
    let group = |name: &str| {
        if name.starts_with("v.") {
            "vision"
        } else if name.starts_with("mm.") {
            "projector"
        } else {
            "text"
        }
    };
    for label in ["text", "vision", "projector"] {
        let (n, b) = f
            .tensors()
            .iter()
            .filter(|t| group(&t.name) == label)
            .fold((0, 0u64), |(n, b), t| (n + 1, b + t.size));
        if n > 0 {
            let _ = writeln!(s, "  {label:<10} {n:>5} tensors {:>12}", human_bytes(b));
        }
    }

    if all_keys {
        let _ = writeln!(s, "\nmetadata ({} keys):", f.metadata().len());
        for (k, v) in f.metadata() {
            let _ = writeln!(s, "  {:<52} {}", k, format_value(v));
        }
    } else {
        let _ = writeln!(
            s,
            "\n{} metadata keys (--keys lists them)",
            f.metadata().len()
        );
    }
    s
}
