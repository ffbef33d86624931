//! The Redis bus: several gateways sharing one Redis behave as one.
//!
//! - Publishing runs one Lua script ([`scripts`]) through a redis-rs
//!   `ConnectionManager` (multiplexed, reconnecting): INCR the channel's
//!   counter, XADD the event to the channel's stream (MAXLEN, TTL), PUBLISH
//!   it. `seq` is therefore assigned once, cluster-wide.
//! - Subscribing goes through ONE pub/sub connection per process ([`link`]),
//!   which SUBSCRIBEs a channel when its first local subscriber arrives and
//!   UNSUBSCRIBEs after the last leaves ([`registry`]). Each message is
//!   decoded and encoded once ([`BusEvent::encode`]) and the bytes are shared
//!   by every local subscriber through the same broadcast ring as the
//!   in-process bus.
//! - On a Redis Cluster (`--redis-cluster`) the script ends in SPUBLISH
//!   and subscribing is sharded instead ([`shards`]): one SSUBSCRIBE per
//!   channel on a cluster connection that holds one connection per master,
//!   re-made and caught up when a slot moves or a master fails over.
//! - Resume: subscribe first, wait for Redis to confirm, then read the
//!   history after the cursor; [`Subscription`] drops the overlap by seq.
//!
//! Every Redis call is bounded by the configured timeout: with Redis down,
//! publishes and new subscriptions fail with [`BusError::Unavailable`]
//! (naming Redis) instead of hanging, while existing subscribers wait for the
//! link to come back and catch up.

pub mod cluster_target;
mod link;
mod numbering;
mod recent;
mod registry;
mod scripts;
mod settings;
mod shards;
pub mod target;

pub use settings::{RedisBusConfig, RedisSetupError, PUBLISH_PATIENCE};
pub use target::{ConnOptions, RedisConn, RedisTarget, SentinelConfig};

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::{
    numbering::Numbering,
    registry::Registry,
    scripts::{Entry, ReadReply, Scripts},
};
use super::{Bus, BusError, BusEvent, Control, Subscription};
use crate::domain::{AgentEvent, Channel};

/// Names of the keys and channels, all under the prefix. A channel's two
/// keys and its pub/sub channel share one hash tag (`{<channel>}`), so each
/// script stays in one Redis Cluster slot (SPUBLISH inside a script counts
/// as touching its channel's slot). One naming for every mode.
pub(super) struct Names {
    prefix: String,
    events_prefix: String,
    control: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            events_prefix: format!("{prefix}ev:{{"),
            control: format!("{prefix}control"),
        }
    }

    fn seq(&self, channel: &str) -> String {
        format!("{}{{{channel}}}:seq", self.prefix)
    }

    fn hist(&self, channel: &str) -> String {
        format!("{}{{{channel}}}:hist", self.prefix)
    }

    /// The pub/sub channel carrying `channel`'s events.
    pub fn events(&self, channel: &str) -> String {
        format!("{}{channel}}}", self.events_prefix)
    }

    /// The bus channel a pub/sub channel carries, if it is an event channel.
    pub fn event_channel<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub.strip_prefix(&self.events_prefix)?.strip_suffix('}')
    }

    pub fn control(&self) -> &str {
        &self.control
    }
}

/// Timeouts and limits, from [`RedisBusConfig`].
pub(super) struct Tuning {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect_max: Duration,
    history_len: usize,
    ttl_ms: u64,
    publish_patience: Duration,
}

/// What publishing and history reads need; shared with the link task.
pub(super) struct Core {
    conns: Vec<RedisConn>,
    next: AtomicUsize,
    scripts: Scripts,
    pub names: Names,
    pub tuning: Tuning,
    numbering: Numbering,
    /// A Redis Cluster: events go over sharded pub/sub (SPUBLISH).
    sharded: bool,
}

/// The counter, Redis' clock and the history after a cursor, read at once.
pub(super) struct Read {
    counter: u64,
    now_ms: u64,
    entries: Vec<Entry>,
}

