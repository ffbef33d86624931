//! `drain`: a rolling restart under load (issue 21). Two gateways on one
//! Redis and one `weir store`; F followers (half SSE, half WebSocket) of one
//! agent (or of `--channels` agents, [`super::agent_of`]) on A, and a
//! baseline crowd of the same agents on B; echo runs publish through B the
//! whole time, taking turns over the agents. A gets SIGTERM; its followers
//! come back on B with the server's hints ([`follow`]). Reported per mode
//! (spreading on, off): the spread of A's closes, the peak reconnects per
//! second on B, B's delivery p99 (its baseline crowd) before and during the
//! drain, and after it (every follower on B: the load B carries from then
//! on, the fair reference for what the reconnects themselves cost), the
//! store requests B made during the burst, where B's resumes read their
//! history, the CPU each process used in each window, and gaps or repeats
//! seen by any follower. The crowd is read on a thread of its own, apart
//! from the followers (`Reader`).

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{sync::Semaphore, task::JoinSet};

use super::{
    bus::redis_cpu,
    create_agent,
    follow::{follow, Flock},
    publish::Publisher,
    Crowd,
};
use crate::{
    client::Kind,
    gateway::{self, Data, Gateway, Launch},
    hist::Hist,
    report::{ms, thousands, Report, Table},
    sys,
};

/// Options of the `drain` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Followers on gateway A, moved to B by the drain.
    #[arg(long, default_value_t = 9_000)]
    pub followers: usize,
    /// Share of WebSockets among them, in percent.
    #[arg(long, default_value_t = 50)]
    pub ws_percent: u32,
    /// Subscribers on B the whole time (its delivery latency is measured).
    #[arg(long, default_value_t = 500)]
    pub baseline: usize,
    /// Agents the followers and the crowd are spread over (subscriber `i`
    /// follows agent `(i / 2) mod N`, [`super::agent_of`]; the publisher's
    /// runs take turns over them).
    /// With 1, each event is one pass over all of B's subscribers, so B's
    /// p99 grows with the crowd the drain moves onto it; with more, each
    /// event reaches a few of them, as a gateway of many sessions sees.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Events offered per second (echo runs through B).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Gap between an echo run's tokens (`echo_delay_ms`). A run's events
    /// go out as one burst unless this spreads them over the gap between
    /// runs (about 2,700 ms at `--rate 10`): at 9,500 subscribers a burst
    /// is queued delivery, whatever the reconnects do.
    #[arg(long, default_value_t = 5)]
    pub delay_ms: u64,
    /// Runs B executes at once (its `--workers`, the gateway's default
    /// unless set): at least runs per second x a run's length (words x
    /// `--delay-ms`), or B's run queue, not `--rate`, sets the load (a
    /// check in the report says when the runs fell behind).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// `--drain-spread-secs` of A with spreading on.
    #[arg(long, default_value_t = 10)]
    pub spread_secs: u64,
    /// `--drain-delay-secs` of A.
    #[arg(long, default_value_t = 2)]
    pub delay_secs: u64,
    /// Seconds measured before the signal.
    #[arg(long, default_value_t = 5)]
    pub before_secs: u64,
    /// Modes: spread (A's spread and hints), instant (spread 0: no hints).
    #[arg(long, value_delimiter = ',', default_value = "spread,instant")]
    pub modes: Vec<String>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// Words per published run (a run publishes about words + 7 events).
