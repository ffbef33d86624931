//! The documents' side of the results files: finds what BENCHMARKS.md and
//! README.md publish and checks (or rewrites) it against the JSON.
//!
//! - A generated block is the text between a line
//!   `<!-- weir-load report KIND loadtest/results/FILE.json... -->` and the
//!   next `<!-- end -->` line: it must equal [`super::render`]'s output.
//! - A block that awaits measurement starts `<!-- weir-load awaits KIND
//!   FILE... -->`: its text is free (no figures) while a file is missing;
//!   once all exist, the check says so and `--write` renders it.
//! - A quoted figure is `<!-- fig ID -->TEXT<!-- /fig -->` inside prose;
//!   `loadtest/figures.json` maps each ID to a results file, a JSON pointer
//!   (`*` takes every element of an array, then `reduce` picks one) and a
//!   unit; TEXT must be what that renders to.
//! - Every `loadtest/results/*.json` a document names must exist and parse.
//! - Outside blocks, figures and code, no number may carry a unit of a
//!   measured figure (KiB, MiB, GiB, µs, req/s, runs/s, events/s,
//!   deliveries/s, or `/s` after a number): such a figure was typed by hand.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use super::{render, Results};
use crate::units;

/// Options of `weir-load report`.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Rewrite the generated blocks and quoted figures in place.
    #[arg(long, conflicts_with = "kind")]
    pub write: bool,
    /// The repository root (documents and results paths are relative to it).
    #[arg(long, default_value = ".")]
    pub root: std::path::PathBuf,
    /// Print one block instead: its kind (connections, fanout, …) …
    pub kind: Option<String>,
    /// … and its results files.
    pub files: Vec<String>,
}

/// The documents checked.
pub const DOCS: [&str; 2] = ["BENCHMARKS.md", "README.md"];
/// The quoted figures' table.
pub const FIGURES: &str = "loadtest/figures.json";

/// `weir-load report`: one block printed, or every document checked
/// (problems listed, an error if any) or rewritten.
#[allow(clippy::print_stdout, reason = "the block is the command's output")]
pub fn run(o: &Opts) -> anyhow::Result<()> {
    if let Some(kind) = &o.kind {
        let files: Vec<&str> = o.files.iter().map(String::as_str).collect();
        println!("{}", render(&o.root, kind, &files)?);
        return Ok(());
    }
    let mut problems = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(o.root.join(doc))?;
        let (fixed, mut found) = process(&o.root, doc, &text);
        if o.write && fixed != text {
            std::fs::write(o.root.join(doc), &fixed)?;
            eprintln!("weir-load: rewrote {doc}");
            // What the rewrite could not fix (a missing file, a bad marker).
            found = process(&o.root, doc, &fixed).1;
        }
        problems.extend(found);
    }
    for p in &problems {
        eprintln!("weir-load: {p}");
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{} problem(s) in the documents",
        problems.len()
    );
    Ok(())
}

/// Checks every document under `root`; the problems found.
pub fn check(root: &Path) -> Vec<String> {
    DOCS.iter()
        .flat_map(|doc| match std::fs::read_to_string(root.join(doc)) {
            Ok(text) => process(root, doc, &text).1,
            Err(e) => vec![format!("{doc}: {e}")],
        })
        .collect()
}

/// One quoted figure's source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    pub file: String,
    pub pointer: String,
    /// How the values a `*` pointer selects become one: median, min, max, last.
    #[serde(default)]
    pub reduce: Option<String>,
    /// kib, mib_of_kib, delta_kib, per_s, ms, us, thousands, percent.
    pub unit: String,
}

