//! The module dependency graph of every crate in the workspace has no cycles: a module uses only
//! modules of its own or lower layers.
//!
//! Nodes are top-level modules and the children of folders (`kernels`, `kernels/x86`,
//! `models/mllama`); edges are the `crate::` and `super::` paths written in each file (comments
//! excluded, tests included). A parent and its own children may use each other. Run with
//! `--nocapture` to print the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path of a file relative to `src` (`kernels/x86/mod.rs` → `["kernels", "x86"]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn node_of(path: &[String]) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path[..path.len().min(2)].join("/")
    }
}

/// Strip `//` comments (doc comments included), keeping string contents irrelevant to paths.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` / `super::a…` path (and each item of `crate::{a, b::c}`), as segments
/// relative to the crate root.
fn paths_in(text: &str, parent: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (kw, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut rest = text;
        while let Some(i) = rest.find(kw) {
            let before = rest[..i].chars().last();
            rest = &rest[i + kw.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let groups: Vec<String> = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}').unwrap_or(inner.len());
                inner[..end]
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                vec![rest[..end].to_string()]
            };
            for g in groups {
                let mut segs = base.clone();
                segs.extend(
                    g.split("::")
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty() && s != "self"),
                );
                out.push(segs);
            }
        }
    }
    out
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mods: Vec<(Vec<String>, String)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(src).unwrap();
            (module_path(rel), std::fs::read_to_string(f).unwrap())
        })
        .collect();
    let nodes: BTreeSet<String> = mods.iter().map(|(p, _)| node_of(p)).collect();
    // `crate::Name` re-exported at the crate root (`pub use a::b::{Name, …};`) belongs to `a/b`.
    let root_text = mods
        .iter()
        .find(|(p, _)| p.is_empty())
        .map(|(_, t)| strip_comments(t))
        .unwrap_or_default();
    let mut reexports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for stmt in root_text.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, names) = match rest.split_once("::{") {
            Some((m, n)) => (m, n.trim_end_matches('}').to_string()),
            None => match rest.rsplit_once("::") {
                Some((m, n)) => (m, n.to_string()),
                None => continue,
            },
        };
        let segs: Vec<String> = module.split("::").map(|x| x.trim().to_string()).collect();
        for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            reexports.insert(n.to_string(), segs.clone());
        }
    }
    let resolve = |segs: &[String]| -> Option<String> {
        let expanded;
        let segs = match segs.first().and_then(|f| reexports.get(f)) {
            Some(m) => {
                expanded = m.clone();
                &expanded[..]
            }
            None => segs,
        };
        (1..=2)
            .rev()
            .filter(|&d| segs.len() >= d)
            .map(|d| segs[..d].join("/"))
            .find(|c| nodes.contains(c))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &mods {
        let a = node_of(path);
        let parent = &path[..path.len().saturating_sub(1)];
        for segs in paths_in(&strip_comments(text), parent) {
            let Some(b) = resolve(&segs) else { continue };
            let related = a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"));
            if b != a && !related {
                edges.entry(a.clone()).or_default().insert(b);
            }
        }
        edges.entry(a).or_default();
    }
    edges
}

/// The node cycles of `g` (strongly connected components with more than one node).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: reachability both ways.
    let reach = |from: &str, rev: bool| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            for (a, bs) in g {
                let next: Vec<&String> = if rev {
                    if bs.contains(&n) {
                        vec![a]
                    } else {
                        vec![]
                    }
                } else if *a == n {
                    bs.iter().collect()
                } else {
                    vec![]
                };
                stack.extend(next.into_iter().cloned());
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in g.keys() {
        if done.contains(n) {
            continue;
        }
        let fwd = reach(n, false);
        let scc: Vec<String> = reach(n, true).intersection(&fwd).cloned().collect();
        done.extend(scc.iter().cloned());
        if scc.len() > 1 {
            out.push(scc);
        }
    }
    out
}

#[test]
fn no_module_cycles_in_any_crate() {
    let mut report = String::new();
    let mut bad = Vec::new();
    for src in ["lib/src", "src", "quantize/src", "server/src"] {
        let g = graph(&root().join(src));
        assert!(g.len() > 3, "{src}: only {} modules found", g.len());
        report += &format!("{src}:\n");
        for (a, bs) in &g {
            let list: Vec<&str> = bs.iter().map(String::as_str).collect();
            report += &format!("  {a:<22} -> {}\n", list.join(", "));
        }
        for c in cycles(&g) {
            bad.push(format!("{src}: {}", c.join(" <-> ")));
        }
    }
    eprintln!("{report}");
    assert!(bad.is_empty(), "module cycles: {bad:?}\n{report}");
}

#[test]
fn the_checker_finds_a_cycle() {
    // The oracle itself: a two-node cycle is found, a chain is not.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert!(cycles(&g).is_empty());
    g.get_mut("c").unwrap().insert("b".into());
    assert_eq!(cycles(&g), vec![vec!["b".to_string(), "c".to_string()]]);
    // Paths inside comments do not count; grouped imports do.
    let p = paths_in(&strip_comments("use crate::{x::y, z}; // crate::w\n"), &[]);
    assert_eq!(p, vec![vec!["x", "y"], vec!["z"]]);
}

#[test]
fn the_library_has_no_cli_or_server_dependencies() {
    // `cargo tree -p mllama -e normal` must not list these; the manifest is the source of truth.
    let manifest = std::fs::read_to_string(root().join("lib/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("lib/Cargo.toml has [dependencies]")
        .split("\n[")
        .next()
        .unwrap();
    for name in ["clap", "ctrlc", "safetensors", "tokio", "axum", "hyper"] {
        assert!(
            !deps
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))
                    || l.trim_start().starts_with(&format!("{name}."))
                    || l.trim_start().starts_with(&format!("{name}="))),
            "lib/Cargo.toml depends on {name}"
        );
    }
}