const WORDS: usize = 20;

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("drain");
    anyhow::ensure!(
        matches!(launch, Launch::Binary(_)),
        "the drain scenario signals a gateway process: run it with a weir binary"
    );
    sys::raise_nofile((o.followers + o.baseline) as u64 * 3 + 4096)?;
    let mut rows = Vec::new();
    for mode in &o.modes {
        match mode_run(launch, extra, o, mode).await {
            Ok(Some(row)) => rows.push(row),
            Ok(None) => report.check(format!("{mode}: skipped (no redis-server)"), true),
            Err(e) => report.check(format!("{mode}: {e:#}"), false),
        }
    }
    let mut t = Table::new(
        format!(
            "{} followers on A ({} % WebSocket), {} on B, over {} agent(s), {} events/s offered",
            thousands(o.followers as f64),
            o.ws_percent,
            o.baseline,
            o.channels.max(1),
            o.rate
        ),
        &[
            "mode",
            "back on B",
            "A's closes p5..p95",
            "peak reconnects/s on B",
            "B p99 before",
            "B p99 during",
            "B p99 after",
            "B store reads for reconnects (key / floor)",
            "all B store requests",
            "gaps / repeats",
        ],
    );
    for r in &rows {
        t.row(vec![
            r["mode"].as_str().unwrap_or("").to_owned(),
            format!("{} of {}", r["back"], r["followers"]),
            format!("{:.2} s", r["closes_p5_p95_s"].as_f64().unwrap_or(0.0)),
            thousands(r["reconnect_peak_per_s"].as_f64().unwrap_or(0.0)),
            ms(r["before"]["p99_ms"].as_f64().unwrap_or(0.0)),
            ms(r["during"]["p99_ms"].as_f64().unwrap_or(0.0)),
            ms(r["after"]["p99_ms"].as_f64().unwrap_or(0.0)),
            format!("{} / {}", r["get_key"], r["floor_checks"]),
            r["store_requests"].to_string(),
            format!("{} / {}", r["gaps"], r["repeats"]),
        ]);
        let mode = r["mode"].as_str().unwrap_or("");
        report.check(
            format!("{mode}: every follower back on B, none failed"),
            r["back"] == r["followers"] && r["errors"] == 0,
        );
        report.check(
            format!("{mode}: no gap and no repeat"),
            r["gaps"] == 0 && r["repeats"] == 0,
        );
        report.check(
            format!("{mode}: B ran the runs as they were offered (none queued)"),
            kept_up(&r["publisher"], r["run_secs"].as_f64().unwrap_or(0.0)),
        );
        if mode == "spread" {
            let ratio = r["p99_ratio"].as_f64().unwrap_or(f64::INFINITY);
            report.check("target: spread: B's p99 during <= 2x before", ratio <= 2.0);
        }
        report.check(
            format!("target: {mode}: at most one key lookup per distinct key"),
            r["get_key"].as_u64().unwrap_or(u64::MAX) <= r["keys_in_use"].as_u64().unwrap_or(0),
        );
    }
    report.tables.push(t);
    report.data = json!({"options": format!("{o:?}"), "modes": rows});
    Ok(report.finish())
}

/// The crowd's own runtime: one worker thread, shut down without blocking
/// when the run ends (a runtime may not be dropped in async code).
struct Reader(Option<tokio::runtime::Runtime>);

impl Reader {
    fn start() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("crowd")
            .enable_all()
            .build()?;
        Ok(Self(Some(rt)))
    }

    fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("running").spawn(f)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One mode: fresh Redis, store and gateways.
