//! Token budgets in Redis: the flush (every counter a process charged, in
//! one script call) and the budget arguments of the run-start script.
//!
//! Each counter has two Redis keys: `<prefix>{edge}:tok:<id>:tat`, the
//! GCRA's TAT in microseconds of Redis time (expiring once it is in the
//! past), and `<prefix>{edge}:tok:<id>:d<day>`, the day's total (kept two
//! days); the hash tag keeps a flush in one Redis Cluster slot. Time comes
//! from Redis (`TIME`), so gateways with skewed clocks agree on the TAT;
//! the UTC day is the gateway's own clock's.

use std::{sync::LazyLock, time::Duration};

use super::super::cluster::{RedisEdge, RedisEdgeError};

/// What one counter sends in a flush.
#[derive(Debug, Clone)]
pub struct FlushItem {
    /// [`super::Counter::id`].
    pub counter: String,
    pub tokens: u64,
    /// The UTC day the tokens count in (days since 1970).
    pub day: u64,
    /// Time per token at its `tpm`; `None`: no `tpm` (only the day counts).
    pub per_token: Option<Duration>,
}

/// The flush. KEYS: for each counter its TAT key then its day key; ARGV:
/// for each counter tokens, µs per token (0: no tpm). Returns for each
/// counter how far its TAT is ahead of now (µs) and the day's total.
const FLUSH: &str = r"
local tp = redis.call('TIME')
local now = tonumber(tp[1]) * 1000000 + tonumber(tp[2])
local out = {}
for i = 1, #KEYS / 2 do
  local n = tonumber(ARGV[2 * i - 1])
  local t = tonumber(ARGV[2 * i])
  local ahead = 0
  if t > 0 then
    local tat = tonumber(redis.call('GET', KEYS[2 * i - 1])) or now
    if tat < now then tat = now end
    if n > 0 then
      tat = tat + n * t
      redis.call('SET', KEYS[2 * i - 1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    end
    ahead = tat - now
  end
  local total
  if n > 0 then
    total = redis.call('INCRBY', KEYS[2 * i], n)
    redis.call('EXPIRE', KEYS[2 * i], 172800)
  else
    total = tonumber(redis.call('GET', KEYS[2 * i])) or 0
  end
  out[2 * i - 1] = math.floor(ahead)
  out[2 * i] = total
end
return out
";

/// One budget a run start checks in Redis (the run-start script's part).
#[derive(Debug, Clone)]
pub struct BudgetArg {
    /// The counter's TAT key (`tpm`) or day key (`daily_tokens`).
    pub key: String,
    /// `tpm` budgets: µs per token; daily budgets: 0.
    pub per_token_us: f64,
    /// Which budget this is and its limit (`tpm` or `daily_tokens`).
    pub which: super::Which,
    pub limit: u64,
    /// Tokens charged here and not yet flushed.
    pub unflushed: u64,
}

/// The budget check of the run-start script, after the rate check: ARGV[6]
/// the number of budgets, then for each µs per token (0: daily), daily
/// limit, unflushed tokens; KEYS[3..] their keys. Sets r[6] to the index of
/// the spent budget (0: none) and r[7] to the µs to wait (tpm).
macro_rules! run_start_budgets_lua {
    () => {
        r"
local nb = tonumber(ARGV[6] or '0')
for i = 1, nb do
  local t = tonumber(ARGV[6 + 3 * i - 2])
  local lim = tonumber(ARGV[6 + 3 * i - 1])
  local pend = tonumber(ARGV[6 + 3 * i])
  if t > 0 then
    local tat = tonumber(redis.call('GET', KEYS[2 + i])) or now_us
    if tat < now_us then tat = now_us end
    local over = tat - now_us + pend * t + t - 60000000
    if over > 0 then r[6] = i; r[7] = math.floor(over); return r end
  else
    local used = (tonumber(redis.call('GET', KEYS[2 + i])) or 0) + pend
    if used >= lim then r[6] = i; r[7] = 0; return r end
  end
end
"
    };
}
pub(crate) use run_start_budgets_lua;

impl RedisEdge {
    /// A counter's TAT key.
    pub fn tat_key(&self, counter: &str) -> String {
        self.edge_key(format_args!("tok:{counter}:tat"))
    }

    /// A counter's key of UTC day `day`.
    pub fn day_key(&self, counter: &str, day: u64) -> String {
        self.edge_key(format_args!("tok:{counter}:d{day}"))
    }

    /// Flushes `items`; returns for each how far its TAT is ahead and its
    /// day's total, as the cluster has them now.
    pub async fn flush_tokens(
        &self,
        items: &[FlushItem],
    ) -> Result<Vec<(Duration, u64)>, RedisEdgeError> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(FLUSH));
        let mut inv = SCRIPT.prepare_invoke();
        for it in items {
            inv.key(self.tat_key(&it.counter))
                .key(self.day_key(&it.counter, it.day));
        }
        for it in items {
            let us = it.per_token.map_or(0.0, |t| t.as_secs_f64() * 1e6);
            inv.arg(it.tokens).arg(format!("{us:.6}"));
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = self
            .call("tokens", async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(out
            .chunks(2)
            .map(|p| {
                let ahead = Duration::from_micros(p[0].max(0) as u64);
                (ahead, p.get(1).copied().unwrap_or(0).max(0) as u64)
            })
            .collect())
    }
}

impl super::Budgets {
    /// The run-start script's arguments for these budgets (module doc).
    pub fn run_start_args(&self, redis: &RedisEdge) -> Vec<BudgetArg> {
        let day = super::budget::today().0;
        let mut args = Vec::with_capacity(4);
        for c in std::iter::once(&self.key).chain(self.account.as_ref()) {
            let (tpm, daily) = c.limits();
            let unflushed = c.unflushed();
            if let Some(tpm) = tpm {
                args.push(BudgetArg {
                    key: redis.tat_key(&c.id),
                    per_token_us: super::budget::per_token(tpm).as_secs_f64() * 1e6,
                    which: super::Which::Tpm,
                    limit: tpm,
                    unflushed,
                });
            }
            if let Some(daily) = daily {
                args.push(BudgetArg {
                    key: redis.day_key(&c.id, day),
                    per_token_us: 0.0,
                    which: super::Which::Daily,
                    limit: daily,
                    unflushed,
                });
            }
        }
        args
    }
}
