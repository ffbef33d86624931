//! Starting what a scenario measures: weir gateways (the real binary, or
//! in-process on their own runtime for the smoke test), a `weir store` for
//! multi-gateway runs, a private `redis-server`, and LiteLLM's proxy.
//!
//! Everything binds to 127.0.0.1 on a free port and stops when its handle
//! is dropped.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Requests per minute of the load key: rate limits are not what is measured.
pub const LOAD_RPM: &str = "2000000000";
/// Per-key and per-gateway stream caps out of the way: one key holds every
/// connection of a run, and the caps are not what is measured.
const LOAD_FLAGS: [&str; 3] = [
    "--max-ws-per-key=10000000",
    "--max-sse-per-key=10000000",
    "--max-streams=10000000",
];
/// Concurrent runs per key out of the way too (its largest value). An
/// environment variable for a binary, which an older weir without the
/// setting ignores; a flag in process.
const LOAD_MAX_RUNS: (&str, &str) = ("WEIR_MAX_RUNS_PER_KEY", "10000");
/// Token between gateways and the `weir store` this tool starts.
const STORE_TOKEN: &str = "weir-load-store-token";

/// How gateways are run.
#[derive(Debug, Clone)]
pub enum Launch {
    /// A `weir` binary (use the release build for figures).
    Binary(PathBuf),
    /// `weir::Gateway` on a dedicated thread and runtime in this process
    /// (the smoke test; RSS then includes the load generator).
    InProcess,
}

impl Launch {
    /// `--weir-bin` if given, else a `weir` next to this executable, else in-process.
    pub fn pick(bin: Option<PathBuf>) -> Self {
        if let Some(b) = bin {
            return Self::Binary(b);
        }
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.join("weir")));
        match sibling {
            Some(p) if p.is_file() => Self::Binary(p),
            _ => Self::InProcess,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Binary(p) => p.display().to_string(),
            Self::InProcess => "in-process".into(),
        }
    }
}

/// Where a gateway keeps its data.
#[derive(Debug, Clone)]
pub enum Data {
    /// Its own embedded SQLite store in a fresh temporary directory.
    Embedded,
    /// A shared `weir store` (for gateways side by side).
    Remote(String),
}

/// A running gateway.
pub struct Gateway {
    pub url: String,
    pub addr: SocketAddr,
    /// The process to read RSS from (this one, when in-process).
    pub pid: u32,
    /// A key with every scope and no practical rate limit.
    pub key: String,
    running: Running,
    _dir: TempDir,
}