impl Core {
    fn conn(&self) -> RedisConn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Runs `fut` within the command timeout; every failure names Redis.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BusError> {
        match tokio::time::timeout(self.tuning.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(what, Some(e))),
            Err(_) => Err(self.failed(what, None)),
        }
    }

    /// The error for a failed (`Some`) or timed-out (`None`) command.
    fn failed(&self, what: &str, error: Option<redis::RedisError>) -> BusError {
        BusError::Unavailable(match error {
            Some(e) => format!("redis {what} failed: {e}"),
            None => format!(
                "redis {what} timed out after {} ms",
                self.tuning.timeout.as_millis()
            ),
        })
    }

    /// The counter and clock, and with `after` the history past it.
    pub async fn read(&self, channel: &str, after: Option<u64>) -> Result<Read, BusError> {
        let from = after.map_or(String::new(), |a| format!("{}-0", a.saturating_add(1)));
        let mut conn = self.conn();
        let mut call = self.scripts.read.prepare_invoke();
        call.key(self.names.seq(channel))
            .key(self.names.hist(channel))
            .arg(from);
        let (counter, now_ms, raw): ReadReply = self
            .call("history read", call.invoke_async(&mut conn))
            .await?;
        Ok(Read {
            counter,
            now_ms,
            entries: scripts::entries(raw),
        })
    }

    /// Raises the channel's counter to at least `floor` (creating it).
    pub async fn seed(&self, channel: &str, floor: u64) -> Result<u64, BusError> {
        let mut conn = self.conn();
        let mut call = self.scripts.seed.prepare_invoke();
        call.key(self.names.seq(channel))
            .key(self.names.hist(channel))
            .arg(floor)
            .arg(self.tuning.ttl_ms);
        let counter = self.call("seed", call.invoke_async(&mut conn)).await?;
        self.numbering.seeded(channel, counter);
        Ok(counter)
    }

    /// Notes which server answers (its `run_id`): a different one than
    /// before means counters may be stale ([`numbering`]).
    /// On a cluster, the masters' `run_id`s together: any failover counts.
    pub async fn note_server(&self) -> Result<(), BusError> {
        let info = self
            .on_masters("INFO", redis::cmd("INFO").arg("server"))
            .await?;
        let run_id = &cluster_target::run_ids(&info);
        if self.numbering.server_is(run_id) {
            tracing::warn!(
                run_id,
                "a different redis server answers (failover or restart): \
                 each channel is seeded again before its next publish"
            );
        }
        Ok(())
    }

    /// Sends `cmd` to the server, or on a cluster to every master.
    pub async fn on_masters(&self, what: &str, cmd: &redis::Cmd) -> Result<redis::Value, BusError> {
        let mut conn = self.conn();
        if let RedisConn::Cluster(lazy) = &conn {
            let sent = async {
                let mut c = lazy.get().await?;
                cluster_target::on_masters(&mut c, cmd.clone()).await
            };
            return self.call(what, sent).await;
        }
        self.call(what, cmd.query_async(&mut conn)).await
    }

    /// One attempt at publishing; `retry` when an earlier attempt's outcome
    /// is unknown.
    async fn publish(
        &self,
        channel: &Channel,
        name: &str,
        json: &[u8],
        floor: u64,
        retry: bool,
    ) -> Result<u64, BusError> {
        let len = self.tuning.history_len;
        // Approximate trimming is much cheaper, but only trims whole stream
        // nodes (100 entries): short histories are trimmed exactly.
        let trim = if len > 100 { "~" } else { "=" };
        let mut conn = self.conn();
        let mut call = self.scripts.publish.prepare_invoke();
        call.key(self.names.seq(name))
            .key(self.names.hist(name))
            .arg(self.names.events(name))
            .arg(json)
            .arg(len)
            .arg(self.tuning.ttl_ms)
            .arg(trim)
            .arg(floor)
            .arg(if retry { "1" } else { "0" })
            .arg(if self.sharded { "SPUBLISH" } else { "PUBLISH" });
        match tokio::time::timeout(self.tuning.timeout, call.invoke_async(&mut conn)).await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) if e.code() == Some(scripts::NO_SEQ) => {
                Err(BusError::NeedsSeed(channel.clone()))
            }
            Ok(Err(e)) => Err(self.failed("publish", Some(e))),
            Err(_) => Err(self.failed("publish", None)),
        }
    }
}

/// Publish/subscribe through Redis. Cheap to share behind an `Arc`.
pub struct RedisBus {
    core: Arc<Core>,
    reg: Arc<Registry>,
    /// The pub/sub link's target until [`Bus::start`] takes it.
    link: parking_lot::Mutex<Option<RedisTarget>>,
    /// Stops the pub/sub link when the bus goes away.
    stop: DropGuard,
}

