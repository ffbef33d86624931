//! The repository's documents cite only documents it holds: `protocol/` is
//! the contract, and a pointer to a file that is not here (an old brief, a
//! renamed page) sends a reader nowhere.

use std::{collections::HashSet, path::Path, process::Command};

/// Every `name.md` mentioned in a tracked text file names a Markdown file
/// of the repository: by its path (from the citing file's folder or the
/// root) when it has one, else by its file name somewhere in the tree.
#[test]
fn every_cited_markdown_file_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    let files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let names: HashSet<&str> = files
        .iter()
        .filter(|f| f.ends_with(".md"))
        .map(|f| f.rsplit('/').next().unwrap_or(f))
        .collect();
    let mut missing = Vec::new();
    for file in files.iter().filter(|f| !FIXTURES.contains(&f.as_str())) {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue; // binary or unreadable: not a document
        };
        let dir = Path::new(file).parent().unwrap_or(Path::new(""));
        for cited in cited_markdown(&text) {
            let found = if cited.contains('/') {
                let c = cited.trim_start_matches("./");
                inside(root, &root.join(dir).join(c)) || inside(root, &root.join(c))
            } else {
                names.contains(cited)
            };
            if !found {
                missing.push(format!("{file}: {cited}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited but not in the repository:\n{}",
        missing.join("\n")
    );
}

/// Files whose `.md` names are test data (made-up documents).
const FIXTURES: &[&str] = &[
    "loadtest/src/render/doc/tests.rs",
    "tests/api/docs.rs", // this file: its own examples
];

/// Whether `path` exists and lies inside the repository (`../shared/x.md`
/// may exist on a developer's machine, but not in a clone).
fn inside(root: &Path, path: &Path) -> bool {
    match (path.canonicalize(), root.canonicalize()) {
        (Ok(p), Ok(r)) => p.starts_with(r),
        _ => false,
    }
}

#[test]
fn citations_are_found_and_paths_outside_the_repository_are_not_followed() {
    let text = "see ../shared/API.md, protocol/rest.md. Not a.mdx or x.md5";
    let cited: Vec<&str> = cited_markdown(text).collect();
    assert_eq!(cited, ["../shared/API.md", "protocol/rest.md"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(inside(root, &root.join("protocol/rest.md")));
    assert!(!inside(root, &root.join("../shared/API.md")));
}

/// The `….md` tokens of `text`: runs of path characters ending in `.md`.
fn cited_markdown(text: &str) -> impl Iterator<Item = &str> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    text.match_indices(".md").filter_map(move |(i, _)| {
        let end = i + 3;
        if text[end..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return None; // `.mdx`, `.md5`: not a Markdown file name
        }
        let start = text[..i]
            .char_indices()
            .rev()
            .find(|&(_, c)| !is_path(c))
            .map_or(0, |(j, c)| j + c.len_utf8());
        let token = text[start..end].trim_start_matches(['.', '/']);
        (token.len() > 3 && !token.starts_with('/')).then_some(&text[start..end])
    })
}
