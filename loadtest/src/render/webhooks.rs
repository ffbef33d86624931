//! The `webhooks` block: per subscription count, runs/s and the gateway's
//! CPU per run (the run path's cost of notify), then deliveries/s and
//! delivery latency at the receiver.

use serde_json::Value;

use super::{opt, RenderError, Results};
use crate::{report::Table, units};

pub fn webhooks(r: &Results) -> Result<String, RenderError> {
    let cases = r
        .at("/0/data/cases")?
        .as_array()
        .ok_or_else(|| RenderError::Shape(r.name.clone()))?;
    let mut t = Table::new(
        "",
        &[
            "subscriptions",
            "runs",
            "runs/s",
            "gateway CPU per run",
            "deliveries",
            "deliveries/s",
            "latency p50",
            "latency p99",
        ],
    );
    for (i, c) in cases.iter().enumerate() {
        let n = |p: &str| r.num(&format!("/0/data/cases/{i}/{p}"));
        let subs = n("subscriptions")?;
        let delivered = subs > 0.0;
        let or_dash = |v: Result<f64, RenderError>, f: fn(f64) -> String| match v {
            Ok(v) if delivered => Ok(f(v)),
            Ok(_) => Ok("–".to_owned()),
            Err(e) => Err(e),
        };
        t.row(vec![
            units::thousands(subs),
            units::thousands(n("runs_ok")?),
            units::per_s(n("runs_per_s")?),
            opt(c, "/cpu_us_per_run").map_or("not measured (in-process)".into(), units::us),
            units::thousands(n("deliveries")?),
            or_dash(n("deliveries_per_s"), units::per_s)?,
            or_dash(n("latency/p50_ms"), units::ms)?,
            or_dash(n("latency/p99_ms"), units::ms)?,
        ]);
    }
    Ok(format!("\n{}\n{}", t.markdown(), cost_lines(cases)))
}

/// CPU per run of each case with subscriptions, against the case without.
fn cost_lines(cases: &[Value]) -> String {
    let cpu = |c: &Value| opt(c, "/cpu_us_per_run");
    let Some(base) = cases
        .iter()
        .find(|c| opt(c, "/subscriptions") == Some(0.0))
        .and_then(cpu)
    else {
        return String::new();
    };
    let mut out = String::new();
    for c in cases {
        let (Some(subs), Some(v)) = (opt(c, "/subscriptions"), cpu(c)) else {
            continue;
        };
        if subs > 0.0 && base > 0.0 {
            out.push_str(&format!(
                "* Gateway CPU per run with {} subscriptions: {} ({:+.1} % against none).\n",
                units::thousands(subs),
                units::us(v),
                (v / base - 1.0) * 100.0
            ));
        }
    }
    out
}
