//! Token budgets (protocol/limits.md, "Token budgets"): per key and per
//! account, `tpm` (a GCRA over tokens) and `daily_tokens` (per UTC day).
//!
//! - [`budget`]: one [`Counter`] per key or account, charged without
//!   waiting.
//! - [`meter`]: [`TokenMeter`], what a run or a relay charges as its text
//!   streams (an estimate of characters / 4, corrected by the provider's
//!   usage), and records as usage.
//! - [`flush`]: the flush script and the budget part of the run-start script.
//!
//! Charging never calls Redis: counters are local, and [`TokenBudgets`]
//! flushes what was charged to Redis at least once a second ([`FLUSH_EVERY`])
//! in one script call, reading back the cluster's totals. So across
//! gateways a key may overshoot a budget by at most what its running streams
//! produce between two flushes; a run start checks the budget in Redis
//! itself (folded into the run-start script), so it never starts a run on a
//! spent budget another gateway already flushed. When Redis does not
//! answer, the local counters go on deciding alone (logged once by the
//! breaker): a budget is never silently unlimited.

pub mod budget;
pub mod flush;
pub mod meter;

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use budget::{Counter, Room, Spent, Which};
pub use meter::TokenMeter;

use super::cluster::RedisEdge;

/// How often charged tokens are flushed to Redis (and the cluster's totals
/// read back): the overshoot bound of protocol/limits.md is what a key's
/// streams produce in this time.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Most counters one flush script carries.
const FLUSH_BATCH: usize = 256;
/// A counter nothing charged for this long is no longer flushed, and is
/// dropped once no run holds it.
const IDLE_AFTER: Duration = Duration::from_secs(90);

/// Who pays for a run's or relay's tokens, and the budgets in force at its
/// start. It travels with a queued run ([`super::SlotRef`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub key_id: String,
    pub account: String,
    pub key_tpm: Option<u64>,
    pub key_daily: Option<u64>,
    pub account_tpm: Option<u64>,
    pub account_daily: Option<u64>,
}

impl Payer {
    fn limited(&self) -> bool {
        self.key_tpm.is_some()
            || self.key_daily.is_some()
            || self.account_tpm.is_some()
            || self.account_daily.is_some()
    }
}

/// The counters one payer charges: its key's, and its account's when the
/// account has budgets of its own.
#[derive(Debug)]
pub struct Budgets {
    pub key: Arc<Counter>,
    pub account: Option<Arc<Counter>>,
}

impl Budgets {
    fn each(&self) -> impl Iterator<Item = &Arc<Counter>> {
        std::iter::once(&self.key).chain(self.account.as_ref())
    }

    /// Charges `n` tokens to the key and its account; returns a spent
    /// budget, if one is.
    pub fn charge(&self, n: u64) -> Option<Spent> {
        // Both are charged: the account paid for the tokens whichever
        // budget ran out.
        let key = self.key.charge(n);
        let account = self.account.as_ref().and_then(|a| a.charge(n));
        key.or(account)
    }

    /// A spent budget, if one is (charges nothing).
    pub fn check(&self) -> Option<Spent> {
        self.each().find_map(|c| c.check())
    }

    /// The tighter budget's room, for the `X-RateLimit-*-Tokens` headers.
    pub fn room(&self) -> Option<Room> {
        self.each()
            .filter_map(|c| c.room())
            .min_by_key(|r| r.remaining)
    }
}

/// This process's token counters and their flush to Redis.
pub struct TokenBudgets {
    counters: Mutex<HashMap<String, Arc<Counter>>>,
    redis: Option<Arc<RedisEdge>>,
}

