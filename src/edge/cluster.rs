//! The edge's own small Redis client: the cluster-wide rate limit (a GCRA in
//! one `EVALSHA`), slot leases (a ZSET per key and kind of slot: WebSocket,
//! SSE, run) and the run-start check: the key's rate and a run slot in one
//! `EVALSHA`, so a run start costs one round trip whatever it checks.
//!
//! Every call is bounded by [`OP_TIMEOUT`]; after a failure Redis is skipped
//! for [`BREAKER`] so an outage costs the callers nothing but a fallback to
//! the local limiter and local counts (logged once per outage, not per
//! request). Time comes from Redis (`TIME`), so gateways with skewed clocks
//! still agree.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use redis::{AsyncCommands, Script};

use crate::bus::redis::{ConnOptions, RedisConn, RedisTarget};

use super::{rate::Decision, tokens::flush::BudgetArg};

/// What the run-start script decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStartAnswer {
    /// The rate decision, when the rate was checked.
    pub rate: Option<Decision>,
    /// Whether a run slot was taken.
    pub taken: bool,
    /// The spent token budget, its limit and the time until it has room
    /// (`tpm`; zero for a daily budget, whose wait is until midnight).
    pub spent: Option<(super::tokens::Which, u64, Duration)>,
}

/// Longest a single Redis call may take before the edge falls back.
pub const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is skipped after a failed call.
pub const BREAKER: Duration = Duration::from_secs(1);

