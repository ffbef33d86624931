//! The document checks on a small repository made in a temporary dir: a
//! drifted block, a drifted or hand-typed figure and a missing results file
//! are each found, and `--write` puts the rendered text back.

use super::*;

/// A root with one connections results file and a figure table.
fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("loadtest/results")).unwrap();
    let report = serde_json::json!([{
        "format": 2, "scenario": "connections", "date": "2026-12-04T17:00:00Z",
        "git": {"commit": "0123456789abcdef", "dirty": false}, "weir": "target/release/weir",
        "machine": "2 cores", "command": "target/release/weir-load connections --connections 100",
        "load_average": {"start": 1.0, "end": 1.5},
        "data": {"opened": 100, "ws_percent": 50, "rss_per_conn_kib": 4.6537, "rss_before_kib": 15844,
                 "rss_after_ping_kib": 104264, "connect_rate_per_s": 8814.13, "pinged": 100, "still_open": 100},
        "checks": [],
    }]);
    std::fs::write(
        dir.path().join("loadtest/results/c.json"),
        report.to_string(),
    )
    .unwrap();
    let figs = serde_json::json!({
        "rss": {"file": "loadtest/results/c.json", "pointer": "/0/data/rss_per_conn_kib", "unit": "kib"},
        "after": {"file": "loadtest/results/c.json", "pointer": "/*/data/rss_after_ping_kib", "reduce": "max", "unit": "mib_of_kib"},
    });
    std::fs::write(dir.path().join(FIGURES), figs.to_string()).unwrap();
    dir
}

fn doc(block: &str) -> String {
    format!("# x\n\n<!-- weir-load report connections loadtest/results/c.json -->\n{block}<!-- end -->\n\nRSS <!-- fig rss -->4.65 KiB<!-- /fig --> each, <!-- fig after -->101.8 MiB<!-- /fig --> in all.\n")
}

#[test]
fn a_rendered_document_checks_clean_and_a_drifted_one_does_not() {
    let dir = root();
    let block = render(dir.path(), "connections", &["loadtest/results/c.json"]).unwrap();
    assert!(block.contains("| 4.65 KiB "), "{block}");
    assert!(block.contains("15.5 MiB → 101.8 MiB"), "{block}");
    assert!(
        block.contains("target/release/weir-load connections --connections 100"),
        "{block}"
    );
    assert!(block.contains("commit `0123456789`"), "{block}");
    assert!(
        block.contains("Target ≤ 8.00 KiB per connection at 100 connections: **met** (4.65 KiB)"),
        "{block}"
    );
    let good = doc(&block);
    let (same, problems) = process(dir.path(), "B.md", &good);
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(same, good);

    // A figure edited by hand inside the block is found and put back.
    let drifted = good.replace("| 4.65 KiB ", "| 4.60 KiB ");
    let (fixed, problems) = process(dir.path(), "B.md", &drifted);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("B.md:3: the `connections` block differs"),
        "{problems:?}"
    );
    assert_eq!(fixed, good);
}

#[test]
fn quoted_figures_must_equal_their_source() {
    let dir = root();
    let block = render(dir.path(), "connections", &["loadtest/results/c.json"]).unwrap();
    let text = doc(&block).replace("-->4.65 KiB<", "-->4.6 KiB<");
    let (fixed, problems) = process(dir.path(), "R.md", &text);
    let line = text.lines().position(|l| l.starts_with("RSS ")).unwrap() + 1;
    assert_eq!(
        problems,
        [format!(
            "R.md:{line}: figure `rss` says `4.6 KiB`, its source says `4.65 KiB`"
        )]
    );
    assert_eq!(fixed, doc(&block));
    let unknown = doc(&block).replace("fig rss", "fig nope");
    let (_, problems) = process(dir.path(), "R.md", &unknown);
    assert!(
        problems[0].contains("figure `nope` is not in loadtest/figures.json"),
        "{problems:?}"
    );
}

#[test]
fn hand_typed_figures_and_missing_results_are_found() {
    let dir = root();
    let text = "Fan-out reached 464,330 deliveries/s.\n\n```sh\nexample 10 KiB\n```\n\
                Sized `--limit 1 MiB` in code is fine, see loadtest/results/gone.json.\n";
    let (_, problems) = process(dir.path(), "R.md", text);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("R.md:1: `464,330 deliveries/s` is a figure without a results file"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("R.md: loadtest/results/gone.json:"),
        "{problems:?}"
    );
    assert_eq!(hand_typed("opened at 8,814/s"), Some("8,814/s".into()));
    assert_eq!(hand_typed("at 10× the load, 2 cores"), None);
    assert_eq!(hand_typed("a 2.3 MiB step"), Some("2.3 MiB".into()));
}

#[test]
fn figures_reduce_arrays_and_refuse_ambiguity() {
    let dir = root();
    let f = |pointer: &str, reduce: Option<&str>| Figure {
        file: "loadtest/results/c.json".into(),
        pointer: pointer.into(),
        reduce: reduce.map(str::to_owned),
        unit: "thousands".into(),
    };
    assert_eq!(
        figure(dir.path(), &f("/0/data/opened", None)),
        Ok("100".into())
    );
    assert_eq!(
        figure(dir.path(), &f("/*/data/opened", Some("median"))),
        Ok("100".into())
    );
    assert!(figure(dir.path(), &f("/0/data/absent", None))
        .unwrap_err()
        .contains("no figure at /0/data/absent"));
}

/// An awaiting block keeps its prose while its file is missing (and may
/// name it), must hold no figure, and becomes a report block once the file
/// exists.
#[test]
fn awaiting_blocks_wait_for_their_files() {
    let dir = root();
    let waiting = "<!-- weir-load awaits connections loadtest/results/later.json -->\n\
                   Awaits re-measurement: `weir-load connections --json loadtest/results/later.json`.\n\
                   <!-- end -->\n";
    let (same, problems) = process(dir.path(), "B.md", waiting);
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(same, waiting);
    let typed = waiting.replace("Awaits re-measurement:", "Was 4.65 KiB:");
    let (_, problems) = process(dir.path(), "B.md", &typed);
    assert!(
        problems[0].contains("`4.65 KiB` in an awaiting block"),
        "{problems:?}"
    );

    std::fs::copy(
        dir.path().join("loadtest/results/c.json"),
        dir.path().join("loadtest/results/later.json"),
    )
    .unwrap();
    let (rendered, problems) = process(dir.path(), "B.md", waiting);
    assert!(problems[0].contains("exist now"), "{problems:?}");
    let block = render(dir.path(), "connections", &["loadtest/results/later.json"]).unwrap();
    assert_eq!(
        rendered,
        format!(
            "<!-- weir-load report connections loadtest/results/later.json -->\n{}\n<!-- end -->\n",
            block.trim_end()
        )
    );
    assert_eq!(
        process(dir.path(), "B.md", &rendered).1,
        Vec::<String>::new()
    );
}