impl TokenBudgets {
    pub fn new(redis: Option<Arc<RedisEdge>>) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            redis,
        }
    }

    /// The counters `payer` charges, with its limits in force; `None` when
    /// neither the key nor the account has a budget (nothing to count).
    pub fn budgets(&self, payer: &Payer) -> Option<Arc<Budgets>> {
        if !payer.limited() {
            return None;
        }
        let key = self.counter(
            format!("k:{}", payer.key_id),
            payer.key_tpm,
            payer.key_daily,
        );
        let account = (payer.account_tpm.is_some() || payer.account_daily.is_some()).then(|| {
            self.counter(
                format!("a:{}", payer.account),
                payer.account_tpm,
                payer.account_daily,
            )
        });
        Some(Arc::new(Budgets { key, account }))
    }

    fn counter(&self, id: String, tpm: Option<u64>, daily: Option<u64>) -> Arc<Counter> {
        let mut counters = self.counters.lock();
        if let Some(c) = counters.get(&id) {
            if c.limits() != (tpm, daily) {
                c.set_limits(tpm, daily);
            }
            return c.clone();
        }
        let c = Arc::new(Counter::new(id.clone(), tpm, daily));
        counters.insert(id, c.clone());
        c
    }

    /// Drops the counters nothing used for a while (without Redis, where
    /// nothing is flushed, what was charged is forgotten first: the local
    /// count is the only one). Called every minute by the edge.
    pub fn cleanup(&self) {
        let mut counters = self.counters.lock();
        if self.redis.is_none() {
            counters.values().for_each(|c| c.forget_unflushed());
        }
        counters.retain(|_, c| Arc::strong_count(c) > 1 || !c.idle(IDLE_AFTER));
    }

    /// Counters held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.counters.lock().len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes every [`FLUSH_EVERY`] until `stop`, then once more.
    pub async fn run_flusher(&self, stop: CancellationToken) {
        let Some(redis) = &self.redis else { return };
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.flush(redis).await,
            }
        }
        self.flush(redis).await;
    }

    /// One flush: what each counter in use charged goes to Redis and the
    /// cluster's totals come back, in one call.
    async fn flush(&self, redis: &RedisEdge) {
        let taken: Vec<(Arc<Counter>, u64, u64)> = {
            let mut counters = self.counters.lock();
            counters.retain(|_, c| Arc::strong_count(c) > 1 || !c.idle(IDLE_AFTER));
            // Only what was charged, and what a live run or relay holds (it
            // needs the cluster's totals): a counter nothing holds is read
            // from Redis by the next run start's script anyway.
            counters
                .values()
                .filter(|c| Arc::strong_count(c) > 1 || c.unflushed() > 0)
                .filter_map(|c| c.take(IDLE_AFTER).map(|(n, day)| (c.clone(), n, day)))
                .collect()
        };
        // In batches, so that one script never holds Redis for long.
        for batch in taken.chunks(FLUSH_BATCH) {
            self.flush_batch(redis, batch).await;
        }
    }

    async fn flush_batch(&self, redis: &RedisEdge, taken: &[(Arc<Counter>, u64, u64)]) {
        let items: Vec<flush::FlushItem> = taken
            .iter()
            .map(|(c, n, day)| flush::FlushItem {
                counter: c.id.clone(),
                tokens: *n,
                day: *day,
                per_token: c.limits().0.map(budget::per_token),
            })
            .collect();
        match redis.flush_tokens(&items).await {
            Ok(answers) => {
                for ((c, _, day), (ahead, total)) in taken.iter().zip(answers) {
                    c.merge(ahead, *day, total);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "edge: token counts not flushed; kept for the next flush");
                for (c, _, _) in taken {
                    c.untake();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_per_key_and_account_and_dropped_when_idle() {
        let b = TokenBudgets::new(None);
        let payer = |key: &str| Payer {
            key_id: key.into(),
            account: "acct".into(),
            key_tpm: Some(100),
            account_daily: Some(1000),
            ..Payer::default()
        };
        assert!(
            b.budgets(&Payer::default()).is_none(),
            "nothing limited, nothing counted"
        );
        let one = b.budgets(&payer("k1")).unwrap();
        let two = b.budgets(&payer("k2")).unwrap();
        assert!(Arc::ptr_eq(
            one.account.as_ref().unwrap(),
            two.account.as_ref().unwrap()
        ));
        assert_eq!(b.len(), 3);
        one.charge(10);
        assert_eq!(two.account.as_ref().unwrap().room().unwrap().remaining, 990);
        drop((one, two));
        b.cleanup();
        assert_eq!(b.len(), 3, "used within the idle time: kept");
    }
}
