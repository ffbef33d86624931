//! `fallback`: what a failing first target costs a caller of a route
//! (issue 19): the time from the provider's failure to the first byte from
//! the next target, seen as the client's TTFT against the same request on a
//! route that does not fail, through the same weir, in the same run.
//!
//! Four routes over the fake provider, open-loop at fixed rates, taking
//! turns in short slices ([`super::proxy::every_rate`]):
//! - `clean`: one target that answers;
//! - `after-500`: a target answering 500 at once, then the answering one;
//! - `after-stall`: a target that sends nothing (its first-token timeout is
//!   `--stall-timeout-secs`), then the answering one;
//! - `after-drop`: a target whose port accepts and closes every connection,
//!   then the answering one.
//!
//! The failing providers' circuits never open (`breaker_failures` is the
//! largest value), so every request meets the failure. What a failure adds
//! is the route's TTFT quantile minus `clean`'s; for the stall, the timeout
//! itself is shown apart from what comes after it.

use std::{io::Write, time::Duration};

use serde_json::{json, Value};

use super::proxy::{every_rate, steps_json, steps_table};
use crate::{
    client::{
        openloop::{Step, Target},
        timing::Route,
    },
    fake_provider::{self, FakeProvider},
    gateway::{self, Data, Gateway, Launch},
    report::{ms, thousands, Report, Table},
    sys,
};

#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Request rates to step through, per route (requests/s).
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    pub rates: Vec<f64>,
    /// Seconds per rate and route.
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Content chunks per answer from the fake provider.
    #[arg(long, default_value_t = 16)]
    pub chunks: usize,
    /// The routes take turns at each rate in slices this long.
    #[arg(long, default_value_t = 1.0)]
    pub slice_secs: f64,
    /// First-token timeout of the stalling target, in whole seconds (the
    /// config file's unit; 1 is the least it takes).
    #[arg(long, default_value_t = 1)]
    pub stall_timeout_secs: u64,
}

/// The routes measured, with the model a client asks for.
const ROUTES: [&str; 4] = ["clean", "after-500", "after-stall", "after-drop"];

/// A failure never opens a circuit here: each request must meet it.
const NEVER_OPEN: u32 = u32::MAX;

/// The `[[providers]]` and `[[routes]]` of the run's config file.
fn config_toml(fake: &FakeProvider, stall_secs: u64) -> String {
    let provider = |name: &str, base: &str, extra: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base}\"\n\
             breaker_failures = {NEVER_OPEN}\n{extra}\n"
        )
    };
    // The answering target has weight 0: it is only ever the fallback.
    let route = |name: &str, first: Option<(&str, &str)>| {
        let mut targets = Vec::new();
        if let Some((p, m)) = first {
            targets.push(format!("{{ provider = \"{p}\", model = \"{m}\" }}"));
        }
        let weight = if first.is_some() { ", weight = 0" } else { "" };
        targets.push(format!("{{ provider = \"ok\", model = \"fake\"{weight} }}"));
        format!(
            "[[routes]]\nname = \"{name}\"\nattempts = 2\ntargets = [{}]\n",
            targets.join(", ")
        )
    };
    [
        provider("ok", &fake.base, ""),
        provider("fails", &fake.base, ""),
        provider(
            "stalls",
            &fake.base,
            &format!("first_token_timeout_secs = {stall_secs}"),
        ),
        provider("drops", &fake.drop_base, ""),
        route("clean", None),
        route("after-500", Some(("fails", "fail-500"))),
        route("after-stall", Some(("stalls", "fail-stall"))),
        route("after-drop", Some(("drops", "fake"))),
    ]
    .join("\n")
}

