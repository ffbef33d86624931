//! `fanout --nchan` (issue 22): weir's fan-out beside nginx + nchan, the
//! targets taking turns in one invocation. Each turn starts one target,
//! publishes for `--secs` with nobody listening (CPU per publish), then
//! opens the same number of SSE subscribers, publishes for `--secs` again
//! (CPU per delivery, first-event latency), and closes them all before the
//! next target starts.
//!
//! Equal deliveries per second: both are offered `--rate` events/s; weir
//! publishes them through real echo runs (store writes included, `E`
//! events per run, calibrated), nchan through its HTTP publisher (one event
//! per publish, padded to the size of weir's events). First-event latency
//! runs from the publisher's stamp (taken just before the request is sent)
//! to each subscriber's first event of that publish.

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{create_agent, fanout::Opts, nchan, publish::Calibrated, publish::Publisher, Crowd};
use crate::{
    gateway::{self, Data},
    hist::Hist,
    report::{ms, thousands, Report, Table},
    sys,
};

/// Subscribers at most: one generator's sockets stay under a 20,000 fd
/// limit with the targets' own.
pub const MAX_SUBSCRIBERS: usize = 9_000;

/// Bytes of an nchan message's padding: with its stamp and JSON, about the
/// size of one of weir's echo-run events.
const NCHAN_PAD: usize = 200;

/// One turn's figures.
struct Turn {
    target: String,
    round: u32,
    opened: u64,
    events_per_publish: f64,
    /// Publishing alone: publishes, seconds, CPU seconds.
    alone: (u64, f64, f64),
    /// With subscribers: publishes, deliveries, seconds, CPU seconds.
    publishes: u64,
    deliveries: u64,
    secs: f64,
    cpu: f64,
    first: Hist,
    latency: Hist,
    errors: u64,
    first_error: Option<String>,
    run_errors: u64,
    load: f64,
}

impl Turn {
    fn cpu_per_publish_us(&self) -> f64 {
        self.alone.2 / self.alone.0.max(1) as f64 * 1e6
    }

    /// All of the turn's CPU over its deliveries.
    fn cpu_per_delivery_us(&self) -> f64 {
        self.cpu / self.deliveries.max(1) as f64 * 1e6
    }

    /// The same, less what its publishes cost alone.
    fn net_cpu_per_delivery_us(&self) -> f64 {
        let publishing = self.cpu_per_publish_us() / 1e6 * self.publishes as f64;
        (self.cpu - publishing).max(0.0) / self.deliveries.max(1) as f64 * 1e6
    }

    fn json(&self) -> Value {
        json!({
            "target": self.target, "round": self.round, "subscribers": self.opened,
            "events_per_publish": self.events_per_publish,
            "alone": {"publishes": self.alone.0, "secs": self.alone.1, "cpu_secs": self.alone.2},
            "publishes": self.publishes, "deliveries": self.deliveries, "secs": self.secs,
            "cpu_secs": self.cpu, "deliveries_per_s": self.deliveries as f64 / self.secs,
            "publishes_per_s": self.publishes as f64 / self.secs,
            "cpu_per_publish_us": self.cpu_per_publish_us(),
            "cpu_per_delivery_us": self.cpu_per_delivery_us(),
            "net_cpu_per_delivery_us": self.net_cpu_per_delivery_us(),
            "first_event": self.first.summary(), "latency": self.latency.summary(),
            "errors": self.errors, "first_error": self.first_error,
            "publish_errors": self.run_errors, "load_average": self.load,
        })
    }
}

pub async fn run(launch: &gateway::Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("fanout-nchan");
    let n = o.subscribers.min(MAX_SUBSCRIBERS);
    sys::raise_nofile(n as u64 * 2 + 4096)?;
    let mut targets: Vec<String> = o
        .buses
        .iter()
        .filter(|b| *b != "cluster")
        .cloned()
        .collect();
    if nchan::available() {
        targets.push("nchan".into());
    } else {
        report.check("nchan: skipped (no nginx or libnginx-mod-nchan)", true);
    }
    let mut turns = Vec::new();
    for round in 0..o.rounds.max(1) {
        for t in &targets {
            match turn(launch, extra, o, t, n, round).await {
                Ok(Some(turn)) => turns.push(turn),
                Ok(None) => report.check(format!("{t}: skipped (no redis-server)"), true),
                Err(e) => report.check(format!("{t}: {e:#}"), false),
            }
        }
    }
    report.tables.push(table(o, n, &turns));
    for t in &turns {
        let ok = t.errors == 0 && t.opened == n as u64 && t.run_errors == 0;
        report.check(
            format!(
                "{} round {}: every subscriber and publish ok",
                t.target, t.round
            ),
            ok,
        );
        report.check(
            format!("{} round {}: delivered", t.target, t.round),
            t.deliveries > 0,
        );
    }
    targets_checks(&mut report, &targets, &turns);
    report.data = json!({"options": format!("{o:?}"), "subscribers": n,
        "turns": turns.iter().map(Turn::json).collect::<Vec<_>>()});
    Ok(report.finish())
}