async fn mode_run(
    launch: &Launch,
    extra: &[String],
    o: &Opts,
    mode: &str,
) -> anyhow::Result<Option<Value>> {
    let spread = match mode {
        "spread" => o.spread_secs,
        "instant" => 0,
        other => anyhow::bail!("unknown mode `{other}` (spread, instant)"),
    };
    let Some(redis) = gateway::redis_for(launch).await? else {
        return Ok(None);
    };
    let store = gateway::start_store(launch, None).await?;
    let data = Data::Remote(store.url.clone());
    let mut args = extra.to_vec();
    args.extend([
        "--redis".to_owned(),
        redis.url.clone(),
        format!("--drain-delay-secs={}", o.delay_secs),
        format!("--drain-spread-secs={spread}"),
        format!("--grace-secs={}", spread + 10),
    ]);
    // A only queues runs: every run executes on B, which stays up.
    let mut a_args = args.clone();
    a_args.push("--workers=0".to_owned());
    let a = gateway::start(launch, &data, &a_args).await?;
    args.push(format!("--workers={}", o.workers));
    let b = gateway::start(launch, &data, &args).await?;
    let mut agents = Vec::new();
    for _ in 0..o.channels.max(1) {
        agents.push(create_agent(&b, o.delay_ms).await?);
    }
    let calibrated = Publisher::calibrate(&b.url, &b.key, &agents[0], WORDS)
        .await?
        .across(&b.url, &agents);
    // B's crowd is what measures B, so it is read on a thread of its own:
    // on the followers' runtime each event's 500 crowd reads queued behind
    // the followers' 9,000, and the followers' reconnects (handshakes,
    // resumes) in this same process lengthened that queue, which the
    // crowd's latency then counted as B's.
    let reader = Reader::start()?;
    let (to, key, ids) = (b.addr, b.key.clone(), agents.clone());
    let (n, ws, conc, first) = (o.baseline, o.ws_percent, o.concurrency, o.followers);
    let crowd = reader
        .spawn(async move { Crowd::open_agents(to, &key, &ids, n, ws, conc, first).await })
        .await?;
    let flock = Flock::new(agents, a.key.clone(), a.addr, b.addr);
    let tasks = open_followers(&flock, o).await;
    let run_secs = calibrated.run_secs;
    let ramp = ramp(run_secs);
    let window = Duration::from_secs(2 * o.before_secs + o.delay_secs + 2 * spread + 30) + ramp;
    let publisher = calibrated.start(o.rate, window);
    tokio::time::sleep(ramp).await;
    let warm = crowd.stats.latency.snapshot();
    let mut cpu = Cpu::new(&redis.url, &a, &b).await?;
    tokio::time::sleep(Duration::from_secs(o.before_secs)).await;
    let signal = crowd.stats.latency.snapshot();
    let before = signal.since(&warm);
    let requests0 = metrics_text(&b).await?;
    cpu.mark("before").await;
    *flock.signalled.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    // SAFETY: kill(2) on the gateway process this tool started.
    #[allow(unsafe_code, reason = "signals a process we started")]
    unsafe {
        libc::kill(a.pid as libc::pid_t, libc::SIGTERM);
    }
    let limit = Duration::from_secs(o.delay_secs + 2 * spread + 20);
    let opened = flock.opened.load(Relaxed);
    super::wait_for(limit, || flock.back.load(Relaxed) >= opened).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_end = crowd.stats.latency.snapshot();
    let during = at_end.since(&signal);
    let requests1 = metrics_text(&b).await?;
    cpu.mark("during").await;
    // The same load with every follower on B, and no reconnect.
    tokio::time::sleep(Duration::from_secs(o.before_secs)).await;
    let after = crowd.stats.latency.snapshot().since(&at_end);
    cpu.mark("after").await;
    let publisher_json = publisher.json();
    publisher.stop().await;
    flock.stop.cancel();
    let mut tasks = tasks;
    while tasks.join_next().await.is_some() {}
    crowd.close().await;
    drop(reader);
    let mut row = outcome(mode, spread, o, &flock, &before, &during);
    row["after"] = after.summary();
    row["p99_during_over_after"] =
        (during.quantile_ms(0.99) / after.quantile_ms(0.99).max(0.001)).into();
    row["cpu_cores"] = cpu.json();
    // The reconnects' own reads: the key (`get_key`) and the channel's
    // floor (`last_event_seq`); the runs the publisher starts through B
    // make the rest (`get_agent`, `append_events`, …).
    let store = r#"weir_store_requests_total{method=""#;
    let made = delta(&metric(&requests0, store), &metric(&requests1, store));
    row["get_key"] = made["get_key"].as_u64().unwrap_or(0).into();
    // The followers' key (new to B) and B's own (the publisher's and the
    // baseline's, whose cache entry may age out during the window).
    row["keys_in_use"] = 2.into();
    row["floor_checks"] = made["last_event_seq"].as_u64().unwrap_or(0).into();
    row["store_requests"] = made
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>())
        .into();
    row["store_by_method"] = made;
    let replays = delta(
        &metric(&requests0, "weir_bus_replays_total{source=\""),
        &metric(&requests1, "weir_bus_replays_total{source=\""),
    );
    row["b_replays_from"] = replays;
    row["publisher"] = publisher_json;
    row["run_secs"] = run_secs.into();
    drop((a, b, store, redis));
    Ok(Some(row))
}

