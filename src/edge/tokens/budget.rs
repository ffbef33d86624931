//! One payer's token budget as this process sees it: a [`Counter`] per key
//! and per account, charged without waiting (a short lock, no await).
//!
//! `tpm` is a GCRA over tokens: the theoretical arrival time (TAT) moves
//! `60 s / tpm` per token charged, and the budget is spent while the TAT is
//! more than a minute (less one token) ahead of now, so a full minute's
//! tokens may be spent at once and then `tpm` per minute. Tokens are
//! charged after they were produced, so a charge may push the TAT past that
//! line: the overshoot is paid back as time (`retry_after`). `daily_tokens`
//! is a plain sum per UTC day.
//!
//! With Redis the counter is this process's view of the cluster's: the
//! TAT and day total as of the last flush ([`super::TokenBudgets`], at
//! least once a second), plus what was charged here since.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A GCRA window: a minute's worth of tokens.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Which budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Tpm,
    Daily,
}

/// A spent budget: which, its limit, and when it has room again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub which: Which,
    pub limit: u64,
    pub retry_after: Duration,
}

impl Spent {
    /// Whole seconds to wait (at least one).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// What the `X-RateLimit-*-Tokens` headers say of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub limit: u64,
    pub remaining: u64,
    /// Until the budget is whole again.
    pub reset: Duration,
}

impl Room {
    /// `X-RateLimit-Limit-Tokens`, `-Remaining-Tokens` and `-Reset-Tokens`
    /// (Unix time, seconds, as `X-RateLimit-Reset`).
    pub fn write_headers(&self, headers: &mut http::HeaderMap) {
        use http::HeaderValue;
        let reset = unix_now() + self.reset;
        let reset = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        headers.insert("x-ratelimit-limit-tokens", HeaderValue::from(self.limit));
        headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from(self.remaining),
        );
        headers.insert("x-ratelimit-reset-tokens", HeaderValue::from(reset));
    }
}

/// Time per token at `tpm`.
pub fn per_token(tpm: u64) -> Duration {
    WINDOW / u32::try_from(tpm.clamp(1, u64::from(u32::MAX))).unwrap_or(u32::MAX)
}

/// Days since 1970-01-01, UTC, and the time left in that day.
pub fn utc_day(unix: Duration) -> (u64, Duration) {
    let secs = unix.as_secs();
    let day = secs / 86_400;
    let left =
        Duration::from_secs((day + 1) * 86_400) - unix.min(Duration::from_secs((day + 1) * 86_400));
    (day, left)
}

/// Today's UTC day (days since 1970) and the time left in it.
pub fn today() -> (u64, Duration) {
    utc_day(unix_now())
}

/// Time since 1970 (the gateway's clock: UTC days are counted by it).
pub fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

#[derive(Debug)]
struct State {
    tpm: Option<u64>,
    daily: Option<u64>,
    /// The GCRA's theoretical arrival time (never before "now" in effect).
    tat: Instant,
    /// The UTC day `day_total` counts, and the total.
    day: u64,
    day_total: u64,
    /// Charged here and not yet taken by a flush.
    pending: u64,
    /// Taken by the flush in flight (not yet in its answer).
    in_flight: u64,
    last_used: Instant,
}

/// One key's or account's budget in this process.
#[derive(Debug)]
pub struct Counter {
    /// `k:<key id>` or `a:<account>`: what its Redis keys are named by.
    pub id: String,
    state: Mutex<State>,
}

