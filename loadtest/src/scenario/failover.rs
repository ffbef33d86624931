//! `failover`: how long delivery stops when Redis loses its master, in each
//! Redis mode (issue 20). Per mode and round, fresh processes: the Redis
//! topology (`sentinel`: a master, its replica and three Sentinels that
//! declare the master down after 1 s; `cluster`: three masters with a
//! replica each, a master failed after 1 s), one gateway on it
//! (`--redis-sentinel` or `--redis-cluster`), `--channels` echo agents
//! (in cluster mode picked so their channels are spread over the three
//! masters), each with one SSE subscriber and its runs streaming steadily
//! (`--delay-ms` between tokens, one long run after the other). After
//! `--before-secs` of streaming the master is SIGKILLed (in cluster mode the
//! master owning the first channel's slot); the round ends `--after-secs`
//! after every stream has had an event again.
//!
//! Per round: the gap in each stream on the failed master from the last
//! event that arrived before the kill to the first that arrived after it
//! (p50 and max over those channels; the channels on other masters' largest
//! gap beside it), when the replica said it was master (`INFO
//! replication`), when `/readyz` answered 200 again after its 503s, and
//! counts: events, `gap` frames and the seqs they announce, seqs seen twice
//! or out of order and holes without a gap frame (both must be 0), streams
//! that ended, runs started and failed.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    client::{
        event::{find, find_u64},
        sse,
    },
    gateway::{self, Data, Launch},
    report::{Report, Table},
    topology::{cluster::RedisCluster, is_master, sentinel},
    units,
};

/// Options of the `failover` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Redis modes, each measured in turn on its own processes.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sentinel,cluster"
    )]
    pub modes: Vec<Mode>,
    /// Rounds; each kills one master per mode.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Channels (echo agents), each with one SSE subscriber and its runs.
    #[arg(long, default_value_t = 8)]
    pub channels: usize,
    /// Milliseconds between a run's tokens (`echo_delay_ms`).
    #[arg(long, default_value_t = 20)]
    pub delay_ms: u64,
    /// Seconds of steady streaming before the kill.
    #[arg(long, default_value_t = 2.0)]
    pub before_secs: f64,
    /// Seconds of streaming after every stream has resumed.
    #[arg(long, default_value_t = 1.0)]
    pub after_secs: f64,
}

/// How the gateway reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A master, its replica and three Sentinels (`--redis-sentinel`).
    Sentinel,
    /// Three masters with a replica each (`--redis-cluster`).
    Cluster,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// The columns of a round's row (here and in BENCHMARKS.md's block).
pub const COLUMNS: [&str; 11] = [
    "round",
    "mode",
    "replica promoted",
    "/readyz 200 again",
    "stream gap p50",
    "stream gap max",
    "other masters' gap max",
    "events",
    "gap frames (seqs)",
    "repeats / silent holes",
    "runs failed",
];

/// How long a round waits for the streams, /readyz or the promotion.
const PATIENCE: Duration = Duration::from_secs(60);

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("failover");
    let mut table = Table::new(
        format!(
            "failover, {} channels, a token every {} ms",
            o.channels, o.delay_ms
        ),
        &COLUMNS,
    );
    let mut rounds = Vec::new();
    for round in 1..=o.rounds {
        for &mode in &o.modes {
            let r = one(launch, extra, o, mode)
                .await
                .with_context(|| format!("{} round {round}", mode.name()))?;
            let what = format!("{} round {round}", mode.name());
            report.check(
                format!("{what}: every stream resumed"),
                r.resumed == r.streams,
            );
            report.check(
                format!("{what}: streams on the killed master"),
                r.victims > 0,
            );
            report.check(
                format!("{what}: no seq twice or out of order"),
                r.repeats == 0,
            );
            report.check(
                format!("{what}: every hole behind a gap frame"),
                r.silent_holes == 0,
            );
            report.check(
                format!("{what}: /readyz 200 again"),
                r.readyz_back_ms.is_some(),
            );
            report.check(format!("{what}: no stream ended"), r.ended == 0);
            table.row(vec![
                round.to_string(),
                mode.name().into(),
                opt_ms(r.promoted_ms),
                opt_ms(r.readyz_back_ms),
                opt_ms(quantile(&r.hit, 0.5)),
                opt_ms(quantile(&r.hit, 1.0)),
                opt_ms(quantile(&r.others, 1.0)),
                units::thousands(r.events as f64),
                format!("{} ({})", r.gap_frames, r.gap_seqs),
                format!("{} / {}", r.repeats, r.silent_holes),
                format!("{} of {}", r.runs_failed, r.runs),
            ]);
            rounds.push(r.to_json(round, mode));
        }
    }
    report.tables.push(table);
    report.data = json!({
        "options": format!("{o:?}"),
        "channels": o.channels,
        "delay_ms": o.delay_ms,
        "rounds": rounds,
    });
    Ok(report.finish())
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), units::ms)
}

