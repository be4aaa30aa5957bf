//! No import cycles between modules, in every crate of the workspace.
//!
//! Two sibling modules that import each other (agent `counters` ↔ `state`,
//! log `pipeline` ↔ `supervise`, lab `control_plane` ↔ `node`) can no
//! longer be read, tested or moved one at a time; docs/ARCHITECTURE.md
//! gives each crate's dependency order and this test keeps it true.
//!
//! How it reads the source: every `crate::…` and `super::…` path outside
//! comments and `#[cfg(test)]` modules (test code may reach anywhere), `use`
//! trees with braces included, is resolved to the longest module (file) it
//! names. A reference between a module and its own ancestor or descendant
//! is a parent using its child (or the child reaching `super::` items) and
//! is not a cycle; any other reference is an edge of the crate's module
//! graph, which must be acyclic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Source files of one crate (its `src/`), minus binaries (separate crates).
fn sources(src: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "main.rs") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(src, &mut out);
    out.sort();
    out
}

/// `src/agent/log/mod.rs` → `agent::log`; `src/agent/state.rs` → `agent::state`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
        m.pop();
    }
    m
}

/// The code of a file without comments and without its test modules.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn skip_ws(s: &[u8], pos: &mut usize) {
    while *pos < s.len() && s[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
}

/// Parse a path or `use` tree at `pos` (after its `crate::`/`super::`
/// prefix has been turned into `prefix`), collecting every full path.
fn parse_tree(s: &[u8], pos: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        skip_ws(s, pos);
        if *pos < s.len() && s[*pos] == b'{' {
            *pos += 1;
            loop {
                skip_ws(s, pos);
                if *pos >= s.len() || s[*pos] == b'}' {
                    *pos += 1;
                    return;
                }
                parse_tree(s, pos, prefix.clone(), out);
                skip_ws(s, pos);
                if *pos < s.len() && s[*pos] == b',' {
                    *pos += 1;
                }
            }
        }
        let start = *pos;
        while *pos < s.len() && (s[*pos].is_ascii_alphanumeric() || s[*pos] == b'_') {
            *pos += 1;
        }
        if *pos > start {
            prefix.push(String::from_utf8_lossy(&s[start..*pos]).into_owned());
        }
        if *pos > start && s[*pos..].starts_with(b"::") {
            *pos += 2;
            continue;
        }
        out.push(prefix);
        return;
    }
}

/// Every module path `module`'s code refers to through `crate::`/`super::`.
fn references(module: &Module, code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
        if boundary && (s[i..].starts_with(b"crate::") || s[i..].starts_with(b"super::")) {
            let mut base: Vec<String> = module.clone();
            let mut pos = i;
            if s[pos..].starts_with(b"crate::") {
                base.clear();
                pos += "crate::".len();
            }
            while s[pos..].starts_with(b"super::") {
                base.pop();
                pos += "super::".len();
            }
            let mut paths = vec![];
            parse_tree(s, &mut pos, vec![], &mut paths);
            out.extend(paths.into_iter().map(|p| base.iter().cloned().chain(p).collect()));
            i = pos.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Cycles of the module graph, as `a -> b -> a`, with the references that
/// make each edge. (The graph is kept per parent module so a coarser view —
/// siblings under their common parent — is one line away if ever wanted.)
fn cycles(files: &[(Module, String)]) -> Vec<String> {
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    // parent -> (from sibling -> to sibling -> example references)
    let mut graphs: BTreeMap<Module, BTreeMap<String, BTreeMap<String, Vec<String>>>> = BTreeMap::new();
    for (module, code) in files {
        for path in references(module, code) {
            let Some(target) = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)) else {
                continue;
            };
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == target.len() {
                continue; // ancestor or descendant (or itself)
            }
            let (parent, from, to) = (Module::new(), module.join("::"), target.join("::"));
            graphs.entry(parent).or_default().entry(from).or_default().entry(to).or_default().push(format!(
                "{} uses {}",
                module.join("::"),
                path.join("::")
            ));
        }
    }
    let mut found = vec![];
    for (parent, graph) in &graphs {
        // Depth-first search for a back edge.
        fn visit<'a>(
            n: &'a str,
            g: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>,
            stack: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
            found: &mut Vec<Vec<&'a str>>,
        ) {
            if let Some(i) = stack.iter().position(|s| *s == n) {
                found.push(stack[i..].iter().copied().chain([n]).collect());
                return;
            }
            if !done.insert(n) {
                return;
            }
            stack.push(n);
            for next in g.get(n).into_iter().flat_map(|e| e.keys()) {
                visit(next, g, stack, done, found);
            }
            stack.pop();
        }
        let mut done = BTreeSet::new();
        let mut loops = vec![];
        for n in graph.keys() {
            visit(n, graph, &mut vec![], &mut done, &mut loops);
        }
        for l in loops {
            let why: Vec<String> = l.windows(2).map(|w| graph[w[0]][w[1]][0].clone()).collect();
            found.push(format!(
                "{}: {} ({})",
                if parent.is_empty() { "crate root".to_string() } else { parent.join("::") },
                l.join(" -> "),
                why.join("; ")
            ));
        }
    }
    found
}

fn crate_files(src: &Path) -> Vec<(Module, String)> {
    sources(src).iter().map(|f| (module_of(src, f), code(&std::fs::read_to_string(f).unwrap()))).collect()
}

#[test]
fn no_import_cycles_between_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = vec![];
    for krate in ["src", "crates/render/src", "crates/lab/src"] {
        let files = crate_files(&root.join(krate));
        assert!(files.len() > 5, "{krate}: found only {} source files", files.len());
        problems.extend(cycles(&files).into_iter().map(|c| format!("{krate}: {c}")));
    }
    assert!(problems.is_empty(), "import cycles between modules:\n{}", problems.join("\n"));
}

#[test]
fn the_reader_finds_cycles_through_use_trees_and_inline_paths() {
    let m = |s: &str| -> Module { s.split("::").filter(|x| !x.is_empty()).map(String::from).collect() };
    let files = vec![
        (m(""), "pub mod a; pub mod b; pub mod c;".to_string()),
        (m("a"), code("use super::{b::{X, Y as Z}, c};\n// use crate::c::Nothing;")),
        (m("b"), "fn f() { crate::a::run(); }".to_string()),
        (m("c"), code("#[cfg(test)]\nmod tests { use crate::a::*; }")),
    ];
    let found = cycles(&files);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("crate root: a -> b -> a (a uses b::X; b uses a::run)"), "{found:?}");
    // Parents using children, children using super:: items: no cycle.
    let files = vec![
        (m(""), "use crate::a::b::Thing;".to_string()),
        (m("a"), "pub mod b; use self::b::Thing; use super::Root;".to_string()),
        (m("a::b"), "use super::super::Root; use crate::a::Helper;".to_string()),
    ];
    assert!(cycles(&files).is_empty());
}
