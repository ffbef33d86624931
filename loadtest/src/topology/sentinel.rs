//! Redis Sentinel: a replica of a master already running on loopback and
//! three Sentinels watching it (master name [`MASTER`]), all on free
//! loopback ports, killed on drop. The Sentinels declare the master down
//! after 1 s, so a failover takes a few seconds. Uses Debian's
//! `redis-sentinel` when installed, else `redis-server --sentinel` (the
//! same binary).

use std::process::{Child, Command, Stdio};

use anyhow::Context;

use super::{free_port, is_master, wait_info};

/// The master's name in the Sentinels' configuration.
pub const MASTER: &str = "weirtest";

pub struct Sentinels {
    replica_port: u16,
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Sentinels {
    /// Starts a replica of the master on `master_port` and three Sentinels,
    /// and waits until the replica is in sync and every Sentinel knows the
    /// replica and the two other Sentinels (so a failover can be agreed on).
    pub async fn start(master_port: u16) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let replica_port = free_port()?;
        let replica = Command::new("redis-server")
            .args(["--port", &replica_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--replicaof", "127.0.0.1", &master_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the replica (redis-server)")?;
        let mut s = Self {
            replica_port,
            ports: Vec::new(),
            children: vec![replica],
            dir,
        };
        wait_info(replica_port, "master_link_status:up").await?;
        for i in 0..3 {
            let port = free_port()?;
            let conf = s.dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 4000\n",
                    dir = s.dir.path().display()
                ),
            )?;
            s.children.push(sentinel(&conf)?);
            s.ports.push(port);
        }
        for &port in &s.ports {
            wait_info(port, "slaves=1,sentinels=3").await?;
        }
        Ok(s)
    }

    /// `host:port,…` of the Sentinels (for `--redis-sentinel`).
    pub fn addrs(&self) -> String {
        let addrs: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        addrs.join(",")
    }

    /// The replica's port.
    pub fn replica(&self) -> u16 {
        self.replica_port
    }

    /// Whether the replica has been promoted yet (it says it is a master).
    pub async fn promoted(&self) -> bool {
        is_master(self.replica_port).await
    }

    /// Waits until the replica has been promoted (30 s).
    pub async fn wait_promoted(&self) -> anyhow::Result<()> {
        wait_info(self.replica_port, "role:master").await
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

fn sentinel(conf: &std::path::Path) -> anyhow::Result<Child> {
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
        .context("spawning a sentinel")
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
}
