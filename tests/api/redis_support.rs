//! A private `redis-server` per test: a free port (never 6379), no
//! persistence, its own working dir, killed on drop. It can be killed and
//! started again on the same port (an outage). Shared by the integration
//! tests and, through `#[path]`, by the Redis bus unit tests.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The installed server binary (redis-server 7).
const REDIS_SERVER: &str = "redis-server";

/// A running (or deliberately stopped) private redis-server.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir for redis"),
        };
        let mut last = String::new();
        for _ in 0..5 {
            match server.launch().await {
                Ok(()) => return server,
                // Another process took the port between probe and bind.
                Err(e) => last = e,
            }
            server.port = free_port();
        }
        panic!("could not start redis-server: {last}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown). Its data is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was saved).
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..20 {
            if self.launch().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not come back on port {}", self.port);
    }

    /// A connection for inspecting the server from a test.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    async fn launch(&mut self) -> Result<(), String> {
        let dir: PathBuf = self.dir.path().to_owned();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {REDIS_SERVER}: {e}"))?;
        let pid = child.id();
        self.child = Some(child);
        for _ in 0..100 {
            // The pid check makes sure it is our server answering, not another
            // test's that took the port while ours was down.
            if server_pid(self.port).await == Some(pid) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        Err("redis-server did not answer within 2 s".into())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pid of the server answering on `port`, if one does.
async fn server_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let info = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    let info = tokio::time::timeout(Duration::from_millis(500), info)
        .await
        .ok()??;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

/// A free loopback port other than 6379.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if port != 6379 {
            return port;
        }
    }
}