/// GCRA in microseconds, as a Lua function both scripts below share:
/// `gcra(bucket, period µs per request, burst, now µs)` returns {allowed,
/// remaining, reset_after_us, retry_after_us}.
macro_rules! gcra_lua {
    () => {
        r"
local function gcra(bucket, t, burst, now)
  local tau = t * (burst - 1)
  local tat = tonumber(redis.call('GET', bucket)) or now
  if tat < now then tat = now end
  if tat - now > tau then
    return {0, 0, tat - now, tat - tau - now}
  end
  local new_tat = tat + t
  redis.call('SET', bucket, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  return {1, math.floor((tau + t - (new_tat - now)) / t), new_tat - now, 0}
end
local tp = redis.call('TIME')
local now_us = tonumber(tp[1]) * 1000000 + tonumber(tp[2])
"
    };
}

/// The rate limit. KEYS[1] bucket; ARGV[1] period (µs per request), ARGV[2]
/// burst. Returns what `gcra` does.
const GCRA: &str = concat!(
    gcra_lua!(),
    "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_us)\n"
);

/// The run-start check. KEYS[1] the rate bucket, KEYS[2] the key's run
/// ZSET; ARGV[1] period (µs per request; 0: no rate check), ARGV[2] burst,
/// ARGV[3] lease ttl (ms), ARGV[4] max runs, ARGV[5] member. A start over
/// the rate takes no slot; one within it is counted even if no slot is free
/// (it was a request), and so is one refused by a token budget (ARGV[6..]
/// and KEYS[3..], see [`super::tokens::flush`]). Returns gcra's four
/// values, 1 when the slot was taken (0 when full or not tried), the index
/// of a spent budget (0: none) and the µs it needs to have room (`tpm`).
const RUN_START: &str = concat!(
    gcra_lua!(),
    r"
local r = {1, 0, 0, 0, 0, 0, 0}
local t = tonumber(ARGV[1])
if t > 0 then
  local g = gcra(KEYS[1], t, tonumber(ARGV[2]), now_us)
  r[1], r[2], r[3], r[4] = g[1], g[2], g[3], g[4]
  if r[1] == 0 then
    return r
  end
end
",
    super::tokens::flush::run_start_budgets_lua!(),
    r"
local now = math.floor(now_us / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  r[5] = 0
  return r
end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[5])
redis.call('PEXPIRE', KEYS[2], ttl)
r[5] = 1
return r
"
);

/// Takes a slot. KEYS[1] the key's ZSET; ARGV[1] lease ttl (ms), ARGV[2]
/// limit, ARGV[3] member. Expired leases (a dead gateway's) are dropped
/// first. Returns 1 when taken, 0 when full.
const ACQUIRE: &str = r"
local ttl = tonumber(ARGV[1])
local tp = redis.call('TIME')
local now = tonumber(tp[1]) * 1000 + math.floor(tonumber(tp[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
";

/// Extends leases. KEYS[1] a ZSET; ARGV[1] ttl (ms), ARGV[2..] members. A
/// member that expired meanwhile (Redis was away) is added back: the stream
/// is still open, so it still holds a slot.
const REFRESH: &str = r"
local ttl = tonumber(ARGV[1])
local tp = redis.call('TIME')
local now = tonumber(tp[1]) * 1000 + math.floor(tonumber(tp[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
";

/// Microseconds per request at `rpm`.
fn period_us(rpm: u32) -> u64 {
    60_000_000u64 / u64::from(rpm.max(1))
}

/// A GCRA answer ({allowed, remaining, reset_us, retry_us}) as a decision.
fn decision(rpm: u32, [allowed, remaining, reset_us, retry_us]: [i64; 4]) -> Decision {
    Decision {
        allowed: allowed == 1,
        limit: rpm,
        remaining: remaining.clamp(0, i64::from(rpm)) as u32,
        reset_after: Duration::from_micros(reset_us.max(0) as u64),
        retry_after: Duration::from_micros(retry_us.max(0) as u64),
    }
}

/// Why a Redis call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisEdgeError {
    #[error("redis skipped after a recent failure")]
    Skipped,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A lazily connected, multiplexed Redis connection with a circuit breaker.
pub struct RedisEdge {
    pub(super) conn: RedisConn,
    /// Prefix of every key (`--redis-prefix`, shared with the bus).
    pub(super) prefix: String,
    gcra: Script,
    run_start: Script,
    acquire: Script,
    refresh: Script,
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is skipped.
    skip_until_ms: AtomicU64,
    /// Whether the last call failed (to log the outage and recovery once).
    down: AtomicBool,
}

impl RedisEdge {
    /// Builds the client; connects on first use (Redis may be down at start).
    /// Every key it writes starts with `prefix`.
    pub fn new(target: RedisTarget, prefix: &str) -> Result<Arc<Self>, redis::RedisError> {
        let conn = target.connection(ConnOptions {
            connect_timeout: OP_TIMEOUT,
            response_timeout: OP_TIMEOUT,
            retries: 1,
            max_delay: OP_TIMEOUT,
        })?;
        Ok(Arc::new(Self {
            conn,
            prefix: prefix.to_owned(),
            gcra: Script::new(GCRA),
            run_start: Script::new(RUN_START),
            acquire: Script::new(ACQUIRE),
            refresh: Script::new(REFRESH),
            epoch: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs one call under the timeout and the breaker.
    pub(super) async fn call<T, F>(&self, what: &str, f: F) -> Result<T, RedisEdgeError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(RedisEdgeError::Skipped);
        }
        let result = match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisEdgeError::Redis(e)),
            Err(_) => Err(RedisEdgeError::Timeout(OP_TIMEOUT)),
        };
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("edge: redis is back; limits are cluster-wide again");
                }
            }
            Err(e) => {
                let until = self.now_ms() + BREAKER.as_millis() as u64;
                self.skip_until_ms.store(until, Ordering::Relaxed);
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, op = what, "edge: redis unreachable; falling back to this gateway's local limits");
                }
            }
        }
        result
    }

    /// One GCRA check of `key_id` at `rpm`, cluster-wide.
    pub async fn check_rate(&self, key_id: &str, rpm: u32) -> Result<Decision, RedisEdgeError> {
        let rpm = rpm.max(1);
        let mut conn = self.conn.clone();
        let mut inv = self.gcra.prepare_invoke();
        inv.key(self.rate_bucket(key_id))
            .arg(period_us(rpm))
            .arg(rpm);
        let (allowed, remaining, reset_us, retry_us): (i64, i64, i64, i64) = self
            .call("rate", async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(decision(rpm, [allowed, remaining, reset_us, retry_us]))
    }

    /// The run-start check of `key_id` in one call: its rate at `rpm`
    /// (`None`: rate limits are off), its token `budgets`, and a slot in
    /// `zset` if fewer than `limit` live leases hold it.
    pub async fn start_run(
        &self,
        key_id: &str,
        rpm: Option<u32>,
        budgets: &[BudgetArg],
        lease: &super::leases::Lease,
        limit: u32,
        ttl: Duration,
    ) -> Result<RunStartAnswer, RedisEdgeError> {
        let rpm = rpm.map(|r| r.max(1));
        let mut conn = self.conn.clone();
        let mut inv = self.run_start.prepare_invoke();
        inv.key(self.rate_bucket(key_id)).key(lease.0.as_ref());
        for b in budgets {
            inv.key(&b.key);
        }
        inv.arg(rpm.map_or(0, period_us))
            .arg(rpm.unwrap_or(1))
            .arg(ttl.as_millis() as u64)
            .arg(limit)
            .arg(lease.1.as_ref())
            .arg(budgets.len());
        for b in budgets {
            inv.arg(format!("{:.6}", b.per_token_us))
                .arg(b.limit)
                .arg(b.unflushed);
        }
        let r: [i64; 7] = self
            .call(
                "run_start",
                async move { inv.invoke_async(&mut conn).await },
            )
            .await?;
        let spent = usize::try_from(r[5])
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| budgets.get(i))
            .map(|b| (b.which, b.limit, Duration::from_micros(r[6].max(0) as u64)));
        Ok(RunStartAnswer {
            rate: rpm.map(|rpm| decision(rpm, [r[0], r[1], r[2], r[3]])),
            taken: r[4] == 1,
            spent,
        })
    }

    /// The name of an edge key: every limiter, lease and token-budget key
    /// carries the one hash tag `{edge}`, so on a Redis Cluster the
    /// run-start script (a key's bucket and leases with its account's
    /// budget) and the token flush (many keys' and accounts' counters at
    /// once) each stay in one slot. That slot's master carries the edge's
    /// few writes per request; the per-event fan-out is what is sharded.
    pub(crate) fn edge_key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{{edge}}:{rest}", self.prefix)
    }

    /// The GCRA bucket of `key_id` (shared by requests and run starts).
    fn rate_bucket(&self, key_id: &str) -> String {
        self.edge_key(format_args!("rl:{key_id}"))
    }

    /// The ZSET of `key_id`'s `kind` stream leases.
    pub fn lease_set(&self, key_id: &str, kind: &str) -> String {
        self.edge_key(format_args!("conn:{key_id}:{kind}"))
    }

    /// Takes a slot in `zset` if fewer than `limit` live leases hold it.
    pub async fn acquire(
        &self,
        zset: &str,
        member: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, RedisEdgeError> {
        let mut conn = self.conn.clone();
        let mut inv = self.acquire.prepare_invoke();
        inv.key(zset)
            .arg(ttl.as_millis() as u64)
            .arg(limit)
            .arg(member);
        let taken: i64 = self
            .call("acquire", async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(taken == 1)
    }

    /// Extends (or re-adds) the leases of `members` in `zset`.
    pub async fn refresh(
        &self,
        zset: &str,
        members: &[Arc<str>],
        ttl: Duration,
    ) -> Result<(), RedisEdgeError> {
        let mut conn = self.conn.clone();
        let mut inv = self.refresh.prepare_invoke();
        inv.key(zset).arg(ttl.as_millis() as u64);
        for m in members {
            inv.arg(m.as_ref());
        }
        let _: i64 = self
            .call("refresh", async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(())
    }

    /// Gives a slot back.
    pub async fn release(&self, zset: &str, member: &str) -> Result<(), RedisEdgeError> {
        let mut conn = self.conn.clone();
        let (zset, member) = (zset.to_owned(), member.to_owned());
        let _: i64 = self
            .call("release", async move { conn.zrem(zset, member).await })
            .await?;
        Ok(())
    }
}
