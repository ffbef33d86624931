//! A Redis Cluster of three masters, each with `replicas` replicas: as many
//! `redis-server --cluster-enabled yes` processes on free loopback ports
//! (each with its bus port, +10000, free too) joined by `redis-cli
//! --cluster create`. With replicas a master is declared failed after 1 s
//! (`cluster-node-timeout`), so a failover takes a few seconds; without,
//! Redis's default timeout stands (nothing could take over, and a busy
//! machine must not fail the cluster). Killed on drop. Helpers find which
//! master holds a key's slot, kill it, wait for its replica's promotion and
//! move a slot to another master (resharding).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use redis::Value;

use super::{poll, query, wait_info};

/// Masters of every cluster started here.
const MASTERS: usize = 3;

pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// One slot range of `CLUSTER SLOTS`: its master's and replicas' ports.
#[derive(Debug, Clone)]
pub struct Shard {
    pub start: u16,
    pub end: u16,
    pub master: u16,
    pub replicas: Vec<u16>,
}

impl RedisCluster {
    /// Starts three masters with `replicas` replicas each, and waits until
    /// the cluster is up, every node knows every replica and every replica
    /// is in sync (so a master may be killed).
    pub async fn start(replicas: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(MASTERS * (1 + replicas))?;
        let timeout = if replicas > 0 { "1000" } else { "15000" };
        let mut c = Self {
            ports: ports.clone(),
            children: Vec::new(),
            _dir: dir,
        };
        for &p in &ports {
            let node_dir = c._dir.path().join(p.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(node_dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", timeout])
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args(["--loglevel", "warning", "--dir"])
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("a Redis Cluster needs redis-server 7")?;
            c.children.push(Some(child));
        }
        for &p in &ports {
            let up = poll(Duration::from_secs(10), || async move {
                query::<String>(p, &redis::cmd("PING")).await
            })
            .await;
            ensure!(up.is_some(), "cluster node {p} never answered");
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let made = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("a Redis Cluster needs redis-cli 7")?;
        ensure!(made.success(), "redis-cli --cluster create failed");
        c.wait_ok().await?;
        // Every node must know every replica (gossip takes a moment), and
        // replicas must be in sync, before a master may be killed.
        let known = poll(Duration::from_secs(30), || {
            let ports = ports.clone();
            async move {
                for p in ports {
                    let slots: Value = query(p, redis::cmd("CLUSTER").arg("SLOTS")).await?;
                    let Value::Array(ranges) = slots else {
                        return None;
                    };
                    let full = ranges.len() == MASTERS
                        && ranges
                            .iter()
                            .all(|r| matches!(r, Value::Array(r) if r.len() == 3 + replicas));
                    if !full {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        ensure!(known.is_some(), "the nodes never all knew the replicas");
        for s in c.shards().await? {
            for r in s.replicas {
                wait_info(r, "master_link_status:up").await?;
            }
        }
        Ok(c)
    }

    /// `host:port,…` of every node (for `--redis-cluster`).
    pub fn addrs(&self) -> String {
        let a: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        a.join(",")
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
    }

    /// Waits until every live node says `cluster_state:ok` (30 s).
    pub async fn wait_ok(&self) -> anyhow::Result<()> {
        let alive: Vec<u16> = self.alive().collect();
        let ok = poll(Duration::from_secs(30), || {
            let alive = alive.clone();
            async move {
                for p in alive {
                    let info: String = query(p, redis::cmd("CLUSTER").arg("INFO")).await?;
                    if !info.contains("cluster_state:ok") {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        ensure!(ok.is_some(), "the cluster never reached cluster_state:ok");
        Ok(())
    }

    /// The slot ranges as a live node sees them.
    pub async fn shards(&self) -> anyhow::Result<Vec<Shard>> {
        let p = self.alive().next().context("no live node")?;
        let v: Value = query(p, redis::cmd("CLUSTER").arg("SLOTS"))
            .await
            .context("CLUSTER SLOTS")?;
        let Value::Array(ranges) = v else {
            bail!("CLUSTER SLOTS: {v:?}")
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Ok(*i),
            _ => Err(anyhow::anyhow!("CLUSTER SLOTS: {v:?} is not a number")),
        };
        let port = |v: &Value| match v {
            Value::Array(n) if n.len() > 1 => Ok(int(&n[1])? as u16),
            _ => Err(anyhow::anyhow!("CLUSTER SLOTS: {v:?} is not a node")),
        };
        ranges
            .iter()
            .map(|r| match r {
                Value::Array(r) if r.len() >= 3 => Ok(Shard {
                    start: int(&r[0])? as u16,
                    end: int(&r[1])? as u16,
                    master: port(&r[2])?,
                    replicas: r[3..].iter().map(port).collect::<anyhow::Result<_>>()?,
                }),
                _ => bail!("CLUSTER SLOTS: {r:?} is not a range"),
            })
            .collect()
    }

    /// The slot of `key` (by its hash tag).
    pub async fn slot(&self, key: &str) -> anyhow::Result<u16> {
        let p = self.alive().next().context("no live node")?;
        query::<u16>(p, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .context("CLUSTER KEYSLOT")
    }

    /// The shard holding `slot`.
    pub async fn shard_of(&self, slot: u16) -> anyhow::Result<Shard> {
        self.shards()
            .await?
            .into_iter()
            .find(|s| s.start <= slot && slot <= s.end)
            .with_context(|| format!("no shard serves slot {slot}"))
    }

    /// The master ports, in slot order.
    pub async fn masters(&self) -> anyhow::Result<Vec<u16>> {
        let mut m: Vec<u16> = self.shards().await?.iter().map(|s| s.master).collect();
        m.dedup();
        Ok(m)
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port);
        if let Some(mut c) = i.and_then(|i| self.children[i].take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until `port` says it is a master (a promoted replica).
    pub async fn wait_promoted(&self, port: u16) -> anyhow::Result<()> {
        wait_info(port, "role:master").await
    }

    /// Moves `slot` from master `from` to master `to`, keys and all, the
    /// way `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE
    /// of every key, then SETSLOT NODE on every master.
    pub async fn move_slot(&self, slot: u16, from: u16, to: u16) -> anyhow::Result<()> {
        let id = |p: u16| async move {
            query::<String>(p, redis::cmd("CLUSTER").arg("MYID"))
                .await
                .context("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from).await?, id(to).await?);
        let setslot = |p: u16, how: &'static str, node: String| async move {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(how).arg(node);
            query::<String>(p, &c).await.context("CLUSTER SETSLOT")
        };
        setslot(to, "IMPORTING", from_id.clone()).await?;
        setslot(from, "MIGRATING", to_id.clone()).await?;
        loop {
            let mut get = redis::cmd("CLUSTER");
            get.arg("GETKEYSINSLOT").arg(slot).arg(100);
            let keys: Vec<String> = query(from, &get).await.context("GETKEYSINSLOT")?;
            if keys.is_empty() {
                break;
            }
            let mut m = redis::cmd("MIGRATE");
            m.arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS");
            m.arg(&keys);
            let _: Value = query(from, &m).await.context("MIGRATE")?;
        }
        setslot(to, "NODE", to_id.clone()).await?;
        setslot(from, "NODE", to_id.clone()).await?;
        for p in self.masters().await? {
            if p != from && p != to {
                setslot(p, "NODE", to_id.clone()).await?;
            }
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` free ports whose cluster bus port (+10000) is free too.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut out = Vec::new();
    while out.len() < n {
        let p = super::free_port()?;
        let bus_free = p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok();
        // No chosen port may be another's bus port, nor its bus port
        // another's port.
        let clash = out
            .iter()
            .any(|&q| q == p || q == p + 10_000 || q + 10_000 == p);
        if bus_free && !clash {
            out.push(p);
        }
    }
    Ok(out)
}
