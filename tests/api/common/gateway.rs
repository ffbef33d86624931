//! A gateway running in the test process: [`Gateway::bind`] on 127.0.0.1:0
//! over a fresh data dir, with the bootstrap key, its store embedded or in a
//! separate `weir store` process. [`TestGateway::builder`] says what differs
//! from the defaults; [`spawn_gateway`] is the default.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::{sync::oneshot, task::JoinHandle};
use weir::{config::ServeConfig, store::postgres::scratch::ScratchDb, store::Store, Gateway};

use super::{
    free_port, init_logs, mint, spawn_pg_store_process, spawn_store_process, Api, RedisServer,
    StoreMode, StoreProcess, BOOTSTRAP_KEY, STORE_TOKEN,
};

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

type Tweak = Box<dyn FnOnce(&mut ServeConfig) + Send>;

/// How to start a [`TestGateway`]; each call adds to the configuration, in
/// order, after the store mode's settings.
pub struct GatewayBuilder {
    mode: StoreMode,
    tweaks: Vec<Tweak>,
}

/// Embedded store, default config.
pub async fn spawn_gateway() -> TestGateway {
    TestGateway::builder().spawn().await
}

impl GatewayBuilder {
    /// Where its data lives (default: embedded).
    pub fn store(mut self, mode: StoreMode) -> Self {
        self.mode = mode;
        self
    }

    /// Any change to the configuration.
    pub fn config(mut self, tweak: impl FnOnce(&mut ServeConfig) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Fans out through `redis`.
    pub fn redis(self, redis: &RedisServer) -> Self {
        let url = redis.url();
        self.config(move |c| c.redis_url = Some(url))
    }

    /// Forwards to the `weir store` at `url` (with the tests' token).
    pub fn store_url(self, url: &str) -> Self {
        let url = url.to_owned();
        self.config(move |c| {
            c.data.store_url = Some(url);
            c.data.store_token = Some(STORE_TOKEN.into());
        })
    }

    /// Uses the same data as `other` (its store process or database).
    pub fn share_store(self, other: &TestGateway) -> Self {
        let data = other.config().data.clone();
        self.config(move |c| c.data = data)
    }

    /// A store nobody answers at (and so no bootstrap key to seed in it).
    pub fn store_unreachable(self) -> Self {
        self.config(|c| {
            c.bootstrap_key = None;
            c.data.store_url = Some(format!("http://127.0.0.1:{}", free_port()));
        })
    }

    /// An OpenAI-compatible provider nobody answers at.
    pub fn provider_unreachable(self) -> Self {
        self.config(|c| c.provider_url = Some(format!("http://127.0.0.1:{}/v1", free_port())))
    }

    /// Starts it: the store process first if the mode has one.
    pub async fn spawn(self) -> TestGateway {
        init_logs();
        let tmp = Arc::new(tempfile::tempdir().expect("tempdir"));
        let data_dir = tmp.path().join("data");
        let store_proc = match self.mode {
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
        for tweak in self.tweaks {
            tweak(&mut cfg);
        }
        start(cfg, self.mode, tmp, data_dir, store_proc).await
    }
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
    /// Embedded store and default config until told otherwise.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            mode: StoreMode::Embedded,
            tweaks: Vec::new(),
        }
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// Mints a key straight in the store (any account, any scopes) with a
    /// rate limit no test reaches.
    pub async fn mint_key(&self, account: &str, scopes: &[&str]) -> String {
        self.mint_key_rpm(account, scopes, 100_000).await
    }

    /// [`Self::mint_key`] with the given requests per minute.
    pub async fn mint_key_rpm(&self, account: &str, scopes: &[&str], rpm: u32) -> String {
        mint(self.store.as_ref(), account, scopes, rpm).await.1
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

impl Api for TestGateway {
    fn endpoint(&self) -> (&str, &str, &reqwest::Client) {
        (&self.base, &self.key, &self.client)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