enum Running {
    Child(Child),
    InProcess {
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl Gateway {
    /// The gateway's own process, when it runs as one (its CPU time is
    /// then its own, not shared with the load generator).
    pub fn own_pid(&self) -> Option<u32> {
        matches!(self.running, Running::Child(_)).then_some(self.pid)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Child(c) => {
                if self.pid != c.id() {
                    // A wrapper may not pass SIGTERM on: drain the gateway
                    // first, then the wrapper ends with it.
                    // SAFETY: kill(2) on the gateway this tool started.
                    #[allow(unsafe_code, reason = "signals a process we started")]
                    unsafe {
                        libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
                    }
                }
                stop_child(c)
            }
            Running::InProcess { stop, thread } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

fn stop_child(c: &mut Child) {
    // SIGTERM first so the gateway drains like in production, then SIGKILL.
    // SAFETY: kill(2) with a pid we spawned and still own.
    #[allow(unsafe_code, reason = "signals a process we started")]
    unsafe {
        libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// A free loopback port (tiny race with whoever binds next; fine here).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a gateway with `args` (extra `weir serve` flags) on `data`.
pub async fn start(launch: &Launch, data: &Data, args: &[String]) -> anyhow::Result<Gateway> {
    start_as(launch, data, args, Role::Gateway).await
}

/// Starts a `weir worker` (runs from the Redis run queue; `args` must name
/// `--redis`). Its `url` serves `/healthz` and `/metrics`; it has no key.
pub async fn start_worker(
    launch: &Launch,
    data: &Data,
    args: &[String],
) -> anyhow::Result<Gateway> {
    start_as(launch, data, args, Role::Worker).await
}

/// Which `weir` subcommand a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Gateway,
    Worker,
}

async fn start_as(
    launch: &Launch,
    data: &Data,
    args: &[String],
    role: Role,
) -> anyhow::Result<Gateway> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let sub = match role {
        Role::Gateway => "serve",
        Role::Worker => "worker",
    };
    let mut serve: Vec<String> = vec![sub.into(), "--listen".into(), format!("127.0.0.1:{port}")];
    serve.extend(data_args(data, dir.path()));
    if let Data::Remote(_) = data {
        // Gateways sharing a store share the key that seals webhook
        // secrets, as a deployment's must; given, no gateway writes one
        // into a `./weir-data` of the directory it was started from.
        serve.extend(["--webhook-secret-key".into(), "00".repeat(32)]);
    }
    serve.extend(LOAD_FLAGS.iter().map(|f| (*f).to_owned()));
    serve.extend(args.iter().cloned());
    let key = match role {
        Role::Gateway => create_key(launch, data, dir.path()).await?,
        Role::Worker => String::new(),
    };
    let (running, pid, addr) = match launch {
        Launch::Binary(bin) => {
            let log = std::fs::File::create(dir.path().join("gateway.log"))?;
            // WEIR_LOAD_WRAP="heaptrack -o /tmp/ht" runs the gateway under a
            // profiler; `pid` is then resolved to the gateway (below).
            let wrap = std::env::var("WEIR_LOAD_WRAP").unwrap_or_default();
            let mut words = wrap.split_whitespace();
            let mut cmd = match words.next() {
                Some(w) => {
                    let mut c = Command::new(w);
                    c.args(words).arg(bin);
                    c
                }
                None => Command::new(bin),
            };
            let child = cmd
                .args(&serve)
                .env(LOAD_MAX_RUNS.0, LOAD_MAX_RUNS.1)
                .env(
                    "RUST_LOG",
                    std::env::var("WEIR_LOAD_GATEWAY_LOG").unwrap_or("warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let pid = child.id();
            (
                Running::Child(child),
                pid,
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
        }
        Launch::InProcess => {
            serve.push(format!("--max-runs-per-key={}", LOAD_MAX_RUNS.1));
            in_process(serve)?
        }
    };
    // `--tls-cert` among the flags: the gateway serves HTTPS.
    let scheme = match args.iter().any(|a| a.starts_with("--tls-cert")) {
        true => "https",
        false => "http",
    };
    let url = format!("{scheme}://{addr}");
    let mut gw = Gateway {
        url,
        addr,
        pid,
        key,
        running,
        _dir: dir,
    };
    wait_healthy(&gw.url, Duration::from_secs(20))
        .await
        .with_context(|| format!("gateway on {} (log in its temp dir)", gw.url))?;
    // Under a wrapper the gateway is a descendant of the process started:
    // measure (and stop) the gateway itself.
    if let Launch::Binary(bin) = launch {
        gw.pid = crate::sys::find_exe(gw.pid, bin).unwrap_or(gw.pid);
    }
    Ok(gw)
}

fn data_args(data: &Data, dir: &Path) -> Vec<String> {
    match data {
        Data::Embedded => vec!["--data-dir".into(), dir.join("data").display().to_string()],
        Data::Remote(url) => vec![
            "--store-url".into(),
            url.clone(),
            "--store-token".into(),
            STORE_TOKEN.into(),
        ],
    }
}

/// Mints the load key through `weir keys create`, the documented way.
async fn create_key(launch: &Launch, data: &Data, dir: &Path) -> anyhow::Result<String> {
    let mut args: Vec<String> = [
        "keys",
        "create",
        "--scopes",
        "*",
        "--rpm",
        LOAD_RPM,
        "--label",
        "weir-load",
    ]
    .map(String::from)
    .to_vec();
    args.extend(data_args(data, dir));
    match launch {
        Launch::Binary(bin) => {
            let out = tokio::process::Command::new(bin)
                .args(&args)
                .output()
                .await?;
            if !out.status.success() {
                bail!("weir keys create: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        }
        Launch::InProcess => {
            let cli = <weir::config::Cli as clap::Parser>::try_parse_from(
                std::iter::once("weir".to_owned()).chain(args),
            )?;
            match cli.command {
                weir::config::Command::Keys {
                    command: weir::config::KeysCommand::Create(k),
                } => weir::cli::create_key(k).await,
                _ => bail!("not a keys command"),
            }
        }
    }
}

type Started = (Running, u32, SocketAddr);

fn in_process(serve: Vec<String>) -> anyhow::Result<Started> {
    // `weir::config::load` is for a process's own arguments (it layers the
    // file's flat keys in as environment variables); in here only the
    // file's `[[providers]]` and `[[routes]]` are read, which is all a
    // scenario's `--config` holds.
    let file = serve
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| serve.get(i + 1))
        .map(std::path::PathBuf::from);
    let cli = <weir::config::Cli as clap::Parser>::try_parse_from(
        std::iter::once("weir".to_owned()).chain(serve),
    )?;
    let (mut cfg, worker) = match cli.command {
        weir::config::Command::Serve(cmd) => (cmd.into_config(), false),
        weir::config::Command::Worker(cfg) => (cfg, true),
        _ => bail!("not a serve or worker command"),
    };
    if let Some(path) = file {
        cfg.providers = weir::config::file_providers(&path)?;
    }
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("weir-gateway".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("weir-gw")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(addr_tx.send(Err(anyhow::Error::from(e)))),
            };
            rt.block_on(async move {
                if worker {
                    let _ = addr_tx.send(Ok(cfg.listen));
                    let stop = async move { drop(stop_rx.await) };
                    if let Err(e) = weir::work::process::run_worker(cfg, stop).await {
                        eprintln!("weir-load: in-process worker: {e:#}");
                    }
                    return;
                }
                let gw = match weir::Gateway::bind(cfg).await {
                    Ok(gw) => gw,
                    Err(e) => return drop(addr_tx.send(Err(e))),
                };
                let _ = addr_tx.send(Ok(gw.local_addr()));
                if let Err(e) = gw.run(async move { drop(stop_rx.await) }).await {
                    eprintln!("weir-load: in-process gateway: {e:#}");
                }
            });
        })?;
    let addr = addr_rx.recv().context("gateway thread died")??;
    let running = Running::InProcess {
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    Ok((running, std::process::id(), addr))
}

/// Polls `/healthz` until it answers 200.
pub async fn wait_healthy(url: &str, within: Duration) -> anyhow::Result<()> {
    let client = crate::tls::client_builder().build()?;
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url}/healthz did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `weir store` shared by several gateways.
pub struct Store {
    pub url: String,
    _child: Option<ChildGuard>,
    _inproc: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    _dir: TempDir,
}

/// Starts a `weir store` (a process, or a task of this process), on its
/// own SQLite database or, with `db`, on that PostgreSQL database.
pub async fn start_store(launch: &Launch, db: Option<&str>) -> anyhow::Result<Store> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut args: Vec<String> = vec![
        "store".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().join("store").display().to_string(),
        "--store-token".into(),
        STORE_TOKEN.into(),
    ];
    if let Some(db) = db {
        args.extend(["--db".into(), db.to_owned()]);
    }
    let url = format!("http://127.0.0.1:{port}");
    let (child, inproc) = match launch {
        Launch::Binary(bin) => {
            let child = Command::new(bin)
                .args(&args)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            (Some(ChildGuard(child)), None)
        }
        Launch::InProcess => {
            let cli = <weir::config::Cli as clap::Parser>::try_parse_from(
                std::iter::once("weir".to_owned()).chain(args),
            )?;
            let weir::config::Command::Store(cfg) = cli.command else {
                bail!("not a store command");
            };
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                if let Err(e) =
                    weir::store::server::run_store(cfg, async move { drop(rx.await) }).await
                {
                    eprintln!("weir-load: in-process store: {e:#}");
                }
            });
            (None, Some((tx, task)))
        }
    };
    wait_healthy(&url, Duration::from_secs(20)).await?;
    Ok(Store {
        url,
        _child: child,
        _inproc: inproc,
        _dir: dir,
    })
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// A private `redis-server` (never 6379), or `None` when it is not installed.
pub struct Redis {
    pub url: String,
    pub port: u16,
    child: ChildGuard,
}

impl Redis {
    /// SIGKILLs the server (an outage, not a shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

pub async fn start_redis() -> anyhow::Result<Option<Redis>> {
    let port = free_port()?;
    let child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => ChildGuard(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("redis-server did not start on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(Redis {
        url: format!("redis://127.0.0.1:{port}"),
        port,
        child,
    }))
}

/// A private `redis-server` for a deployment that needs one, or `None` when
/// this machine has no `redis-server` or this weir has no `--redis`.
pub async fn redis_for(launch: &Launch) -> anyhow::Result<Option<Redis>> {
    if !supports_redis(launch) {
        return Ok(None);
    }
    start_redis().await
}

/// Whether this weir build knows `weir serve --redis` (the Redis bus).
pub fn supports_redis(launch: &Launch) -> bool {
    match launch {
        Launch::Binary(bin) => Command::new(bin)
            .args(["serve", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("--redis"))
            .unwrap_or(false),
        Launch::InProcess => true,
    }
}
