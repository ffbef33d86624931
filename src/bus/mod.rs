//! Fan-out of agent events and log lines to every subscriber, with history
//! for resume.
//!
//! A channel is an agent's events (`agent:<id>`) or its log lines
//! (`logs:<id>`): a [`Channel`].
//! The bus is the single authority for `seq`: it numbers each published event
//! on its channel, so every stream that shows an event shows the same number.
//! An event is encoded once at publish time ([`BusEvent`]) and the same bytes
//! are shared by every subscriber: fan-out never re-serialises.
//!
//! Two implementations: [`memory::MemoryBus`] (one process) and
//! [`redis::RedisBus`] (several gateways sharing one Redis). Besides event
//! channels, a bus carries [`Control`] messages: cluster-wide invalidation
//! (a revoked key) that every gateway must act on. The bus only carries
//! them: the key cache applies its own ([`crate::keys::control`]), the
//! queued runtime its cancels ([`crate::work::Queued`]).

pub(crate) mod local;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::domain::{AgentEvent, Channel, ErrorCode, KeyId, MessageType, RunId};

/// Why a bus call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BusError {
    /// The backend (e.g. Redis) cannot be reached.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The requested cursor is older than the history kept.
    #[error("history expired: the oldest event kept is {oldest}, requested after {after}")]
    HistoryExpired { after: u64, oldest: u64 },
    /// The subscriber fell behind and events were dropped for it.
    #[error("subscriber lagged after seq {last_seq}")]
    Lagged { last_seq: u64 },
    /// The backend lost the channel's seq counter (Redis restarted, or the
    /// channel sat idle past its TTL): seed it from the store
    /// ([`Bus::seed_seq`]) and publish again. Never numbered from zero.
    #[error("the bus lost the seq counter of {0}: seed it again")]
    NeedsSeed(Channel),
}

impl BusError {
    /// The code a client is shown, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::HistoryExpired { .. } => ErrorCode::HistoryExpired,
            Self::Lagged { .. } => ErrorCode::Lagged,
            Self::Unavailable(_) | Self::NeedsSeed(_) => ErrorCode::Unavailable,
        }
    }

    /// What a client is told: backend details stay in the logs.
    pub fn client_message(&self) -> String {
        match self {
            Self::HistoryExpired { .. } | Self::Lagged { .. } => self.to_string(),
            Self::Unavailable(_) | Self::NeedsSeed(_) => "bus unavailable".into(),
        }
    }
}

/// A message every gateway acts on, carried by the bus beside the event
/// channels (on Redis: one pub/sub channel all gateways subscribe to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// A key was revoked: drop it from every key cache.
    KeyRevoked { key_id: KeyId },
    /// A key's limits or secret changed (`PATCH /v1/keys/{id}`, a
    /// rotation): drop it from every key cache, so the next use reads the
    /// new record.
    KeyChanged { key_id: KeyId },
    /// Cancel this run: the process executing it (a worker) ends it with
    /// `done` (`cancelled`); every other process ignores it.
    CancelRun { run_id: RunId },
    /// Local only, never published: control messages may have been missed
    /// (the bus was disconnected), so drop every cache they would invalidate.
    Resync,
}

/// A published event, encoded once and shared by every subscriber.
#[derive(Debug)]
pub struct BusEvent {
    pub seq: u64,
    /// `message_type` of the event (`assistant_message`, `log`, `done`, …);
    /// `None` for a [`Self::gap`] signal, which is not an event.
    pub message_type: Option<MessageType>,
    /// The run the event belongs to (used by `/v1/runs/{id}/stream`).
    pub run_id: RunId,
    /// The event object as JSON, `seq` included.
    pub json: Bytes,
    /// The complete SSE frame: `id: <seq>\nevent: <type>\ndata: <json>\n\n`.
    pub sse: Bytes,
    /// The WebSocket text: `{"type":"agent_response", …event fields…}`.
    pub ws: Bytes,
}