/// How long the publisher takes to reach its steady event rate, given how
/// long one run lasts (`run_secs`, timed on the calibration run): runs
/// start at the offered rate from the first second, but until the first
/// ones end fewer are in flight than later, so fewer events go out. The
/// window before the signal starts after it: from the publisher's start,
/// with many runs in flight at once (`--channels 90`), the first seconds
/// offered a fraction of the load the drain was then compared with.
fn ramp(run_secs: f64) -> Duration {
    Duration::from_secs_f64(run_secs.max(0.0) + 1.0)
}

/// Opens every follower on A, `concurrency` handshakes at a time.
async fn open_followers(flock: &Arc<Flock>, o: &Opts) -> JoinSet<()> {
    let gate = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..o.followers {
        let kind = Kind::of(i, o.ws_percent);
        let f = flock.clone();
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        tasks.spawn(follow(i, kind, f, permit));
    }
    let _all = gate.acquire_many(o.concurrency.max(1) as u32).await;
    tasks
}

/// The figures of one mode.
fn outcome(mode: &str, spread: u64, o: &Opts, f: &Flock, before: &Hist, during: &Hist) -> Value {
    let mut closes = f.closes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    closes.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        closes
            .get(((closes.len() as f64 - 1.0) * q) as usize)
            .copied()
    };
    let returns = f.returns.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let p99_before = before.quantile_ms(0.99);
    let p99_during = during.quantile_ms(0.99);
    json!({
        "mode": mode, "spread_secs": spread, "channels": o.channels.max(1), "delay_secs": o.delay_secs, "echo_delay_ms": o.delay_ms,
        "followers": f.opened.load(Relaxed), "back": f.back.load(Relaxed),
        "gaps": f.gaps.load(Relaxed), "repeats": f.repeats.load(Relaxed),
        "errors": f.errors.errors.load(Relaxed), "first_error": f.errors.first_error(),
        "closes_first_s": pick(0.0), "closes_last_s": pick(1.0),
        "closes_p5_p95_s": pick(0.95).zip(pick(0.05)).map(|(a, b)| a - b),
        "reconnect_peak_per_s": peak_per_s(&returns),
        "deliveries_on_b": f.on_b.deliveries.load(Relaxed),
        "before": before.summary(), "during": during.summary(),
        "p99_ratio": p99_during / p99_before.max(0.001),
    })
}

/// Whether B's workers kept up with the publisher: every run started
/// ended, but for those still within a run's length (`run_secs`) and one
/// second more of the stop, and none failed or was skipped. Runs queued
/// behind too few `--workers` would lower the load below the offered one
/// while every other number looked fine.
fn kept_up(publisher: &Value, run_secs: f64) -> bool {
    let n = |k: &str| publisher[k].as_f64().unwrap_or(f64::NAN);
    let in_flight = n("runs_per_s") * (run_secs + 1.0);
    n("runs_done") + in_flight.ceil() >= n("runs_started")
        && n("run_errors") == 0.0
        && n("runs_skipped") == 0.0
}

/// The most reconnects in any one-second window (100 ms steps).
fn peak_per_s(times: &[f64]) -> u64 {
    let mut slots = std::collections::BTreeMap::<i64, u64>::new();
    for t in times {
        *slots.entry((t * 10.0).floor() as i64).or_default() += 1;
    }
    let Some((&first, _)) = slots.first_key_value() else {
        return 0;
    };
    let last = *slots.last_key_value().map_or(&first, |(k, _)| k);
    (first..=last)
        .map(|s| {
            (s..s + 10)
                .map(|k| slots.get(&k).copied().unwrap_or(0))
                .sum()
        })
        .max()
        .unwrap_or(0)
}