fn target(weir: &Gateway, model: &str) -> Target {
    Target {
        name: model.into(),
        base: format!("{}/v1", weir.url),
        key: Some(weir.key.clone()),
        model: model.into(),
        route: Route::OpenAi,
        sessions: Vec::new(),
    }
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("fallback");
    sys::raise_nofile(65_536)?;
    let fake = fake_provider::start(fake_provider::Options {
        chunks: o.chunks,
        gap: Duration::ZERO,
    })?;
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(config_toml(&fake, o.stall_timeout_secs).as_bytes())?;
    let mut args = vec!["--config".to_owned(), file.path().display().to_string()];
    args.extend(extra.iter().cloned());
    let weir = gateway::start(launch, &Data::Embedded, &args).await?;
    let pids: Vec<u32> = weir.own_pid().into_iter().collect();
    let targets: Vec<(Target, Vec<u32>)> = ROUTES
        .iter()
        .map(|r| (target(&weir, r), pids.clone()))
        .collect();
    // No SLO to stop at: the stall alone is past any sensible one.
    let slo = 1e9;
    let ramps = every_rate(&targets, &o.rates, o.step_secs, slo, o.slice_secs).await;
    let runs: Vec<(&str, &[Step])> = ROUTES
        .iter()
        .zip(&ramps)
        .map(|(r, s)| (*r, s.as_slice()))
        .collect();
    report.tables.push(steps_table(
        "open-loop streaming through weir, one route per failure",
        &runs,
        slo,
        false,
    ));
    let stall_ms = (o.stall_timeout_secs * 1000) as f64;
    report.tables.push(added_table(&ramps, stall_ms));
    report.data = json!({
        "options": format!("{o:?}"),
        "routes": runs.iter().map(|(r, s)| ((*r).to_owned(), steps_json(s, slo))).collect::<serde_json::Map<_, _>>(),
        "added": added_json(&ramps, stall_ms),
    });
    report.check(
        "every route answered every request",
        ramps
            .iter()
            .all(|steps| steps.iter().all(|s| s.errors == 0 && s.ok > 0)),
    );
    report.check(
        "every answer had every chunk",
        ramps
            .iter()
            .all(|steps| steps.iter().all(|s| s.chunks_per_req >= o.chunks as f64)),
    );
    drop(weir);
    Ok(report.finish())
}

/// TTFT quantile `q` of route `i` at step `k` minus `clean`'s.
fn added(ramps: &[Vec<Step>], i: usize, k: usize, q: f64) -> Option<f64> {
    let clean = ramps.first()?.get(k)?;
    let other = ramps.get(i)?.get(k)?;
    Some(other.ttft.quantile_ms(q) - clean.ttft.quantile_ms(q))
}

fn added_table(ramps: &[Vec<Step>], stall_ms: f64) -> Table {
    let mut t = Table::new(
        "TTFT a failing first target adds (route minus clean, same run)",
        &[
            "failure",
            "rate/s",
            "added p50",
            "added p99",
            "past the timeout p50",
            "past the timeout p99",
        ],
    );
    for (i, name) in ROUTES.iter().enumerate().skip(1) {
        for (k, s) in ramps[0].iter().enumerate() {
            let (Some(p50), Some(p99)) = (added(ramps, i, k, 0.5), added(ramps, i, k, 0.99)) else {
                continue;
            };
            let past = |v: f64| match *name {
                "after-stall" => ms(v - stall_ms),
                _ => "-".into(),
            };
            t.row(vec![
                (*name).into(),
                thousands(s.rate),
                ms(p50),
                ms(p99),
                past(p50),
                past(p99),
            ]);
        }
    }
    t
}

fn added_json(ramps: &[Vec<Step>], stall_ms: f64) -> Value {
    let mut out = Vec::new();
    for (i, name) in ROUTES.iter().enumerate().skip(1) {
        for (k, s) in ramps[0].iter().enumerate() {
            let (Some(p50), Some(p99)) = (added(ramps, i, k, 0.5), added(ramps, i, k, 0.99)) else {
                continue;
            };
            let timeout = if *name == "after-stall" {
                stall_ms
            } else {
                0.0
            };
            out.push(json!({
                "failure": name, "rate": s.rate,
                "added_ttft_p50_ms": p50, "added_ttft_p99_ms": p99,
                "timeout_ms": timeout,
                "past_timeout_p50_ms": p50 - timeout, "past_timeout_p99_ms": p99 - timeout,
            }));
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_parses_as_weir_reads_it() {
        let fake = fake_provider::start(fake_provider::Options {
            chunks: 1,
            gap: Duration::ZERO,
        })
        .unwrap();
        let lists = weir::providers::ProvidersConfig::from_toml(&config_toml(&fake, 1))
            .expect("weir takes the file");
        assert_eq!(lists.routes.len(), ROUTES.len());
        assert_eq!(lists.providers.len(), 4);
    }
}
