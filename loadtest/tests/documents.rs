//! BENCHMARKS.md and README.md against the results files: every generated
//! block re-renders to what the document holds, every quoted figure equals
//! its source, every named results file exists and parses, and no prose
//! carries a hand-typed figure (see `weir_load::render::doc`). After new
//! runs, `weir-load report --write` updates the documents.

use std::path::Path;

#[test]
fn the_documents_match_their_results_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = weir_load::render::doc::check(&root);
    assert!(
        problems.is_empty(),
        "{} problem(s); run `target/release/weir-load report --write` from the repository root after new runs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every results file in loadtest/results/ parses and is named by a
/// document (a file nobody cites is a figure nobody checks).
#[test]
fn every_results_file_parses_and_is_cited() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs: String = weir_load::render::doc::DOCS
        .iter()
        .map(|d| std::fs::read_to_string(root.join(d)).unwrap())
        .collect();
    let dir = root.join("loadtest/results");
    let mut seen = 0;
    // Results may sit in subfolders (loadtest/results/spread/ holds the
    // before/after runs); every file below the folder counts.
    let mut folders = vec![dir.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy();
            let name = rel.trim_start_matches("../").to_owned();
            weir_load::render::Results::load(&root, &name).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                docs.contains(&name),
                "{name} is not cited by BENCHMARKS.md or README.md"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no results files in {}", dir.display());
}
