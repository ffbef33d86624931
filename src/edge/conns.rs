//! Stream caps: concurrent WebSockets and SSE streams per key, and all
//! streams on this gateway.
//!
//! A stream takes a slot *before* the WebSocket upgrade or the first SSE
//! byte and holds a [`ConnGuard`] until it ends; dropping the guard gives the
//! slot back. Counting is always local (an atomic and a small map); with
//! Redis each per-key slot is also a lease in a ZSET
//! (`<prefix>conn:<key id>:<ws|sse>`, member = this gateway's stream id, score =
//! expiry), refreshed every third of the lease TTL while the stream lives.
//! A gateway that dies stops refreshing, so its slots come back within one
//! TTL: a crash never leaks a slot. If Redis cannot be reached, the local
//! count decides and the lease is written when Redis is back. The leases
//! themselves are kept by the [`LeaseBook`] run slots share.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
};

use futures::{Stream, StreamExt};
use parking_lot::Mutex;

pub use super::leases::Lease;
use super::{cluster::RedisEdge, leases::LeaseBook};
use crate::{config::EdgeConfig, domain::ErrorCode};

/// The two kinds of long-lived stream a key may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    WebSocket,
    Sse,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WebSocket => "ws",
            Self::Sse => "sse",
        })
    }
}

impl StreamKind {
    fn plural(self) -> &'static str {
        match self {
            Self::WebSocket => "WebSockets",
            Self::Sse => "SSE streams",
        }
    }
}

/// Why a stream slot was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapError {
    /// This gateway holds as many streams as it may (a 503: another
    /// gateway may have room).
    #[error("the gateway is at its limit of open streams; retry shortly")]
    GatewayFull,
    /// The key holds its limit of streams of this kind (a 429).
    #[error("this key already has {limit} open {} (its limit); close one first", kind.plural())]
    KeyFull { kind: StreamKind, limit: u32 },
}

impl CapError {
    /// The code a client is shown, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::GatewayFull => ErrorCode::Unavailable,
            Self::KeyFull { .. } => ErrorCode::TooManyConnections,
        }
    }

    /// Seconds the client should wait before it retries, when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::GatewayFull => Some(1),
            Self::KeyFull { .. } => None,
        }
    }
}

/// The gateway-wide cap and this gateway's open streams (the per-key caps
/// are each key's own, [`super::KeyLimits`]).
pub struct ConnCaps {
    max_total: u32,
    total: AtomicU32,
    local: Mutex<HashMap<(Arc<str>, StreamKind), u32>>,
    book: Arc<LeaseBook>,
    redis: Option<Arc<RedisEdge>>,
    gateway_id: String,
    next_id: AtomicU64,
}