/// The `q` quantile (nearest rank) of `v`, `None` when empty.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil() as usize;
    s.get(rank.clamp(1, s.len().max(1)) - 1).copied()
}

/// The Redis processes of one round.
enum Topology {
    Sentinel {
        master: gateway::Redis,
        sentinels: sentinel::Sentinels,
    },
    Cluster(RedisCluster),
}

impl Topology {
    async fn start(mode: Mode) -> anyhow::Result<Self> {
        Ok(match mode {
            Mode::Sentinel => {
                let master = gateway::start_redis()
                    .await?
                    .context("the failover scenario needs redis-server")?;
                let sentinels = sentinel::Sentinels::start(master.port).await?;
                Self::Sentinel { master, sentinels }
            }
            Mode::Cluster => Self::Cluster(RedisCluster::start(1).await?),
        })
    }

    fn gateway_args(&self) -> Vec<String> {
        match self {
            Self::Sentinel { sentinels, .. } => vec![
                format!("--redis-sentinel={}", sentinels.addrs()),
                format!("--redis-sentinel-master={}", sentinel::MASTER),
            ],
            Self::Cluster(c) => vec![format!("--redis-cluster={}", c.addrs())],
        }
    }

    /// The master serving `channel`.
    async fn master_of(&self, channel: &str) -> anyhow::Result<u16> {
        match self {
            Self::Sentinel { master, .. } => Ok(master.port),
            Self::Cluster(c) => {
                let slot = c.slot(&format!("{{{channel}}}")).await?;
                Ok(c.shard_of(slot).await?.master)
            }
        }
    }

    /// The master to kill for `channel` and the replica that takes over.
    async fn victim(&self, channel: &str) -> anyhow::Result<(u16, u16)> {
        match self {
            Self::Sentinel { master, sentinels } => Ok((master.port, sentinels.replica())),
            Self::Cluster(c) => {
                let slot = c.slot(&format!("{{{channel}}}")).await?;
                let shard = c.shard_of(slot).await?;
                let heir = *shard
                    .replicas
                    .first()
                    .context("the master has no replica")?;
                Ok((shard.master, heir))
            }
        }
    }

    fn kill(&mut self, port: u16) {
        match self {
            Self::Sentinel { master, .. } => master.kill(),
            Self::Cluster(c) => c.kill(port),
        }
    }

    /// Masters a channel may land on.
    fn masters(&self) -> usize {
        match self {
            Self::Sentinel { .. } => 1,
            Self::Cluster(_) => 3,
        }
    }
}

/// What one stream received: each frame with its arrival.
#[derive(Default)]
struct Stream {
    events: Vec<(Instant, u64)>,
    gaps: Vec<(u64, u64)>,
    ended: Option<String>,
}

/// One channel of a round.
struct Channel {
    agent: String,
    on_victim: bool,
    seen: Arc<Mutex<Stream>>,
}

/// The figures of one round in one mode.
#[derive(Debug, Default)]
struct Round {
    /// Gaps (ms) of the streams on the killed master.
    hit: Vec<f64>,
    /// Gaps (ms) of the streams on other masters (cluster mode).
    others: Vec<f64>,
    /// Kill to the first event after it, streams on the killed master.
    resume: Vec<f64>,
    /// Streams, those on the killed master, and those with an event after
    /// the kill.
    streams: usize,
    victims: usize,
    resumed: usize,
    promoted_ms: Option<f64>,
    readyz_down_ms: Option<f64>,
    readyz_back_ms: Option<f64>,
    events: u64,
    gap_frames: u64,
    gap_seqs: u64,
    repeats: u64,
    silent_holes: u64,
    ended: u64,
    runs: u64,
    runs_failed: u64,
    /// Stream opens refused before the kill (and retried).
    open_retries: u64,
}

