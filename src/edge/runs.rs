//! Run starts: every run start, whatever the transport (a REST message, an
//! OpenAI agent completion, a WebSocket `user_message`), is one request
//! against the key's `rpm` and takes one of the key's `max_runs` slots,
//! held until the run ends (done, error, cancel, drain), in the background
//! too.
//!
//! Slots are counted as stream slots are ([`super::conns`]): always locally,
//! and with Redis as leases in a ZSET (`<prefix>conn:<key id>:run`) kept by
//! the shared [`LeaseBook`], so a dead gateway's or worker's slots come back
//! within one lease TTL. With Redis the rate and the slot are checked in one
//! script call ([`RedisEdge::start_run`]); when Redis does not answer, the
//! local limiter and the local count decide (the breaker logs it once).
//!
//! In the queued mode a run may execute in another process than the one
//! that accepted it: the accepting gateway hands the lease off
//! ([`RunSlot::hand_off`]) as it queues the run and the process that
//! executes it adopts it ([`RunSlots::adopt`]), refreshing it from then on
//! and giving it back when the run ends.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{
    cluster::RedisEdge,
    leases::LeaseBook,
    rate::Decision,
    tokens::{Budgets, Payer, Spent, TokenBudgets, Which},
    Lease,
};
use crate::{config::EdgeConfig, domain::ErrorCode, store::KeyRecord};

/// Most runs a key may have going: its own `max_runs`, else the default
/// ([`super::KeyLimits`]).
pub fn max_runs_for(key: &KeyRecord, cfg: &EdgeConfig) -> u32 {
    super::KeyLimits::resolve(key, cfg).max_runs
}

/// Why a run start was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunRefusal {
    /// The key spent its requests per minute (429 `rate_limit_exceeded`).
    #[error("this key is limited to {} requests per minute; retry after {} s", .0.limit, .0.retry_after_secs())]
    Rate(Decision),
    /// The key has its limit of runs going (429 `too_many_runs`).
    #[error("this key already has {limit} runs going (its limit); wait for one to end")]
    Full { limit: u32 },
    /// A token budget of the key or its account is spent (429
    /// `token_budget_exceeded`).
    #[error("{}", budget_message(.0))]
    Budget(Spent),
}

/// What a client is told of a spent budget.
pub fn budget_message(s: &Spent) -> String {
    let what = match s.which {
        Which::Tpm => "tokens per minute",
        Which::Daily => "tokens per UTC day",
    };
    format!(
        "the token budget is spent ({} {what}); retry after {} s",
        s.limit,
        s.retry_after_secs()
    )
}

impl RunRefusal {
    /// The code a client is shown, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rate(_) => ErrorCode::RateLimitExceeded,
            Self::Full { .. } => ErrorCode::TooManyRuns,
            Self::Budget(_) => ErrorCode::TokenBudgetExceeded,
        }
    }

    /// Seconds the client should wait before it retries, when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Rate(d) => Some(d.retry_after_secs()),
            Self::Full { .. } => None,
            Self::Budget(s) => Some(s.retry_after_secs()),
        }
    }
}

/// What a run's lease is, for the process that executes the run (it
/// travels in the queued job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRef {
    pub key_id: String,
    pub member: String,
    /// Who pays for the run's tokens, with the budgets in force at its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
}

/// Run slots: this process's counts per key, and the leases.
pub struct RunSlots {
    local: Mutex<HashMap<Arc<str>, u32>>,
    book: Arc<LeaseBook>,
    /// The token counters runs charge.
    pub tokens: Arc<TokenBudgets>,
    gateway_id: String,
    next_id: AtomicU64,
}

impl RunSlots {
    /// The slots; their leases go in `book`.
    pub fn new(book: Arc<LeaseBook>, tokens: Arc<TokenBudgets>, gateway_id: &str) -> Self {
        Self {
            local: Mutex::new(HashMap::new()),
            book,
            tokens,
            gateway_id: gateway_id.to_owned(),
            next_id: AtomicU64::new(0),
        }
    }

    fn redis(&self) -> Option<&Arc<RedisEdge>> {
        self.book.redis.as_ref()
    }

    /// Runs of `key_id` counted in this process.
    pub fn local_count(&self, key_id: &str) -> u32 {
        self.local.lock().get(key_id).copied().unwrap_or(0)
    }

