//! A cluster for a test: one private redis-server, one `weir store` process
//! and two `weir serve --redis` processes (A and B) over them, all killed on
//! drop. Gateways reconnect to Redis quickly here (500 ms backoff cap) so an
//! outage test stays short. [`WorkerCluster`] is the same picture with the
//! store on a fresh PostgreSQL database, gateways that only queue runs
//! (`--workers 0`) and `weir worker` processes that execute them.

use std::{path::Path, sync::Arc};

use weir::store::{postgres::scratch::ScratchDb, remote::RemoteStore};

use super::{
    init_logs, mint, postgres_available, spawn_pg_store_process, spawn_store_process, Api,
    ProcessBuilder, RedisServer, StoreProcess, WeirProcess, STORE_TOKEN,
};

/// Two gateways, A and B, sharing Redis and a store.
pub struct Cluster {
    pub a: WeirProcess,
    pub b: WeirProcess,
    pub redis: RedisServer,
    store: StoreProcess,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts Redis, the store, then A and B (one after the other: both seed
    /// the bootstrap key) with `env` added to both gateways' environment.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_each(env, &[]).await
    }

    /// [`Self::start`], with `env_b` added to B's environment only (e.g.
    /// `WEIR_WORKERS=0`: B only queues runs, A executes them all).
    pub async fn start_each(env: &[(&str, &str)], env_b: &[(&str, &str)]) -> Self {
        init_logs();
        Self::start_on(RedisServer::start().await, env, env_b).await
    }

    /// [`Self::start_each`] over a given Redis (e.g. a Sentinel-watched
    /// master: `env` then names the Sentinels).
    pub async fn start_on(
        redis: RedisServer,
        env: &[(&str, &str)],
        env_b: &[(&str, &str)],
    ) -> Self {
        init_logs();
        let tmp = tempfile::tempdir().unwrap();
        let store = spawn_store_process(&tmp.path().join("store")).await;
        let node = |dir: &str| {
            on(
                WeirProcess::serve(),
                &redis,
                &store,
                env,
                &tmp.path().join(dir),
            )
        };
        let a = node("a").spawn().await;
        let b = node("b").envs(env_b).spawn().await;
        a.wait_ready().await;
        b.wait_ready().await;
        Self {
            a,
            b,
            redis,
            store,
            _tmp: tmp,
        }
    }

    /// A key with every scope and a high rate limit, minted in the store.
    pub async fn key(&self) -> String {
        self.mint(&["*"]).await.1
    }

    /// A key of account `default` with `scopes`: (key id, secret).
    pub async fn mint(&self, scopes: &[&str]) -> (String, String) {
        mint_in(&self.store, scopes).await
    }
}

async fn mint_in(store: &StoreProcess, scopes: &[&str]) -> (String, String) {
    let store = RemoteStore::new(&store.url, Some(STORE_TOKEN.into())).unwrap();
    mint(&store, "default", scopes, 100_000).await
}

/// Redis, `weir store --db` on a fresh PostgreSQL database, gateways A and B
/// that only queue runs (`--workers 0`), and `weir worker` processes that
/// take and execute them; all killed on drop (the database is dropped last).
pub struct WorkerCluster {
    pub a: WeirProcess,
    pub b: WeirProcess,
    pub workers: Vec<WeirProcess>,
    _redis: RedisServer,
    store: StoreProcess,
    _tmp: tempfile::TempDir,
}

impl WorkerCluster {
    /// Starts it with `workers` worker processes, each given `worker_env`
    /// (e.g. `WEIR_WORKERS`, `WEIR_RUN_CLAIM_SECS`). `None` (with a printed
    /// line) when no PostgreSQL is reachable outside CI.
    pub async fn start(workers: usize, worker_env: &[(&str, &str)]) -> Option<Self> {
        init_logs();
        if !postgres_available().await {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let db = Arc::new(ScratchDb::create().await.expect("a scratch database"));
        let store = spawn_pg_store_process(db).await;
        let gw_env = [("WEIR_WORKERS", "0")];
        let gateway = |dir: &str| {
            on(
                WeirProcess::serve(),
                &redis,
                &store,
                &gw_env,
                &tmp.path().join(dir),
            )
            .spawn()
        };
        let (a, b) = (gateway("a").await, gateway("b").await);
        let mut nodes = Vec::new();
        for i in 0..workers {
            let dir = tmp.path().join(format!("w{i}"));
            let worker = on(WeirProcess::worker(), &redis, &store, worker_env, &dir);
            nodes.push(worker.spawn().await);
        }
        for node in [&a, &b].into_iter().chain(&nodes) {
            node.wait_ready().await;
        }
        Some(Self {
            a,
            b,
            workers: nodes,
            _redis: redis,
            store,
            _tmp: tmp,
        })
    }

    /// A key with every scope and a high rate limit, minted in the store.
    pub async fn key(&self) -> String {
        mint_in(&self.store, &["*"]).await.1
    }
}

/// `weir <command>` over Redis and the store, reconnecting to Redis quickly.
fn on(
    builder: ProcessBuilder,
    redis: &RedisServer,
    store: &StoreProcess,
    env: &[(&str, &str)],
    data_dir: &Path,
) -> ProcessBuilder {
    builder
        .redis(redis)
        .store(store)
        .data_dir(data_dir)
        .envs(&[
            ("WEIR_REDIS_RECONNECT_MAX_MS", "500"),
            ("WEIR_REDIS_TIMEOUT_MS", "1000"),
        ])
        .envs(env)
}
