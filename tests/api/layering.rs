//! Layers point one way, checked on the source: the domain modules never
//! import the HTTP layer (only `http/` turns their errors into `ApiError`),
//! and `agent`, `work`, `bus` and `keys` import each other without a cycle.
//!
//! A module's imports are every `crate::<module>` path in its files, and the
//! top-level names of each `use crate::{…}` group, comments left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Modules that must not import `crate::http`.
const BELOW_HTTP: &[&str] = &[
    "agent",
    "audit",
    "edge",
    "stream",
    "bus",
    "work",
    "keys",
    "store",
    "domain",
    "webhooks",
    "providers",
];
/// Modules whose imports of each other must not form a cycle.
const NO_CYCLE: &[&str] = &["agent", "work", "bus", "keys"];

#[test]
fn domain_modules_do_not_import_the_http_layer() {
    let mut found = Vec::new();
    for module in BELOW_HTTP {
        for (file, deps) in module_files(module) {
            if deps.contains("http") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(
        found.is_empty(),
        "these files import crate::http (map errors in src/http/ instead): {found:?}"
    );
}

#[test]
fn agent_work_bus_and_keys_import_each_other_without_a_cycle() {
    let mut graph: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for module in NO_CYCLE {
        let deps = graph.entry(module).or_default();
        for (_, file_deps) in module_files(module) {
            deps.extend(
                file_deps
                    .into_iter()
                    .filter(|d| d != module && NO_CYCLE.contains(&d.as_str())),
            );
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {} (graph: {graph:?})", cycle.join(" -> "));
    }
}

#[test]
fn the_checks_see_grouped_nested_and_inline_imports_but_not_comments() {
    let text = "use crate::{\n    agent::Runtime,\n    http::{auth::Auth, errors::ApiError},\n};\n\
                // crate::bus in a comment\n/* crate::keys */\nfn f() { crate::work::go(); }\n\
                use crate::store::Store;";
    let deps = imports(text);
    let want: BTreeSet<String> = ["agent", "http", "work", "store"].map(String::from).into();
    assert_eq!(deps, want);
    let graph = BTreeMap::from([
        ("agent", BTreeSet::from(["work".to_owned()])),
        ("work", BTreeSet::from(["bus".to_owned()])),
        ("bus", BTreeSet::from(["agent".to_owned()])),
    ]);
    let cycle = find_cycle(&graph).expect("the cycle is found");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}

/// Each source file of `src/<module>` (a directory, a file, or both) with
/// the modules it imports.
fn module_files(module: &str) -> Vec<(PathBuf, BTreeSet<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        files.push(single);
    }
    collect_rs(&src.join(module), &mut files);
    assert!(!files.is_empty(), "src/{module} has no source files");
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read source");
            let deps = imports(&text);
            (f, deps)
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules `text` refers to.
fn imports(text: &str) -> BTreeSet<String> {
    let code = strip_comments(text);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            out.insert(ident(rest).to_owned());
        }
    }
    out.remove("");
    out
}

/// The first name of each item of a `{…}` group (up to its closing brace).
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut at_item, mut heads) = (0usize, true, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if at_item && !c.is_whitespace() => {
                heads.push(ident(&group[i..]).to_owned());
                at_item = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// `text` without `//` and `/* */` comments (doc comments included: an
/// intra-doc link is not an import).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |n| &rest[l + n..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b..].find("*/").map_or("", |e| &rest[b + e + 2..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// A cycle in `graph` as the path that closes it (`a -> b -> a`), if any.
fn find_cycle(graph: &BTreeMap<&str, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| p == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}
