//! Renders results files (`loadtest/results/*.json`) into the Markdown that
//! BENCHMARKS.md publishes: the command that wrote the file, when and on
//! what, the tables, computed ratios with the bound they are, and the
//! "target met/missed" verdicts. Nothing in those blocks is typed by hand,
//! so a figure cannot drift from its raw result (issue 15); [`doc`] finds
//! the blocks in the documents and checks or rewrites them.
//!
//! A results file is a JSON array of reports (`Report::to_json`): format 2
//! carries `format`, `date`, `git`, `weir`; format 1 (before issue 15) does
//! not, and the renderers say so instead of guessing.

mod compare;
pub mod doc;
mod drain;
mod failover;
mod fallback;
mod nchan;
mod ratio;
mod requests;
mod shards;
mod streams;
mod transport;
mod webhooks;

use std::path::Path;

use serde_json::Value;

pub use ratio::{Bound, RateRatio};

/// Why a block could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not JSON: {1}")]
    Parse(String, serde_json::Error),
    #[error("{file}: no figure at {pointer}")]
    Missing { file: String, pointer: String },
    #[error("{0}: expected a non-empty array of reports")]
    Shape(String),
    #[error("unknown kind `{0}` (connections, fanout, fanout-nchan, drain, fallback, proxy, proxy-repeat, peer, runs, soak, rest, bus, shards, failover, edge, transport, webhooks, compare)")]
    Kind(String),
}

/// A results file, read.
pub struct Results {
    /// Its path as the document names it.
    pub name: String,
    pub reports: Vec<Value>,
}

impl Results {
    /// Reads `root/name`.
    pub fn load(root: &Path, name: &str) -> Result<Self, RenderError> {
        let text = std::fs::read_to_string(root.join(name))
            .map_err(|e| RenderError::Read(name.into(), e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| RenderError::Parse(name.into(), e))?;
        match v {
            Value::Array(reports) if !reports.is_empty() => Ok(Self {
                name: name.into(),
                reports,
            }),
            _ => Err(RenderError::Shape(name.into())),
        }
    }

    /// The number at `pointer` (a JSON pointer into the whole file).
    pub fn num(&self, pointer: &str) -> Result<f64, RenderError> {
        self.at(pointer)?
            .as_f64()
            .ok_or_else(|| self.missing(pointer))
    }

    /// The value at `pointer`.
    pub fn at(&self, pointer: &str) -> Result<&Value, RenderError> {
        self.pointer(pointer).ok_or_else(|| self.missing(pointer))
    }

    fn pointer(&self, pointer: &str) -> Option<&Value> {
        let (first, rest) = pointer
            .strip_prefix('/')?
            .split_once('/')
            .unwrap_or((pointer.trim_start_matches('/'), ""));
        let report = self.reports.get(first.parse::<usize>().ok()?)?;
        if rest.is_empty() {
            Some(report)
        } else {
            report.pointer(&format!("/{rest}"))
        }
    }

    fn missing(&self, pointer: &str) -> RenderError {
        RenderError::Missing {
            file: self.name.clone(),
            pointer: pointer.into(),
        }
    }
}

/// A number inside one report (`None` when absent: format 1 files lack
/// some figures).
pub fn opt(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// Renders one block: the kind names the renderer, `files` the results
/// files under `root` (their reports in one list, in order).
pub fn render(root: &Path, kind: &str, files: &[&str]) -> Result<String, RenderError> {
    let mut r = Results::load(root, files.first().copied().unwrap_or_default())?;
    for f in files.iter().skip(1) {
        let more = Results::load(root, f)?;
        r.name = format!("{}, {}", r.name, more.name);
        r.reports.extend(more.reports);
    }
    let body = match kind {
        "connections" => streams::connections(&r)?,
        "fanout" => streams::fanout(&r)?,
        "fanout-nchan" => nchan::fanout_nchan(&r)?,
        "drain" => drain::drain(&r)?,
        "fallback" => fallback::fallback(&r)?,
        "soak" => streams::soak(&r)?,
        "bus" => streams::bus(&r)?,
        "shards" => shards::shards(&r)?,
        "failover" => failover::failover(&r)?,
        "proxy" => requests::proxy(&r)?,
        "proxy-repeat" => requests::proxy_repeat(&r)?,
        "peer" => requests::peer(&r)?,
        "runs" => requests::runs(&r)?,
        "rest" => requests::rest(&r)?,
        "edge" => requests::edge(&r)?,
        "webhooks" => webhooks::webhooks(&r)?,
        "transport" => transport::transport(&r)?,
        "compare" => compare::compare(&r)?,
        other => return Err(RenderError::Kind(other.into())),
    };
    Ok(format!("{}{body}", provenance(&r)))
}

/// The commands that wrote the file (each once), then when, on what, from
/// which commit, and the load average around the run.
fn provenance(r: &Results) -> String {
    let mut commands: Vec<&str> = r
        .reports
        .iter()
        .filter_map(|v| v["command"].as_str())
        .collect();
    commands.dedup();
    let mut out = format!("```sh\n{}\n```\n\n", commands.join("\n"));
    let lines: Vec<String> = r.reports.iter().map(run_line).collect();
    let mut distinct = lines.clone();
    distinct.dedup();
    for l in &distinct {
        out.push_str(l);
        out.push('\n');
    }
    let n = r.reports.len();
    let runs = if n > 1 {
        format!(" ({n} runs)")
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\nRaw results: `{}`{runs}.\n",
        r.name.replace(", ", "`, `")
    ));
    out
}

/// When, from which commit, on what, and the load around one report.
fn run_line(rep: &Value) -> String {
    let load = match (
        opt(rep, "/load_average/start"),
        opt(rep, "/load_average/end"),
    ) {
        (Some(s), Some(e)) => format!(
            "load average {} → {}",
            crate::units::load(s),
            crate::units::load(e)
        ),
        _ => "load average not recorded".into(),
    };
    let machine = rep["machine"].as_str().unwrap_or("machine not recorded");
    let when = match (
        rep["date"].as_str(),
        rep.pointer("/git/commit").and_then(Value::as_str),
    ) {
        (Some(date), Some(commit)) => {
            let dirty = if rep.pointer("/git/dirty") == Some(&Value::Bool(true)) {
                ", with uncommitted changes"
            } else {
                ""
            };
            format!(
                "Run {date} at commit `{}`{dirty}",
                &commit[..commit.len().min(10)]
            )
        }
        _ => "Run date and commit not recorded (a format 1 file, written before issue 15)".into(),
    };
    let weir = rep["weir"]
        .as_str()
        .map_or(String::new(), |w| format!("; gateway `{w}`"));
    format!("* {when}; {machine}; {load}{weir}.")
}

/// A verdict line: `target met (figure)` or `target missed (figure)`.
pub fn verdict(target: &str, met: bool, figure: &str) -> String {
    format!(
        "* Target {target}: **{}** ({figure}).\n",
        if met { "met" } else { "missed" }
    )
}