fn table(o: &Opts, n: usize, turns: &[Turn]) -> Table {
    let mut t = Table::new(
        format!(
            "{} SSE subscribers, {} events/s offered, {} s per phase, targets in turn",
            thousands(n as f64),
            o.rate,
            o.secs
        ),
        &[
            "target",
            "round",
            "publishes/s",
            "deliveries/s",
            "delivered",
            "CPU/publish",
            "CPU/delivery",
            "net CPU/delivery",
            "first p50",
            "first p99",
            "load avg",
        ],
    );
    for x in turns {
        let expected = x.publishes as f64 * x.events_per_publish * x.opened as f64;
        t.row(vec![
            x.target.clone(),
            x.round.to_string(),
            format!("{:.1}", x.publishes as f64 / x.secs),
            thousands(x.deliveries as f64 / x.secs),
            format!("{:.1} %", x.deliveries as f64 / expected.max(1.0) * 100.0),
            format!("{:.0} µs", x.cpu_per_publish_us()),
            format!("{:.2} µs", x.cpu_per_delivery_us()),
            format!("{:.2} µs", x.net_cpu_per_delivery_us()),
            ms(x.first.quantile_ms(0.5)),
            ms(x.first.quantile_ms(0.99)),
            format!("{:.2}", x.load),
        ]);
    }
    t
}

/// Median over rounds of `f` for one target.
fn median(turns: &[Turn], target: &str, f: impl Fn(&Turn) -> f64) -> Option<f64> {
    let mut v: Vec<f64> = turns.iter().filter(|t| t.target == target).map(f).collect();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// Issue 22's targets: each weir bus at or below nchan's CPU per delivery
/// and first-event p99 (medians over rounds).
fn targets_checks(report: &mut Report, targets: &[String], turns: &[Turn]) {
    let cpu = |t: &Turn| t.cpu_per_delivery_us();
    let p99 = |t: &Turn| t.first.quantile_ms(0.99);
    let (Some(nc), Some(np)) = (median(turns, "nchan", cpu), median(turns, "nchan", p99)) else {
        return;
    };
    for t in targets.iter().filter(|t| *t != "nchan") {
        let t = &format!("weir-{t}");
        if let (Some(c), Some(p)) = (median(turns, t, cpu), median(turns, t, p99)) {
            report.check(
                format!("target: {t}: CPU/delivery {c:.2} µs <= nchan's {nc:.2} µs"),
                c <= nc,
            );
            report.check(
                format!("target: {t}: first-event p99 {p:.1} ms <= nchan's {np:.1} ms"),
                p <= np,
            );
        }
    }
}

/// One target's turn: started, measured alone and with `n` subscribers,
/// stopped.
async fn turn(
    launch: &gateway::Launch,
    extra: &[String],
    o: &Opts,
    target: &str,
    n: usize,
    round: u32,
) -> anyhow::Result<Option<Turn>> {
    if target == "nchan" {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let server = nchan::start(workers).await?;
        let publisher = Calibrated::nchan(&server.pub_url(), NCHAN_PAD)?;
        let pids = || sys::with_children(server.pid);
        let targets = [(server.sub_path().to_owned(), String::new())];
        let open = Crowd::open_at(server.addr, "-", &targets, n, 0, o.concurrency, 0);
        return Ok(Some(
            measure(o, target, round, publisher, &pids, open).await,
        ));
    }
    let redis = match target {
        "memory" => None,
        "redis" => match gateway::redis_for(launch).await? {
            Some(r) => Some(r),
            None => return Ok(None),
        },
        _ => anyhow::bail!("unknown target `{target}` (memory, redis; nchan is added)"),
    };
    let mut args: Vec<String> = extra.to_vec();
    if let Some(r) = &redis {
        args.extend(["--redis".to_owned(), r.url.clone()]);
    }
    let gw = gateway::start(launch, &Data::Embedded, &args).await?;
    let agent = create_agent(&gw, o.delay_ms).await?;
    let publisher = Publisher::calibrate_stamped(&gw.url, &gw.key, &agent, o.words).await?;
    let pid = gw.pid;
    let pids = || vec![pid];
    let open = Crowd::open(gw.addr, &gw.key, &agent, n, 0, o.concurrency, 0);
    let turn = measure(o, &format!("weir-{target}"), round, publisher, &pids, open).await;
    drop(gw);
    drop(redis);
    Ok(Some(turn))
}

/// The two phases of a turn.
async fn measure(
    o: &Opts,
    target: &str,
    round: u32,
    publisher: Calibrated,
    pids: &dyn Fn() -> Vec<u32>,
    open: impl std::future::Future<Output = Crowd>,
) -> Turn {
    let cpu = || pids().into_iter().map(sys::cpu_secs).sum::<f64>();
    let window = Duration::from_secs(o.secs);
    let events_per_publish = publisher.events_per_run;
    // Publishing alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c0, t0) = (cpu(), Instant::now());
    let p = publisher.clone().start(o.rate, window);
    tokio::time::sleep(window).await;
    let alone = (
        p.counts.started.load(Relaxed),
        t0.elapsed().as_secs_f64(),
        cpu() - c0,
    );
    p.stop().await;
    // With subscribers.
    let crowd = open.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d0 = crowd.stats.deliveries.load(Relaxed);
    let (c0, t0) = (cpu(), Instant::now());
    let p = publisher.start(o.rate, window);
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let (deliveries, cpu_used) = (crowd.stats.deliveries.load(Relaxed) - d0, cpu() - c0);
    let (publishes, load) = (p.counts.started.load(Relaxed), sys::loadavg());
    let run_errors = p.counts.errors.load(Relaxed);
    p.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = &crowd.stats;
    let turn = Turn {
        target: target.to_owned(),
        round,
        opened: crowd.opened,
        events_per_publish,
        alone,
        publishes,
        deliveries,
        secs,
        cpu: cpu_used,
        first: s.first.snapshot(),
        latency: s.latency.snapshot(),
        errors: s.errors.load(Relaxed),
        first_error: s.first_error(),
        run_errors,
        load,
    };
    crowd.close().await;
    turn
}
