//! The `compare` block: the same command run several times against two or
//! more weir binaries, interleaved (issue 14's "re-run each three times
//! before and after, publish both ranges"). Reports are grouped by the
//! binary that served them (`weir` in each report), in order of first
//! appearance; each figure is shown as median (min–max) per binary, and
//! the last binary's range is judged against the first's.

use serde_json::Value;

use super::{opt, requests::spread, RenderError, Results};
use crate::{report::Table, units};

/// Reads one figure from one report (`None` when the report lacks it).
type Reader = Box<dyn Fn(&Value) -> Option<f64>>;

/// One figure of a scenario: its column name, how to read it from a
/// report, how to print it, and whether more is better.
struct Figure {
    name: String,
    read: Reader,
    fmt: fn(f64) -> String,
    higher_is_better: bool,
}

fn figure(
    name: impl Into<String>,
    fmt: fn(f64) -> String,
    higher_is_better: bool,
    read: impl Fn(&Value) -> Option<f64> + 'static,
) -> Figure {
    Figure {
        name: name.into(),
        read: Box::new(read),
        fmt,
        higher_is_better,
    }
}

/// The figures compared for `scenario`.
fn figures(scenario: &str, first: &Value) -> Vec<Figure> {
    match scenario {
        "rest" => vec![
            figure("requests/s", units::per_s, true, |r| {
                opt(r, "/data/cases/0/median/requests_per_s")
            }),
            figure("p99", units::ms, false, |r| {
                opt(r, "/data/cases/0/median/p99_ms")
            }),
        ],
        "fanout" => fanout_figures(first),
        "proxy" if first.pointer("/data/agent/0").is_some() => agent_figures(),
        "proxy" => vec![
            figure("weir adds p99", units::ms, false, |r| {
                first_step(r, "/data/added").and_then(|s| opt(s, "/total_p99_ms"))
            }),
            figure("weir CPU/request", units::us, false, |r| {
                first_step(r, "/data/weir").and_then(|s| opt(s, "/cpu_us_per_request"))
            }),
            figure("nginx CPU/request (same run)", units::us, false, |r| {
                first_step(r, "/data/nginx").and_then(|s| opt(s, "/cpu_us_per_request"))
            }),
            figure("weir ÷ nginx CPU", ratio, false, |r| {
                let w = first_step(r, "/data/weir").and_then(|s| opt(s, "/cpu_us_per_request"));
                let n = first_step(r, "/data/nginx").and_then(|s| opt(s, "/cpu_us_per_request"));
                Some(w? / n?)
            }),
        ],
        _ => Vec::new(),
    }
}

/// `proxy --agent`: what the agent path adds to the relay's TTFT, and its
/// CPU per run beside the relay's per request.
fn agent_figures() -> Vec<Figure> {
    let added = |key: &'static str| {
        move |r: &Value| first_step(r, "/data/agent_added").and_then(|s| opt(s, key))
    };
    vec![
        figure(
            "agent adds TTFT p50",
            units::ms,
            false,
            added("/ttft_p50_ms"),
        ),
        figure(
            "agent adds TTFT p99",
            units::ms,
            false,
            added("/ttft_p99_ms"),
        ),
        figure("agent CPU/run", units::us, false, |r| {
            first_step(r, "/data/agent").and_then(|s| opt(s, "/cpu_us_per_request"))
        }),
        figure("relay CPU/request", units::us, false, |r| {
            first_step(r, "/data/weir").and_then(|s| opt(s, "/cpu_us_per_request"))
        }),
    ]
}

/// Deliveries per second and gateway CPU per delivery, per bus deployment.
fn fanout_figures(first: &Value) -> Vec<Figure> {
    let buses: Vec<String> = first
        .pointer("/data/deployments")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|d| d["bus"].as_str().map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    for bus in buses {
        let b = bus.clone();
        out.push(figure(
            format!("{bus}: deliveries/s"),
            units::per_s,
            true,
            move |r| deployment(r, &b).and_then(|d| opt(d, "/deliveries_per_s")),
        ));
        let b = bus.clone();
        out.push(figure(
            format!("{bus}: CPU/delivery"),
            units::us,
            false,
            move |r| {
                let d = deployment(r, &b)?;
                Some(opt(d, "/gateway_cpu_cores")? / opt(d, "/deliveries_per_s")? * 1e6)
            },
        ));
    }
    out
}

fn deployment<'a>(r: &'a Value, bus: &str) -> Option<&'a Value> {
    r.pointer("/data/deployments")?
        .as_array()?
        .iter()
        .find(|d| d["bus"].as_str() == Some(bus))
}

