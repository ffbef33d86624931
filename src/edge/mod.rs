//! Limits at the edge (protocol/limits.md).
//!
//! - [`rate`]: per-key requests per minute, local (`governor`) and, with
//!   Redis, cluster-wide ([`Edge::check_rate`]).
//! - [`conns`]: concurrent WebSockets and SSE streams per key and per
//!   gateway; a [`ConnGuard`] holds a slot for the life of one stream.
//! - [`keylimits`]: the limits in force for a key ([`KeyLimits`]): its
//!   own, or the configured defaults.
//! - [`runs`]: run starts, on every transport: the key's rate and its
//!   `max_runs` slots ([`Edge::start_run`], one Redis call); a [`RunSlot`]
//!   is held for the life of one run.
//! - [`leases`]: the Redis leases stream and run slots share (refresh,
//!   release).
//! - [`tokens`]: token budgets (`tpm`, `daily_tokens`) per key and per
//!   account: local counters charged as text streams, flushed to Redis at
//!   least once a second, checked with the rest at a run start.
//! - [`limits`]: request head size and JSON depth.
//! - [`cluster`]: the edge's own small Redis client (scripts, breaker).
//! - [`shed`]: the bound on relays in flight per process (503 past it).
//!
//! The edge decides; the HTTP layer answers: its middleware
//! (`http::limits`) runs the rate limit right after auth, sets the
//! `X-RateLimit-*` headers and refuses oversized heads, and its error type
//! carries [`CapError`] and the other refusals to clients. Body size (413)
//! and the CRUD timeout (408) are tower layers in `http::router`; WebSocket
//! frame size (1009) and idle time are in `stream::ws`. [`Edge::hard_stop`]
//! is the end of the drain for streams that outlive its start (those of
//! running runs).

pub mod cluster;
pub mod conns;
pub mod keylimits;
pub mod leases;
pub mod limits;
pub mod rate;
pub mod runs;
pub mod shed;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::header, response::Response};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use conns::{CapError, ConnGuard, StreamKind};
pub use keylimits::KeyLimits;
pub use leases::Lease;
pub use rate::Decision;
pub use runs::{max_runs_for, RunRefusal, RunSlot, SlotRef};
pub use tokens::{Budgets, Payer, Room, Spent, TokenBudgets, TokenMeter};

use crate::{
    config::EdgeConfig,
    store::{AccountLimits, KeyRecord},
};

/// How often idle limiter state is dropped.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// Why the edge could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
}

/// The edge's shared state: limiters, stream caps, the Redis client.
pub struct Edge {
    /// The defaults of per-key limits ([`KeyLimits::resolve`]).
    cfg: EdgeConfig,
    local: rate::LocalLimiter,
    redis: Option<Arc<cluster::RedisEdge>>,
    pub conns: Arc<conns::ConnCaps>,
    pub runs: Arc<runs::RunSlots>,
    /// Token counters (also reached through [`runs::RunSlots::tokens`]).
    pub tokens: Arc<TokenBudgets>,
    /// Relays in flight on this process ([`shed`]).
    pub relays: shed::Shed,
    leases: Arc<leases::LeaseBook>,
    releases: parking_lot::Mutex<Option<mpsc::Receiver<Lease>>>,
    /// Stops the edge's background tasks (after the drain, not at its start:
    /// leases of streams still open during the grace period stay refreshed).
    closed: CancellationToken,
    /// Cancelled when the grace period is over: streams that were allowed to
    /// outlive the start of the drain (running runs) end then.
    pub hard_stop: CancellationToken,
}

impl Edge {
    /// Builds the edge; with a `redis` client it connects lazily, so a
    /// gateway starts (on local limits) even while Redis is down. Nothing
    /// runs before [`Self::start`].
    pub fn new(
        cfg: &EdgeConfig,
        redis: Option<crate::bus::redis::RedisTarget>,
        redis_prefix: &str,
    ) -> Result<Self, EdgeError> {
        let redis = redis
            .map(|client| cluster::RedisEdge::new(client, redis_prefix))
            .transpose()?;
        let ttl = Duration::from_secs(cfg.lease_ttl_secs.max(1));
        let (book, rx) = leases::LeaseBook::new(redis.clone(), ttl);
        let book = Arc::new(book);
        let gateway_id = crate::util::new_id("gw");
        let tokens = Arc::new(TokenBudgets::new(redis.clone()));
        Ok(Self {
            cfg: cfg.clone(),
            local: rate::LocalLimiter::default(),
            redis,
            conns: Arc::new(conns::ConnCaps::new(cfg, book.clone(), &gateway_id)),
            runs: Arc::new(runs::RunSlots::new(
                book.clone(),
                tokens.clone(),
                &gateway_id,
            )),
            tokens,
            relays: shed::Shed::new(cfg.max_relays_in_flight),
            leases: book,
            releases: parking_lot::Mutex::new(Some(rx)),
            closed: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
        })
    }

