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

/// Which of `n` agents subscriber `i` follows when a crowd is spread over
/// several (`drain --channels`): pairs of consecutive subscribers take the
/// agents in turn, so with the half-and-half mix [`Kind::of`] interleaves
/// every agent gets as many SSE streams as WebSockets. Plain `i mod n`
/// would give an even `n`'s even agents only SSE streams and its odd ones
/// only WebSockets.
pub fn agent_of(i: usize, n: usize) -> usize {
    (i / 2) % n
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
    /// `agent_ids[agent_of(i, len)]`.
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
    /// subscriber `i` takes `targets[agent_of(i, len)]`, a (path, channel)
    /// pair.
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
        assert!(!targets.is_empty(), "a crowd follows at least one target");
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
            let (path, channel) = &targets[agent_of(i, targets.len())];
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

    use super::{agent_of, create_agent, publish::Publisher, wait_for, Crowd};
    use crate::{
        client::Kind,
        gateway::{self, Data, Launch},
    };

    /// Each agent of `drain --channels 90` gets as many SSE streams as
    /// WebSockets, among the followers and among B's crowd, and the crowd
    /// reaches every agent.
    #[test]
    fn every_agent_gets_both_transports() {
        let n = 90;
        let mut kinds = vec![[0u32; 2]; n];
        for i in 0..9_000 {
            kinds[agent_of(i, n)][usize::from(Kind::of(i, 50) == Kind::Ws)] += 1;
        }
        assert!(kinds.iter().all(|k| *k == [50, 50]), "{kinds:?}");
        let mut crowd = vec![0u32; n];
        for i in 9_000..9_500 {
            crowd[agent_of(i, n)] += 1;
        }
        assert!(crowd.iter().all(|&c| (4..=6).contains(&c)), "{crowd:?}");
        assert!((0..100).all(|i| agent_of(i, 1) == 0));
    }

    /// `drain --channels`: a crowd over three agents and a publisher that
    /// posts its runs to each in turn. One subscriber of each agent alone
    /// tells which agent got which run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crowd_and_its_publisher_take_turns_over_agents() {
        let gw = gateway::start(&Launch::InProcess, &Data::Embedded, &[])
            .await
            .unwrap();
        let mut agents = Vec::new();
        for _ in 0..3 {
            agents.push(create_agent(&gw, 0).await.unwrap());
        }
        // Six: one SSE stream and one WebSocket per agent.
        let mixed = Crowd::open_agents(gw.addr, &gw.key, &agents, 6, 50, 6, 0).await;
        assert_eq!((mixed.opened, mixed.failed), (6, 0));
        let mut alone = Vec::new();
        for (k, agent) in agents.iter().enumerate() {
            alone.push(Crowd::open(gw.addr, &gw.key, agent, 1, 0, 1, 10 + k).await);
        }
        // A run on the first agent (the calibration), then three more, a
        // run a second, one per agent.
        let calibrated = Publisher::calibrate(&gw.url, &gw.key, &agents[0], 3)
            .await
            .unwrap();
        let e = calibrated.events_per_run as u64;
        let publisher = calibrated
            .across(&gw.url, &agents)
            .start(e as f64, Duration::from_millis(2500));
        let done = || publisher.counts.done.load(Relaxed);
        assert!(wait_for(Duration::from_secs(15), || done() == 3).await);
        let heard = |c: &Crowd| c.stats.deliveries.load(Relaxed);
        let want = [2 * e, e, e];
        wait_for(Duration::from_secs(10), || {
            heard(&mixed) >= 8 * e && alone.iter().zip(want).all(|(c, w)| heard(c) >= w)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got: Vec<u64> = alone.iter().map(heard).collect();
        assert_eq!(got, want, "runs per agent: calibration + one each");
        // Two subscribers per agent, each hearing its agent's runs: a
        // crowd that put its SSE streams (or all of it) on one agent would
        // have heard another count.
        assert_eq!(heard(&mixed), 2 * (want.iter().sum::<u64>()));
        publisher.stop().await;
        mixed.close().await;
        for c in alone {
            c.close().await;
        }
    }
}
