//! Per-key rate limits: each key's `rpm` as a GCRA bucket (burst = `rpm`,
//! one request back every `60 s / rpm`), checked right after auth.
//!
//! The local stage is `governor`, keyed by key id, with one keyed limiter per
//! distinct `rpm` (a key's quota is part of its limiter, and keys share a
//! handful of rpm values). With Redis the same GCRA runs in Redis
//! ([`super::cluster`]) so the limit holds across gateways; the local stage
//! still runs first, so a key far over its limit costs no Redis round trip,
//! and it is what answers when Redis is unreachable. The HTTP layer's
//! middleware (`http::limits`) asks and answers.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    Quota, RateLimiter,
};
use parking_lot::RwLock;

type KeyedLimiter = RateLimiter<
    Arc<str>,
    governor::state::keyed::DefaultKeyedStateStore<Arc<str>>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// The outcome of one rate-limit check, with what the headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The key's requests per minute.
    pub limit: u32,
    /// Requests the key could still make at once.
    pub remaining: u32,
    /// Until the key's whole allowance is back (if it makes no more requests).
    pub reset_after: Duration,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

// Names made once: a `&str` name is parsed and checked on every insert,
// and these go on every authenticated response.
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl Decision {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` (unix seconds, rounded up).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let reset = unix_now_f64() + self.reset_after.as_secs_f64();
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from(reset.ceil() as u64));
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The per-process limiter: one governor keyed limiter per rpm value.
#[derive(Default)]
pub struct LocalLimiter {
    by_rpm: RwLock<HashMap<u32, Arc<KeyedLimiter>>>,
}

impl LocalLimiter {
    /// Checks (and on success counts) one request of `key_id` at `rpm`.
    pub fn check(&self, key_id: &Arc<str>, rpm: u32) -> Decision {
        let rpm = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
        let limiter = self.limiter(rpm);
        let period = Duration::from_secs(60) / rpm.get();
        match limiter.check_key(key_id) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: rpm.get(),
                    remaining,
                    reset_after: period * (rpm.get() - remaining.min(rpm.get())),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                Decision {
                    allowed: false,
                    limit: rpm.get(),
                    remaining: 0,
                    reset_after: wait + period * (rpm.get() - 1),
                    retry_after: wait,
                }
            }
        }
    }

    fn limiter(&self, rpm: NonZeroU32) -> Arc<KeyedLimiter> {
        if let Some(l) = self.by_rpm.read().get(&rpm.get()) {
            return l.clone();
        }
        let mut map = self.by_rpm.write();
        map.entry(rpm.get())
            .or_insert_with(|| {
                Arc::new(
                    RateLimiter::dashmap(Quota::per_minute(rpm))
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }

    /// Forgets keys whose buckets are full again (they would be allowed their
    /// whole burst anyway), and limiters left with no key: memory follows
    /// the keys active in the last minute, not every key ever seen.
    pub fn cleanup(&self) {
        let mut map = self.by_rpm.write();
        map.retain(|_, l| {
            l.retain_recent();
            l.shrink_to_fit();
            !l.is_empty()
        });
    }

    /// Keys currently tracked (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.by_rpm.read().values().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_rpm_at_once_then_waits_one_period() {
        let l = LocalLimiter::default();
        let k: Arc<str> = "key-a".into();
        for i in 0..10 {
            let d = l.check(&k, 10);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let d = l.check(&k, 10);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // One request comes back every 6 s.
        assert!(d.retry_after > Duration::from_secs(5) && d.retry_after <= Duration::from_secs(6));
        assert_eq!(d.retry_after_secs(), 6);
        // Another key is not affected; nor is the same id at another rpm class.
        assert!(l.check(&"key-b".into(), 10).allowed);
    }

    #[test]
    fn cleanup_forgets_full_buckets_only() {
        let l = LocalLimiter::default();
        for i in 0..100 {
            l.check(&format!("key-{i}").into(), 1_000_000);
        }
        l.check(&"slow".into(), 1);
        assert_eq!(l.tracked_keys(), 101);
        // A real wait: governor's clock is not tokio's, so time cannot be paused.
        std::thread::sleep(Duration::from_millis(5));
        l.cleanup();
        // The 1M-rpm buckets refilled within microseconds; the 1-rpm one did not.
        assert_eq!(l.tracked_keys(), 1);
        assert!(!l.check(&"slow".into(), 1).allowed);
    }
}
