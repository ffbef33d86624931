//! A provider's health: its circuit breaker, the cool-down a 429's
//! `Retry-After` asked for, and recent outcomes for `GET /v1/providers`.
//!
//! The breaker counts consecutive failures (connect errors, 5xx, timeouts,
//! broken streams; not 4xx, which are the caller's, nor 429, which has its
//! own cool-down). At the threshold it opens: the provider is skipped for
//! the cool-down, then one request probes it (half-open); the probe's
//! success closes the circuit, its failure opens it again. Time is passed
//! in, so the rules are tested without waiting.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Serialize;

/// Outcomes kept for the recent error rate and latency.
const RECENT: usize = 100;
/// The longest `Retry-After` honoured (a provider asking for an hour is
/// still retried after this, at worst answering 429 again).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    /// The `/metrics` gauge value.
    pub fn gauge(self) -> f64 {
        match self {
            Circuit::Closed => 0.0,
            Circuit::Open => 1.0,
            Circuit::HalfOpen => 2.0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    /// A half-open probe is out.
    probing: bool,
    retry_after_until: Option<Instant>,
    /// (succeeded, milliseconds to the response head or the failure).
    recent: VecDeque<(bool, u64)>,
}

/// One provider's health (shared by every request to it).
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

/// What [`Health::view`] shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthView {
    pub circuit: Circuit,
    pub consecutive_failures: u32,
    /// Seconds until an open circuit lets a probe through.
    pub open_for_secs: Option<u64>,
    /// Seconds left of a 429's `Retry-After`.
    pub retry_after_secs: Option<u64>,
    /// Of the last (at most 100) attempts.
    pub recent_attempts: usize,
    pub recent_error_rate: f64,
    pub recent_latency_ms_avg: Option<u64>,
}

impl Health {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::default(),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether a request may go to the provider now; taking the half-open
    /// probe if that is what is left.
    pub fn admit(&self, now: Instant) -> bool {
        let mut s = self.state.lock();
        if s.retry_after_until.is_some_and(|t| now < t) {
            return false;
        }
        match s.open_until {
            None => true,
            Some(t) if now < t => false,
            Some(_) if s.probing => false,
            Some(_) => {
                s.probing = true;
                true
            }
        }
    }

    /// A request got a good answer head after `took`.
    pub fn success(&self, took: Duration) {
        let mut s = self.state.lock();
        s.consecutive = 0;
        s.open_until = None;
        s.probing = false;
        push(&mut s.recent, true, took);
    }

    /// A request failed; returns true when this opened the circuit.
    pub fn failure(&self, now: Instant, took: Duration) -> bool {
        let mut s = self.state.lock();
        s.consecutive += 1;
        push(&mut s.recent, false, took);
        let reopen = s.probing || (s.open_until.is_none() && s.consecutive >= self.threshold);
        if reopen {
            s.open_until = Some(now + self.cooldown);
            s.probing = false;
        }
        reopen
    }

    /// A 429: skip the provider for `retry_after` (capped), or not at all
    /// when it did not say.
    pub fn rate_limited(&self, now: Instant, retry_after: Option<Duration>, took: Duration) {
        let mut s = self.state.lock();
        push(&mut s.recent, false, took);
        if let Some(d) = retry_after {
            s.retry_after_until = Some(now + d.min(MAX_RETRY_AFTER));
        }
    }

    /// Seconds until a 429's cool-down ends, if one is running.
    pub fn retry_after_left(&self, now: Instant) -> Option<Duration> {
        let s = self.state.lock();
        s.retry_after_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    pub fn circuit(&self, now: Instant) -> Circuit {
        let s = self.state.lock();
        circuit_of(&s, now)
    }

    pub fn view(&self, now: Instant) -> HealthView {
        let s = self.state.lock();
        let n = s.recent.len();
        let errors = s.recent.iter().filter(|(ok, _)| !ok).count();
        let ceil = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        HealthView {
            circuit: circuit_of(&s, now),
            consecutive_failures: s.consecutive,
            open_for_secs: s
                .open_until
                .and_then(|t| t.checked_duration_since(now))
                .map(ceil),
            retry_after_secs: s
                .retry_after_until
                .and_then(|t| t.checked_duration_since(now))
                .map(ceil)
                .filter(|s| *s > 0),
            recent_attempts: n,
            recent_error_rate: if n == 0 {
                0.0
            } else {
                errors as f64 / n as f64
            },
            recent_latency_ms_avg: (n > 0)
                .then(|| s.recent.iter().map(|(_, ms)| ms).sum::<u64>() / n as u64),
        }
    }
}

fn circuit_of(s: &State, now: Instant) -> Circuit {
    match s.open_until {
        None => Circuit::Closed,
        Some(t) if now < t => Circuit::Open,
        Some(_) => Circuit::HalfOpen,
    }
}

fn push(recent: &mut VecDeque<(bool, u64)>, ok: bool, took: Duration) {
    if recent.len() == RECENT {
        recent.pop_front();
    }
    recent.push_back((ok, took.as_millis().try_into().unwrap_or(u64::MAX)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_after_the_threshold_then_one_probe_decides() {
        let h = Health::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(!h.failure(t0, MS));
        assert!(!h.failure(t0, MS));
        assert!(h.admit(t0));
        assert!(h.failure(t0, MS), "the third failure opens it");
        assert_eq!(h.circuit(t0), Circuit::Open);
        assert!(!h.admit(t0 + Duration::from_secs(29)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(h.circuit(later), Circuit::HalfOpen);
        assert!(h.admit(later), "one probe");
        assert!(!h.admit(later), "only one");
        assert!(h.failure(later, MS), "a failed probe opens it again");
        assert!(!h.admit(later + Duration::from_secs(1)));
        let again = later + Duration::from_secs(30);
        assert!(h.admit(again));
        h.success(MS);
        assert_eq!(h.circuit(again), Circuit::Closed);
        assert!(h.admit(again) && h.admit(again));
        let v = h.view(again);
        assert_eq!(v.recent_attempts, 5);
        assert!((v.recent_error_rate - 0.8).abs() < 1e-9);
    }

    #[test]
    fn retry_after_skips_the_provider_for_that_long() {
        let h = Health::new(5, Duration::from_secs(30));
        let t0 = Instant::now();
        h.rate_limited(t0, Some(Duration::from_secs(2)), MS);
        assert!(!h.admit(t0 + Duration::from_secs(1)));
        assert_eq!(h.view(t0).retry_after_secs, Some(2));
        assert!(h.admit(t0 + Duration::from_secs(2)));
        assert_eq!(h.circuit(t0), Circuit::Closed, "a 429 is not a failure");
        h.rate_limited(t0, None, MS);
        assert!(h.admit(t0 + Duration::from_secs(3)));
    }
}
