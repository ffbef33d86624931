//! `weir` as a child process (`serve`, `worker` or `store`) on a free port
//! over its own data dir, for tests that need what only a real process has:
//! its own metrics registry, its log output, signals, a SIGKILL, several
//! gateways sharing Redis and a store. Its stderr is kept line by line (and
//! echoed when `TEST_LOG` is set); it is killed on drop.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    free_port, poll, weir_bin, Api, RedisServer, StoreProcess, BOOTSTRAP_KEY, STORE_TOKEN,
};

/// A `weir` child process, or a view of one another program started.
pub struct WeirProcess {
    child: Option<Child>,
    pub base: String,
    /// The bootstrap key it was started with.
    pub key: String,
    pub client: reqwest::Client,
    stderr: Arc<Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// How to start a [`WeirProcess`]: the subcommand, flags, environment.
pub struct ProcessBuilder {
    command: &'static str,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
}

impl WeirProcess {
    /// `weir serve` with the bootstrap key.
    pub fn serve() -> ProcessBuilder {
        ProcessBuilder::new("serve")
    }

    /// `weir worker` with the bootstrap key.
    pub fn worker() -> ProcessBuilder {
        ProcessBuilder::new("worker")
    }

    /// `weir store` with the tests' store token.
    pub fn store() -> ProcessBuilder {
        ProcessBuilder::new("store").args(&["--store-token", STORE_TOKEN])
    }

    /// A view of a gateway some other program started (no process is owned).
    pub fn remote(base: String) -> Self {
        Self {
            child: None,
            base,
            key: BOOTSTRAP_KEY.to_owned(),
            client: reqwest::Client::new(),
            stderr: Arc::default(),
            _tmp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a process").id()
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

    /// Sends a signal (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, sig: &str) {
        assert!(signal(self.pid(), sig), "kill -{sig} {}", self.pid());
    }

    /// Waits (polling) up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("a process");
        poll(limit, || {
            std::future::ready(child.try_wait().ok().flatten())
        })
        .await
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The stderr so far, as one text.
    pub fn logs(&self) -> String {
        self.stderr().join("\n")
    }

    /// Waits until some stderr line satisfies `pred` (10 s at most).
    pub async fn wait_for_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let found = poll(Duration::from_secs(10), || {
            std::future::ready(self.stderr().into_iter().find(|l| pred(l)))
        })
        .await;
        found.unwrap_or_else(|| panic!("no such line in weir's stderr:\n{}", self.logs()))
    }
}

/// Sends `sig` (`TERM`, `KILL`, `0` to ask whether it lives) to `pid` with
/// kill(1); whether it was delivered.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("kill(1)")
        .success()
}

impl Api for WeirProcess {
    fn endpoint(&self) -> (&str, &str, &reqwest::Client) {
        (&self.base, &self.key, &self.client)
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ProcessBuilder {
    fn new(command: &'static str) -> Self {
        Self {
            command,
            args: Vec::new(),
            env: Vec::new(),
            data_dir: None,
        }
    }

    /// Command-line flags, after the ones the builder sets.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// Environment variables (`RUST_LOG` among them: unset otherwise).
    pub fn envs(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Over a data dir the test chose (default: a fresh one).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// With `--redis` on `redis`.
    pub fn redis(self, redis: &RedisServer) -> Self {
        self.args(&["--redis", &redis.url()])
    }

    /// Forwarding to `store` (`--store-url`, `--store-token`).
    pub fn store(self, store: &StoreProcess) -> Self {
        self.args(&["--store-url", &store.url, "--store-token", STORE_TOKEN])
    }

    /// Starts it and waits until it answers /healthz.
    pub async fn spawn(self) -> WeirProcess {
        super::init_logs();
        let tmp = match self.data_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("tempdir")),
        };
        let data_dir = match (&self.data_dir, &tmp) {
            (Some(dir), _) => dir.clone(),
            (None, Some(t)) => t.path().join("data"),
            (None, None) => unreachable!("one of them is set"),
        };
        let port = free_port();
        let mut cmd = Command::new(weir_bin());
        cmd.arg(self.command)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .env_remove("WEIR_CONFIG")
            .env("WEIR_BOOTSTRAP_KEY", BOOTSTRAP_KEY)
            // Today's instant drain unless a test asks for the spread one
            // (flags beat the environment).
            .env("WEIR_DRAIN_DELAY_SECS", "0")
            .env("WEIR_DRAIN_SPREAD_SECS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if std::env::var_os("TEST_LOG").is_none() {
            cmd.env_remove("RUST_LOG");
        }
        cmd.envs(self.env);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn weir {}: {e}", self.command));
        let stderr = collect_lines(&mut child, format!("weir {} :{port}", self.command));
        let proc = WeirProcess {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            key: BOOTSTRAP_KEY.to_owned(),
            client: reqwest::Client::new(),
            stderr,
            _tmp: tmp,
        };
        super::wait_healthy(&proc.base).await;
        proc
    }
}

/// Reads the child's stderr line by line on a thread (a pipe nobody reads
/// would block the child once full).
fn collect_lines(child: &mut Child, name: String) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let pipe = child.stderr.take().expect("piped stderr");
    let sink = lines.clone();
    std::thread::spawn(move || {
        let echo = std::env::var_os("TEST_LOG").is_some();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[{name}] {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
    lines
}
