//! `fanout`: S subscribers (SSE and WebSocket) on one agent channel while
//! real echo runs publish P events/s; latency from publish (the event's
//! `date`) to delivery, and deliveries/s. Three deployments: the in-process
//! bus, the Redis bus, and two gateways on one Redis (half the subscribers
//! on each, runs started on the first).

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{create_agent, publish::Publisher, Crowd};
use crate::{
    gateway::{self, Data, Gateway, Launch},
    hist::Hist,
    report::{ms, thousands, Report, Table},
    sys,
};

/// Options of the `fanout` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Subscribers (split evenly over the gateways of a deployment).
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Share of WebSockets, in percent.
    #[arg(long, default_value_t = 50)]
    pub ws_percent: u32,
    /// Events offered per second on the agent's channel: echo runs are
    /// started open loop at rate / E runs/s, where E is the events one run
    /// publishes (its tokens, monologue, reply, usage, done and the user's
    /// message), counted by a calibration run first. A run's tokens are
    /// `--delay-ms` apart, so runs overlap when rate x delay > 1000.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Gap between an echo run's tokens (`echo_delay_ms`).
    #[arg(long, default_value_t = 10)]
    pub delay_ms: u64,
    /// Words per run message (a run publishes about words + 7 events).
    #[arg(long, default_value_t = 50)]
    pub words: usize,
    /// Seconds of publishing measured.
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Deployments: memory, redis, cluster (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "memory,redis,cluster")]
    pub buses: Vec<String>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Compare with nginx + nchan (issue 22): SSE subscribers only (at most
    /// 9,000), the memory and redis deployments and nchan taking turns, CPU
    /// per publish and per delivery, first-event latency
    /// (`scenario::fanout_nchan`). nchan is left out when not installed.
    #[arg(long)]
    pub nchan: bool,
    /// With `--nchan`: rounds of turns (medians are checked).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
}

/// One deployment's figures.
struct Outcome {
    bus: String,
    opened: u64,
    published: u64,
    deliveries: u64,
    secs: f64,
    latency: Hist,
    errors: u64,
    first_error: Option<String>,
    gateway_cpu: f64,
    load: f64,
    /// The publisher's schedule and run counts.
    publisher: Value,
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    if o.nchan {
        return super::fanout_nchan::run(launch, extra, o).await;
    }
    let mut report = Report::new("fanout");
    sys::raise_nofile(o.subscribers as u64 * 2 + 4096)?;
    let mut outcomes = Vec::new();
    for bus in &o.buses {
        match deployment(launch, extra, o, bus).await {
            Ok(Some(out)) => outcomes.push(out),
            Ok(None) => report.check(
                format!("{bus}: skipped (no redis-server or no --redis in this weir)"),
                true,
            ),
            Err(e) => {
                report.check(format!("{bus}: {e:#}"), false);
            }
        }
    }
    let mut t = Table::new(
        format!(
            "{} subscribers ({} % WebSocket), {} events/s offered, {} s",
            thousands(o.subscribers as f64),
            o.ws_percent,
            o.rate,
            o.secs
        ),
        &[
            "bus",
            "runs/s started",
            "events/s published",
            "deliveries/s",
            "delivered",
            "p50",
            "p99",
            "p99.9",
            "max",
            "gateway CPU",
            "load avg",
        ],
    );
    let mut data = Vec::new();
    for out in &outcomes {
        let published_rate = out.published as f64 / out.secs;
        let rate = out.deliveries as f64 / out.secs;
        let expected = out.published * out.opened;
        let share = out.deliveries as f64 / expected.max(1) as f64;
        t.row(vec![
            out.bus.clone(),
            format!("{:.2}", out.publisher["runs_per_s"].as_f64().unwrap_or(0.0)),
            format!("{published_rate:.0}"),
            thousands(rate),
            format!("{:.1} %", share * 100.0),
            ms(out.latency.quantile_ms(0.5)),
            ms(out.latency.quantile_ms(0.99)),
            ms(out.latency.quantile_ms(0.999)),
            ms(out.latency.max_ms()),
            format!("{:.0} %", out.gateway_cpu * 100.0),
            format!("{:.2}", out.load),
        ]);
        data.push(json!({
            "bus": out.bus, "subscribers": out.opened, "published": out.published, "deliveries": out.deliveries,
            "secs": out.secs, "published_per_s": published_rate, "deliveries_per_s": rate, "delivered_share": share,
            "latency": out.latency.summary(), "errors": out.errors, "first_error": out.first_error,
            "gateway_cpu_cores": out.gateway_cpu, "load_average": out.load,
            "offered_events_per_s": o.rate, "publisher": out.publisher,
        }));
        report.check(
            format!("{}: every run the publisher started ended well", out.bus),
            out.publisher["run_errors"] == 0,
        );
        report.check(
            format!("{}: every subscriber opened, no stream errors", out.bus),
            out.errors == 0 && out.opened == o.subscribers as u64,
        );
        report.check(
            format!("{}: events published and delivered", out.bus),
            out.published > 0 && out.deliveries > 0,
        );
        let target = if out.bus == "memory" {
            1_000_000.0
        } else {
            300_000.0
        };
        report.check(
            format!("target: {}: >= {} deliveries/s", out.bus, thousands(target)),
            rate >= target,
        );
        if o.subscribers >= 10_000 {
            report.check(
                format!("target: {}: p99 <= 20 ms", out.bus),
                out.latency.quantile_ms(0.99) <= 20.0,
            );
        }
    }
    report.tables.push(t);
    report.data = json!({"options": format!("{o:?}"), "deployments": data});
    Ok(report.finish())
}