    /// Takes a slot for `key_id` if it has fewer than `limit` runs going
    /// and `payer`'s token budgets have room, after the local rate
    /// `local_rate` (`None`: rate limits off) allowed the start; with Redis,
    /// the rate at `rpm`, the budgets and the slot are decided there in one
    /// call. Returns the slot and the rate decision in force.
    pub async fn start(
        self: &Arc<Self>,
        key_id: &str,
        rpm: u32,
        limit: u32,
        local_rate: Option<Decision>,
        payer: Option<Payer>,
    ) -> Result<(RunSlot, Option<Decision>), RunRefusal> {
        if let Some(d) = local_rate.filter(|d| !d.allowed) {
            return Err(RunRefusal::Rate(d));
        }
        let budgets = payer.as_ref().and_then(|p| self.tokens.budgets(p));
        if let Some(spent) = budgets.as_ref().and_then(|b| b.check()) {
            return Err(RunRefusal::Budget(spent));
        }
        let key: Arc<str> = key_id.into();
        if !self.count_in(&key, limit) {
            return Err(RunRefusal::Full { limit });
        }
        let mut slot = RunSlot {
            slots: self.clone(),
            key,
            lease: None,
            handed_off: false,
            payer,
            budgets,
        };
        let Some(redis) = self.redis() else {
            return Ok((slot, local_rate));
        };
        let lease = self.new_lease(redis, key_id);
        let rpm = local_rate.map(|_| rpm);
        let ttl = self.book.ttl;
        let args = slot
            .budgets
            .as_ref()
            .map(|b| b.run_start_args(redis))
            .unwrap_or_default();
        // Redis away: the local decisions stand, and the lease is kept (the
        // refresher writes it when Redis is back), as stream slots do.
        let rate = match redis
            .start_run(key_id, rpm, &args, &lease, limit, ttl)
            .await
        {
            Ok(answer) => {
                if let Some(d) = answer.rate.filter(|d| !d.allowed) {
                    return Err(RunRefusal::Rate(d));
                }
                if let Some((which, limit, wait)) = answer.spent {
                    return Err(RunRefusal::Budget(spent_in_redis(which, limit, wait)));
                }
                if !answer.taken {
                    return Err(RunRefusal::Full { limit });
                }
                answer.rate
            }
            Err(_) => local_rate,
        };
        self.book.track(&lease);
        slot.lease = Some(lease);
        Ok((slot, rate))
    }

    /// Holds, in this process, the slot of a run another process accepted
    /// and handed off (never refused: the run is already under way).
    pub fn adopt(self: &Arc<Self>, r: &SlotRef) -> RunSlot {
        let key: Arc<str> = r.key_id.as_str().into();
        *self.local.lock().entry(key.clone()).or_insert(0) += 1;
        let lease = self.redis().map(|redis| {
            let zset: Arc<str> = redis.lease_set(&r.key_id, "run").into();
            (zset, Arc::<str>::from(r.member.as_str()))
        });
        if let Some(lease) = &lease {
            self.book.track(lease);
        }
        let budgets = r.payer.as_ref().and_then(|p| self.tokens.budgets(p));
        RunSlot {
            slots: self.clone(),
            key,
            lease,
            handed_off: false,
            payer: r.payer.clone(),
            budgets,
        }
    }

    fn new_lease(&self, redis: &RedisEdge, key_id: &str) -> Lease {
        let zset: Arc<str> = redis.lease_set(key_id, "run").into();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        (zset, format!("{}:r{n}", self.gateway_id).into())
    }

    /// Counts one run of `key` here unless it has `limit` already.
    fn count_in(&self, key: &Arc<str>, limit: u32) -> bool {
        let mut local = self.local.lock();
        let n = local.entry(key.clone()).or_insert(0);
        let free = *n < limit;
        if free {
            *n += 1;
        } else if *n == 0 {
            local.remove(key);
        }
        free
    }

    fn count_out(&self, key: &Arc<str>) {
        let mut local = self.local.lock();
        if let Some(n) = local.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                local.remove(key);
            }
        }
    }
}

/// A held run slot; dropping it gives the slot back (locally at once, in
/// Redis through the release queue).
pub struct RunSlot {
    slots: Arc<RunSlots>,
    key: Arc<str>,
    lease: Option<Lease>,
    handed_off: bool,
    payer: Option<Payer>,
    /// The token counters the run charges; `None`: no budget applies.
    budgets: Option<Arc<Budgets>>,
}

impl RunSlot {
    /// What the process that executes the run needs to adopt the slot.
    pub fn reference(&self) -> SlotRef {
        SlotRef {
            key_id: self.key.to_string(),
            member: self
                .lease
                .as_ref()
                .map(|l| l.1.to_string())
                .unwrap_or_default(),
            payer: self.payer.clone(),
        }
    }

