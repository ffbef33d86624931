//! `bus`: what the Redis bus costs, measured at the bus (no HTTP; was
//! `examples/bus_bench.rs`): publish throughput with Redis' own CPU per
//! publish, then fan-out from one publisher to many subscribers through the
//! in-process bus, one `RedisBus` (one gateway) and two on one Redis (two
//! gateways, subscribers split evenly). Subscribers are tasks reading a
//! `Subscription` (what every SSE and WebSocket stream does), not sockets:
//! the figures are the bus's share of a delivery. Latency (publish to
//! delivery) is sampled on one subscriber in ten.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{json, Value};
use weir::bus::{
    memory::MemoryBus,
    redis::{RedisBus, RedisBusConfig},
    Bus, BusError,
};
use weir::domain::{AgentEvent, Channel, EventBody};

use crate::{
    gateway,
    hist::{AtomicHist, Hist},
    report::{Report, Table},
    units,
};

/// Subscribers whose latency is sampled: one in ten.
const SAMPLE_EVERY: usize = 10;

/// Options of the `bus` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Concurrent publishers of the throughput test (one channel each).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub publishers: Vec<usize>,
    /// Seconds of each throughput test.
    #[arg(long, default_value_t = 3)]
    pub publish_secs: u64,
    /// Fan-out cases as SUBSCRIBERSxEVENTS_PER_S, e.g. `1000x200,10000x30`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000x200,1000x1000,10000x30,10000x100,1000x5000"
    )]
    pub fanout: Vec<String>,
    /// Seconds of publishing per fan-out case.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
}

pub async fn run(o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("bus");
    let redis = gateway::start_redis()
        .await?
        .context("the bus scenario needs redis-server")?;
    let mut publish = Table::new(
        "publish throughput (one channel per publisher)",
        &[
            "publishers",
            "events/s",
            "Redis CPU per publish",
            "Redis time per script call",
        ],
    );
    let mut pub_data = Vec::new();
    for &n in &o.publishers {
        let p = publish_throughput(&redis.url, n, o.publish_secs).await?;
        publish.row(vec![
            n.to_string(),
            units::per_s(p["events_per_s"].as_f64().unwrap_or(0.0)),
            units::us(p["redis_cpu_us_per_publish"].as_f64().unwrap_or(0.0)),
            p["redis_us_per_call"]
                .as_f64()
                .map_or("-".into(), units::us),
        ]);
        pub_data.push(p);
    }
    report.tables.push(publish);
    let mut fan = Table::new(
        format!("fan-out, one publisher, {} s per case", o.secs),
        &[
            "bus",
            "subscribers",
            "events/s offered",
            "events/s published",
            "deliveries/s",
            "lagged",
            "p50",
            "p99",
            "p99.9",
        ],
    );
    let mut fan_data = Vec::new();
    for case in &o.fanout {
        let (subs, rate) = parse_case(case)?;
        for name in ["in-process", "redis, 1 gateway", "redis, 2 gateways"] {
            let buses: Vec<Arc<dyn Bus>> = match name {
                "in-process" => vec![Arc::new(MemoryBus::new(1000, 1024))],
                "redis, 1 gateway" => vec![Arc::new(redis_bus(&redis.url)?)],
                _ => vec![
                    Arc::new(redis_bus(&redis.url)?),
                    Arc::new(redis_bus(&redis.url)?),
                ],
            };
            let f = fanout(buses, subs, rate, o.secs).await?;
            fan.row(vec![
                name.into(),
                units::thousands(subs as f64),
                units::per_s(rate),
                units::per_s(f.published as f64 / f.secs),
                units::per_s(f.deliveries_per_s),
                f.lagged.to_string(),
                units::ms(f.latency.quantile_ms(0.5)),
                units::ms(f.latency.quantile_ms(0.99)),
                units::ms(f.latency.quantile_ms(0.999)),
            ]);
            report.check(
                format!("{name}, {case}: events delivered"),
                f.deliveries_per_s > 0.0,
            );
            fan_data.push(json!({
                "bus": name, "subscribers": subs, "offered_events_per_s": rate,
                "published": f.published, "published_per_s": f.published as f64 / f.secs,
                "deliveries_per_s": f.deliveries_per_s, "lagged": f.lagged, "latency": f.latency.summary(),
            }));
        }
    }
    report.tables.push(fan);
    report.data = json!({"options": format!("{o:?}"), "publish": pub_data, "fanout": fan_data});
    Ok(report.finish())
}

/// `1000x200` as (1000 subscribers, 200 events/s).
fn parse_case(case: &str) -> anyhow::Result<(usize, f64)> {
    let (s, r) = case
        .split_once('x')
        .with_context(|| format!("fan-out case `{case}`: SUBSCRIBERSxEVENTS_PER_S"))?;
    Ok((s.parse()?, r.parse()?))
}

fn redis_bus(url: &str) -> anyhow::Result<RedisBus> {
    let bus = RedisBus::new(RedisBusConfig::new(url))?;
    bus.start();
    Ok(bus)
}