fn first_step<'a>(r: &'a Value, pointer: &str) -> Option<&'a Value> {
    r.pointer(pointer)?.as_array()?.first()
}

fn ratio(v: f64) -> String {
    format!("{v:.2}×")
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[(xs.len() - 1) / 2]
}

/// Renders the comparison of every report in `r` (one scenario).
pub fn compare(r: &Results) -> Result<String, RenderError> {
    let first = &r.reports[0];
    let scenario = first["scenario"].as_str().unwrap_or_default();
    let figs = figures(scenario, first);
    if figs.is_empty() {
        return Err(RenderError::Missing {
            file: r.name.clone(),
            pointer: format!("/0/scenario (`{scenario}` has no comparison)"),
        });
    }
    let mut binaries: Vec<&str> = Vec::new();
    for rep in &r.reports {
        let w = rep["weir"].as_str().unwrap_or("in-process");
        if !binaries.contains(&w) {
            binaries.push(w);
        }
    }
    let values = |bin: &str, f: &Figure| -> Vec<f64> {
        r.reports
            .iter()
            .filter(|rep| rep["weir"].as_str().unwrap_or("in-process") == bin)
            .filter_map(|rep| (f.read)(rep))
            .collect()
    };
    let mut header = vec!["weir binary", "runs"];
    header.extend(figs.iter().map(|f| f.name.as_str()));
    let mut t = Table::new("", &header);
    for bin in &binaries {
        let runs = r
            .reports
            .iter()
            .filter(|rep| rep["weir"].as_str().unwrap_or("in-process") == *bin)
            .count();
        let mut row = vec![format!("`{bin}`"), runs.to_string()];
        row.extend(figs.iter().map(|f| spread(values(bin, f), f.fmt)));
        t.row(row);
    }
    let mut out = format!(
        "\nEach cell: median (min–max) over the runs.\n\n{}\n",
        t.markdown()
    );
    if let (Some(before), Some(after)) = (binaries.first(), binaries.last()) {
        if before != after {
            for f in &figs {
                out.push_str(&judge(f, values(before, f), values(after, f)));
            }
        }
    }
    Ok(out)
}

/// Whether the last binary's range overlaps the first's, and by how much
/// the medians differ (signed so that + is better).
fn judge(f: &Figure, mut before: Vec<f64>, mut after: Vec<f64>) -> String {
    if before.is_empty() || after.is_empty() {
        return format!("* {}: not measured on both.\n", f.name);
    }
    let (b_lo, b_hi) = (min(&before), max(&before));
    let (a_lo, a_hi) = (min(&after), max(&after));
    let overlap = a_lo <= b_hi && b_lo <= a_hi;
    let (mb, ma) = (median(&mut before), median(&mut after));
    let change = if f.higher_is_better {
        (ma - mb) / mb
    } else {
        (mb - ma) / mb
    };
    let word = if change >= 0.0 { "better" } else { "worse" };
    format!(
        "* {}: {} (medians {} → {}, {:.1} % {word}).\n",
        f.name,
        if overlap {
            "the ranges overlap: within the run-to-run spread"
        } else {
            "**outside** the first binary's range"
        },
        (f.fmt)(mb),
        (f.fmt)(ma),
        change.abs() * 100.0
    )
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rest(weir: &str, rps: f64) -> Value {
        json!({"scenario": "rest", "weir": weir,
               "data": {"cases": [{"median": {"requests_per_s": rps, "p99_ms": 9.0}}]}})
    }

    fn results(reports: Vec<Value>) -> Results {
        Results {
            name: "t.json".into(),
            reports,
        }
    }

    #[test]
    fn overlapping_ranges_are_within_the_spread_and_disjoint_ones_are_not() {
        let r = results(vec![
            rest("old", 100.0),
            rest("new", 110.0),
            rest("old", 120.0),
            rest("new", 130.0),
        ]);
        let out = compare(&r).unwrap();
        assert!(out.contains("| 2    | 100/s (100/s–120/s)"), "{out}");
        assert!(out.contains("requests/s: the ranges overlap"), "{out}");
        let r = results(vec![rest("old", 100.0), rest("new", 200.0)]);
        let out = compare(&r).unwrap();
        assert!(out.contains("requests/s: **outside**"), "{out}");
        assert!(out.contains("100.0 % better"), "{out}");
    }

    #[test]
    fn a_scenario_without_figures_is_an_error() {
        let r = results(vec![json!({"scenario": "soak", "weir": "x"})]);
        assert!(compare(&r).is_err());
    }
}
