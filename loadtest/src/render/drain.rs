//! Renderer of the `drain` scenario: one row per mode (spreading on, off)
//! and the issue 21 targets (B's p99 during the drain at most twice its
//! p99 before it; at most one key lookup per distinct key in the burst).
//! "All B store requests" includes the writes of the runs published
//! through B during the window; the reconnects' own reads are the key
//! (`get_key`) and the channel's floor (`last_event_seq`). "B p99 after"
//! is the same crowd once every follower is on B (no reconnects): B's
//! cost of carrying them, the reference for what the reconnects add. The
//! CPU column is cores busy during the drain window (B / the load
//! generator / Redis): all share the same cores. A mode run with
//! `--channels N` over N agents says so in its first column.

use serde_json::Value;

use super::{verdict, RenderError, Results};
use crate::{report::Table, units};

pub fn drain(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &[
            "mode",
            "followers",
            "back on B",
            "A's closes (p5..p95)",
            "peak reconnects/s on B",
            "B p99 before",
            "B p99 during",
            "B p99 after",
            "B resumes from memory / Redis",
            "cores busy during (B / load gen / Redis)",
            "B store reads for reconnects (key / floor)",
            "all B store requests",
            "gaps / repeats",
        ],
    );
    let mut verdicts = String::new();
    for (i, rep) in r.reports.iter().enumerate() {
        let modes = rep
            .pointer("/data/modes")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for m in 0..modes {
            let p = |k: &str| r.num(&format!("/{i}/data/modes/{m}/{k}"));
            let mode = r.at(&format!("/{i}/data/modes/{m}/mode"))?;
            let mode = mode.as_str().unwrap_or("?").to_owned();
            let (before, during) = (p("before/p99_ms")?, p("during/p99_ms")?);
            let (get_key, keys) = (p("get_key")?, p("keys_in_use")?);
            let mut spread = match mode.as_str() {
                "spread" => format!("spread over {} s", p("spread_secs")?),
                _ => "all at once".to_owned(),
            };
            // Results from before `--channels` followed one agent.
            let channels = p("channels").unwrap_or(1.0);
            if channels > 1.0 {
                spread.push_str(&format!(", {channels} agents"));
            }
            t.row(vec![
                format!("{mode} ({spread})"),
                units::thousands(p("followers")?),
                units::thousands(p("back")?),
                format!("{:.2} s", p("closes_p5_p95_s").unwrap_or(0.0)),
                units::per_s(p("reconnect_peak_per_s")?),
                units::ms(before),
                units::ms(during),
                p("after/p99_ms").map_or("–".to_owned(), units::ms),
                format!(
                    "{} / {}",
                    p("b_replays_from/memory").unwrap_or(0.0),
                    p("b_replays_from/redis").unwrap_or(0.0)
                ),
                match (
                    p("cpu_cores/during/b"),
                    p("cpu_cores/during/load"),
                    p("cpu_cores/during/redis"),
                ) {
                    (Ok(b), Ok(l), Ok(r)) => format!("{b:.2} / {l:.2} / {r:.2}"),
                    _ => "–".to_owned(),
                },
                format!("{} / {}", get_key, p("floor_checks")?),
                units::thousands(p("store_requests")?),
                format!("{} / {}", p("gaps")?, p("repeats")?),
            ]);
            if mode == "spread" {
                verdicts.push_str(&verdict(
                    "spread: B's delivery p99 during the drain ≤ 2 × before",
                    during <= 2.0 * before,
                    &format!("{} → {}", units::ms(before), units::ms(during)),
                ));
            }
            verdicts.push_str(&verdict(
                &format!("{mode}: at most one key lookup per distinct key"),
                get_key <= keys,
                &format!("{get_key} `get_key` for {keys} keys"),
            ));
        }
    }
    Ok(format!("\n{}\n{verdicts}", t.markdown()))
}
