//! `edge`: the cost of one per-key rate-limit check (`Edge::check_rate`,
//! which runs on every authenticated request right after auth), local and
//! Redis-backed (was the ignored test `tests/api/edge/bench.rs`), and of one
//! run-start check (`Edge::start_run`: the rate, the key's and its
//! account's token budgets and a `max_runs` slot, one Redis call; the slot
//! is given back at once, its Redis release queued as when a run ends), and
//! of one token charge per streamed chunk (`TokenMeter::completion` on a
//! key and an account with budgets: no Redis call). Checks are called back
//! to back over `--keys` keys in rotation, each timed with
//! `Instant::now()`; the Redis ones against a private `redis-server`. Also
//! the cost of counting one request for usage (`UsageMeter::count_request`,
//! on every authenticated request).

use std::time::Instant;

use tokio_util::task::TaskTracker;

use anyhow::Context;
use serde_json::{json, Value};
use weir::{
    config::ServeConfig,
    edge::{Edge, TokenMeter},
    store::{AccountLimits, KeyRecord},
};

use crate::{
    gateway,
    report::{Report, Table},
    units,
};

/// Options of the `edge` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Checks measured with the local limiter (after as many to warm up).
    #[arg(long, default_value_t = 1_000_000)]
    pub checks: usize,
    /// Checks measured with the Redis limiter.
    #[arg(long, default_value_t = 50_000)]
    pub redis_checks: usize,
    /// Keys in rotation.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
}

fn key(i: usize, rpm: u32) -> KeyRecord {
    KeyRecord {
        id: format!("key-bench{i}").into(),
        account_id: "default".into(),
        label: String::new(),
        scopes: vec!["*".into()],
        rpm,
        // Budgets no check reaches, so that every run start checks them.
        tpm: Some(100_000_000),
        daily_tokens: Some(1_000_000_000_000),
        max_runs: None,
        max_websockets: None,
        max_sse_streams: None,
        expires_at: None,
        models: None,
        hash: String::new(),
        prev_hash: None,
        prev_until: None,
        created_at: String::new(),
        last_used_at: None,
        revoked_at: None,
    }
}

/// Nanoseconds of each of `n` checks.
async fn measure(edge: &Edge, keys: &[KeyRecord], n: usize) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = &keys[i % keys.len()];
        let t0 = Instant::now();
        let d = edge.check_rate(k).await;
        out.push(t0.elapsed().as_nanos() as u64);
        anyhow::ensure!(d.is_some(), "the limiter is off");
    }
    Ok(out)
}

/// Nanoseconds of each of `n` run-start checks (slot taken and given back).
async fn measure_runs(edge: &Edge, keys: &[KeyRecord], n: usize) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = &keys[i % keys.len()];
        let t0 = Instant::now();
        let started = edge.start_run(k, ACCOUNT).await;
        out.push(t0.elapsed().as_nanos() as u64);
        // A refusal (the key over its rate) costs what a pass does.
        drop(started);
    }
    Ok(out)
}

/// The account's budgets in every run start: both counters are charged.
const ACCOUNT: AccountLimits = AccountLimits {
    tpm: Some(100_000_000),
    daily_tokens: Some(1_000_000_000_000),
};

/// Nanoseconds of each of `n` token charges of one streamed chunk (16
/// characters) on `keys` in rotation.
fn measure_chunks(edge: &Edge, keys: &[KeyRecord], n: usize) -> Vec<u64> {
    let mut meters: Vec<TokenMeter> = keys
        .iter()
        .map(|k| TokenMeter::new(edge.check_tokens(k, ACCOUNT).ok().flatten(), None))
        .collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let m = &mut meters[i % keys.len()];
        let t0 = Instant::now();
        let spent = m.completion(16);
        out.push(t0.elapsed().as_nanos() as u64);
        debug_assert!(spent.is_none());
    }
    out
}

/// Nanoseconds of each of `n` requests counted for usage
/// (`UsageMeter::count_request`, on every authenticated request).
fn measure_usage(keys: &[KeyRecord], n: usize) -> Vec<u64> {
    let meter = weir::usage::UsageMeter::default();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = &keys[i % keys.len()];
        let t0 = Instant::now();
        meter.count_request(&k.account_id, k.id.as_str());
        out.push(t0.elapsed().as_nanos() as u64);
    }
    out
}

