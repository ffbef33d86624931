//! The cost of one rate-limit check, local and Redis-backed (BENCHMARKS.md,
//! "Edge: limiter cost"). Ignored by default; run in release:
//!
//! ```sh
//! cargo test --release --test api edge::bench -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use weir::{config::ServeConfig, edge::Edge, store::KeyRecord};

use super::support::RedisServer;

fn key(i: usize, rpm: u32) -> KeyRecord {
    KeyRecord {
        id: format!("key-bench{i}"),
        account_id: "default".into(),
        label: String::new(),
        scopes: vec!["*".into()],
        rpm,
        hash: String::new(),
        created_at: String::new(),
        last_used_at: None,
        revoked_at: None,
    }
}

fn report(what: &str, mut ns: Vec<u64>) -> (Duration, Duration) {
    ns.sort_unstable();
    let at = |q: f64| Duration::from_nanos(ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)]);
    let mean = ns.iter().sum::<u64>() / ns.len() as u64;
    eprintln!(
        "{what}: {} checks, p50 {:?}, p99 {:?}, p99.9 {:?}, mean {:?}",
        ns.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        Duration::from_nanos(mean)
    );
    (at(0.50), at(0.99))
}

async fn measure(edge: &Edge, keys: &[KeyRecord], n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = &keys[i % keys.len()];
        let t0 = Instant::now();
        let d = edge.check_rate(k).await;
        out.push(t0.elapsed().as_nanos() as u64);
        assert!(d.is_some());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn limiter_cost_per_check() {
    let cfg = ServeConfig::for_data_dir("/nonexistent").edge;
    // 10,000 active keys at the default 120 rpm (most checks are refusals
    // after the first 120 per key: the cost is the same either way).
    let keys: Vec<KeyRecord> = (0..10_000).map(|i| key(i, 120)).collect();
    let local = Edge::new(&cfg, None, "weir:").unwrap();
    measure(&local, &keys, 100_000).await;
    let (_, p99_local) = report(
        "local (governor, 10k keys)",
        measure(&local, &keys, 1_000_000).await,
    );

    let redis = RedisServer::start().await;
    let remote = Edge::new(&cfg, Some(&redis.url), "weir:").unwrap();
    // High rpm so the local first stage lets every check through to Redis.
    let keys: Vec<KeyRecord> = (0..10_000).map(|i| key(i, 1_000_000)).collect();
    measure(&remote, &keys, 5_000).await;
    let (_, p99_redis) = report(
        "redis (local stage + EVALSHA, loopback)",
        measure(&remote, &keys, 50_000).await,
    );
    eprintln!("targets: local p99 <= 5 us: {p99_local:?}; redis p99 <= 300 us: {p99_redis:?}");
}
