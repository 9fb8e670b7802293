//! The house's one structural rule, checked on every `make test`: no two modules import each other, directly or
//! through others, in the server (`src/`) or the benchmark (`bench/src/`).
//!
//! A module may use its ancestors and descendants freely (a `mod.rs` declares its files; they share its types).
//! Between any two other modules, dependencies go one way. Where two siblings need each other, what they share
//! belongs in a module of its own. The check reads `crate::`, `super::` and `self::` paths in the source, which is
//! how a module reaches one that is not its own descendant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

#[test]
fn no_two_modules_of_the_server_import_each_other() {
    assert_no_cycles(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn no_two_modules_of_the_benchmark_import_each_other() {
    assert_no_cycles(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/src"));
}

#[test]
fn the_check_finds_a_cycle_between_siblings() {
    let modules = BTreeMap::from([
        (module("api"), String::new()),
        (module("api::tasks"), "use super::projects::paged;".to_string()),
        (module("api::projects"), "use crate::api::tasks::Task;".to_string()),
        (module("feed"), "use crate::api::tasks::Task;".to_string()),
    ]);
    let cycles = cycles(&dependencies(&modules));
    assert_eq!(cycles, vec![vec![module("api::projects"), module("api::tasks"), module("api::projects")]]);
}

fn assert_no_cycles(root: &Path) {
    let modules = read_modules(root, root);
    assert!(modules.len() > 3, "no sources under {}", root.display());
    let found = cycles(&dependencies(&modules));
    let shown: Vec<String> = found.iter().map(|c| c.iter().map(name).collect::<Vec<_>>().join(" -> ")).collect();
    assert!(found.is_empty(), "modules that import each other in {}:\n  {}", root.display(), shown.join("\n  "));
}

fn module(path: &str) -> Module {
    path.split("::").map(String::from).collect()
}

fn name(m: &Module) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

/// Every `.rs` file under `dir` as its module path (`feed/room/mod.rs` is `feed::room`), with its source.
fn read_modules(root: &Path, dir: &Path) -> BTreeMap<Module, String> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modules.extend(read_modules(root, &path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut m: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                m.pop();
            }
            modules.insert(m, std::fs::read_to_string(&path).unwrap());
        }
    }
    modules
}

/// For each module that another one (not its ancestor or descendant) uses, an edge between the two children of
/// their closest common ancestor: a cycle among those is a cycle between siblings.
fn dependencies(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let known: BTreeSet<&Module> = modules.keys().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, source) in modules {
        for path in paths(strip(source)) {
            let Some(to) = resolve(from, &path, &known) else { continue };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // an ancestor or a descendant
            }
            edges.entry(from[..=common].to_vec()).or_default().insert(to[..=common].to_vec());
        }
    }
    edges
}

/// The source without comments and without its unit tests (`#[cfg(test)] mod tests`, last in a file).
fn strip(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    source.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n")
}

/// The paths that start with `crate`, `super` or `self`, use-trees expanded (`crate::a::{b, c::d}` gives
/// `crate::a::b` and `crate::a::c::d`).
fn paths(source: String) -> Vec<Vec<String>> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        if starts_word && ["crate::", "super::", "self::"].iter().any(|p| rest.starts_with(p)) {
            i = tree(&chars, i, Vec::new(), &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads one use-tree from `i`, under `prefix`; returns where it ended.
fn tree(chars: &[char], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i < chars.len() && chars[i] == '{' {
            i += 1;
            loop {
                i = tree(chars, i, prefix.clone(), out);
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i == start {
            break;
        }
        prefix.push(chars[start..i].iter().collect());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            break;
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
    i
}

/// The module a path names (its longest prefix that is a module), seen from module `from`.
fn resolve(from: &Module, path: &[String], known: &BTreeSet<&Module>) -> Option<Module> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            base = from.clone();
            rest = &path[1..];
        }
        Some("super") => {
            base = from.clone();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    (0..=rest.len()).rev().map(|n| [base.clone(), rest[..n].to_vec()].concat()).find(|m| known.contains(m))
}

/// The cycles of a graph, each as the modules around it (the first again at the end).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    fn visit<'a>(
        node: &'a Module,
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<&'a Module, bool>,
        stack: &mut Vec<&'a Module>,
        found: &mut Vec<Vec<Module>>,
    ) {
        state.insert(node, true);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(true) => {
                    let at = stack.iter().position(|m| *m == next).unwrap();
                    found.push(stack[at..].iter().map(|m| (*m).clone()).chain([next.clone()]).collect());
                }
                Some(false) => {}
                None => visit(next, edges, state, stack, found),
            }
        }
        stack.pop();
        state.insert(node, false);
    }
    let (mut state, mut stack, mut found) = (BTreeMap::new(), Vec::new(), Vec::new());
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, edges, &mut state, &mut stack, &mut found);
        }
    }
    found
}
