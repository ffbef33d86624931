//! `webhooks`: outbound webhook deliveries to a local receiver (an axum
//! server in this process on 127.0.0.1, allowed through the egress guard
//! with `--egress-allow`), and what notifying costs the run path.
//!
//! For each subscription count in `--subscriptions` (default 0, 1 and 10),
//! a fresh gateway (embedded store) gets an echo agent and that many
//! subscriptions to `run.completed` on it; `--runs` runs then go through
//! `POST /v1/agents/{id}/messages` (not streamed), `--concurrency` at a
//! time, closed loop. Per case: runs/s, the gateway's CPU per run (its own
//! process only), deliveries/s at the receiver (from the first run started
//! to the last delivery), and delivery latency: arrival at the receiver
//! minus the payload's `timestamp` (when the run ended; ms resolution, so a
//! figure is at most 1 ms above the truth). With 0 subscriptions nothing
//! is queued: the difference to 1 and N is the run path's cost of notify.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use axum::{body::Bytes, extract::State, routing::post, Router};
use serde_json::{json, Value};
use tokio::{sync::Semaphore, task::JoinSet};

use super::{create_agent, wait_for};
use crate::{
    gateway::{self, Data, Gateway, Launch},
    hist::Hist,
    report::{Report, Table},
    sys, units,
};

/// Options of the `webhooks` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Runs per case.
    #[arg(long, default_value_t = 2_000)]
    pub runs: usize,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Subscription counts, one case each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,10")]
    pub subscriptions: Vec<usize>,
}

/// Arrivals at the receiver: (unix ms of arrival, latency in µs).
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(i64, u64)>>>);

async fn take(State(log): State<Arrivals>, body: Bytes) -> &'static str {
    let now = unix_ms();
    let sent = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["timestamp"].as_str().and_then(parse_ms));
    let latency_us = sent.map_or(0, |t| u64::try_from(now - t).unwrap_or(0) * 1000);
    log.0.lock().unwrap().push((now, latency_us));
    "ok"
}

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn parse_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Starts the receiver; its URL and what it records.
async fn receiver() -> anyhow::Result<(String, Arrivals, tokio::task::JoinHandle<()>)> {
    let log = Arrivals::default();
    let app = Router::new()
        .route("/hook", post(take))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, log, task))
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("webhooks");
    let (url, log, task) = receiver().await?;
    let mut args = vec![
        "--egress-allow=127.0.0.1/32".to_owned(),
        "--webhook-retry-base-ms=1000".to_owned(),
    ];
    args.extend(extra.iter().cloned());
    let mut table = Table::new(
        "webhooks",
        &[
            "subscriptions",
            "runs/s",
            "CPU/run",
            "deliveries",
            "deliveries/s",
            "latency p50",
            "latency p99",
        ],
    );
    let mut cases = Vec::new();
    for &subs in &o.subscriptions {
        log.0.lock().unwrap().clear();
        let gw = gateway::start(launch, &Data::Embedded, &args).await?;
        let case = measure(&gw, &url, &log, subs, o).await?;
        report.check(
            format!("{subs} subscriptions: every run ok"),
            case["runs_ok"] == json!(o.runs),
        );
        report.check(
            format!("{subs} subscriptions: one delivery per run and subscription"),
            case["deliveries"] == json!(o.runs * subs),
        );
        let cpu = case["cpu_us_per_run"]
            .as_f64()
            .map_or("n/a".into(), units::us);
        let n = |k: &str| case["latency"][k].as_f64().unwrap_or(0.0);
        table.row(vec![
            subs.to_string(),
            units::per_s(case["runs_per_s"].as_f64().unwrap_or(0.0)),
            cpu,
            case["deliveries"].to_string(),
            units::per_s(case["deliveries_per_s"].as_f64().unwrap_or(0.0)),
            units::ms(n("p50_ms")),
            units::ms(n("p99_ms")),
        ]);
        cases.push(case);
    }
    task.abort();
    report.tables.push(table);
    report.data = json!({"runs": o.runs, "concurrency": o.concurrency, "cases": cases});
    Ok(report.finish())
}

/// One case: `subs` subscriptions, then the runs, then the deliveries.
async fn measure(
    gw: &Gateway,
    url: &str,
    log: &Arrivals,
    subs: usize,
    o: &Opts,
) -> anyhow::Result<Value> {
    let client = crate::tls::client_builder().build()?;
    let agent = create_agent(gw, 0).await?;
    for _ in 0..subs {
        let r = client
            .post(format!("{}/v1/webhooks", gw.url))
            .bearer_auth(&gw.key)
            .json(&json!({"url": url, "events": ["run.completed"], "agent_id": agent}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("subscribing: {} {}", r.status(), r.text().await?);
        }
    }
    let cpu0 = gw.own_pid().map(sys::cpu_secs);
    let t0 = Instant::now();
    let ok = drive(&client, gw, &agent, o).await?;
    let run_secs = t0.elapsed().as_secs_f64();
    let cpu = gw
        .own_pid()
        .map(sys::cpu_secs)
        .zip(cpu0)
        .map(|(b, a)| b - a);
    let want = ok * subs;
    wait_for(Duration::from_secs(120), || {
        log.0.lock().unwrap().len() >= want
    })
    .await;
    // Give a duplicate the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = log.0.lock().unwrap().clone();
    let mut hist = Hist::default();
    for (_, us) in &got {
        hist.record(*us);
    }
    let start_ms = unix_ms() - t0.elapsed().as_millis() as i64;
    let last = got.iter().map(|(at, _)| *at).max().unwrap_or(start_ms);
    let span = ((last - start_ms) as f64 / 1000.0).max(1e-3);
    Ok(json!({
        "subscriptions": subs,
        "runs_ok": ok,
        "run_secs": run_secs,
        "runs_per_s": ok as f64 / run_secs.max(1e-9),
        "cpu_us_per_run": cpu.map(|c| c * 1e6 / ok.max(1) as f64),
        "deliveries": got.len(),
        "deliveries_per_s": if subs == 0 { 0.0 } else { got.len() as f64 / span },
        "latency": hist.summary(),
    }))
}

/// `o.runs` runs, `o.concurrency` at a time; how many answered 200.
async fn drive(
    client: &reqwest::Client,
    gw: &Gateway,
    agent: &str,
    o: &Opts,
) -> anyhow::Result<usize> {
    let gate = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let path: Arc<str> = format!("{}/v1/agents/{agent}/messages", gw.url).into();
    let mut tasks = JoinSet::new();
    for i in 0..o.runs {
        let permit = gate.clone().acquire_owned().await?;
        let (client, path, key) = (client.clone(), path.clone(), gw.key.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let body = json!({"message": format!("hello {i}")});
            let r = client
                .post(&*path)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await;
            matches!(r, Ok(r) if r.status().is_success())
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += usize::from(done.context("a run task")?);
    }
    Ok(ok)
}