/// Renders quoted figure `f`.
pub fn figure(root: &Path, f: &Figure) -> Result<String, String> {
    let r = Results::load(root, &f.file).map_err(|e| e.to_string())?;
    let values: Vec<f64> = match f.pointer.split_once("/*") {
        Some((head, tail)) => {
            let items = match head {
                "" => r.reports.clone(),
                _ => r
                    .at(head)
                    .map_err(|e| e.to_string())?
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            };
            items
                .iter()
                .filter_map(|v| {
                    if tail.is_empty() {
                        v.as_f64()
                    } else {
                        v.pointer(tail)?.as_f64()
                    }
                })
                .collect()
        }
        None => vec![r.num(&f.pointer).map_err(|e| e.to_string())?],
    };
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let v = match f.reduce.as_deref() {
        None if values.len() == 1 => values[0],
        Some("median") if !sorted.is_empty() => sorted[(sorted.len() - 1) / 2],
        Some("min") if !sorted.is_empty() => sorted[0],
        Some("max") if !sorted.is_empty() => sorted[sorted.len() - 1],
        Some("last") if !values.is_empty() => values[values.len() - 1],
        other => {
            return Err(format!(
                "{}: {} values with reduce {other:?}",
                f.pointer,
                values.len()
            ))
        }
    };
    Ok(match f.unit.as_str() {
        "kib" => units::kib(v),
        "mib_of_kib" => units::mib_of_kib(v),
        "delta_kib" => units::delta_kib(v),
        "per_s" => units::per_s(v),
        "ms" => units::ms(v),
        "us" => units::us(v),
        "thousands" => units::thousands(v),
        "percent" => units::percent(v),
        other => return Err(format!("unknown unit `{other}`")),
    })
}

fn figures(root: &Path) -> Result<BTreeMap<String, Figure>, String> {
    let text =
        std::fs::read_to_string(root.join(FIGURES)).map_err(|e| format!("{FIGURES}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{FIGURES}: {e}"))
}

/// A document with its blocks and figures re-rendered, and its problems.
pub fn process(root: &Path, doc: &str, text: &str) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let figs = figures(root).unwrap_or_else(|e| {
        problems.push(e);
        BTreeMap::new()
    });
    let mut out = String::with_capacity(text.len());
    let mut awaited = Vec::new();
    let mut lines = text.split_inclusive('\n').enumerate();
    let mut in_code = false;
    while let Some((n, line)) = lines.next() {
        let at = format!("{doc}:{}", n + 1);
        if let Some(start) = Start::parse(line) {
            let mut old = String::new();
            let mut end = None;
            for (_, l) in lines.by_ref() {
                if l.trim_end() == "<!-- end -->" {
                    end = Some(l);
                    break;
                }
                old.push_str(l);
            }
            let Some(end) = end else {
                problems.push(format!("{at}: block without `<!-- end -->`"));
                out.push_str(line);
                out.push_str(&old);
                continue;
            };
            if !start.report {
                awaited.extend(start.files.iter().map(|f| (*f).to_owned()));
            }
            out.push_str(&block(root, &at, &start, line, &old, &mut problems));
            out.push_str(end);
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        out.push_str(&line_figures(
            root,
            &at,
            line,
            in_code,
            &figs,
            &mut problems,
        ));
    }
    problems.extend(results_named(root, doc, text, &awaited));
    (out, problems)
}

/// The first line of a block: `<!-- weir-load report KIND FILE... -->`,
/// or `<!-- weir-load awaits KIND FILE... -->` for results not measured yet.
struct Start<'a> {
    report: bool,
    kind: &'a str,
    files: Vec<&'a str>,
}

impl<'a> Start<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let rest = line
            .trim()
            .strip_prefix("<!-- weir-load ")?
            .strip_suffix("-->")?;
        let mut words = rest.split_whitespace();
        let report = match words.next()? {
            "report" => true,
            "awaits" => false,
            _ => return None,
        };
        let kind = words.next()?;
        let files: Vec<&str> = words.collect();
        (!files.is_empty()).then_some(Self {
            report,
            kind,
            files,
        })
    }
}