impl RedisBus {
    /// Builds the bus; [`Bus::start`] starts its pub/sub link. Connections
    /// are opened lazily: a gateway starts, and answers /readyz 503, while
    /// Redis is down. Fails only on a setting that cannot work (a bad URL,
    /// an unreadable CA file).
    pub fn new(cfg: RedisBusConfig) -> Result<Self, RedisSetupError> {
        let client = cfg.client()?;
        let sharded = matches!(client, RedisTarget::Cluster(_));
        let conns = (0..cfg.connections.max(1))
            .map(|_| client.connection(cfg.conn_options()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RedisSetupError::Url)?;
        let recent = (cfg.history_len, cfg.history_ttl);
        let core = Arc::new(Core {
            conns,
            next: AtomicUsize::new(0),
            scripts: Scripts::default(),
            names: Names::new(&cfg.prefix),
            tuning: Tuning {
                timeout: cfg.timeout,
                connect_timeout: cfg.connect_timeout,
                reconnect_max: cfg.reconnect_max,
                history_len: cfg.history_len,
                ttl_ms: u64::try_from(cfg.history_ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
                publish_patience: cfg.publish_patience,
            },
            numbering: Numbering::default(),
            sharded,
        });
        Ok(Self {
            core,
            reg: Arc::new(Registry::new(cfg.buffer, recent)),
            link: parking_lot::Mutex::new(Some(client)),
            stop: CancellationToken::new().drop_guard(),
        })
    }

    /// A handle on the bus's (multiplexed, reconnecting) Redis connection,
    /// for other parts of the gateway that need Redis.
    pub fn connection(&self) -> RedisConn {
        self.core.conn()
    }

    /// Channels this process is subscribed to (have local subscribers).
    pub fn local_channels(&self) -> usize {
        self.reg.len()
    }

    /// The generation of the pub/sub link (1 = first connection, +1 per
    /// reconnect) and whether it is up.
    pub fn link_state(&self) -> (u64, bool) {
        let l = self.reg.link();
        (l.generation, l.up)
    }

    /// Publishes, retrying while Redis is unavailable for at most the
    /// publish patience. Retries are marked so that an attempt that did run
    /// (its reply was lost) is not numbered twice.
    async fn publish_patiently(
        &self,
        channel: &Channel,
        name: &str,
        json: &[u8],
    ) -> Result<u64, BusError> {
        let deadline = tokio::time::Instant::now() + self.core.tuning.publish_patience;
        let mut pause = Duration::from_millis(100);
        let mut retry = false;
        loop {
            // A retry keeps going on a new server: its first attempt may
            // have run there, and only the retry flag can tell.
            let known = match (self.core.numbering.floor(name), retry) {
                (Ok(high), _) | (Err(high), true) => high,
                (Err(_), false) => return Err(BusError::NeedsSeed(channel.clone())),
            };
            let floor = self.reg.get(name).map_or(0, |l| l.high_water());
            match self
                .core
                .publish(channel, name, json, known.max(floor), retry)
                .await
            {
                Err(BusError::Unavailable(e)) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %e, channel = name, "bus unavailable; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    retry = true;
                }
                other => return other,
            }
        }
    }

    fn replay(&self, after: u64, read: Read) -> Result<Vec<Arc<BusEvent>>, BusError> {
        let ttl = self.core.tuning.ttl_ms;
        scripts::check_history(after, read.counter, read.now_ms, ttl, &read.entries)?;
        Ok(read
            .entries
            .iter()
            .filter_map(|e| scripts::decode(e.seq, &e.json))
            .collect())
    }
}

#[async_trait]
impl Bus for RedisBus {
    /// Starts the pub/sub link, which lives as long as the bus.
    ///
    /// The link is deliberately not on the gateway's `TaskTracker` nor
    /// stopped by its shutdown token: while the gateway drains, the runs it
    /// lets finish still need their events delivered to the streams that
    /// follow them, and the link holds no work of its own to drain.
    fn start(&self) {
        let Some(client) = self.link.lock().take() else {
            return;
        };
        let (core, reg) = (self.core.clone(), self.reg.clone());
        let stop = self.stop.token().clone();
        match client {
            RedisTarget::Cluster(cluster) => {
                tokio::spawn(shards::run(core, reg, cluster, stop));
            }
            client => {
                tokio::spawn(link::run(core, reg, client, stop));
            }
        }
    }