/// A token delta; its `id` carries the event's number and its send time
/// (µs since the start), which the latency sample reads back.
fn event(i: u64, at_us: u64) -> AgentEvent {
    let mut e = AgentEvent::new(
        "agent-bench".into(),
        "run-bench".into(),
        "sess-bench".into(),
        EventBody::AssistantDelta {
            delta: "token ".into(),
        },
    );
    e.id = format!("msg-{i}x{at_us}").into();
    e
}

/// When the event was sent (see [`event`]).
fn sent_at(json: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(json).unwrap_or_default();
    let id = v["id"].as_str().unwrap_or_default();
    id.rsplit('x')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Publishes as fast as `publishers` concurrent tasks can for `secs`, each
/// on its own channel: events/s and Redis' own CPU per publish.
async fn publish_throughput(url: &str, publishers: usize, secs: u64) -> anyhow::Result<Value> {
    let bus = Arc::new(redis_bus(url)?);
    let client = redis::Client::open(url)?;
    let mut admin = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await?;
    let cpu0 = redis_cpu(&mut admin).await?;
    let t0 = Instant::now();
    let n = publish_flat_out(bus, "bench", publishers, secs).await? as f64;
    let cpu = redis_cpu(&mut admin).await? - cpu0;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await?;
    let per_call = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .and_then(|v| v.parse::<f64>().ok());
    Ok(json!({
        "publishers": publishers, "published": n, "events_per_s": n / t0.elapsed().as_secs_f64(),
        "redis_cpu_us_per_publish": cpu * 1e6 / n.max(1.0), "redis_us_per_call": per_call,
    }))
}

/// Publishes token deltas as fast as `publishers` concurrent tasks can for
/// `secs`, each on its own channel (`{prefix}-{publishers}-{i}`): the
/// number published. Shared by `bus` and `shards`.
pub(super) async fn publish_flat_out<B: Bus + 'static>(
    bus: Arc<B>,
    prefix: &str,
    publishers: usize,
    secs: u64,
) -> anyhow::Result<u64> {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (bus, count) = (bus.clone(), count.clone());
        let channel = Channel::Agent(format!("{prefix}-{publishers}-{p}").into());
        tasks.push(tokio::spawn(async move {
            bus.seed_seq(&channel, 0).await?;
            let event = event(0, 0);
            while Instant::now() < stop {
                bus.publish(&channel, &event).await?;
                count.fetch_add(1, Relaxed);
            }
            Ok::<_, BusError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count.load(Relaxed))
}

/// Redis' CPU seconds (user + sys) so far.
pub(super) async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum())
}

/// One fan-out case's figures.
struct Fanout {
    published: u64,
    /// How long publishing took.
    secs: f64,
    deliveries_per_s: f64,
    lagged: u64,
    latency: Hist,
}

/// `n` subscribers spread over `buses`, one publisher on the first bus at
/// `rate` events/s for `secs` (event `i` due at `t0 + i / rate`).
async fn fanout(
    buses: Vec<Arc<dyn Bus>>,
    n: usize,
    rate: f64,
    secs: u64,
) -> anyhow::Result<Fanout> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let channel = Channel::Agent(format!("bench-{}", NEXT.fetch_add(1, Relaxed)).into());
    buses[0].seed_seq(&channel, 0).await?;
    let base = Instant::now();
    let total = (rate * secs as f64) as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(AtomicHist::default());
    let mut readers = Vec::with_capacity(n);
    for i in 0..n {
        let mut sub = buses[i % buses.len()].subscribe(&channel, None).await?;
        let (delivered, lagged, latency) = (delivered.clone(), lagged.clone(), latency.clone());
        readers.push(tokio::spawn(async move {
            loop {
                match sub.next().await {
                    Ok(Some(ev)) => {
                        delivered.fetch_add(1, Relaxed);
                        if i % SAMPLE_EVERY == 0 {
                            let sent = sent_at(&ev.json);
                            latency
                                .record((base.elapsed().as_micros() as u64).saturating_sub(sent));
                        }
                        if ev.seq >= total {
                            break;
                        }
                    }
                    Err(BusError::Lagged { .. }) => {
                        lagged.fetch_add(1, Relaxed);
                        break;
                    }
                    _ => break,
                }
            }
        }));
    }
    let t0 = Instant::now();
    for i in 1..=total {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let at = base.elapsed().as_micros() as u64;
        buses[0].publish(&channel, &event(i, at)).await?;
    }
    // The publisher falls behind when one publish takes longer than 1/rate.
    let publish_secs = t0.elapsed().as_secs_f64();
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(30), r).await;
    }
    let took = t0.elapsed().as_secs_f64();
    Ok(Fanout {
        published: total,
        secs: publish_secs,
        deliveries_per_s: delivered.load(Relaxed) as f64 / took,
        lagged: lagged.load(Relaxed),
        latency: latency.snapshot(),
    })
}