impl Round {
    fn to_json(&self, round: usize, mode: Mode) -> Value {
        let q = |v: &[f64]| json!({"p50_ms": quantile(v, 0.5), "max_ms": quantile(v, 1.0)});
        json!({
            "round": round,
            "mode": mode.name(),
            "streams_on_killed_master": self.victims,
            "gap": q(&self.hit),
            "other_masters_gap": q(&self.others),
            "resume": q(&self.resume),
            "gaps_ms": self.hit,
            "streams": self.streams,
            "resumed": self.resumed,
            "promoted_ms": self.promoted_ms,
            "readyz_down_ms": self.readyz_down_ms,
            "readyz_back_ms": self.readyz_back_ms,
            "events": self.events,
            "gap_frames": self.gap_frames,
            "gap_seqs": self.gap_seqs,
            "repeats": self.repeats,
            "silent_holes": self.silent_holes,
            "streams_ended": self.ended,
            "runs": self.runs,
            "runs_failed": self.runs_failed,
            "open_retries": self.open_retries,
        })
    }
}

/// One mode, one round: start, stream, kill, wait, measure.
async fn one(launch: &Launch, extra: &[String], o: &Opts, mode: Mode) -> anyhow::Result<Round> {
    let mut topo = Topology::start(mode).await?;
    let mut args = topo.gateway_args();
    args.extend(extra.iter().cloned());
    let gw = gateway::start(launch, &Data::Embedded, &args).await?;
    let readyz = crate::tls::client_builder().build()?;
    let ready = until_ok(PATIENCE, || async {
        let r = readyz.get(format!("{}/readyz", gw.url)).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    anyhow::ensure!(ready, "the gateway was not ready within {PATIENCE:?}");
    let channels = spread_agents(&gw, &topo, o).await?;
    let (victim, heir) = topo.victim(&format!("agent:{}", channels[0].agent)).await?;
    let mut channels = channels;
    for c in &mut channels {
        c.on_victim = topo.master_of(&format!("agent:{}", c.agent)).await? == victim;
    }

    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut open_retries = 0;
    for (i, c) in channels.iter().enumerate() {
        let path = format!("/v1/agents/{}/events", c.agent);
        let conn = open(i, gw.addr, &path, &gw.key, &mut open_retries).await?;
        tasks.spawn(listen(conn, c.seen.clone(), stop.clone()));
    }
    let runs = Arc::new(RunCounts::default());
    // Long runs (most of a round each), one after the other per channel.
    let words =
        ((o.before_secs + o.after_secs + 30.0) * 1000.0 / o.delay_ms.max(1) as f64) as usize;
    let message = vec!["word"; words.max(10)].join(" ");
    for c in &channels {
        let post = Post {
            client: crate::tls::client_builder().build()?,
            url: format!("{}/v1/agents/{}/messages", gw.url, c.agent),
            key: gw.key.clone(),
            message: message.clone(),
        };
        tasks.spawn(drive(post, runs.clone(), stop.clone()));
    }

    let all_streaming = super::wait_for(PATIENCE, || {
        channels.iter().all(|c| !lock(&c.seen).events.is_empty())
    })
    .await;
    if !all_streaming {
        stop.cancel();
        bail!("not every stream had an event within {PATIENCE:?}");
    }
    tokio::time::sleep(Duration::from_secs_f64(o.before_secs)).await;

    topo.kill(victim);
    let killed = Instant::now();
    let watch = CancellationToken::new();
    let readyz = tokio::spawn(watch_readyz(gw.url.clone(), killed, watch.clone()));
    let promoted = tokio::spawn(watch_promotion(heir, killed, watch.clone()));
    let resumed_all = super::wait_for(PATIENCE, || {
        channels.iter().all(|c| {
            let s = lock(&c.seen);
            s.events.last().is_some_and(|e| e.0 > killed) || s.ended.is_some()
        })
    })
    .await;
    if resumed_all {
        tokio::time::sleep(Duration::from_secs_f64(o.after_secs)).await;
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    // /readyz may come back after the streams (it waits for every channel
    // to be subscribed again): give it the rest of the patience.
    let (down, back) = tokio::time::timeout(PATIENCE, readyz)
        .await
        .unwrap_or(Ok((None, None)))
        .unwrap_or((None, None));
    watch.cancel();
    let promoted_ms = promoted.await.unwrap_or(None);

    let mut r = Round {
        open_retries,
        promoted_ms,
        readyz_down_ms: down,
        readyz_back_ms: back,
        runs: runs.started.load(Relaxed),
        runs_failed: runs.failed.load(Relaxed),
        ..Round::default()
    };
    for c in &channels {
        tally(&lock(&c.seen), c.on_victim, killed, &mut r);
    }
    drop(gw);
    drop(topo);
    Ok(r)
}

/// Adds one stream's figures to the round's.
fn tally(s: &Stream, on_victim: bool, killed: Instant, r: &mut Round) {
    r.events += s.events.len() as u64;
    r.gap_frames += s.gaps.len() as u64;
    r.gap_seqs += s
        .gaps
        .iter()
        .map(|&(a, b)| (b + 1).saturating_sub(a))
        .sum::<u64>();
    r.streams += 1;
    r.victims += usize::from(on_victim);
    r.ended += u64::from(s.ended.is_some());
    for w in s.events.windows(2) {
        let (prev, next) = (w[0].1, w[1].1);
        if next <= prev {
            r.repeats += 1;
        } else if next > prev + 1 {
            let (from, to) = (prev + 1, next - 1);
            if !s.gaps.iter().any(|&(a, b)| a <= from && b >= to) {
                r.silent_holes += 1;
            }
        }
    }
    let before = s.events.iter().rev().find(|e| e.0 <= killed);
    let after = s.events.iter().find(|e| e.0 > killed);
    let (Some(before), Some(after)) = (before, after) else {
        return;
    };
    let gap = (after.0 - before.0).as_secs_f64() * 1e3;
    r.resumed += 1;
    if on_victim {
        r.hit.push(gap);
        r.resume.push((after.0 - killed).as_secs_f64() * 1e3);
    } else {
        r.others.push(gap);
    }
}

/// `o.channels` echo agents; in cluster mode spread evenly over the
/// masters (an agent whose channel lands on a master that has its share
/// already is left idle).
async fn spread_agents(
    gw: &gateway::Gateway,
    topo: &Topology,
    o: &Opts,
) -> anyhow::Result<Vec<Channel>> {
    let share = o.channels.div_ceil(topo.masters());
    let mut per_master: Vec<(u16, usize)> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..o.channels * 20 {
        if out.len() == o.channels {
            return Ok(out);
        }
        let agent = super::create_agent(gw, o.delay_ms).await?;
        let master = topo.master_of(&format!("agent:{agent}")).await?;
        let i = match per_master.iter().position(|m| m.0 == master) {
            Some(i) => i,
            None => {
                per_master.push((master, 0));
                per_master.len() - 1
            }
        };
        if per_master[i].1 < share {
            per_master[i].1 += 1;
            out.push(Channel {
                agent,
                on_victim: false,
                seen: Arc::default(),
            });
        }
    }
    bail!("could not spread {} channels over the masters", o.channels)
}

fn lock(s: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens one SSE stream, retrying for up to 10 s: in cluster mode a
/// gateway answers 503 to new streams while its sharded link counts as down,
/// which one slow PING to a master is enough for on a busy machine. Each
/// retry is counted in `retries`.
async fn open(
    i: usize,
    to: std::net::SocketAddr,
    path: &str,
    key: &str,
    retries: &mut u64,
) -> anyhow::Result<sse::SseConn> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sse::open(i, to, path, key).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("opening {path}"))
            }
            Err(_) => *retries += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records every frame of one SSE stream until `stop`.
async fn listen(mut conn: sse::SseConn, seen: Arc<Mutex<Stream>>, stop: CancellationToken) {
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return,
            f = conn.next_frame() => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                lock(&seen).ended = Some(e.to_string());
                return;
            }
        };
        let at = Instant::now();
        let Some(data) = find(&frame, b"data: ").map(|i| &frame[i + 6..]) else {
            continue; // a ping comment
        };
        let mut s = lock(&seen);
        if find(&frame, b"event: gap\n").is_some() {
            if let (Some(a), Some(b)) = (
                find_u64(data, b"\"from_seq\":"),
                find_u64(data, b"\"to_seq\":"),
            ) {
                s.gaps.push((a, b));
            }
        } else if let Some(seq) = find_u64(data, b"\"seq\":") {
            s.events.push((at, seq));
        }
    }
}

