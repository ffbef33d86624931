//! Test harness: real gateways on 127.0.0.1:0 over a fresh data dir, with the
//! embedded store or a separate `weir store` process, and real HTTP clients.
//! Logs are printed only when `TEST_LOG` is set.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};
use weir::{config::ServeConfig, keys, store::postgres::scratch::ScratchDb, store::Store, Gateway};

/// Where the gateway's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// SQLite in the gateway process.
    Embedded,
    /// A separate `weir store` process reached over HTTP.
    Remote,
    /// A separate `weir store --db postgres://…` process on a fresh database
    /// (tests using it check [`postgres_available`] first).
    RemotePostgres,
}

/// The token tests give `weir store`.
pub const STORE_TOKEN: &str = "test-store-token";

/// A `weir store` child process, killed on drop.
pub struct StoreProcess {
    child: Child,
    pub url: String,
    /// The PostgreSQL database it serves, if any: dropped after the child
    /// is killed (fields drop after `Drop::drop`).
    pub db: Option<Arc<ScratchDb>>,
}

impl Drop for StoreProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound then released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of the `weir` binary cargo built for these tests.
pub fn weir_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

/// Starts `weir store` on a free port over `data_dir` and waits until it answers.
pub async fn spawn_store_process(data_dir: &Path) -> StoreProcess {
    spawn_store_with(&["--data-dir".as_ref(), data_dir.as_os_str()], None).await
}

/// Whether PostgreSQL tests can run (prints why not; panics under CI=true).
pub async fn postgres_available() -> bool {
    weir::store::postgres::scratch::available().await
}

/// Starts `weir store --db <url of db>` on a free port and waits until it
/// answers. Several may share one database.
pub async fn spawn_pg_store_process(db: Arc<ScratchDb>) -> StoreProcess {
    let url = db.url.clone();
    spawn_store_with(&["--db".as_ref(), url.as_ref()], Some(db)).await
}

async fn spawn_store_with(args: &[&std::ffi::OsStr], db: Option<Arc<ScratchDb>>) -> StoreProcess {
    let port = free_port();
    let child = Command::new(weir_bin())
        .args([
            "store",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store-token",
            STORE_TOKEN,
        ])
        .args(args)
        .env_remove("WEIR_CONFIG")
        .env_remove("WEIR_DB")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn weir store");
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url).await;
    StoreProcess { child, url, db }
}

/// Polls `GET {base}/healthz` until it answers 200 (10 s at most).
pub async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become healthy");
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        weir::telemetry::init("text");
    }
}

/// A gateway running in this test process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub base: String,
    /// An all-scope key of account `default` (the bootstrap key).
    pub key: String,
    pub client: reqwest::Client,
    /// The gateway's own store handle (the real store, for seeding other accounts).
    pub store: Arc<dyn Store>,
    pub mode: StoreMode,
    pub data_dir: PathBuf,
    config: ServeConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _tmp: Arc<tempfile::TempDir>,
    store_proc: Option<Arc<StoreProcess>>,
}

pub const BOOTSTRAP_KEY: &str = "wk_bootstrap_0123456789abcdefghijklmnopqrstuv";

/// Embedded store, default config.
pub async fn spawn_gateway() -> TestGateway {
    spawn_gateway_with(StoreMode::Embedded, |_| {}).await
}

/// A gateway with the given store mode and config changes.
pub async fn spawn_gateway_with(
    mode: StoreMode,
    tweak: impl FnOnce(&mut ServeConfig),
) -> TestGateway {
    init_logs();
    let tmp = Arc::new(tempfile::tempdir().expect("tempdir"));
    let data_dir = tmp.path().join("data");
    let store_proc = match mode {
        StoreMode::Embedded => None,
        StoreMode::Remote => Some(Arc::new(spawn_store_process(&data_dir).await)),
        StoreMode::RemotePostgres => {
            let db = ScratchDb::create()
                .await
                .expect("PostgreSQL (see postgres_available)");
            Some(Arc::new(spawn_pg_store_process(Arc::new(db)).await))
        }
    };
    let mut cfg = ServeConfig::for_data_dir(&data_dir);
    cfg.bootstrap_key = Some(BOOTSTRAP_KEY.into());
    if let Some(p) = &store_proc {
        cfg.data.store_url = Some(p.url.clone());
        cfg.data.store_token = Some(STORE_TOKEN.into());
    }
    tweak(&mut cfg);
    start(cfg, mode, tmp, data_dir, store_proc).await
}

async fn start(
    cfg: ServeConfig,
    mode: StoreMode,
    tmp: Arc<tempfile::TempDir>,
    data_dir: PathBuf,
    store_proc: Option<Arc<StoreProcess>>,
) -> TestGateway {
    let gateway = Gateway::bind(cfg.clone()).await.expect("gateway binds");
    let addr = gateway.local_addr();
    let store = gateway.state().store.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(gateway.run(async {
        let _ = rx.await;
    }));
    TestGateway {
        addr,
        base: format!("http://{addr}"),
        key: cfg.bootstrap_key.clone().unwrap_or_default(),
        client: reqwest::Client::new(),
        store,
        mode,
        data_dir,
        config: cfg,
        stop: Some(tx),
        task: Some(task),
        _tmp: tmp,
        store_proc,
    }
}

impl TestGateway {
    /// The configuration it was started with.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the bootstrap key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(&self.key, method, path)
    }

    /// A request with the given key.
    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.req(Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Mints a key straight in the store (any account, any scopes).
    pub async fn mint_key(&self, account: &str, scopes: &[&str]) -> String {
        self.store.ensure_account(account).await.expect("account");
        let m = keys::mint(
            account,
            "test",
            scopes.iter().map(|s| s.to_string()).collect(),
            100_000,
            None,
        );
        self.store.create_key(m.new_key).await.expect("key");
        m.secret
    }

    /// Creates an echo agent with the bootstrap key and returns its id.
    pub async fn create_agent(&self, name: &str) -> String {
        let r = self
            .post("/v1/agents", serde_json::json!({"name": name}))
            .await;
        assert_eq!(r.status(), 201, "create agent");
        r.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("gateway task")
                .expect("gateway ran cleanly");
        }
    }

    /// Stops this gateway and starts a new one on the same data (and store process).
    pub async fn restart(mut self) -> TestGateway {
        self.shutdown().await;
        let tmp = self._tmp.clone();
        let cfg = self.config.clone();
        start(
            cfg,
            self.mode,
            tmp,
            self.data_dir.clone(),
            self.store_proc.clone(),
        )
        .await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts the error envelope and returns the body.
pub async fn expect_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status for {code}");
    let rid = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("X-Request-Id on every response");
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    assert_eq!(
        body["error"]["request_id"],
        rid.as_str(),
        "request_id matches header: {body}"
    );
    body
}

/// Runs a test body once with the embedded store, once through a separate
/// `weir store` process and once through `weir store --db postgres://…`:
/// all must give the same answers. The PostgreSQL run skips (with a printed
/// line) when no server is reachable and CI is not set.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                ($body)($crate::common::StoreMode::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remote() {
                ($body)($crate::common::StoreMode::Remote).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remote_postgres() {
                if !$crate::common::postgres_available().await {
                    return;
                }
                ($body)($crate::common::StoreMode::RemotePostgres).await
            }
        }
    };
}
