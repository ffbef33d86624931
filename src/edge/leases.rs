//! This gateway's slot leases in Redis, whatever holds the slot: a stream
//! ([`super::conns`]) or a run ([`super::runs`]).
//!
//! A lease is a member of a ZSET (one per key and kind of slot) whose score
//! is its expiry. The book remembers the leases this process holds,
//! refreshes them every third of the TTL (one Redis call per ZSET) and
//! gives them back through a bounded queue when their holder ends. A
//! process that dies stops refreshing, so its slots come back within one
//! TTL. If Redis cannot be reached the refresher writes the leases again
//! when it is back (a member that expired meanwhile is added back).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::cluster::RedisEdge;

/// Slot releases queued for Redis; when full, the lease simply expires.
const RELEASE_QUEUE: usize = 4096;

/// A lease in Redis: (ZSET, member).
pub type Lease = (Arc<str>, Arc<str>);

/// The leases this process holds, shared by stream and run slots.
pub struct LeaseBook {
    pub(crate) redis: Option<Arc<RedisEdge>>,
    pub(crate) ttl: Duration,
    /// Live leases by ZSET, for the refresher.
    live: Mutex<HashMap<Arc<str>, HashSet<Arc<str>>>>,
    release_tx: mpsc::Sender<Lease>,
}

impl LeaseBook {
    /// The book, and the receiving end of its release queue (for
    /// [`Self::run_releaser`]).
    pub fn new(redis: Option<Arc<RedisEdge>>, ttl: Duration) -> (Self, mpsc::Receiver<Lease>) {
        let (release_tx, rx) = mpsc::channel(RELEASE_QUEUE);
        let book = Self {
            redis,
            ttl: ttl.max(Duration::from_secs(1)),
            live: Mutex::new(HashMap::new()),
            release_tx,
        };
        (book, rx)
    }

    /// Remembers `lease` for refreshing (taken, or adopted from the process
    /// that took it).
    pub fn track(&self, lease: &Lease) {
        self.live
            .lock()
            .entry(lease.0.clone())
            .or_default()
            .insert(lease.1.clone());
    }

    /// Stops refreshing `lease` without giving it back (its holder moved on
    /// to another process, which refreshes it from now on).
    pub fn untrack(&self, lease: &Lease) {
        let mut live = self.live.lock();
        if let Some(ms) = live.get_mut(&lease.0) {
            ms.remove(&lease.1);
            if ms.is_empty() {
                live.remove(&lease.0);
            }
        }
    }

    /// Stops refreshing `lease` and queues its release in Redis.
    pub fn release(&self, lease: Lease) {
        self.untrack(&lease);
        let _ = self.release_tx.try_send(lease);
    }

    /// Extends every live lease of this process (one Redis call per ZSET).
    pub async fn refresh_all(&self) {
        let Some(redis) = &self.redis else { return };
        let snapshot: Vec<(Arc<str>, Vec<Arc<str>>)> = self
            .live
            .lock()
            .iter()
            .map(|(z, ms)| (z.clone(), ms.iter().cloned().collect()))
            .collect();
        for (zset, members) in snapshot {
            if redis.refresh(&zset, &members, self.ttl).await.is_err() {
                return; // Redis is away: the breaker logged it; retry next round.
            }
        }
    }

    /// Gives queued leases back until the queue closes or `stop` fires.
    pub async fn run_releaser(
        &self,
        mut rx: mpsc::Receiver<Lease>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(redis) = &self.redis else { return };
        loop {
            let lease = tokio::select! {
                biased;
                l = rx.recv() => l,
                _ = stop.cancelled() => None,
            };
            let Some((zset, member)) = lease else { return };
            if let Err(e) = redis.release(&zset, &member).await {
                tracing::debug!(error = %e, "edge: lease not released; it will expire");
            }
        }
    }

    /// Releases, in Redis, every lease this process still holds (at the end
    /// of a drain), so the slots come back at once rather than after a TTL.
    pub async fn release_all(&self) {
        let Some(redis) = &self.redis else { return };
        let all: Vec<Lease> = self
            .live
            .lock()
            .drain()
            .flat_map(|(z, ms)| ms.into_iter().map(move |m| (z.clone(), m)))
            .collect();
        for (zset, member) in all {
            if redis.release(&zset, &member).await.is_err() {
                return;
            }
        }
    }
}
