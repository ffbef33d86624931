//! The scenarios, and what they share: creating the agent everyone listens
//! to, opening many subscribers at a bounded connect concurrency (the
//! publisher of real echo-model runs is [`publish`]).

pub mod agent_path;
pub mod bus;
pub mod connections;
pub mod drain;
pub mod edge;
pub mod failover;
pub mod fallback;
pub mod fanout;
pub mod fanout_nchan;
pub mod follow;
pub mod nchan;
pub mod nginx;
pub mod peer;
pub mod proxy;
pub mod publish;
pub mod rest;
pub mod runs;
pub mod shards;
pub mod smoke;
pub mod soak;
pub mod transport;
pub mod webhooks;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    client::{event::Stats, sse, ws, Kind},
    gateway::Gateway,
};

/// Creates an echo agent whose tokens are `delay_ms` apart; returns its id.
pub async fn create_agent(gw: &Gateway, delay_ms: u64) -> anyhow::Result<String> {
    let resp = crate::tls::client_builder()
        .build()?
        .post(format!("{}/v1/agents", gw.url))
        .bearer_auth(&gw.key)
        .json(
            &json!({"name": "load", "model": "echo", "system": "load test",
                      "metadata": {"echo_delay_ms": delay_ms}}),
        )
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    match v["id"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_owned()),
        _ => bail!("creating the agent: {status} {v}"),
    }
}

/// Subscribers opened on one gateway, counted into one [`Stats`].
pub struct Crowd {
    pub stats: Arc<Stats>,
    pub stop: CancellationToken,
    pub opened: u64,
    pub failed: u64,
    /// Seconds it took to open them all.
    pub open_secs: f64,
    tasks: JoinSet<()>,
}

impl Crowd {
    /// Opens `n` subscribers (`ws_percent` % WebSockets) to `agent_id` on
    /// `to`, `concurrency` handshakes at a time; `first` numbers their source
    /// addresses. Returns once every one is subscribed or has failed.
    pub async fn open(
        to: SocketAddr,
        key: &str,
        agent_id: &str,
        n: usize,
        ws_percent: u32,
        concurrency: usize,
        first: usize,
    ) -> Self {
        let path = format!("/v1/agents/{agent_id}/events");
        let channel = format!("agent:{agent_id}");
        let to_agent = (path.as_str(), channel.as_str());
        Self::open_at(to, key, to_agent, n, ws_percent, concurrency, first).await
    }

    /// [`Crowd::open`] with the SSE path and WebSocket channel given
    /// (`fanout --nchan` points SSE subscribers at nchan's location).
    pub async fn open_at(
        to: SocketAddr,
        key: &str,
        (path, channel): (&str, &str),
        n: usize,
        ws_percent: u32,
        concurrency: usize,
        first: usize,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let path: Arc<str> = path.into();
        let channel: Arc<str> = channel.into();
        let key: Arc<str> = key.into();
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let ok = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        for i in first..first + n {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let (ok, bad) = (ok.clone(), bad.clone());
            let ready = move |opened: bool| {
                let c = if opened { &ok } else { &bad };
                c.fetch_add(1, Ordering::SeqCst);
                drop(permit);
            };
            let (stats, stop, key) = (stats.clone(), stop.clone(), key.clone());
            match Kind::of(i, ws_percent) {
                Kind::Sse => {
                    tasks.spawn(sse::subscribe(i, to, path.clone(), key, stats, stop, ready))
                }
                Kind::Ws => tasks.spawn(ws::subscribe(
                    i,
                    to,
                    channel.clone(),
                    key,
                    stats,
                    stop,
                    ready,
                )),
            };
        }
        // Every permit back means every subscriber is ready or failed.
        let _all = gate.acquire_many(concurrency.max(1) as u32).await;
        Self {
            stats,
            stop,
            opened: ok.load(Ordering::SeqCst),
            failed: bad.load(Ordering::SeqCst),
            open_secs: started.elapsed().as_secs_f64(),
            tasks,
        }
    }

    /// Closes every subscriber and waits for them.
    pub async fn close(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Waits until `cond` holds or `within` passes; returns whether it held.
pub async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// Reads a gateway's RSS in KiB, with the error named.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    crate::sys::rss_kib(pid).with_context(|| format!("reading /proc/{pid}/status"))
}
