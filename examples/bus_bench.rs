//! What the Redis bus costs, measured at the bus (no HTTP): publish
//! throughput and Redis CPU per publish, and fan-out deliveries/s with
//! publish-to-deliver latency for the in-process bus, one Redis bus (one
//! gateway) and two Redis buses on one Redis (two gateways). Starts its own
//! private redis-server (never 6379).
//!
//! ```sh
//! cargo run --release --example bus_bench                  # defaults below
//! cargo run --release --example bus_bench -- 1000,10000 200 5
//! #                                     subscribers  events/s  seconds
//! ```
//!
//! Subscribers are tasks reading a `Subscription` (what every SSE and
//! WebSocket stream does), not sockets: the figures are the bus's share of a
//! delivery. Latency is measured on every tenth subscriber.

#[path = "../tests/api/redis_support.rs"]
mod redis_support;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use redis_support::RedisServer;
use serde_json::Value;
use weir::bus::{
    memory::MemoryBus,
    redis::{RedisBus, RedisBusConfig},
    Bus, BusError,
};
use weir::domain::{AgentEvent, Channel, EventBody};

/// Subscribers whose latency is sampled: one in ten.
const SAMPLE_EVERY: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let subscribers: Vec<usize> = args
        .first()
        .map_or("1000,10000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rate: f64 = args.get(1).map_or(Ok(200.0), |s| s.parse())?;
    let secs: u64 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let redis = RedisServer::start().await;
    println!("## publish throughput (events/s through the publish script)\n");
    println!(
        "| concurrent publishers | events/s | Redis CPU per publish | Redis µs per script call |"
    );
    println!("|---|---|---|---|");
    for publishers in [1usize, 8, 64] {
        publish_throughput(&redis, publishers).await?;
    }
    println!("\n## fan-out: 1 publisher at {rate} events/s for {secs} s\n");
    println!("| bus | subscribers | events | deliveries/s | lagged | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &subscribers {
        let memory: Arc<dyn Bus> = Arc::new(MemoryBus::new(1000, 1024));
        fanout("in-process", vec![memory], n, rate, secs).await?;
        let one: Arc<dyn Bus> = Arc::new(redis_bus(&redis)?);
        fanout("redis, 1 gateway", vec![one], n, rate, secs).await?;
        let a: Arc<dyn Bus> = Arc::new(redis_bus(&redis)?);
        let b: Arc<dyn Bus> = Arc::new(redis_bus(&redis)?);
        fanout("redis, 2 gateways", vec![a, b], n, rate, secs).await?;
    }
    Ok(())
}

fn redis_bus(redis: &RedisServer) -> Result<RedisBus, BusError> {
    RedisBus::start(RedisBusConfig::new(redis.url()))
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

/// Publishes as fast as `publishers` concurrent tasks can for 3 s, each on
/// its own channel; reports events/s and Redis' own CPU per publish.
async fn publish_throughput(redis: &RedisServer, publishers: usize) -> anyhow::Result<()> {
    let bus = Arc::new(redis_bus(redis)?);
    let mut admin = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await?;
    let cpu0 = redis_cpu(&mut admin).await?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (bus, count) = (bus.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let channel = Channel::Agent(format!("bench-{publishers}-{p}").into());
            bus.seed_seq(&channel, 0).await?;
            while Instant::now() < stop {
                bus.publish(&channel, &event(0, 0)).await?;
                count.fetch_add(1, Relaxed);
            }
            Ok::<_, BusError>(())
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        t.await??;
    }
    let n = count.load(Relaxed) as f64;
    let cpu = redis_cpu(&mut admin).await? - cpu0;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await?;
    let per_call = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .unwrap_or("?")
        .to_owned();
    println!(
        "| {publishers} | {:.0} | {:.1} µs | {per_call} |",
        n / t0.elapsed().as_secs_f64(),
        cpu * 1e6 / n
    );
    Ok(())
}

/// Redis' CPU seconds (user + sys) so far.
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum())
}

/// `n` subscribers spread over `buses`, one publisher on the first bus at
/// `rate` events/s for `secs`.
async fn fanout(
    name: &str,
    buses: Vec<Arc<dyn Bus>>,
    n: usize,
    rate: f64,
    secs: u64,
) -> anyhow::Result<()> {
    let channel = Channel::Agent(format!("bench-{}", rand_suffix()).into());
    buses[0].seed_seq(&channel, 0).await?;
    let base = Instant::now();
    let total = (rate * secs as f64) as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(n);
    for i in 0..n {
        let mut sub = buses[i % buses.len()].subscribe(&channel, None).await?;
        let (delivered, lagged) = (delivered.clone(), lagged.clone());
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                match sub.next().await {
                    Ok(Some(ev)) => {
                        delivered.fetch_add(1, Relaxed);
                        if i % SAMPLE_EVERY == 0 {
                            let v: Value = serde_json::from_slice(&ev.json).unwrap_or_default();
                            let id = v["id"].as_str().unwrap_or_default();
                            let sent = id
                                .rsplit('x')
                                .next()
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(0);
                            let now = base.elapsed().as_micros() as u64;
                            lat.push(now.saturating_sub(sent) as u32);
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
            lat
        }));
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    for i in 1..=total {
        tokio::time::sleep_until((t0 + period.mul_f64(i as f64)).into()).await;
        let at = base.elapsed().as_micros() as u64;
        buses[0].publish(&channel, &event(i, at)).await?;
    }
    let mut lat = Vec::new();
    for r in readers {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(30), r).await {
            lat.extend(l);
        }
    }
    let took = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or("-".to_owned(), |us| {
                format!("{:.2} ms", f64::from(*us) / 1000.0)
            })
    };
    println!(
        "| {name} | {n} | {total} | {:.0} | {} | {} | {} | {} | {} |",
        delivered.load(Relaxed) as f64 / took,
        lagged.load(Relaxed),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    Ok(())
}

fn rand_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Relaxed)
}
