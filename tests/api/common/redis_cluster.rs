//! A Redis Cluster for a test: six `redis-server --cluster-enabled yes`
//! processes on free loopback ports (each with its bus port, +10000, free
//! too) joined by `redis-cli --cluster create --cluster-replicas 1`: three
//! masters, one replica each. A master is declared failed after 1 s
//! (`cluster-node-timeout`), so a failover takes a few seconds. Killed on
//! drop. Helpers find which master holds a key's slot, kill it, wait for
//! its replica's promotion and move a slot to another master (resharding).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use redis::Value;

use super::poll;

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
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(6);
        let children = ports
            .iter()
            .map(|&p| {
                let node_dir = dir.path().join(p.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                let child = Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                    .arg(node_dir.join("nodes.conf"))
                    .args(["--cluster-node-timeout", "1000"])
                    .args(["--cluster-replica-validity-factor", "0"])
                    .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                    .args(["--loglevel", "warning", "--dir"])
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn a cluster node");
                Some(child)
            })
            .collect();
        let c = Self {
            ports,
            children,
            _dir: dir,
        };
        for &p in &c.ports {
            let up = poll(Duration::from_secs(10), || async move {
                query::<String>(p, &redis::cmd("PING")).await
            })
            .await;
            assert!(up.is_some(), "cluster node {p} never answered");
        }
        let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let made = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(made.success(), "redis-cli --cluster create failed");
        c.wait_ok().await;
        // Every node must know every replica (gossip takes a moment), and
        // replicas must be in sync, before a master may be killed.
        let ports = c.ports.clone();
        let known = poll(Duration::from_secs(30), || {
            let ports = ports.clone();
            async move {
                for p in ports {
                    let slots: Value = query(p, redis::cmd("CLUSTER").arg("SLOTS")).await?;
                    let Value::Array(ranges) = slots else {
                        return None;
                    };
                    let full = ranges.len() == 3
                        && ranges
                            .iter()
                            .all(|r| matches!(r, Value::Array(r) if r.len() >= 4));
                    if !full {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        assert!(known.is_some(), "the nodes never all knew the replicas");
        for s in c.shards().await {
            for r in s.replicas {
                c.wait_info(r, "master_link_status:up").await;
            }
        }
        c
    }

    /// `host:port,…` of every node (for `WEIR_REDIS_CLUSTER`).
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

    /// Waits until every live node says `cluster_state:ok` and agrees on
    /// the slot map (30 s).
    pub async fn wait_ok(&self) {
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
        assert!(ok.is_some(), "the cluster never reached cluster_state:ok");
    }

    /// The slot ranges as a live node sees them.
    pub async fn shards(&self) -> Vec<Shard> {
        let p = self.alive().next().unwrap();
        let v: Value = query(p, redis::cmd("CLUSTER").arg("SLOTS"))
            .await
            .expect("CLUSTER SLOTS");
        let Value::Array(ranges) = v else {
            panic!("CLUSTER SLOTS: {v:?}")
        };
        ranges
            .into_iter()
            .map(|r| {
                let Value::Array(r) = r else { panic!() };
                let int = |v: &Value| match v {
                    Value::Int(i) => *i,
                    _ => panic!("{v:?}"),
                };
                let port = |v: &Value| match v {
                    Value::Array(n) => int(&n[1]) as u16,
                    _ => panic!("{v:?}"),
                };
                Shard {
                    start: int(&r[0]) as u16,
                    end: int(&r[1]) as u16,
                    master: port(&r[2]),
                    replicas: r[3..].iter().map(port).collect(),
                }
            })
            .collect()
    }

    /// The slot of `key` (by its hash tag).
    pub async fn slot(&self, key: &str) -> u16 {
        let p = self.alive().next().unwrap();
        query::<u16>(p, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The shard holding `slot`.
    pub async fn shard_of(&self, slot: u16) -> Shard {
        self.shards()
            .await
            .into_iter()
            .find(|s| s.start <= slot && slot <= s.end)
            .expect("every slot is served")
    }

    /// The master ports, in slot order.
    pub async fn masters(&self) -> Vec<u16> {
        let mut m: Vec<u16> = self.shards().await.iter().map(|s| s.master).collect();
        m.dedup();
        m
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).unwrap();
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until `port` says it is a master (a promoted replica).
    pub async fn wait_promoted(&self, port: u16) {
        self.wait_info(port, "role:master").await;
    }

    async fn wait_info(&self, port: u16, want: &str) {
        let found = poll(Duration::from_secs(30), || async move {
            let info: String = query(port, &redis::cmd("INFO")).await?;
            info.contains(want).then_some(())
        })
        .await;
        assert!(found.is_some(), "127.0.0.1:{port} never said {want}");
    }

    /// Moves `slot` from master `from` to master `to`, keys and all, the
    /// way `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE
    /// of every key, then SETSLOT NODE on every master.
    pub async fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let id = |p: u16| async move {
            query::<String>(p, redis::cmd("CLUSTER").arg("MYID"))
                .await
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from).await, id(to).await);
        let setslot = |p: u16, how: &'static str, node: String| async move {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(how).arg(node);
            query::<String>(p, &c).await.expect("CLUSTER SETSLOT");
        };
        setslot(to, "IMPORTING", from_id.clone()).await;
        setslot(from, "MIGRATING", to_id.clone()).await;
        loop {
            let mut get = redis::cmd("CLUSTER");
            get.arg("GETKEYSINSLOT").arg(slot).arg(100);
            let keys: Vec<String> = query(from, &get).await.expect("GETKEYSINSLOT");
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
            let _: Value = query(from, &m).await.expect("MIGRATE");
        }
        setslot(to, "NODE", to_id.clone()).await;
        setslot(from, "NODE", to_id.clone()).await;
        for p in self.masters().await {
            if p != from && p != to {
                setslot(p, "NODE", to_id.clone()).await;
            }
        }
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

/// One command to the node on `port` (None on any failure).
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

/// `n` free ports whose cluster bus port (+10000) is free too.
fn free_ports(n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    while out.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        let bus_free = p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok();
        if bus_free && p != 6379 && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
