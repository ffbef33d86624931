//! Real processes for the edge tests: a private `redis-server`, `weir serve`
//! children (killable, signalable, with their stderr kept), raw SSE reading.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::Value;

use crate::common::{free_port, wait_healthy, weir_bin, BOOTSTRAP_KEY};

/// A private redis-server on a free port, killed on drop: the shared helper
/// of `redis_support` (it retries when another test takes the port between
/// probe and bind, and waits for PING), with the URL kept as a field.
pub struct RedisServer {
    inner: crate::redis_support::RedisServer,
    pub url: String,
}

impl RedisServer {
    pub async fn start() -> Self {
        let inner = crate::redis_support::RedisServer::start().await;
        let url = inner.url();
        Self { inner, url }
    }

    pub fn kill(&mut self) {
        self.inner.kill();
    }
}

/// A `weir serve` child process with the bootstrap key, killed on drop.
pub struct WeirProcess {
    child: Child,
    pub base: String,
    pub stderr: PathBuf,
}

impl WeirProcess {
    /// Starts `weir serve` on a free port over `data_dir` with `args` and
    /// `env`, logging to a file in `data_dir`'s parent; waits for /healthz.
    pub async fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        std::fs::create_dir_all(data_dir).expect("data dir");
        let stderr = data_dir.join(format!("weir-{port}.log"));
        let mut cmd = Command::new(weir_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("WEIR_CONFIG")
            .env_remove("RUST_LOG")
            .env("WEIR_BOOTSTRAP_KEY", BOOTSTRAP_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn weir serve");
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&base).await;
        Self {
            child,
            base,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Waits (polling) up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mints a key with `rpm` through `POST /v1/keys` (bootstrap key) and returns its secret.
pub async fn create_key(client: &reqwest::Client, base: &str, rpm: u32) -> String {
    let r = client
        .post(format!("{base}/v1/keys"))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&serde_json::json!({"label": "edge", "scopes": ["*"], "rpm": rpm}))
        .send()
        .await
        .expect("create key");
    assert_eq!(r.status(), 201, "create key");
    let v: Value = r.json().await.expect("json");
    v["secret"].as_str().expect("secret").to_owned()
}

/// Creates an echo agent with `metadata` and returns its id.
pub async fn create_agent(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    metadata: Value,
) -> String {
    let r = client
        .post(format!("{base}/v1/agents"))
        .bearer_auth(key)
        .json(&serde_json::json!({"name": "edge", "metadata": metadata}))
        .send()
        .await
        .expect("create agent");
    assert_eq!(r.status(), 201, "create agent");
    let v: Value = r.json().await.expect("json");
    v["id"].as_str().expect("id").to_owned()
}

/// One parsed SSE frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub data: Value,
}

/// Reads SSE frames from a streaming response (comments skipped).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next frame, `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&raw);
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // a `: ping` comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Frame { event, data });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}