impl Counter {
    pub fn new(id: String, tpm: Option<u64>, daily: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            id,
            state: Mutex::new(State {
                tpm,
                daily,
                tat: now,
                day: today().0,
                day_total: 0,
                pending: 0,
                in_flight: 0,
                last_used: now,
            }),
        }
    }

    /// Sets the limits in force (a key's limits may change while in use).
    pub fn set_limits(&self, tpm: Option<u64>, daily: Option<u64>) {
        let mut s = self.state.lock();
        (s.tpm, s.daily) = (tpm, daily);
    }

    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        let s = self.state.lock();
        (s.tpm, s.daily)
    }

    /// Charges `n` tokens; returns the budget now spent, if one is.
    pub fn charge(&self, n: u64) -> Option<Spent> {
        let now = Instant::now();
        let mut s = self.state.lock();
        s.last_used = now;
        roll_day(&mut s);
        if n > 0 {
            if let Some(tpm) = s.tpm {
                s.tat = s.tat.max(now) + per_token(tpm) * u32::try_from(n).unwrap_or(u32::MAX);
            }
            s.day_total = s.day_total.saturating_add(n);
            s.pending = s.pending.saturating_add(n);
        }
        spent(&s, now)
    }

    /// The budget spent now, if one is (charges nothing).
    pub fn check(&self) -> Option<Spent> {
        self.charge(0)
    }

    /// What is left of the tighter of the two budgets, if any is set.
    pub fn room(&self) -> Option<Room> {
        let now = Instant::now();
        let mut s = self.state.lock();
        roll_day(&mut s);
        let tpm = s.tpm.map(|tpm| {
            let ahead = s.tat.saturating_duration_since(now);
            let used = (ahead.as_secs_f64() / per_token(tpm).as_secs_f64()).ceil() as u64;
            Room {
                limit: tpm,
                remaining: tpm.saturating_sub(used),
                reset: ahead,
            }
        });
        let daily = s.daily.map(|daily| Room {
            limit: daily,
            remaining: daily.saturating_sub(s.day_total),
            reset: today().1,
        });
        match (tpm, daily) {
            (Some(t), Some(d)) => Some(if d.remaining < t.remaining { d } else { t }),
            (t, d) => t.or(d),
        }
    }

    /// Tokens charged here and not yet flushed (they count in a run-start
    /// check made in Redis, which has not seen them).
    pub fn unflushed(&self) -> u64 {
        let s = self.state.lock();
        s.pending + s.in_flight
    }

    /// Takes what is to flush: `Some((tokens, day))` when there are tokens
    /// or the counter is in use (a flush of 0 reads the cluster's state).
    pub fn take(&self, idle_after: Duration) -> Option<(u64, u64)> {
        let mut s = self.state.lock();
        if s.pending == 0 && s.last_used.elapsed() > idle_after {
            return None;
        }
        s.in_flight = std::mem::take(&mut s.pending);
        Some((s.in_flight, s.day))
    }

    /// Forgets what waits to be flushed (nothing flushes without Redis).
    pub fn forget_unflushed(&self) {
        let mut s = self.state.lock();
        (s.pending, s.in_flight) = (0, 0);
    }

    /// The flush taken by [`Self::take`] failed: its tokens wait for the next.
    pub fn untake(&self) {
        let mut s = self.state.lock();
        s.pending += std::mem::take(&mut s.in_flight);
    }

    /// The cluster's answer to the flush: the TAT `ahead` of now and the
    /// day's total, both including what this flush carried. What was
    /// charged here since is added back on top.
    pub fn merge(&self, ahead: Duration, day: u64, day_total: u64) {
        let now = Instant::now();
        let mut s = self.state.lock();
        s.in_flight = 0;
        let mine = u32::try_from(s.pending).unwrap_or(u32::MAX);
        let tat = now + ahead;
        s.tat = match s.tpm {
            Some(tpm) => tat + per_token(tpm) * mine,
            None => tat,
        };
        if day == s.day {
            s.day_total = day_total + s.pending;
        }
    }

    /// Whether nothing uses the counter and nothing waits to be flushed.
    pub fn idle(&self, after: Duration) -> bool {
        let s = self.state.lock();
        s.pending == 0 && s.in_flight == 0 && s.last_used.elapsed() > after
    }
}

fn roll_day(s: &mut State) {
    let day = today().0;
    if day != s.day {
        s.day = day;
        s.day_total = 0;
    }
}

fn spent(s: &State, now: Instant) -> Option<Spent> {
    if let Some(tpm) = s.tpm {
        let t = per_token(tpm);
        let ahead = s.tat.saturating_duration_since(now);
        // Spent when less than one token of the minute is left.
        if ahead + t > WINDOW {
            return Some(Spent {
                which: Which::Tpm,
                limit: tpm,
                retry_after: (ahead + t).saturating_sub(WINDOW),
            });
        }
    }
    match s.daily {
        Some(daily) if s.day_total >= daily => Some(Spent {
            which: Which::Daily,
            limit: daily,
            retry_after: today().1,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_tokens_may_be_spent_at_once_then_the_budget_is_spent() {
        let c = Counter::new("k:x".into(), Some(600), None);
        assert_eq!(c.charge(599), None);
        let room = c.room().unwrap();
        assert_eq!((room.limit, room.remaining), (600, 1));
        let s = c.charge(1).expect("the 600th token spends it");
        assert_eq!(s.which, Which::Tpm);
        assert!(s.retry_after <= Duration::from_millis(100), "{s:?}");
        // An overshoot (tokens charged after they streamed) is paid in time.
        let s = c.charge(300).unwrap();
        assert!(s.retry_after >= Duration::from_secs(29), "{s:?}");
        assert!((30..=31).contains(&s.retry_after_secs()), "{s:?}");
        assert_eq!(c.room().unwrap().remaining, 0);
    }

    #[test]
    fn the_daily_sum_is_spent_at_its_limit_and_tpm_unset_is_unlimited() {
        let c = Counter::new("a:acct".into(), None, Some(100));
        assert_eq!(c.charge(99), None);
        let s = c.charge(1).unwrap();
        assert_eq!((s.which, s.limit), (Which::Daily, 100));
        assert!(s.retry_after <= Duration::from_secs(86_400));
        let unlimited = Counter::new("k:y".into(), None, None);
        assert_eq!(unlimited.charge(u64::MAX / 2), None);
        assert_eq!(unlimited.room(), None);
    }

    #[test]
    fn a_flush_answer_replaces_the_view_and_keeps_what_was_charged_since() {
        let c = Counter::new("k:z".into(), Some(6000), Some(1_000_000));
        c.charge(100);
        assert_eq!(
            c.take(Duration::from_secs(60)),
            Some((100, c.state.lock().day))
        );
        c.charge(50);
        assert_eq!(c.unflushed(), 150);
        // The cluster saw 1000 tokens (this gateway's 100 among them).
        let day = c.state.lock().day;
        c.merge(per_token(6000) * 1000, day, 1000);
        assert_eq!(c.unflushed(), 50);
        let room = c.room().unwrap();
        assert_eq!(room.remaining, 6000 - 1050);
        assert_eq!(c.state.lock().day_total, 1050);
        c.take(Duration::from_secs(60));
        c.untake();
        assert_eq!(c.unflushed(), 50, "a failed flush keeps its tokens");
    }

    #[test]
    fn utc_days_split_at_midnight() {
        let (day, left) = utc_day(Duration::from_secs(86_400 * 3 + 3600));
        assert_eq!((day, left), (3, Duration::from_secs(23 * 3600)));
    }
}
