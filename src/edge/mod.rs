//! Limits at the edge (protocol/limits.md).
//!
//! - [`rate`]: per-key requests per minute, local (`governor`) and, with
//!   Redis, cluster-wide; the [`rate::rate_limit`] middleware runs right
//!   after auth and sets the `X-RateLimit-*` headers.
//! - [`conns`]: concurrent WebSockets and SSE streams per key and per
//!   gateway; a [`ConnGuard`] holds a slot for the life of one stream.
//! - [`limits`]: request head size and JSON depth.
//! - [`cluster`]: the edge's own small Redis client (scripts, breaker).
//!
//! Body size (413) and the CRUD timeout (408) are tower layers in
//! `http::router`; WebSocket frame size (1009) and idle time are in
//! `stream::ws`. [`Edge::hard_stop`] is the end of the drain for streams
//! that outlive its start (those of running runs).

pub mod cluster;
pub mod conns;
pub mod limits;
pub mod rate;

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::header, response::Response};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use conns::{ConnGuard, StreamKind};
pub use rate::{rate_limit, Decision};

use crate::{config::EdgeConfig, http::errors::ApiError, store::KeyRecord};

/// How often idle limiter state is dropped.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// Why the edge could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("redis url: {0}")]
    RedisUrl(#[from] ::redis::RedisError),
}

/// The edge's shared state: limiters, stream caps, the Redis client.
pub struct Edge {
    rate_limit: bool,
    local: rate::LocalLimiter,
    redis: Option<Arc<cluster::RedisEdge>>,
    pub conns: Arc<conns::ConnCaps>,
    releases: parking_lot::Mutex<Option<mpsc::Receiver<conns::Lease>>>,
    /// Stops the edge's background tasks (after the drain, not at its start:
    /// leases of streams still open during the grace period stay refreshed).
    closed: CancellationToken,
    /// Cancelled when the grace period is over: streams that were allowed to
    /// outlive the start of the drain (running runs) end then.
    pub hard_stop: CancellationToken,
}

impl Edge {
    /// Builds the edge; with `redis_url` the Redis client connects lazily,
    /// so a gateway starts (on local limits) even while Redis is down.
    pub fn new(
        cfg: &EdgeConfig,
        redis_url: Option<&str>,
        redis_prefix: &str,
    ) -> Result<Self, EdgeError> {
        let redis = redis_url
            .map(|url| cluster::RedisEdge::new(url, redis_prefix))
            .transpose()?;
        let (conns, rx) = conns::ConnCaps::new(cfg, redis.clone());
        Ok(Self {
            rate_limit: cfg.rate_limit,
            local: rate::LocalLimiter::default(),
            redis,
            conns: Arc::new(conns),
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
                    _ = tick.tick() => edge.local.cleanup(),
                }
            }
        });
        if self.redis.is_none() {
            return;
        }
        let edge = self.clone();
        tracker.spawn(async move {
            let every = edge.conns.ttl / 3;
            loop {
                tokio::select! {
                    _ = edge.closed.cancelled() => return,
                    _ = tokio::time::sleep(every) => edge.conns.refresh_leases().await,
                }
            }
        });
        let rx = self.releases.lock().take();
        if let Some(rx) = rx {
            let edge = self.clone();
            tracker.spawn(async move {
                let stop = edge.closed.clone();
                edge.conns.run_releaser(rx, stop).await;
            });
        }
    }

    /// Ends the background work and gives this gateway's remaining leases
    /// back (end of drain).
    pub async fn close(&self) {
        self.closed.cancel();
        self.conns.release_all().await;
    }

    /// Counts one request of `key` against its rpm. `None` when rate limits
    /// are off. With Redis the local stage runs first (a key over its limit
    /// here is over it everywhere), then Redis decides; if Redis does not
    /// answer, the local decision stands.
    pub async fn check_rate(&self, key: &KeyRecord) -> Option<Decision> {
        if !self.rate_limit {
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

    /// Takes a stream slot for `key` (see [`conns::ConnCaps::acquire`]).
    pub async fn open_stream(
        &self,
        key: &KeyRecord,
        kind: StreamKind,
    ) -> Result<ConnGuard, ApiError> {
        self.conns.acquire(key.id.as_str(), kind).await
    }

    /// The per-key cap of `kind` (for `GET /v1/account`).
    pub fn stream_limit(&self, kind: StreamKind) -> u32 {
        self.conns.limit(kind)
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