/// Runs started and failed (refused, or ended with an `error` event).
#[derive(Default)]
struct RunCounts {
    started: AtomicU64,
    failed: AtomicU64,
}

/// Where one channel's runs are posted.
struct Post {
    client: reqwest::Client,
    url: String,
    key: String,
    message: String,
}

/// Posts streamed runs on one agent, one after the other, until `stop`.
async fn drive(p: Post, counts: Arc<RunCounts>, stop: CancellationToken) {
    let body = json!({"message": p.message, "stream": true, "stream_tokens": true});
    while !stop.is_cancelled() {
        counts.started.fetch_add(1, Relaxed);
        let send = p.client.post(&p.url).bearer_auth(&p.key).json(&body).send();
        let resp = tokio::select! {
            _ = stop.cancelled() => return,
            r = send => r,
        };
        let ok = match resp {
            Ok(mut resp) if resp.status().is_success() => {
                let mut failed = false;
                loop {
                    let chunk = tokio::select! {
                        _ = stop.cancelled() => return,
                        c = resp.chunk() => c,
                    };
                    match chunk {
                        Ok(Some(c)) => failed |= find(&c, b"event: error").is_some(),
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                !failed
            }
            _ => false,
        };
        if !ok {
            counts.failed.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls `/readyz` every 50 ms from the kill: (first answer other than 200,
/// first 200 after it), in ms after the kill.
async fn watch_readyz(
    url: String,
    killed: Instant,
    stop: CancellationToken,
) -> (Option<f64>, Option<f64>) {
    let Ok(client) = crate::tls::client_builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return (None, None);
    };
    let ms = || killed.elapsed().as_secs_f64() * 1e3;
    let mut down = None;
    while !stop.is_cancelled() && killed.elapsed() < PATIENCE * 2 {
        let ok = client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        match (ok, down) {
            (false, None) => down = Some(ms()),
            (true, Some(_)) => return (down, Some(ms())),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (down, None)
}

/// Polls the heir every 50 ms from the kill until it says it is master;
/// ms after the kill.
async fn watch_promotion(heir: u16, killed: Instant, stop: CancellationToken) -> Option<f64> {
    while !stop.is_cancelled() && killed.elapsed() < PATIENCE * 2 {
        if is_master(heir).await {
            return Some(killed.elapsed().as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Waits until `check` answers true or `within` passes, every 50 ms.
async fn until_ok<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(seqs: &[(u64, u64)], gaps: &[(u64, u64)], t0: Instant) -> Stream {
        Stream {
            events: seqs
                .iter()
                .map(|&(ms, seq)| (t0 + Duration::from_millis(ms), seq))
                .collect(),
            gaps: gaps.to_vec(),
            ended: None,
        }
    }

    /// The gap is last-before to first-after; a hole counts as silent only
    /// without a gap frame covering it; a repeat is counted.
    #[test]
    fn a_stream_is_tallied_around_the_kill() {
        let t0 = Instant::now();
        let killed = t0 + Duration::from_millis(100);
        let mut r = Round::default();
        let s = stream(&[(50, 1), (90, 2), (2_090, 5), (2_110, 6)], &[(3, 4)], t0);
        tally(&s, true, killed, &mut r);
        assert_eq!(r.hit, [2_000.0]);
        assert_eq!(r.resume, [1_990.0]);
        assert_eq!((r.events, r.gap_frames, r.gap_seqs), (4, 1, 2));
        assert_eq!(
            (r.repeats, r.silent_holes, r.resumed, r.streams),
            (0, 0, 1, 1)
        );

        let s = stream(&[(50, 1), (150, 3), (160, 3)], &[], t0);
        tally(&s, false, killed, &mut r);
        assert_eq!(r.others, [100.0]);
        assert_eq!(
            (r.repeats, r.silent_holes, r.resumed, r.streams),
            (1, 1, 2, 2)
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 1.0), Some(3.0));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.0));
    }
}
