//! `shards`: publish throughput of the Redis bus through one Redis vs a
//! three-master Redis Cluster (`--redis-cluster`, sharded pub/sub), in the
//! same run, rounds interleaved. Each publisher publishes as fast as it can
//! on its own channel; channels land on the shard owning their hash tag.
//! Per Redis server: its share of the publishes (`evalsha` calls) and its
//! own CPU per publish (`INFO cpu`). The cluster has no replicas, like the
//! single Redis: the comparison is the publish work only.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use serde_json::{json, Value};
use weir::bus::{
    redis::{RedisBus, RedisBusConfig},
    Bus,
};

use crate::{
    gateway,
    report::{Report, Table},
    topology::cluster::RedisCluster,
    units,
};

/// Options of the `shards` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Concurrent publishers (one channel each).
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    pub publishers: Vec<usize>,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 3)]
    pub secs: u64,
    /// Rounds; each measures every target once, in turn.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

async fn node(port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    Ok(c.get_multiplexed_async_connection().await?)
}

pub async fn run(o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("shards");
    let single = gateway::start_redis()
        .await?
        .context("the shards scenario needs redis-server")?;
    let cluster = RedisCluster::start(0).await?;
    let masters = cluster.masters().await?;
    let mut table = Table::new(
        format!("publish throughput, {} s per measurement", o.secs),
        &[
            "round",
            "target",
            "publishers",
            "events/s",
            "per server: share of publishes",
            "per server: Redis CPU per publish",
        ],
    );
    let mut data = Vec::new();
    for round in 1..=o.rounds {
        for &n in &o.publishers {
            for target in ["1 Redis", "3-shard cluster"] {
                let (cfg, ports) = if target == "1 Redis" {
                    (RedisBusConfig::new(single.url.clone()), vec![single.port])
                } else {
                    let mut c = RedisBusConfig::new("");
                    c.cluster = cluster.addrs().split(',').map(str::to_owned).collect();
                    (c, masters.clone())
                };
                let m = measure(cfg, &ports, n, o.secs).await?;
                let shares: Vec<String> = m
                    .per_server
                    .iter()
                    .map(|s| format!("{:.0}%", s.0 * 100.0))
                    .collect();
                let cpus: Vec<String> = m.per_server.iter().map(|s| units::us(s.1)).collect();
                table.row(vec![
                    round.to_string(),
                    target.into(),
                    n.to_string(),
                    units::per_s(m.events_per_s),
                    shares.join(" / "),
                    cpus.join(" / "),
                ]);
                report.check(
                    format!("{target}, {n} publishers: published"),
                    m.events_per_s > 0.0,
                );
                data.push(json!({
                    "round": round, "target": target, "publishers": n,
                    "events_per_s": m.events_per_s,
                    "per_server": m.per_server.iter().map(|s| json!({"share": s.0, "cpu_us_per_publish": s.1})).collect::<Vec<Value>>(),
                }));
            }
        }
    }
    report.tables.push(table);
    report.data = json!({"options": format!("{o:?}"), "publish": data});
    Ok(report.finish())
}

struct Measured {
    events_per_s: f64,
    /// Per server: share of the publishes, its CPU µs per publish it ran.
    per_server: Vec<(f64, f64)>,
}

async fn measure(
    cfg: RedisBusConfig,
    ports: &[u16],
    publishers: usize,
    secs: u64,
) -> anyhow::Result<Measured> {
    let bus = Arc::new(RedisBus::new(cfg)?);
    bus.start();
    let mut admins = Vec::new();
    for &p in ports {
        let mut c = node(p).await?;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut c)
            .await?;
        let cpu = super::bus::redis_cpu(&mut c).await?;
        admins.push((c, cpu));
    }
    let t0 = Instant::now();
    let n = super::bus::publish_flat_out(bus, "shards", publishers, secs).await? as f64;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut per_server = Vec::new();
    for (c, cpu0) in &mut admins {
        let cpu = super::bus::redis_cpu(c).await? - *cpu0;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(c)
            .await?;
        let calls = stats
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split(',').next())
            .and_then(|f| f.rsplit('=').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        per_server.push((calls / n.max(1.0), cpu * 1e6 / calls.max(1.0)));
    }
    Ok(Measured {
        events_per_s: n / elapsed,
        per_server,
    })
}