/// A block's new first line and content. A report block is rendered; an
/// awaiting block stays as written until all its files exist, and is then
/// rendered as a report block.
fn block(
    root: &Path,
    at: &str,
    start: &Start<'_>,
    line: &str,
    old: &str,
    problems: &mut Vec<String>,
) -> String {
    let files = start.files.join(" ");
    if !start.report {
        if start.files.iter().any(|f| !root.join(f).exists()) {
            if let Some(f) = hand_typed(old) {
                problems.push(format!(
                    "{at}: `{f}` in an awaiting block: figures come from results files"
                ));
            }
            return format!("{line}{old}");
        }
        problems.push(format!(
            "{at}: {files} exist now: `weir-load report --write` renders them here"
        ));
    }
    let head = format!("<!-- weir-load report {} {files} -->\n", start.kind);
    match render(root, start.kind, &start.files) {
        Ok(new) => {
            if start.report && old.trim() != new.trim() {
                problems.push(format!(
                    "{at}: the `{}` block differs from {files} rendered (run `weir-load report --write`)",
                    start.kind
                ));
            }
            format!("{head}{}\n", new.trim_end())
        }
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            format!("{line}{old}")
        }
    }
}

/// The line with its quoted figures re-rendered; hand-typed figures and
/// bad figures reported.
fn line_figures(
    root: &Path,
    at: &str,
    line: &str,
    in_code: bool,
    figs: &BTreeMap<String, Figure>,
    problems: &mut Vec<String>,
) -> String {
    let mut out = String::new();
    let mut rest = line;
    let mut prose = String::new();
    while let Some(i) = rest.find("<!-- fig ") {
        prose.push_str(&rest[..i]);
        out.push_str(&rest[..i]);
        let after = &rest[i + "<!-- fig ".len()..];
        let (Some(id_end), Some(close)) = (after.find(" -->"), after.find("<!-- /fig -->")) else {
            problems.push(format!("{at}: unclosed figure"));
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let id = &after[..id_end];
        let old = &after[id_end + 4..close];
        let new = match figs
            .get(id)
            .ok_or(format!("figure `{id}` is not in {FIGURES}"))
            .and_then(|f| figure(root, f))
        {
            Ok(new) => {
                if new != old {
                    problems.push(format!(
                        "{at}: figure `{id}` says `{old}`, its source says `{new}`"
                    ));
                }
                new
            }
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                old.to_owned()
            }
        };
        out.push_str(&format!("<!-- fig {id} -->{new}<!-- /fig -->"));
        rest = &after[close + "<!-- /fig -->".len()..];
    }
    prose.push_str(rest);
    out.push_str(rest);
    if !in_code {
        if let Some(f) = hand_typed(&prose) {
            problems.push(format!(
                "{at}: `{f}` is a figure without a results file (quote it as a figure or cut it)"
            ));
        }
    }
    out
}

/// Units of measured figures: a number followed by one of these is one.
const UNITS: [&str; 9] = [
    "KiB",
    "MiB",
    "GiB",
    "µs",
    "req/s",
    "runs/s",
    "events/s",
    "deliveries/s",
    "/s",
];

/// The first `number unit` in `text` outside inline code, if any.
pub fn hand_typed(text: &str) -> Option<String> {
    let prose: String = text.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    for unit in UNITS {
        for (i, _) in prose.match_indices(unit) {
            let before = prose[..i].strip_suffix(' ').unwrap_or(&prose[..i]);
            if before.ends_with(|c: char| c.is_ascii_digit()) {
                let start = before
                    .rfind(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
                    .map_or(0, |s| s + 1);
                return Some(format!("{}{}", &prose[start..i], unit));
            }
        }
    }
    None
}

/// Problems with the results files `text` names (those of awaiting blocks
/// may be missing).
fn results_named(root: &Path, doc: &str, text: &str, awaited: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("loadtest/results/") {
        let tail = &text[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "`)]\"'".contains(c))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches(['.', ',', ':', ';']);
        if name.ends_with(".json") && !awaited.iter().any(|a| a == name) {
            if let Err(e) = Results::load(root, name) {
                out.push(format!("{doc}: {e}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