impl BusEvent {
    /// Encodes `event` numbered `seq` (whatever its own `seq`); the one
    /// place event bytes are built.
    pub fn encode(seq: u64, event: &AgentEvent) -> Self {
        let message_type = event.message_type();
        let json = event.to_json_with_seq(Some(seq));
        let kind = message_type.as_str();
        let mut sse = Vec::with_capacity(json.len() + kind.len() + 32);
        sse.extend_from_slice(format!("id: {seq}\nevent: {kind}\ndata: ").as_bytes());
        sse.extend_from_slice(&json);
        sse.extend_from_slice(b"\n\n");
        // `{"type":"agent_response",` + the event's fields: splice, don't re-encode.
        let mut ws = Vec::with_capacity(json.len() + 26);
        ws.extend_from_slice(br#"{"type":"agent_response""#);
        if json.len() > 2 {
            ws.push(b',');
        }
        ws.extend_from_slice(&json[1..]);
        Self {
            seq,
            message_type: Some(message_type),
            run_id: event.run_id.clone(),
            json: json.into(),
            sse: sse.into(),
            ws: ws.into(),
        }
    }

    /// The signal that events `from..=to` of `channel` were lost (the bus
    /// itself lost them, in a Redis failover) and will never be delivered.
    /// Not an event and never stored: SSE `event: gap` without an `id:`
    /// line, WebSocket `{"type":"gap",…}`. Its `seq` is `to`, so a
    /// subscription's cursor moves past the hole; it belongs to no run.
    pub fn gap(channel: &str, from: u64, to: u64) -> Self {
        let json = serde_json::json!({"message_type": "gap", "from_seq": from, "to_seq": to});
        let ws = serde_json::json!({
            "type": "gap", "channel": channel, "from_seq": from, "to_seq": to,
        });
        Self {
            seq: to,
            message_type: None,
            run_id: RunId::from(""),
            sse: format!("event: gap\ndata: {json}\n\n").into_bytes().into(),
            json: json.to_string().into_bytes().into(),
            ws: ws.to_string().into_bytes().into(),
        }
    }

    /// Whether this is a [`Self::gap`] signal rather than an event.
    pub fn is_gap(&self) -> bool {
        self.message_type.is_none()
    }

    /// The event itself, decoded from [`Self::json`] (for the few readers
    /// that need its fields rather than its bytes).
    pub fn event(&self) -> serde_json::Result<AgentEvent> {
        AgentEvent::from_json(&self.json)
    }
}

/// A subscription: history after the cursor, then live events, with no gap and
/// no duplicate (live events at or below the last replayed seq are dropped).
pub struct Subscription {
    replay: std::collections::VecDeque<Arc<BusEvent>>,
    live: broadcast::Receiver<Arc<BusEvent>>,
    last_seq: u64,
    /// Dropped with the subscription: lets a bus count its local subscribers
    /// (the Redis bus unsubscribes a channel after the last one leaves).
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Subscription {
    /// `replay` must be in seq order and have been read *after* `live` was
    /// subscribed, so nothing can fall between the two.
    pub fn new(
        replay: Vec<Arc<BusEvent>>,
        live: broadcast::Receiver<Arc<BusEvent>>,
        after: u64,
    ) -> Self {
        Self {
            replay: replay.into(),
            live,
            last_seq: after,
            _guard: None,
        }
    }

    /// Keeps `guard` alive as long as the subscription, and drops it with it.
    pub fn with_guard(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// The seq of the last event handed out (the client's resume cursor).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next event, or `Ok(None)` when the channel closed. A subscriber that
    /// fell further behind than the channel buffer gets [`BusError::Lagged`]
    /// carrying the last seq it did receive, so it can resume from there.
    pub async fn next(&mut self) -> Result<Option<Arc<BusEvent>>, BusError> {
        if let Some(ev) = self.replay.pop_front() {
            self.last_seq = ev.seq;
            crate::metrics::event_delivered();
            return Ok(Some(ev));
        }
        loop {
            match self.live.recv().await {
                Ok(ev) if ev.seq <= self.last_seq => continue,
                Ok(ev) => {
                    self.last_seq = ev.seq;
                    crate::metrics::event_delivered();
                    return Ok(Some(ev));
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(BusError::Lagged {
                        last_seq: self.last_seq,
                    })
                }
            }
        }
    }
}

/// Publish/subscribe with per-channel history.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Starts the bus's background work, if it has any (the Redis pub/sub
    /// link); call once, before use. Building a bus starts nothing. No
    /// default, for the reason given at [`Self::subscribe_run`].
    fn start(&self);

    /// Numbers `event` with the channel's next seq, keeps it in history and
    /// delivers it to every subscriber (the event's own `seq` is ignored).
    async fn publish(
        &self,
        channel: &Channel,
        event: &AgentEvent,
    ) -> Result<Arc<BusEvent>, BusError>;

    /// Subscribes to `channel`. With `after`, first replays the kept history
    /// past that seq ([`BusError::HistoryExpired`] if it is no longer kept).
    async fn subscribe(
        &self,
        channel: &Channel,
        after: Option<u64>,
    ) -> Result<Subscription, BusError>;

    /// Subscribes to the live events of run `run_id` on `channel` only: what
    /// a transport following the run it is about to start needs (subscribe
    /// before the run starts so nothing is missed). It lags and closes like
    /// [`Self::subscribe`]; a lagged follower resumes with that. No default:
    /// a wrapper that forgot to forward it would silently hand followers the
    /// whole channel again.
    async fn subscribe_run(
        &self,
        channel: &Channel,
        run_id: &str,
    ) -> Result<Subscription, BusError>;

    /// Raises the channel's seq counter to at least `floor`, so numbering
    /// continues after a restart from what the store already holds.
    async fn seed_seq(&self, channel: &Channel, floor: u64) -> Result<(), BusError>;

    /// Every event of `channel` the history still keeps, oldest first. The
    /// run queue uses it to store what a worker that died had published but
    /// not yet written ([`crate::work::Queued`]). The default
    /// keeps nothing to read: a single-process bus has no other process
    /// that could die holding events.
    async fn kept(&self, _channel: &Channel) -> Result<Vec<Arc<BusEvent>>, BusError> {
        Ok(Vec::new())
    }

    /// Whether the backend is reachable (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;

    /// Sends `msg` to every gateway on this bus (this one included).
    async fn publish_control(&self, msg: Control) -> Result<(), BusError>;

    /// A receiver of the control messages this gateway must act on. A
    /// receiver that lags has missed some: treat that as [`Control::Resync`].
    fn control(&self) -> broadcast::Receiver<Control>;
}

/// The Redis bus with `--redis`, else the in-process one; not started
/// ([`Bus::start`]). A Redis setting that cannot work is an error naming it..
pub fn build(cfg: &crate::config::ServeConfig) -> Result<Arc<dyn Bus>, redis::RedisSetupError> {
    Ok(match redis::RedisBusConfig::from_serve(cfg) {
        Some(redis) => Arc::new(redis::RedisBus::new(redis)?),
        None => Arc::new(memory::MemoryBus::new(
            cfg.history_len,
            cfg.edge.stream_buffer,
        )),
    })
}