async fn deployment(
    launch: &Launch,
    extra: &[String],
    o: &Opts,
    bus: &str,
) -> anyhow::Result<Option<Outcome>> {
    let needs_redis = bus != "memory";
    let redis = match needs_redis {
        true => match gateway::redis_for(launch).await? {
            Some(r) => Some(r),
            None => return Ok(None),
        },
        false => None,
    };
    let mut args: Vec<String> = extra.to_vec();
    if let Some(r) = &redis {
        args.extend(["--redis".to_owned(), r.url.clone()]);
    }
    let (store, gateways): (Option<gateway::Store>, Vec<Gateway>) = if bus == "cluster" {
        let store = gateway::start_store(launch, None).await?;
        let data = Data::Remote(store.url.clone());
        let a = gateway::start(launch, &data, &args).await?;
        let b = gateway::start(launch, &data, &args).await?;
        (Some(store), vec![a, b])
    } else if bus == "memory" || bus == "redis" {
        (
            None,
            vec![gateway::start(launch, &Data::Embedded, &args).await?],
        )
    } else {
        anyhow::bail!("unknown bus `{bus}` (memory, redis, cluster)");
    };
    let first = &gateways[0];
    let agent = create_agent(first, o.delay_ms).await?;
    let per = o.subscribers / gateways.len();
    let mut crowds = Vec::new();
    for (g, gw) in gateways.iter().enumerate() {
        let n = if g + 1 == gateways.len() {
            o.subscribers - per * g
        } else {
            per
        };
        // Each gateway's subscribers use a key of that gateway (keys live in the shared store).
        crowds.push(
            Crowd::open(
                gw.addr,
                &gw.key,
                &agent,
                n,
                o.ws_percent,
                o.concurrency,
                g * per,
            )
            .await,
        );
    }
    let opened: u64 = crowds.iter().map(|c| c.opened).sum();
    let calibrated = Publisher::calibrate(&first.url, &first.key, &agent, o.words).await?;
    // The calibration run's last deliveries land before the baselines.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seq0 = max_seq(&crowds);
    let del0: u64 = crowds
        .iter()
        .map(|c| c.stats.deliveries.load(Relaxed))
        .sum();
    let cpu0: f64 = gateways.iter().map(|g| sys::cpu_secs(g.pid)).sum();
    let started = Instant::now();
    let publisher = calibrated.start(o.rate, Duration::from_secs(o.secs));
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let secs = started.elapsed().as_secs_f64();
    let seq1 = max_seq(&crowds);
    let del1: u64 = crowds
        .iter()
        .map(|c| c.stats.deliveries.load(Relaxed))
        .sum();
    let cpu1: f64 = gateways.iter().map(|g| sys::cpu_secs(g.pid)).sum();
    let load = sys::loadavg();
    let publisher_json = publisher.json();
    publisher.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latency = Hist::default();
    let mut errors = 0;
    let mut first_error = None;
    for c in &crowds {
        latency.merge(&c.stats.latency.snapshot());
        errors += c.stats.errors.load(Relaxed);
        first_error = first_error.or(c.stats.first_error());
    }
    for c in crowds {
        c.close().await;
    }
    drop(gateways);
    drop(store);
    let cpu = if launch_is_binary(launch) {
        (cpu1 - cpu0) / secs
    } else {
        0.0
    };
    Ok(Some(Outcome {
        bus: bus.to_owned(),
        opened,
        published: seq1.saturating_sub(seq0),
        deliveries: del1 - del0,
        secs,
        latency,
        errors,
        first_error,
        gateway_cpu: cpu,
        load,
        publisher: publisher_json,
    }))
}

fn launch_is_binary(l: &Launch) -> bool {
    matches!(l, Launch::Binary(_))
}

fn max_seq(crowds: &[Crowd]) -> u64 {
    crowds
        .iter()
        .map(|c| c.stats.max_seq.load(Relaxed))
        .max()
        .unwrap_or(0)
}
