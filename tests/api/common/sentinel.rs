//! Redis Sentinel for a test: a replica of a test's [`RedisServer`] and
//! three Sentinels watching it (master name [`MASTER`]), all on free
//! loopback ports, killed on drop. The Sentinels declare the master down
//! after 1 s, so a failover takes a few seconds. Uses Debian's
//! `redis-sentinel` when installed, else `redis-server --sentinel` (the
//! same binary).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{poll, RedisServer};

/// The master's name in the Sentinels' configuration.
pub const MASTER: &str = "weirtest";

pub struct Sentinels {
    replica_port: u16,
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Sentinels {
    /// Starts a replica of `master` and three Sentinels, and waits until
    /// the replica is in sync and every Sentinel knows the replica and the
    /// two other Sentinels (so a failover can be agreed on).
    pub async fn start(master: &RedisServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let master_port = master.port();
        let replica_port = free_port();
        let replica = Command::new("redis-server")
            .args(["--port", &replica_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--replicaof", "127.0.0.1", &master_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the replica");
        let mut s = Self {
            replica_port,
            ports: Vec::new(),
            children: vec![replica],
            _dir: dir,
        };
        wait_info(replica_port, "master_link_status:up").await;
        for i in 0..3 {
            let port = free_port();
            let conf = s._dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 4000\n",
                    dir = s._dir.path().display()
                ),
            )
            .unwrap();
            s.children.push(sentinel(&conf));
            s.ports.push(port);
        }
        for &port in &s.ports {
            wait_info(port, "slaves=1,sentinels=3").await;
        }
        s
    }

    /// `host:port,…` of the Sentinels (for `WEIR_REDIS_SENTINEL`).
    pub fn addrs(&self) -> String {
        let addrs: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        addrs.join(",")
    }

    /// Waits until the replica has been promoted (it says it is a master).
    pub async fn wait_promoted(&self) {
        wait_info(self.replica_port, "role:master").await;
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sentinel(conf: &std::path::Path) -> Child {
    let mut cmd = if which("redis-sentinel") {
        let mut c = Command::new("redis-sentinel");
        c.arg(conf);
        c
    } else {
        // The same binary; the config file comes first, then the mode.
        let mut c = Command::new("redis-server");
        c.arg(conf).arg("--sentinel");
        c
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a sentinel")
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
}

/// Polls `INFO` of the server on `port` until it contains `want` (30 s).
async fn wait_info(port: u16, want: &str) {
    let url = format!("redis://127.0.0.1:{port}");
    let found = poll(Duration::from_secs(30), || async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").query_async(&mut conn).await.ok()?;
        info.contains(want).then_some(())
    })
    .await;
    assert!(found.is_some(), "127.0.0.1:{port} never said {want}");
}

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
