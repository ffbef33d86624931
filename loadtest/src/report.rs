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

    /// The table as Markdown (pasteable into BENCHMARKS.md).
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.len());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let _ = write!(s, " {c:<w$} |");
            }
            s
        };
        let mut out = format!("### {}\n\n{}\n|", self.title, line(&self.header));
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

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "machine": crate::sys::machine(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "load_average": {"start": self.load_start, "end": self.load_end},
            "data": self.data,
            "checks": self.checks.iter().map(|(n, ok)| json!({"name": n, "ok": ok})).collect::<Vec<_>>(),
        })
    }
}

/// Writes the reports as one JSON document (an array).
pub fn write_json(path: &Path, reports: &[Report]) -> std::io::Result<()> {
    let all: Vec<Value> = reports.iter().map(Report::to_json).collect();
    let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Milliseconds with a sensible number of decimals.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3} ms")
    } else if v < 100.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

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
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(ms(0.25), "0.250 ms");
    }
}
