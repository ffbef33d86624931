//! The delivery loop: every gateway runs one. It claims due deliveries
//! from the store (a lease, so gateways sharing a PostgreSQL store never
//! send one attempt twice and a crashed gateway's claims expire), sends
//! each through the egress guard, signed, and records the attempt: 2xx is
//! delivered; anything else is retried after an exponentially growing,
//! jittered wait, until the retry window closes and the delivery is failed.
//! Nothing here runs on a run's or a stream's path.
//!
//! Deliveries are pipelined: each is sent as soon as it is claimed, up to
//! [`IN_FLIGHT`] at once and [`PER_ENDPOINT`] at once per subscription,
//! and a new claim is made as soon as there is room while a backlog
//! remains. A receiver that hangs (up to [`TIMEOUT`]) therefore delays
//! only its own deliveries; before, the loop waited for a whole batch,
//! so one hanging receiver held back every other subscription's
//! deliveries for up to 10 s. One subscription never takes more than
//! [`ENDPOINT_SLOTS`] of the slots; its deliveries beyond that (and those
//! that waited [`QUEUE_WAIT`] for their turn) are left unsent, and their
//! claim's lease runs out and they are claimed again later.
//!
//! The loop sleeps whenever no backlog is known: it claims again when a
//! delivery was queued here ([`Dispatcher::wake`]), every [`POLL`], or
//! when the last claim came back full. A completion alone does not make
//! it claim: with nothing due that would be a store write per finished
//! delivery, and a loop that claims whenever it has room and nothing is
//! in flight spins, a claim (a write transaction on the store's one
//! writer) after another, starving every other write.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use rand::Rng;
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};
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
/// Deliveries claimed at once (at most).
const BATCH: usize = 32;
/// Deliveries in flight at once (sending, or waiting for their endpoint).
pub const IN_FLIGHT: usize = 256;
/// Deliveries of one subscription sent at once.
pub const PER_ENDPOINT: usize = 8;
/// Slots one subscription may hold (sending and waiting).
const ENDPOINT_SLOTS: usize = IN_FLIGHT / 4;
/// How long a claimed delivery waits for its subscription's turn: its
/// attempt (at most [`TIMEOUT`] and the answer's excerpt) must still end
/// within the claim's [`LEASE`].
const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Attempts' records written to the store at once. The store has one
/// writer (SQLite): hundreds of attempts ending together would queue
/// hundreds of writes ahead of every API write (schemathesis's mutations
/// timed out behind a backlog of failing deliveries); this keeps the
/// delivery loop's share of the writer small, whatever is in flight.
const RECORD_WRITES: usize = 2;
/// Least room worth a claim while deliveries are in flight: with a
/// backlog, one claim per finished delivery would be a write per delivery.
const CLAIM_MIN: usize = BATCH / 4;
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
    /// Runs until `stop`: claims what is due while there is room, sends
    /// each as it comes, sleeps while nothing is known to be due. On
    /// `stop`, attempts under way finish (and are recorded); deliveries
    /// still waiting for their turn are left to their lease.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        // Each attempt is a task of its own, not a future polled by this
        // loop: while the loop awaits a claim (a store write) it polls
        // nothing else, and an attempt stuck there midway through its own
        // record write would hold the store's one writer against the claim
        // (and every API write) until a timeout broke it.
        let mut sending = JoinSet::new();
        let mut endpoints: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let records = Arc::new(Semaphore::new(RECORD_WRITES));
        let mut due_maybe = true;
        let mut next_poll = tokio::time::Instant::now() + POLL;
        loop {
            let room = IN_FLIGHT - sending.len();
            if due_maybe && room > 0 && (room >= CLAIM_MIN || sending.is_empty()) {
                let due = this.claim(room.min(BATCH)).await;
                // A full claim: more may be due now.
                due_maybe = due.len() == room.min(BATCH);
                for d in due {
                    let gate = endpoints
                        .entry(d.delivery.webhook_id.clone())
                        .or_insert_with(|| Arc::new(Semaphore::new(PER_ENDPOINT)));
                    // The map holds one count; each delivery in flight one.
                    if Arc::strong_count(gate) > ENDPOINT_SLOTS {
                        continue;
                    }
                    let (this, gate, stop) = (this.clone(), gate.clone(), stop.clone());
                    let records = records.clone();
                    sending
                        .spawn(async move { this.deliver_in_turn(d, gate, &records, stop).await });
                }
                if due_maybe && sending.len() < IN_FLIGHT {
                    continue;
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(done) = sending.join_next(), if !sending.is_empty() => {
                    if let Ok(webhook) = done {
                        if endpoints.get(&webhook).is_some_and(|g| Arc::strong_count(g) == 1) {
                            endpoints.remove(&webhook);
                        }
                    }
                }
                () = this.wake.notified() => due_maybe = true,
                () = tokio::time::sleep_until(next_poll) => {
                    due_maybe = true;
                    next_poll = tokio::time::Instant::now() + POLL;
                }
            }
        }
        while sending.join_next().await.is_some() {}
    }

    /// Up to `limit` due deliveries, now claimed by this process (none
    /// when the store fails: the next poll tries again).
    async fn claim(&self, limit: usize) -> Vec<DueDelivery> {
        let now = unix_ms(time::OffsetDateTime::now_utc());
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        match self
            .store
            .claim_webhook_deliveries(&self.name, now, lease, limit)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim webhook deliveries");
                Vec::new()
            }
        }
    }

    /// Waits for one of the subscription's [`PER_ENDPOINT`] turns, then
    /// makes the attempt; gives up unsent (the claim runs out, the
    /// delivery is claimed again) after [`QUEUE_WAIT`] or on `stop`.
    /// Returns the subscription's id.
    async fn deliver_in_turn(
        &self,
        due: DueDelivery,
        gate: Arc<Semaphore>,
        records: &Semaphore,
        stop: CancellationToken,
    ) -> String {
        let webhook = due.delivery.webhook_id.clone();
        let turn = tokio::select! {
            turn = tokio::time::timeout(QUEUE_WAIT, gate.acquire()) => turn.ok().and_then(Result::ok),
            () = stop.cancelled() => None,
        };
        match turn {
            Some(_turn) => self.deliver(due, records).await,
            None => {
                tracing::debug!(webhook_id = %webhook, "webhook delivery left to its lease: the endpoint is busy")
            }
        }
        webhook
    }

    /// One attempt, recorded (one of [`RECORD_WRITES`] writes at a time).
    async fn deliver(&self, due: DueDelivery, records: &Semaphore) {
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
        let _write = records.acquire().await;
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
