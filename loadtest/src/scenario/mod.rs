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
        let agents = [agent_id.to_owned()];
        Self::open_agents(to, key, &agents, n, ws_percent, concurrency, first).await
    }

    /// [`Crowd::open`] over several agents: subscriber `i` follows
    /// `agent_ids[i % len]`.
    pub async fn open_agents(
        to: SocketAddr,
        key: &str,
        agent_ids: &[String],
        n: usize,
        ws_percent: u32,
        concurrency: usize,
        first: usize,
    ) -> Self {
        let targets: Vec<(String, String)> = agent_ids
            .iter()
            .map(|id| (format!("/v1/agents/{id}/events"), format!("agent:{id}")))
            .collect();
        Self::open_at(to, key, &targets, n, ws_percent, concurrency, first).await
    }

    /// [`Crowd::open`] with the SSE paths and WebSocket channels given
    /// (`fanout --nchan` points SSE subscribers at nchan's location):
    /// subscriber `i` takes `targets[i % len]`, a (path, channel) pair.
    pub async fn open_at(
        to: SocketAddr,
        key: &str,
        targets: &[(String, String)],
        n: usize,
        ws_percent: u32,
        concurrency: usize,
        first: usize,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let targets: Vec<(Arc<str>, Arc<str>)> = targets
            .iter()
            .map(|(p, c)| (p.as_str().into(), c.as_str().into()))
            .collect();
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
            let (path, channel) = &targets[i % targets.len()];
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

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering::Relaxed, time::Duration};

    use super::{create_agent, publish::Publisher, wait_for, Crowd};
    use crate::gateway::{self, Data, Launch};

    /// `drain --channels`: a crowd over two agents (subscriber `i` on agent
    /// `i mod 2`) and a publisher posting its runs to each in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crowd_and_its_publisher_take_turns_over_agents() {
        let gw = gateway::start(&Launch::InProcess, &Data::Embedded, &[])
            .await
            .unwrap();
        let agents = vec![
            create_agent(&gw, 0).await.unwrap(),
            create_agent(&gw, 0).await.unwrap(),
        ];
        let crowd = Crowd::open_agents(gw.addr, &gw.key, &agents, 4, 50, 4, 0).await;
        assert_eq!((crowd.opened, crowd.failed), (4, 0));
        let stats = crowd.stats.clone();
        // One run on the first agent: its two subscribers hear it.
        let calibrated = Publisher::calibrate(&gw.url, &gw.key, &agents[0], 3)
            .await
            .unwrap();
        let per_run = calibrated.events_per_run as u64;
        let delivered = || stats.deliveries.load(Relaxed);
        wait_for(Duration::from_secs(10), || delivered() >= 2 * per_run).await;
        assert_eq!(delivered(), 2 * per_run, "one run, two subscribers");
        let one_run_seq = stats.max_seq.load(Relaxed);
        // Two more runs, one per agent (a run a second for 1.5 s).
        let publisher = calibrated
            .across(&gw.url, &agents)
            .start(per_run as f64, Duration::from_millis(1500));
        let done = || publisher.counts.done.load(Relaxed);
        assert!(wait_for(Duration::from_secs(10), || done() == 2).await);
        wait_for(Duration::from_secs(10), || delivered() >= 6 * per_run).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            delivered(),
            6 * per_run,
            "each run heard by its agent's two"
        );
        // The first agent had two runs, the second one: had every run gone
        // to the first, its seqs would have reached three runs' worth.
        assert_eq!(stats.max_seq.load(Relaxed), 2 * one_run_seq);
        publisher.stop().await;
        crowd.close().await;
    }
}
