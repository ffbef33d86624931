//! Redis topologies on loopback, every process killed on drop: a master's
//! replica and three Sentinels ([`sentinel::Sentinels`]) and a three-master
//! Redis Cluster with or without replicas ([`cluster::RedisCluster`]). The
//! `shards` and `failover` scenarios start them, and so do weir's API
//! tests, which include this folder through `#[path]`
//! (tests/api/common/mod.rs): it uses nothing of weir-load's own, only
//! redis, tokio, tempfile and anyhow.

pub mod cluster;
pub mod sentinel;

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Calls `check` until it gives `Some`, pausing between tries (10 ms at
/// first, growing to 250 ms); `None` once `limit` has passed.
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// One command to the server on `port` (None on any failure, or after 2 s).
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let ask = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async(&mut conn).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()?
}

/// Polls `INFO` of the server on `port` until it contains `want` (30 s).
pub async fn wait_info(port: u16, want: &str) -> anyhow::Result<()> {
    let found = poll(Duration::from_secs(30), || async move {
        let info: String = query(port, &redis::cmd("INFO")).await?;
        info.contains(want).then_some(())
    })
    .await;
    anyhow::ensure!(found.is_some(), "127.0.0.1:{port} never said {want}");
    Ok(())
}

/// Whether the server on `port` says it is a master (`INFO replication`).
pub async fn is_master(port: u16) -> bool {
    let info: Option<String> = query(port, redis::cmd("INFO").arg("replication")).await;
    info.is_some_and(|i| i.contains("role:master"))
}

/// A free loopback port other than 6379 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if port != 6379 {
            return Ok(port);
        }
    }
}
