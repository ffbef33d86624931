//! What a scenario returns: summary tables for people, the same figures as
//! JSON for plots and for the smoke test, and named pass/fail checks.

use std::{fmt::Write as _, path::Path};

use serde_json::{json, Value};

/// One printed table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown under its title.
    pub fn render(&self) -> String {
        format!("### {}\n\n{}", self.title, self.markdown())
    }

    /// The table alone as Markdown, columns padded to their widest cell.
    pub fn markdown(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let _ = write!(s, " {c}{} |", " ".repeat(w - c.chars().count()));
            }
            s
        };
        let mut out = format!("{}\n|", line(&self.header));
        for w in &widths {
            let _ = write!(out, "{}|", "-".repeat(w + 2));
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

/// A scenario's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub tables: Vec<Table>,
    /// Every figure, for `--json` and plots.
    pub data: Value,
    /// Named checks (targets are checks too, marked `target:`).
    pub checks: Vec<(String, bool)>,
    pub load_start: f64,
    pub load_end: f64,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            tables: Vec::new(),
            data: json!({}),
            checks: Vec::new(),
            load_start: crate::sys::loadavg(),
            load_end: 0.0,
        }
    }

    pub fn check(&mut self, name: impl Into<String>, ok: bool) {
        self.checks.push((name.into(), ok));
    }

    /// Whether every check that is not a target passed (targets are
    /// reported, not enforced: a slow shared machine must not fail a run).
    pub fn sane(&self) -> bool {
        self.checks
            .iter()
            .all(|(name, ok)| *ok || name.starts_with("target:"))
    }

    pub fn finish(mut self) -> Self {
        self.load_end = crate::sys::loadavg();
        self
    }

    #[allow(clippy::print_stdout, reason = "the report is the command's output")]
    pub fn print(&self) {
        println!(
            "## {} ({}; load average {:.2} -> {:.2})\n",
            self.scenario,
            crate::sys::machine(),
            self.load_start,
            self.load_end
        );
        for t in &self.tables {
            println!("{}", t.render());
        }
        for (name, ok) in &self.checks {
            println!("- [{}] {name}", if *ok { "x" } else { " " });
        }
        println!();
    }

    /// The report as one element of a results file (format 2: see
    /// loadtest/README.md, "Results files"). `weir` says which gateway
    /// binary ran.
    pub fn to_json(&self, weir: &str) -> Value {
        json!({
            "format": 2,
            "scenario": self.scenario,
            "date": now_rfc3339(),
            "git": git_head(),
            "weir": weir,
            "machine": crate::sys::machine(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "load_average": {"start": self.load_start, "end": self.load_end},
            "data": self.data,
            "checks": self.checks.iter().map(|(n, ok)| json!({"name": n, "ok": ok})).collect::<Vec<_>>(),
        })
    }
}

/// Writes the reports as one JSON document (an array).
pub fn write_json(path: &Path, reports: &[Report], weir: &str) -> std::io::Result<()> {
    let all: Vec<Value> = reports.iter().map(|r| r.to_json(weir)).collect();
    let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Now, as `2026-12-04T16:59:59Z`.
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The commit of the working tree the run started in, and whether it had
/// changes (a figure from a dirty tree is not reproducible from git). The
/// results, plots and the two documents they render into do not count:
/// `run_all.sh` rewrites them as it goes, and they change no code.
fn git_head() -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) => json!({
            "commit": commit,
            "dirty": git(&[
                "status", "--porcelain", "--untracked-files=no", "--", ".",
                ":!loadtest/results", ":!loadtest/plots", ":!BENCHMARKS.md", ":!README.md",
            ])
            .is_some_and(|s| !s.is_empty()),
        }),
        None => Value::Null,
    }
}

pub use crate::units::{ms, thousands};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new("x", &["a", "bb"]);
        t.row(vec!["1".into(), "22222".into()]);
        let s = t.render();
        assert!(s.contains("| a | bb    |"), "{s}");
        assert!(s.contains("| 1 | 22222 |"), "{s}");
    }
}
