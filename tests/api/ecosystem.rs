//! The ecosystem around the API: what browsers, people, LLMs, operators and
//! example programs use (issue 7).
//!
//! - [`web`]: the chat page at `/`, its assets, `/llms.txt`.
//! - [`cors`]: `--cors-origin`: preflights and real requests from another origin.
//! - [`metrics`]: `/metrics` in Prometheus text.
//! - [`logs`]: `weir serve --log-format json`: request id and key id on every line.
//! - [`config`]: `config/single.toml` and `config/cluster.toml`.
//! - [`examples`]: the cargo examples run against a live gateway.
//! - [`browser`]: the chat page driven in headless Chromium.

mod browser;
mod config;
mod cors;
mod examples;
mod logs;
mod metrics;
mod web;

/// Whether this run is CI (`CI=true`): there, missing tools fail tests
/// instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{free_port, wait_healthy, weir_bin, BOOTSTRAP_KEY};

/// `weir serve` as a child process on a free port, over a fresh data dir,
/// with its stderr collected line by line. Killed on drop. Tests that need
/// the process's own metrics registry or its real log output use this
/// instead of an in-process gateway.
pub struct WeirProcess {
    child: Child,
    pub base: String,
    pub key: String,
    stderr: Arc<Mutex<Vec<String>>>,
    _tmp: tempfile::TempDir,
}

impl WeirProcess {
    /// Starts `weir serve <args>` with `WEIR_BOOTSTRAP_KEY` and extra `env`.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(weir_bin());
        cmd.arg("serve")
            .args(args)
            .env_remove("WEIR_CONFIG")
            .env("WEIR_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEIR_DATA_DIR", tmp.path().join("data"))
            .env("WEIR_BOOTSTRAP_KEY", BOOTSTRAP_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, port, tmp).await
    }

    /// Spawns a prepared command that will listen on `port`.
    pub async fn spawn(mut cmd: Command, port: u16, tmp: tempfile::TempDir) -> Self {
        let mut child = cmd.spawn().expect("spawn weir serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[weir] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let proc = Self {
            child,
            base,
            key: BOOTSTRAP_KEY.to_owned(),
            stderr,
            _tmp: tmp,
        };
        wait_healthy(&proc.base).await;
        proc
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until some stderr line satisfies `pred` (5 s at most).
    pub async fn wait_for_line(&self, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            if let Some(l) = self.stderr().into_iter().find(|l| pred(l)) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no such line in weir's stderr:\n{}",
            self.stderr().join("\n")
        );
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This crate's directory (config/, protocol/, tests/browser/ are under it).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
