//! The layering rule: no source file imports a file that imports it back, directly or through
//! others. A crate's files are modules (`src/bundle/read.rs` is `bundle::read`, a `mod.rs` is
//! its directory's module); `a` imports `b` when `a`'s code names a path `crate::b...` or
//! `super::...` that resolves to `b` (`use` lists with braces included). Comments and a trailing
//! `#[cfg(test)] mod tests` are not code here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name -> the modules of the same crate it imports.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Graph {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, text)| {
            let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
            let here = if is_dir_module(src, module) { module.as_str() } else { parent };
            let mut deps = BTreeSet::new();
            for path in paths(&code(text)) {
                let full = if let Some(rest) = path.strip_prefix("crate::") {
                    rest.to_string()
                } else if let Some(rest) = path.strip_prefix("super::") {
                    let up = here.rsplit_once("::").map_or("", |(p, _)| p);
                    join(up, rest)
                } else {
                    continue;
                };
                if let Some(m) = longest_module(&full, &modules) {
                    if m != *module {
                        deps.insert(m);
                    }
                }
            }
            (module.clone(), deps)
        })
        .collect()
}

/// The groups of modules that import each other (strongly connected, more than one module).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Tarjan's algorithm.
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("a source directory").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(root).expect("inside the root").with_extension("");
            let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod").collect();
            let module = match parts.as_slice() {
                ["lib"] | ["main"] => String::new(),
                p => p.join("::"),
            };
            out.insert(module, std::fs::read_to_string(&path).expect("a readable source file"));
        }
    }
}

fn is_dir_module(src: &Path, module: &str) -> bool {
    module.is_empty() || src.join(module.replace("::", "/")).join("mod.rs").exists()
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}::{b}")
    }
}

fn longest_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().map(|k| parts[..k].join("::")).find(|m| modules.contains(m))
}

/// The text without comment lines and without a trailing `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Every path that starts with `crate::` or `super::`, with `use` groups expanded:
/// `crate::a::{b, c::{d}}` gives `crate::a::b` and `crate::a::c::d`.
fn paths(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':'));
        if starts {
            let (found, end) = tree(code, i, "");
            out.extend(found);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses a path or a `prefix::{...}` tree at `start`; returns its paths and where it ends.
fn tree(code: &str, start: usize, prefix: &str) -> (Vec<String>, usize) {
    let bytes = code.as_bytes();
    let mut i = start;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
        i += 1;
    }
    let head = format!("{prefix}{}", &code[start..i]);
    if i < bytes.len() && bytes[i] == b'{' && head.ends_with("::") {
        let mut out = Vec::new();
        let mut j = i + 1;
        loop {
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b',' || bytes[j] == b'\n') {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] == b'}' {
                return (out, j + 1);
            }
            let (inner, end) = tree(code, j, &head);
            out.extend(inner);
            // skip `as alias` and anything else up to the next item
            j = end;
            while j < bytes.len() && bytes[j] != b',' && bytes[j] != b'}' {
                j += 1;
            }
        }
    }
    (vec![head.trim_end_matches("::").to_string()], i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_groups_expand_and_cycles_are_found() {
        let got = paths("use crate::a::{b, c::{d, e as f}};\nlet x = super::g::h(1); my_crate::z;");
        assert_eq!(got, ["crate::a::b", "crate::a::c::d", "crate::a::c::e", "super::g::h"]);
        let g: Graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect();
        assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    }
}