impl ConnCaps {
    /// The caps; their leases go in `book` (whose Redis client they use).
    pub fn new(cfg: &EdgeConfig, book: Arc<LeaseBook>, gateway_id: &str) -> Self {
        Self {
            max_total: cfg.max_streams,
            total: AtomicU32::new(0),
            local: Mutex::new(HashMap::new()),
            redis: book.redis.clone(),
            book,
            gateway_id: gateway_id.to_owned(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Streams open on this gateway.
    pub fn open_streams(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for a `kind` stream of `key_id`, unless this gateway is
    /// at its cap or the key holds `limit` such streams ([`CapError`]).
    pub async fn acquire(
        self: &Arc<Self>,
        key_id: &str,
        kind: StreamKind,
        limit: u32,
    ) -> Result<ConnGuard, CapError> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(CapError::GatewayFull);
        }
        let key: Arc<str> = key_id.into();
        let taken = {
            let mut local = self.local.lock();
            let n = local.entry((key.clone(), kind)).or_insert(0);
            let free = *n < limit;
            if free {
                *n += 1;
            }
            free
        };
        let mut guard = ConnGuard {
            caps: self.clone(),
            key,
            kind,
            counted: taken,
            lease: None,
        };
        if !taken {
            return Err(CapError::KeyFull { kind, limit });
        }
        let Some(redis) = &self.redis else {
            return Ok(guard);
        };
        let zset: Arc<str> = redis.lease_set(key_id, &kind.to_string()).into();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let member: Arc<str> = format!("{}:{n}", self.gateway_id).into();
        // Taken, or Redis is away and the local count decided: either way
        // the lease is kept (the refresher writes it when Redis is back).
        if let Ok(false) = redis.acquire(&zset, &member, limit, self.book.ttl).await {
            return Err(CapError::KeyFull { kind, limit });
        }
        let lease = (zset, member);
        self.book.track(&lease);
        guard.lease = Some(lease);
        Ok(guard)
    }

    fn release(&self, key: &Arc<str>, kind: StreamKind, counted: bool, lease: Option<Lease>) {
        if counted {
            let mut local = self.local.lock();
            if let Some(n) = local.get_mut(&(key.clone(), kind)) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    local.remove(&(key.clone(), kind));
                }
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(lease) = lease {
            self.book.release(lease);
        }
    }
}

/// A held stream slot; dropping it gives the slot back (locally at once,
/// in Redis through the release queue).
pub struct ConnGuard {
    caps: Arc<ConnCaps>,
    key: Arc<str>,
    kind: StreamKind,
    counted: bool,
    lease: Option<Lease>,
}

impl ConnGuard {
    /// Wraps `stream` so the slot is held exactly as long as the stream
    /// (an SSE body is dropped when the client goes or the stream ends).
    pub fn hold<S: Stream + Send + 'static>(self, stream: S) -> impl Stream<Item = S::Item> + Send {
        stream.map(move |item| {
            let _held = &self;
            item
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.caps
            .release(&self.key, self.kind, self.counted, self.lease.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    /// Caps with `total` streams per gateway, and an `acquire` that takes
    /// `ws` and `sse` as the key's caps.
    fn caps(ws: u32, sse: u32, total: u32) -> Caps {
        let mut cfg = crate::config::ServeConfig::try_parse_from(["serve"])
            .unwrap()
            .edge;
        cfg.max_streams = total;
        let book = Arc::new(LeaseBook::new(None, Duration::from_secs(30)).0);
        Caps(Arc::new(ConnCaps::new(&cfg, book, "gw-test")), ws, sse)
    }

    struct Caps(Arc<ConnCaps>, u32, u32);

    impl std::ops::Deref for Caps {
        type Target = ConnCaps;
        fn deref(&self) -> &ConnCaps {
            &self.0
        }
    }

    impl Caps {
        async fn acquire(&self, key: &str, kind: StreamKind) -> Result<ConnGuard, CapError> {
            let limit = match kind {
                StreamKind::WebSocket => self.1,
                StreamKind::Sse => self.2,
            };
            self.0.acquire(key, kind, limit).await
        }
    }

    #[tokio::test]
    async fn per_key_cap_per_kind_and_slots_come_back_on_drop() {
        let c = caps(2, 1, 100);
        let a = c.acquire("k", StreamKind::WebSocket).await.unwrap();
        let _b = c.acquire("k", StreamKind::WebSocket).await.unwrap();
        let e = c.acquire("k", StreamKind::WebSocket).await.err().unwrap();
        assert_eq!(e.code(), ErrorCode::TooManyConnections);
        assert_eq!(
            e.to_string(),
            "this key already has 2 open WebSockets (its limit); close one first"
        );
        // Other kind and other keys are counted apart.
        let _s = c.acquire("k", StreamKind::Sse).await.unwrap();
        let _o = c.acquire("other", StreamKind::WebSocket).await.unwrap();
        assert_eq!(c.open_streams(), 4);
        drop(a);
        assert_eq!(c.open_streams(), 3);
        assert!(c.acquire("k", StreamKind::WebSocket).await.is_ok());
    }

    #[tokio::test]
    async fn global_cap_answers_503_and_refusals_hold_nothing() {
        let c = caps(10, 10, 2);
        let _a = c.acquire("a", StreamKind::Sse).await.unwrap();
        let _b = c.acquire("b", StreamKind::Sse).await.unwrap();
        let e = c.acquire("c", StreamKind::Sse).await.err().unwrap();
        assert_eq!(e, CapError::GatewayFull);
        assert_eq!(
            (e.code(), e.retry_after()),
            (ErrorCode::Unavailable, Some(1))
        );
        assert_eq!(c.open_streams(), 2);
        assert!(c.local.lock().get(&("c".into(), StreamKind::Sse)).is_none());
    }

    #[tokio::test]
    async fn a_held_stream_keeps_its_slot_until_dropped() {
        let c = caps(1, 1, 10);
        let g = c.acquire("k", StreamKind::Sse).await.unwrap();
        let s = g.hold(futures::stream::iter([1, 2]));
        assert!(c.acquire("k", StreamKind::Sse).await.is_err());
        assert_eq!(s.collect::<Vec<_>>().await, [1, 2]);
        assert!(c.acquire("k", StreamKind::Sse).await.is_ok());
    }
}