/// B's `/metrics` text.
async fn metrics_text(gw: &Gateway) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{}/metrics", gw.url))
        .await?
        .text()
        .await?)
}

/// One counter of a `/metrics` text by its single label's value;
/// `prefix` is the name and label up to the value's opening quote.
fn metric(text: &str, prefix: &str) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix) else {
            continue;
        };
        let (method, n) = rest.split_once('"').unwrap_or_default();
        let n = n
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        by.insert(method.to_owned(), n);
    }
    by
}

/// The counts added between two readings of [`metric`].
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Value {
    let by: serde_json::Map<String, Value> = after
        .iter()
        .map(|(m, n)| (m.clone(), (n - before.get(m).copied().unwrap_or(0)).into()))
        .collect();
    Value::Object(by)
}

/// CPU seconds of A, B, this load generator and Redis, per window, as
/// cores busy (CPU seconds over wall seconds).
struct Cpu {
    pids: [(&'static str, u32); 3],
    redis: redis::aio::MultiplexedConnection,
    last: (Instant, [f64; 4]),
    windows: serde_json::Map<String, Value>,
}

impl Cpu {
    async fn new(redis_url: &str, a: &Gateway, b: &Gateway) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)?;
        let redis = client.get_multiplexed_async_connection().await?;
        let pids = [("a", a.pid), ("b", b.pid), ("load", std::process::id())];
        let mut cpu = Self {
            pids,
            redis,
            last: (Instant::now(), [0.0; 4]),
            windows: serde_json::Map::new(),
        };
        cpu.last = cpu.read().await;
        Ok(cpu)
    }

    async fn read(&mut self) -> (Instant, [f64; 4]) {
        let redis = redis_cpu(&mut self.redis).await.unwrap_or(0.0);
        let [a, b, load] = self.pids.map(|(_, pid)| sys::cpu_secs(pid));
        (Instant::now(), [a, b, load, redis])
    }

    /// Closes the window `name` (since the last mark) and opens the next.
    async fn mark(&mut self, name: &str) {
        let now = self.read().await;
        let wall = now.0.duration_since(self.last.0).as_secs_f64();
        let busy =
            |i: usize| ((now.1[i] - self.last.1[i]) / wall.max(0.001) * 100.0).round() / 100.0;
        let names = ["a", "b", "load", "redis"];
        let w: serde_json::Map<String, Value> = (0..4)
            .map(|i| (names[i].to_owned(), busy(i).into()))
            .collect();
        let mut w = Value::Object(w);
        w["secs"] = ((wall * 10.0).round() / 10.0).into();
        self.windows.insert(name.to_owned(), w);
        self.last = now;
    }

    fn json(&self) -> Value {
        Value::Object(self.windows.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_queued_behind_the_workers_fail_the_check() {
        use serde_json::json;
        let publisher = |started: u64, done: u64, skipped: u64| {
            json!({"runs_per_s": 16.5, "runs_started": started, "runs_done": done,
                   "run_errors": 0, "runs_skipped": skipped})
        };
        // 4.4 s runs at 16.5/s: up to 90 still in flight at the stop.
        assert!(super::kept_up(&publisher(484, 409, 0), 4.4));
        assert!(super::kept_up(&publisher(484, 394, 0), 4.4));
        // The first try at ninety agents: most runs waited for a worker.
        assert!(!super::kept_up(&publisher(400, 80, 0), 4.4));
        assert!(!super::kept_up(&publisher(484, 409, 3), 4.4));
        // A result without the publisher's figures does not pass.
        assert!(!super::kept_up(&json!({}), 4.4));
        assert_eq!(super::ramp(4.4), std::time::Duration::from_secs_f64(5.4));
    }

    #[test]
    fn the_peak_is_the_busiest_second() {
        let times = [0.0, 0.05, 0.5, 0.95, 1.2, 3.0];
        assert_eq!(super::peak_per_s(&times), 4);
        assert_eq!(super::peak_per_s(&[]), 0);
    }
}
