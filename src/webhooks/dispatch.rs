//! The delivery loop: every gateway runs one. It claims due deliveries
//! from the store (a lease, so gateways sharing a PostgreSQL store never
//! send one attempt twice and a crashed gateway's claims expire), sends
//! each through the egress guard, signed, and records the attempt: 2xx is
//! delivered; anything else is retried after an exponentially growing,
//! jittered wait, until the retry window closes and the delivery is failed.
//! Nothing here runs on a run's or a stream's path.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{notifier::unix_ms, secret::ServerKey, sign::signature};
use crate::{
    agent::tools::egress::Webhooks,
    store::{
        webhooks::{DeliveryAttempt, DeliveryStatus},
        AttemptOutcome, DueDelivery, Store,
    },
};

/// How long a receiver may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds: longer than an attempt can take.
const LEASE: Duration = Duration::from_secs(60);
/// How often the store is polled when nothing woke the loop.
const POLL: Duration = Duration::from_millis(500);
/// Deliveries claimed at once, and sent at once.
const BATCH: u32 = 32;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Bytes of a response body kept in the attempt's record.
pub const EXCERPT: usize = 1024;

/// What the loop needs.
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub key: ServerKey,
    pub http: Webhooks,
    /// Wait before the second attempt; doubled for each later one.
    pub retry_base: Duration,
    /// This process's name in claims.
    pub name: String,
    /// Rung when an event was queued here.
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    /// Runs until `stop`: claims what is due, sends it, sleeps.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let due = match this.claim().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim webhook deliveries");
                    Vec::new()
                }
            };
            let full = due.len() == BATCH as usize;
            futures::stream::iter(due)
                .for_each_concurrent(None, |d| {
                    let this = this.clone();
                    async move { this.deliver(d).await }
                })
                .await;
            if full {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = this.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn claim(&self) -> crate::store::StoreResult<Vec<DueDelivery>> {
        let now = unix_ms(time::OffsetDateTime::now_utc());
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        self.store
            .claim_webhook_deliveries(&self.name, now, lease, BATCH)
            .await
    }

    /// One attempt, recorded.
    async fn deliver(&self, due: DueDelivery) {
        let at = crate::util::now();
        let started = Instant::now();
        let (status_code, excerpt, error) = match self.send(&due).await {
            Ok((code, excerpt)) if (200..300).contains(&code) => (Some(code), excerpt, None),
            Ok((code, excerpt)) => (
                Some(code),
                excerpt,
                Some(format!("receiver answered {code}")),
            ),
            Err(e) => (None, None, Some(e)),
        };
        let attempt = DeliveryAttempt {
            at,
            status_code,
            response_excerpt: excerpt,
            error: error.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let d = &due.delivery;
        // 410 Gone: the receiver says the endpoint will not come back
        // (Standard Webhooks): no more attempts, and the subscription is
        // disabled by the same store write.
        let gone = status_code == Some(410);
        let (status, next) = match error {
            None => (DeliveryStatus::Delivered, None),
            Some(_) if gone => (DeliveryStatus::Failed, None),
            Some(_) => self.next_attempt(d.attempts + 1, d.expires_ms),
        };
        if gone {
            tracing::warn!(webhook_id = %d.webhook_id, "receiver answered 410 Gone: subscription disabled");
        }
        metrics::counter!("weir_webhook_attempts_total", "outcome" => status.as_str()).increment(1);
        let outcome = AttemptOutcome {
            delivery_id: d.id.clone(),
            claimed_by: self.name.clone(),
            attempt,
            status,
            next_attempt_ms: next,
            gone,
        };
        if let Err(e) = self.store.record_webhook_attempt(outcome).await {
            // The claim runs out and the attempt is made again: at least once.
            tracing::warn!(error = %e, delivery = %d.id, "could not record a webhook attempt");
        }
    }

    /// Pending again after `attempts` attempts, or failed when the next
    /// one would fall past `expires_ms`.
    fn next_attempt(&self, attempts: u32, expires_ms: i64) -> (DeliveryStatus, Option<i64>) {
        let wait = backoff(
            self.retry_base,
            attempts,
            rand::rng().random_range(0.8..1.2),
        );
        let next = unix_ms(time::OffsetDateTime::now_utc())
            .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        match next > expires_ms {
            true => (DeliveryStatus::Failed, None),
            false => (DeliveryStatus::Pending, Some(next)),
        }
    }

    /// Sends the delivery: the status and the start of the body, or why
    /// no answer came.
    async fn send(&self, due: &DueDelivery) -> Result<(u16, Option<String>), String> {
        let d = &due.delivery;
        let url = reqwest::Url::parse(&due.url).map_err(|e| format!("invalid URL: {e}"))?;
        self.http.check(&url)?;
        let secret = self.key.open(&d.webhook_id, &due.sealed_secret)?;
        let key = super::secret::secret_key(&secret)?;
        let ts = crate::util::unix_now();
        let sig = signature(&key, &d.message_id, ts, d.payload.as_bytes());
        let resp = self
            .http
            .client
            .post(url)
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("weir-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &d.message_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(d.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let code = resp.status().as_u16();
        Ok((code, excerpt(resp).await))
    }
}

/// The wait after `attempts` failed attempts: `base`, doubled for each
/// attempt after the first, at most [`MAX_BACKOFF`], times `jitter`.
pub fn backoff(base: Duration, attempts: u32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let wait = base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF);
    wait.mul_f64(jitter)
}

/// At most [`EXCERPT`] bytes of the body, lossy UTF-8 (none if empty).
async fn excerpt(resp: reqwest::Response) -> Option<String> {
    let mut body = resp.bytes_stream();
    let mut kept = Vec::new();
    while kept.len() < EXCERPT {
        match tokio::time::timeout(TIMEOUT, body.next()).await {
            Ok(Some(Ok(chunk))) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(EXCERPT);
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
}

/// Why a request failed, with its causes (the refused address, the
/// connection refused, the timeout).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", crate::store::postgres::with_causes(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(base, 2, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(base, 3, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
        assert!(
            backoff(base, 1, 1.2) <= Duration::from_secs(6),
            "second attempt within 10 s"
        );
    }
}
