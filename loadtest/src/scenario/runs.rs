//! `runs`: agent runs end to end, open-loop at fixed rates: OpenAI-compatible
//! streaming requests whose `model` is an agent on the offline `echo` model,
//! spread over chat sessions. Three deployments, all on one `weir store`:
//!
//! - `gateway`: no Redis; the gateway executes every run itself.
//! - `queue`: with `--redis`; runs go through the Redis run queue and the
//!   same gateway takes them back (`--workers 16`, the default).
//! - `workers`: a gateway that only queues (`--workers 0`) and
//!   `--worker-procs` `weir worker` processes that take the runs.
//!
//! The requests go to the agent route (`POST /v1/agents/{id}/messages`,
//! `stream`, `stream_tokens`; `--route openai`: `/v1/chat/completions`
//! with the agent as `model`). From the request's intended send time: the
//! first event the run produced (the echo model's monologue; on the OpenAI
//! route the first chunk after the bare role chunk), TTFT (the first
//! non-empty content), and the run's `done` (see `client::timing`). In the
//! queued deployments both include enqueue, claim and the worker's first
//! publish crossing Redis back to the gateway: the difference to `gateway`
//! is what the queue costs a run.

use serde_json::json;

use super::{
    create_agent,
    proxy::{max_sustained, ramp, steps_json, steps_table},
};
use crate::{
    client::{
        openloop::{Step, Target},
        timing::Route,
    },
    gateway::{self, Data, Gateway, Launch},
    report::{Report, Table},
    sys,
};

/// Options of the `runs` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Run rates to step through (runs/s).
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800")]
    pub rates: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 8.0)]
    pub step_secs: f64,
    /// Chat sessions the runs are spread over.
    #[arg(long, default_value_t = 100)]
    pub sessions: u64,
    /// `weir worker` processes of the `workers` deployment.
    #[arg(long, default_value_t = 2)]
    pub worker_procs: usize,
    /// The route runs are started on: `agent` (the run's own events, so
    /// the first event is visible) or `openai` (`/v1/chat/completions`).
    #[arg(long, default_value = "agent", value_parser = ["agent", "openai"])]
    pub route: String,
    /// Deployments: gateway, queue, workers (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "gateway,queue,workers")]
    pub deployments: Vec<String>,
    /// A rate is sustained when every run succeeds, >= 95 % of the rate
    /// completes per second, and p99 total latency is at most this.
    #[arg(long, default_value_t = 500.0)]
    pub slo_p99_ms: f64,
}

/// What one deployment keeps running while it is measured.
struct Deployment {
    gateway: Gateway,
    _workers: Vec<Gateway>,
    _store: gateway::Store,
    _redis: Option<gateway::Redis>,
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("runs");
    sys::raise_nofile(65_536)?;
    let mut results: Vec<(String, Vec<Step>)> = Vec::new();
    for name in &o.deployments {
        let d = match deploy(launch, extra, o, name).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                report.check(format!("{name}: skipped (no redis-server)"), true);
                continue;
            }
            Err(e) => {
                report.check(format!("{name}: {e:#}"), false);
                continue;
            }
        };
        let agent = create_agent(&d.gateway, 0).await?;
        let (route, sessions) = match o.route.as_str() {
            "openai" => (
                Route::OpenAi,
                (0..o.sessions.max(1)).map(|i| format!("u{i}")).collect(),
            ),
            _ => (
                Route::Agent,
                create_sessions(&d.gateway, &agent, o.sessions.max(1)).await?,
            ),
        };
        let target = Target {
            name: name.clone(),
            base: format!("{}/v1", d.gateway.url),
            key: Some(d.gateway.key.clone()),
            model: agent,
            route,
            sessions,
        };
        let steps = ramp(&target, &o.rates, o.step_secs, o.slo_p99_ms).await;
        report.check(
            format!("{name}: runs completed, each with its reply streamed"),
            steps
                .first()
                .is_some_and(|s| s.ok > 0 && s.chunks_per_req >= 1.0),
        );
        results.push((name.clone(), steps));
    }
    let runs: Vec<(&str, &[Step])> = results
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    report.tables.push(steps_table(
        &format!("agent runs (echo model), open loop, {} route", o.route),
        &runs,
        o.slo_p99_ms,
        true,
    ));
    let mut best = Table::new(
        format!("highest sustained rate (p99 <= {} ms)", o.slo_p99_ms),
        &["deployment", "runs/s"],
    );
    let mut data = serde_json::Map::new();
    for (name, steps) in &results {
        let max = max_sustained(steps, o.slo_p99_ms);
        best.row(vec![name.clone(), format!("{max}")]);
        data.insert(
            name.clone(),
            json!({"steps": steps_json(steps, o.slo_p99_ms), "max_sustained": max}),
        );
    }
    report.tables.push(best);
    report.data = json!({
        "options": format!("{o:?}"), "route": o.route, "slo_p99_ms": o.slo_p99_ms,
        "rates": o.rates, "deployments": data,
    });
    Ok(report.finish())
}

/// Makes `n` chat sessions of `agent`; returns their ids.
async fn create_sessions(gw: &Gateway, agent: &str, n: u64) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let resp = client
            .post(format!("{}/v1/agents/{agent}/sessions", gw.url))
            .bearer_auth(&gw.key)
            .json(&json!({"name": format!("load-{i}")}))
            .send()
            .await?;
        let v: serde_json::Value = resp.json().await?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("creating a session: {v}"))?;
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// Starts deployment `name`; `None` when it needs a Redis this machine lacks.
async fn deploy(
    launch: &Launch,
    extra: &[String],
    o: &Opts,
    name: &str,
) -> anyhow::Result<Option<Deployment>> {
    let (queued, workers) = match name {
        "gateway" => (false, 0),
        "queue" => (true, 0),
        "workers" => (true, o.worker_procs.max(1)),
        _ => anyhow::bail!("unknown deployment `{name}` (gateway, queue, workers)"),
    };
    let redis = match queued {
        true => match gateway::redis_for(launch).await? {
            Some(r) => Some(r),
            None => return Ok(None),
        },
        false => None,
    };
    let store = gateway::start_store(launch, None).await?;
    let data = Data::Remote(store.url.clone());
    let mut args: Vec<String> = extra.to_vec();
    if let Some(r) = &redis {
        args.extend(["--redis".to_owned(), r.url.clone()]);
    }
    let mut gw_args = args.clone();
    if workers > 0 {
        gw_args.push("--workers=0".into());
    }
    let gateway = gateway::start(launch, &data, &gw_args).await?;
    let mut procs = Vec::new();
    for _ in 0..workers {
        procs.push(gateway::start_worker(launch, &data, &args).await?);
    }
    Ok(Some(Deployment {
        gateway,
        _workers: procs,
        _store: store,
        _redis: redis,
    }))
}