    /// The token counters the run charges ([`super::tokens::TokenMeter`]).
    pub fn budgets(&self) -> Option<Arc<Budgets>> {
        self.budgets.clone()
    }

    /// Who pays for the run's tokens.
    pub fn payer(&self) -> Option<&Payer> {
        self.payer.as_ref()
    }

    /// Gives the slot back now, in Redis too (awaited, bounded by the edge's
    /// Redis timeout), so that whoever sees the run end may start its next
    /// run at once, on any gateway.
    pub async fn give_back(mut self) {
        if let Some(lease) = self.lease.take() {
            self.slots.book.untrack(&lease);
            if let Some(redis) = self.slots.redis() {
                if let Err(e) = redis.release(&lease.0, &lease.1).await {
                    tracing::debug!(error = %e, "edge: run lease not released; it will expire");
                }
            }
        }
        // Dropped here: counted out locally.
    }

    /// Lets go of the slot here without giving it back: the run is queued
    /// and the process that executes it adopts the lease. Call it before the
    /// run is queued, so an adopter in this very process comes after it.
    pub fn hand_off(mut self) -> SlotRef {
        let r = self.reference();
        if let Some(lease) = self.lease.take() {
            self.slots.book.untrack(&lease);
        }
        self.handed_off = true;
        r
    }
}

/// A budget the run-start script found spent, as a refusal: a `tpm`
/// budget has room after `wait`, a daily one at the next UTC midnight.
fn spent_in_redis(which: Which, limit: u64, wait: std::time::Duration) -> Spent {
    let retry_after = match which {
        Which::Tpm => wait,
        Which::Daily => super::tokens::budget::today().1,
    };
    Spent {
        which,
        limit,
        retry_after,
    }
}

impl fmt::Debug for RunSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunSlot")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.slots.count_out(&self.key);
        if let Some(lease) = self.lease.take() {
            if !self.handed_off {
                self.slots.book.release(lease);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slots() -> Arc<RunSlots> {
        let book = Arc::new(LeaseBook::new(None, Duration::from_secs(30)).0);
        Arc::new(RunSlots::new(
            book,
            Arc::new(TokenBudgets::new(None)),
            "gw-test",
        ))
    }

    fn allowed() -> Option<Decision> {
        Some(Decision {
            allowed: true,
            limit: 10,
            remaining: 9,
            reset_after: Duration::from_secs(6),
            retry_after: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn without_redis_runs_are_counted_locally_per_key() {
        let s = slots();
        let a = s.start("k", 10, 2, allowed(), None).await.unwrap().0;
        let (b, rate) = s.start("k", 10, 2, allowed(), None).await.unwrap();
        assert_eq!(rate, allowed(), "the local decision is the one in force");
        let e = s.start("k", 10, 2, allowed(), None).await.unwrap_err();
        assert_eq!(e, RunRefusal::Full { limit: 2 });
        assert_eq!(e.code(), ErrorCode::TooManyRuns);
        assert_eq!(e.retry_after(), None);
        assert!(
            s.start("other", 10, 2, None, None).await.is_ok(),
            "keys apart"
        );
        assert_eq!(s.local_count("k"), 2);
        drop(a);
        assert_eq!(s.local_count("k"), 1);
        let c = s.start("k", 10, 2, allowed(), None).await.unwrap().0;
        drop((b, c));
        assert_eq!(s.local_count("k"), 0);
        assert!(s.local.lock().is_empty(), "no entry for keys with no runs");
    }

    #[tokio::test]
    async fn a_start_over_the_rate_takes_no_slot() {
        let s = slots();
        let over = Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_millis(5_500),
            ..allowed().unwrap()
        };
        let e = s.start("k", 10, 2, Some(over), None).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::RateLimitExceeded);
        assert_eq!(e.retry_after(), Some(6));
        assert_eq!(s.local_count("k"), 0);
    }

    #[tokio::test]
    async fn a_handed_off_slot_is_counted_where_it_is_adopted() {
        let s = slots();
        let slot = s.start("k", 10, 1, None, None).await.unwrap().0;
        let r = slot.hand_off();
        assert_eq!(s.local_count("k"), 0);
        let adopted = s.adopt(&r);
        assert_eq!(s.local_count("k"), 1);
        assert!(s.start("k", 10, 1, None, None).await.is_err());
        drop(adopted);
        assert!(s.start("k", 10, 1, None, None).await.is_ok());
    }
}