    /// Starts the background work on `tracker`: limiter cleanup, lease
    /// refresh and lease release. They stop on [`Self::close`].
    pub fn start(self: &Arc<Self>, tracker: &TaskTracker) {
        let edge = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(CLEANUP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = edge.closed.cancelled() => return,
                    _ = tick.tick() => {
                        edge.local.cleanup();
                        edge.tokens.cleanup();
                    }
                }
            }
        });
        if self.redis.is_none() {
            return;
        }
        let edge = self.clone();
        tracker.spawn(async move { edge.tokens.run_flusher(edge.closed.clone()).await });
        let edge = self.clone();
        tracker.spawn(async move {
            let every = edge.leases.ttl / 3;
            loop {
                tokio::select! {
                    _ = edge.closed.cancelled() => return,
                    _ = tokio::time::sleep(every) => edge.leases.refresh_all().await,
                }
            }
        });
        let rx = self.releases.lock().take();
        if let Some(rx) = rx {
            let edge = self.clone();
            tracker.spawn(async move {
                let stop = edge.closed.clone();
                edge.leases.run_releaser(rx, stop).await;
            });
        }
    }

    /// Ends the background work and gives this gateway's remaining leases
    /// back (end of drain).
    pub async fn close(&self) {
        self.closed.cancel();
        self.leases.release_all().await;
    }

    /// Counts one request of `key` against its rpm. `None` when rate limits
    /// are off. With Redis the local stage runs first (a key over its limit
    /// here is over it everywhere), then Redis decides; if Redis does not
    /// answer, the local decision stands.
    pub async fn check_rate(&self, key: &KeyRecord) -> Option<Decision> {
        if !self.cfg.rate_limit {
            return None;
        }
        let id: Arc<str> = key.id.as_str().into();
        let local = self.local.check(&id, key.rpm);
        let Some(redis) = &self.redis else {
            return Some(local);
        };
        if !local.allowed {
            return Some(local);
        }
        Some(
            redis
                .check_rate(key.id.as_str(), key.rpm)
                .await
                .unwrap_or(local),
        )
    }

    /// Checks one run start of `key` (module doc of [`runs`]): one request
    /// against its rpm (unless rate limits are off), its token budgets and
    /// its account's (`account`), and one of its `max_runs` slots, in one
    /// Redis call. The local rate stage runs first, as in
    /// [`Self::check_rate`]. Returns the slot, to hold until the run ends
    /// (it carries the token counters the run charges), and the rate
    /// decision for the `X-RateLimit-*` headers.
    pub async fn start_run(
        &self,
        key: &KeyRecord,
        account: AccountLimits,
    ) -> Result<(RunSlot, Option<Decision>), RunRefusal> {
        let local = self.cfg.rate_limit.then(|| {
            let id: Arc<str> = key.id.as_str().into();
            self.local.check(&id, key.rpm)
        });
        let limit = max_runs_for(key, &self.cfg);
        let payer = self.payer(key, account);
        self.runs
            .start(key.id.as_str(), key.rpm, limit, local, Some(payer))
            .await
    }

    /// Who pays for `key`'s tokens and the budgets in force.
    pub fn payer(&self, key: &KeyRecord, account: AccountLimits) -> Payer {
        let limits = self.limits(key);
        Payer {
            key_id: key.id.to_string(),
            account: key.account_id.clone(),
            key_tpm: limits.tpm,
            key_daily: limits.daily_tokens,
            account_tpm: account.tpm,
            account_daily: account.daily_tokens,
        }
    }

    /// The token check of a request that streams tokens but starts no run
    /// (an OpenAI relay): this gateway's view of the budgets (at most one
    /// flush old). Returns the counters to charge (`None`: no budget).
    pub fn check_tokens(
        &self,
        key: &KeyRecord,
        account: AccountLimits,
    ) -> Result<Option<Arc<Budgets>>, Spent> {
        let budgets = self.tokens.budgets(&self.payer(key, account));
        match budgets.as_ref().and_then(|b| b.check()) {
            Some(spent) => Err(spent),
            None => Ok(budgets),
        }
    }

    /// What is left of `key`'s tighter token budget (its own or its
    /// account's), for the `X-RateLimit-*-Tokens` headers.
    pub fn token_room(&self, key: &KeyRecord, account: AccountLimits) -> Option<Room> {
        let own = self.limits(key);
        let none = own.tpm.is_none() && own.daily_tokens.is_none();
        if none && account.tpm.is_none() && account.daily_tokens.is_none() {
            return None;
        }
        self.tokens.budgets(&self.payer(key, account))?.room()
    }

    /// The per-key limit of concurrent runs in force for `key`.
    pub fn run_limit(&self, key: &KeyRecord) -> u32 {
        max_runs_for(key, &self.cfg)
    }

    /// Takes a stream slot for `key` (see [`conns::ConnCaps::acquire`]).
    pub async fn open_stream(
        &self,
        key: &KeyRecord,
        kind: StreamKind,
    ) -> Result<ConnGuard, CapError> {
        let limits = self.limits(key);
        let limit = match kind {
            StreamKind::WebSocket => limits.max_websockets,
            StreamKind::Sse => limits.max_sse_streams,
        };
        self.conns.acquire(key.id.as_str(), kind, limit).await
    }

    /// The limits in force for `key`: its own, or this gateway's defaults.
    pub fn limits(&self, key: &KeyRecord) -> KeyLimits {
        KeyLimits::resolve(key, &self.cfg)
    }

    /// The configured defaults of the per-key limits.
    pub fn config(&self) -> &EdgeConfig {
        &self.cfg
    }
}

/// Holds `slot` for as long as `resp`'s body streams, if it is an SSE
/// stream; any other answer (an error, a JSON reply) gives the slot back at
/// once.
pub fn hold_response(resp: Response, slot: Option<ConnGuard>) -> Response {
    let Some(slot) = slot else { return resp };
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::from_stream(slot.hold(body.into_data_stream())))
}