    async fn publish(
        &self,
        channel: &Channel,
        event: &AgentEvent,
    ) -> Result<Arc<BusEvent>, BusError> {
        // Redis keeps the event without `seq` (its stream entry id is the
        // seq): the same bytes as before events were types.
        let json = event.to_json_with_seq(None);
        let name = channel.to_string();
        let seq = self.publish_patiently(channel, &name, &json).await?;
        self.core.numbering.saw(&name, seq);
        if let Some(local) = self.reg.get(&name) {
            local.note_published(seq);
        }
        // The caller's copy; subscribers (here too) get theirs from pub/sub,
        // so every gateway delivers in the one order Redis numbered.
        Ok(Arc::new(BusEvent::encode(seq, event)))
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        let channel = &channel.to_string();
        let (member, live) = self.reg.join(channel);
        self.reg
            .ready(&member.local, self.core.tuning.timeout)
            .await?;
        // A resume this process can answer from memory (the usual case
        // when another gateway's followers come back here) costs no Redis
        // round trip and no decode.
        if let Some(replay) = after.and_then(|a| member.local.recent_after(a)) {
            crate::metrics::bus_replay(true);
            let start = after.unwrap_or(0);
            return Ok(Subscription::new(replay, live, start).with_guard(member));
        }
        if after.is_some() {
            crate::metrics::bus_replay(false);
        }
        let read = self.core.read(channel, after).await?;
        member.local.note_join(read.counter);
        let start = after.unwrap_or(read.counter);
        let replay = match after {
            Some(after) => self.replay(after, read)?,
            None => Vec::new(),
        };
        Ok(Subscription::new(replay, live, start).with_guard(member))
    }

    async fn subscribe_run(
        &self,
        channel: &Channel,
        run_id: &str,
    ) -> Result<Subscription, BusError> {
        let channel = &channel.to_string();
        // The membership keeps the channel SUBSCRIBEd; its ring receiver is
        // dropped unread, the tap beside it carries the run's events.
        let (member, _ring) = self.reg.join(channel);
        self.reg
            .ready(&member.local, self.core.tuning.timeout)
            .await?;
        // The run has not started: any point at or before its first event
        // will do to resume from if the tap lags.
        let start = member.local.position().unwrap_or(0);
        let (live, tap) = member.local.taps.tap(run_id);
        Ok(Subscription::new(Vec::new(), live, start).with_guard((tap, member)))
    }

    async fn kept(&self, channel: &Channel) -> Result<Vec<Arc<BusEvent>>, BusError> {
        let read = self.core.read(&channel.to_string(), Some(0)).await?;
        Ok(read
            .entries
            .iter()
            .filter_map(|e| scripts::decode(e.seq, &e.json))
            .collect())
    }

    async fn seed_seq(&self, channel: &Channel, floor: u64) -> Result<(), BusError> {
        let channel = &channel.to_string();
        // What this gateway already delivered counts too: after Redis lost
        // its data, numbering must continue above what clients have seen.
        let seen = self.reg.get(channel).map_or(0, |l| l.high_water());
        self.core.seed(channel, floor.max(seen)).await.map(drop)
    }

    async fn ping(&self) -> Result<(), BusError> {
        if !self.reg.link().up {
            return Err(BusError::Unavailable(
                "redis: the pub/sub connection is down (reconnecting)".into(),
            ));
        }
        // On a cluster every master must answer: a shard that is down (or
        // failing over) is a Redis problem for the channels it holds.
        let pong = self.core.on_masters("PING", &redis::cmd("PING")).await?;
        if !all_pong(&pong) {
            return Err(BusError::Unavailable(format!(
                "redis PING answered {pong:?}"
            )));
        }
        Ok(())
    }

    async fn publish_control(&self, msg: Control) -> Result<(), BusError> {
        if msg == Control::Resync {
            self.reg.control.deliver(msg);
            return Ok(());
        }
        let json = serde_json::to_string(&msg)
            .map_err(|e| BusError::Unavailable(format!("control not encodable: {e}")))?;
        let mut conn = self.core.conn();
        let cmd = redis::cmd("PUBLISH")
            .arg(self.core.names.control())
            .arg(json)
            .to_owned();
        self.core
            .call("PUBLISH", cmd.query_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    fn control(&self) -> broadcast::Receiver<Control> {
        self.reg.control.subscribe()
    }
}

/// Whether every answer in a PING reply is PONG.
fn all_pong(v: &redis::Value) -> bool {
    use redis::Value as V;
    match v {
        V::SimpleString(s) => s == "PONG",
        V::BulkString(b) => b == b"PONG",
        V::Okay => true,
        V::Array(a) => !a.is_empty() && a.iter().all(all_pong),
        V::Map(m) => !m.is_empty() && m.iter().all(|(_, x)| all_pong(x)),
        _ => false,
    }
}

#[cfg(test)]
mod failover_tests;
#[cfg(test)]
#[path = "../../../tests/api/redis_support.rs"]
mod redis_support;
#[cfg(test)]
mod tests;
