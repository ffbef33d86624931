//! The `fallback` block: the TTFT a failing first target adds to a route
//! (the route minus `clean` in the same run), and what remains past the
//! first-token timeout for the stall, per rate; then the clean route's own
//! TTFT and whether every request got every chunk.

use super::{RenderError, Results};
use crate::{report::Table, units};

pub fn fallback(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &[
            "failure",
            "rate/s",
            "added TTFT p50",
            "added TTFT p99",
            "past the timeout p50",
            "past the timeout p99",
        ],
    );
    let rows = r
        .at("/0/data/added")?
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (k, row) in rows.iter().enumerate() {
        let n = |f: &str| r.num(&format!("/0/data/added/{k}/{f}"));
        let timed_out = n("timeout_ms")? > 0.0;
        let past = |f: &str| -> Result<String, RenderError> {
            Ok(match timed_out {
                true => units::ms(n(f)?),
                false => "-".into(),
            })
        };
        t.row(vec![
            row["failure"].as_str().unwrap_or("?").to_owned(),
            units::thousands(n("rate")?),
            units::ms(n("added_ttft_p50_ms")?),
            units::ms(n("added_ttft_p99_ms")?),
            past("past_timeout_p50_ms")?,
            past("past_timeout_p99_ms")?,
        ]);
    }
    let mut clean = Table::new("", &["rate/s", "clean TTFT p50", "clean TTFT p99"]);
    let steps = r
        .at("/0/data/routes/clean")?
        .as_array()
        .cloned()
        .unwrap_or_default();
    for k in 0..steps.len() {
        let n = |f: &str| r.num(&format!("/0/data/routes/clean/{k}/{f}"));
        clean.row(vec![
            units::thousands(n("rate")?),
            units::ms(n("ttft/p50_ms")?),
            units::ms(n("ttft/p99_ms")?),
        ]);
    }
    let checks = r.at("/0/checks")?.as_array().cloned().unwrap_or_default();
    let passed = checks.iter().all(|c| c["ok"] == true);
    Ok(format!(
        "\nWhat a failing first target adds (the route minus `clean`, same run):\n\n{}\nThe clean route:\n\n{}\nEvery request of every route answered with every chunk: {}.\n",
        t.markdown(),
        clean.markdown(),
        if passed { "yes" } else { "no" }
    ))
}
