//! A cluster for a test: one private redis-server, one `weir store` process
//! and two `weir serve --redis` processes (A and B) over them, all killed on
//! drop. Gateways reconnect to Redis quickly here (500 ms backoff cap) so an
//! outage test stays short. [`WorkerCluster`] is the same picture with the
//! store on a fresh PostgreSQL database, gateways that only queue runs
//! (`--workers 0`) and `weir worker` processes that execute them.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use reqwest::{Method, RequestBuilder};
use weir::{
    keys,
    store::{postgres::scratch::ScratchDb, remote::RemoteStore, Store},
};

use crate::{
    common::{
        free_port, postgres_available, spawn_pg_store_process, spawn_store_process, wait_healthy,
        weir_bin, StoreProcess, STORE_TOKEN,
    },
    redis_support::RedisServer,
};

/// One `weir serve` process (or a view of an in-process gateway).
pub struct Node {
    child: Option<Child>,
    pub base: String,
    pub client: reqwest::Client,
}

impl Node {
    pub fn req(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    /// A view of a gateway some other program started (no process is owned).
    pub fn remote(base: String) -> Node {
        Node {
            child: None,
            base,
            client: reqwest::Client::new(),
        }
    }

    /// A view of an in-process test gateway (no process is owned).
    pub fn in_process(gw: &crate::common::TestGateway) -> Node {
        Node {
            child: None,
            base: gw.base.clone(),
            client: gw.client.clone(),
        }
    }

    /// `/readyz` status and body.
    pub async fn readyz(&self) -> (u16, String) {
        match self
            .client
            .get(format!("{}/readyz", self.base))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Waits until `/readyz` answers 200 (Redis link up), 15 s at most.
    pub async fn wait_ready(&self) {
        let mut last = (0, String::new());
        for _ in 0..300 {
            last = self.readyz().await;
            if last.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} not ready: {last:?}", self.base);
    }

    /// Whether the process is still running (it must never crash).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs the process (no drain, no goodbye to Redis or the store)
    /// and reaps it.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().expect("a process to kill");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    pub a: Node,
    pub b: Node,
    pub redis: RedisServer,
    store: StoreProcess,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts Redis, the store, then A and B (one after the other: both seed
    /// the bootstrap key) with `env` added to both gateways' environment.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        crate::common::init_logs();
        let tmp = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let store = spawn_store_process(&tmp.path().join("store")).await;
        let a = gateway(&redis, &store, env, &tmp.path().join("a")).await;
        let b = gateway(&redis, &store, env, &tmp.path().join("b")).await;
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
        mint(&self.store, scopes).await
    }
}

async fn mint(store: &StoreProcess, scopes: &[&str]) -> (String, String) {
    let store = RemoteStore::new(&store.url, Some(STORE_TOKEN.into())).unwrap();
    store.ensure_account("default").await.unwrap();
    let scopes = scopes.iter().map(|s| s.to_string()).collect();
    let m = keys::mint("default", "cluster test", scopes, 100_000, None);
    let id = m.new_key.id.clone();
    store.create_key(m.new_key).await.unwrap();
    (id.to_string(), m.secret)
}

/// Redis, `weir store --db` on a fresh PostgreSQL database, gateways A and B
/// that only queue runs (`--workers 0`), and `weir worker` processes that
/// take and execute them; all killed on drop (the database is dropped last).
pub struct WorkerCluster {
    pub a: Node,
    pub b: Node,
    pub workers: Vec<Node>,
    _redis: RedisServer,
    store: StoreProcess,
    _tmp: tempfile::TempDir,
}

impl WorkerCluster {
    /// Starts it with `workers` worker processes, each given `worker_env`
    /// (e.g. `WEIR_WORKERS`, `WEIR_RUN_CLAIM_SECS`). `None` (with a printed
    /// line) when no PostgreSQL is reachable outside CI.
    pub async fn start(workers: usize, worker_env: &[(&str, &str)]) -> Option<Self> {
        crate::common::init_logs();
        if !postgres_available().await {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let db = Arc::new(ScratchDb::create().await.expect("a scratch database"));
        let store = spawn_pg_store_process(db).await;
        let gw_env = [("WEIR_WORKERS", "0")];
        let a = spawn_weir("serve", &redis, &store, &gw_env, &tmp.path().join("a")).await;
        let b = spawn_weir("serve", &redis, &store, &gw_env, &tmp.path().join("b")).await;
        let mut nodes = Vec::new();
        for i in 0..workers {
            let dir = tmp.path().join(format!("w{i}"));
            nodes.push(spawn_weir("worker", &redis, &store, worker_env, &dir).await);
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
        mint(&self.store, &["*"]).await.1
    }
}

async fn gateway(
    redis: &RedisServer,
    store: &StoreProcess,
    env: &[(&str, &str)],
    data_dir: &std::path::Path,
) -> Node {
    spawn_weir("serve", redis, store, env, data_dir).await
}

/// Starts `weir <command>` (`serve` or `worker`) on a free port over Redis
/// and the store, and waits until it answers /healthz.
async fn spawn_weir(
    command: &str,
    redis: &RedisServer,
    store: &StoreProcess,
    env: &[(&str, &str)],
    data_dir: &std::path::Path,
) -> Node {
    let port = free_port();
    let child = Command::new(weir_bin())
        .arg(command)
        .env_remove("WEIR_CONFIG")
        .env("WEIR_LISTEN", format!("127.0.0.1:{port}"))
        .env("WEIR_DATA_DIR", data_dir)
        .env("WEIR_STORE_URL", &store.url)
        .env("WEIR_STORE_TOKEN", STORE_TOKEN)
        .env("WEIR_REDIS_URL", redis.url())
        .env("WEIR_BOOTSTRAP_KEY", crate::common::BOOTSTRAP_KEY)
        .env("WEIR_REDIS_RECONNECT_MAX_MS", "500")
        .env("WEIR_REDIS_TIMEOUT_MS", "1000")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("spawn weir {command}: {e}"));
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    Node {
        child: Some(child),
        base,
        client: reqwest::Client::new(),
    }
}