/// p50, p99, p99.9, max and mean of `ns`, in µs.
pub fn summary(mut ns: Vec<u64>) -> Value {
    ns.sort_unstable();
    let n = ns.len().max(1);
    let at = |q: f64| {
        ns.get(((n as f64 * q) as usize).min(n - 1))
            .map_or(0.0, |v| *v as f64 / 1e3)
    };
    let mean = ns.iter().sum::<u64>() as f64 / n as f64 / 1e3;
    json!({"checks": ns.len(), "p50_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999),
           "max_us": at(1.0), "mean_us": mean})
}

pub async fn run(o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("edge");
    let cfg = ServeConfig::for_data_dir("/nonexistent").edge;
    // The default 120 rpm: most local checks are refusals after a key's
    // first 120, which cost the same as a pass.
    let keys: Vec<KeyRecord> = (0..o.keys.max(1)).map(|i| key(i, 120)).collect();
    let local = Edge::new(&cfg, None, "weir:")?;
    measure(&local, &keys, o.checks).await?;
    let local_run = summary(measure_runs(&local, &keys, o.checks).await?);
    let chunk = summary(measure_chunks(&local, &keys, o.checks));
    let usage = summary(measure_usage(&keys, o.checks));
    let local = summary(measure(&local, &keys, o.checks).await?);

    let redis = gateway::start_redis()
        .await?
        .context("the edge scenario needs redis-server")?;
    let edge = std::sync::Arc::new(Edge::new(
        &cfg,
        Some(weir::bus::redis::RedisTarget::Direct(Box::new(
            redis::Client::open(redis.url.as_str())?,
        ))),
        "weir:",
    )?);
    // Gives run slots back in Redis, as a gateway does.
    let tasks = TaskTracker::new();
    edge.start(&tasks);
    // A high rpm, so the local first stage lets every check through to Redis.
    let keys: Vec<KeyRecord> = (0..o.keys.max(1)).map(|i| key(i, 1_000_000)).collect();
    measure(&edge, &keys, o.redis_checks / 10).await?;
    let remote_run = summary(measure_runs(&edge, &keys, o.redis_checks).await?);
    let remote = summary(measure(&edge, &keys, o.redis_checks).await?);

    let mut t = Table::new(
        format!(
            "one rate-limit check, {} keys in rotation",
            units::thousands(o.keys as f64)
        ),
        &["limiter", "checks", "p50", "p99", "p99.9", "mean"],
    );
    let rows = [
        ("local", &local),
        ("redis", &remote),
        ("local run start", &local_run),
        ("redis run start", &remote_run),
        ("token charge per chunk", &chunk),
        ("usage count per request", &usage),
    ];
    for (name, s) in rows {
        let f = |k: &str| units::us(s[k].as_f64().unwrap_or(0.0));
        t.row(vec![
            name.into(),
            units::thousands(s["checks"].as_f64().unwrap_or(0.0)),
            f("p50_us"),
            f("p99_us"),
            f("p999_us"),
            f("mean_us"),
        ]);
    }
    report.tables.push(t);
    report.check(
        "target: local p99 <= 5 µs",
        local["p99_us"].as_f64().unwrap_or(f64::MAX) <= 5.0,
    );
    report.check(
        "target: redis p99 <= 300 µs",
        remote["p99_us"].as_f64().unwrap_or(f64::MAX) <= 300.0,
    );
    report.check(
        "target: local run start p99 <= 5 µs",
        local_run["p99_us"].as_f64().unwrap_or(f64::MAX) <= 5.0,
    );
    report.check(
        "target: redis run start p99 <= 300 µs (one round trip)",
        remote_run["p99_us"].as_f64().unwrap_or(f64::MAX) <= 300.0,
    );
    report.check(
        "target: token charge per chunk p99 <= 5 µs (no Redis call)",
        chunk["p99_us"].as_f64().unwrap_or(f64::MAX) <= 5.0,
    );
    report.data = json!({"options": format!("{o:?}"), "keys": o.keys, "local": local, "redis": remote,
                         "local_run_start": local_run, "redis_run_start": remote_run,
                         "token_chunk": chunk, "usage_request": usage});
    edge.close().await;
    tasks.close();
    tasks.wait().await;
    Ok(report.finish())
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn summary_is_in_microseconds() {
        let s = summary((1..=1000).map(|i| i * 1000).collect());
        assert_eq!(s["checks"], 1000);
        assert_eq!(s["p50_us"], 501.0);
        assert_eq!(s["p99_us"], 991.0);
        assert_eq!(s["max_us"], 1000.0);
        assert_eq!(s["mean_us"], 500.5);
    }
}
