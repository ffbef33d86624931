//! [`Notifier`]: how the rest of weir announces an event. `notify` builds
//! the payload and puts it on a bounded channel, nothing more, so the run
//! or the request that calls it never waits for the store or a receiver.
//! One background task writes each event to the store (one delivery per
//! matching subscription, [`crate::store::Store::enqueue_webhook_events`],
//! up to 256 events per transaction)
//! and wakes this process's delivery loop. When the channel is full (the
//! store is down for long), new events are dropped and counted, rather than
//! letting memory grow or a run slow down.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use super::events::{payload, WebhookEvent};
use crate::{
    domain::AgentId,
    store::{NewWebhookEvent, Store},
};

/// Events waiting to be written to the store.
const QUEUE: usize = 4096;

enum Msg {
    Event(Box<NewWebhookEvent>),
    Flush(oneshot::Sender<()>),
}

/// Queues webhook events (cheap to clone).
#[derive(Clone)]
pub struct Notifier {
    /// `None`: webhooks are off ([`Notifier::disabled`]: a test state
    /// without them; every store, a remote one included, has them).
    tx: Option<mpsc::Sender<Msg>>,
    window: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    /// Starts the task that writes queued events to `store`, waking
    /// `wake` (the delivery loop) after each one that found a subscriber.
    /// Deliveries are retried for `window` after the event.
    pub fn start(store: Arc<dyn Store>, wake: Arc<Notify>, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(store, wake, rx));
        Self {
            tx: Some(tx),
            window,
        }
    }

    /// A notifier that drops every event (a store without webhooks).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            window: Duration::ZERO,
        }
    }

    /// Queues `event` of `account` (with the agent it concerns, for
    /// subscriptions filtered on one) for every subscription that wants it.
    /// Never waits.
    pub fn notify(
        &self,
        account: &str,
        event: WebhookEvent,
        agent_id: Option<&AgentId>,
        data: Value,
    ) {
        let Some(tx) = &self.tx else {
            return;
        };
        let now = time::OffsetDateTime::now_utc();
        let now_ms = unix_ms(now);
        let body = payload(event, &crate::util::format_millis(now), data);
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let row = NewWebhookEvent {
            account_id: account.to_owned(),
            message_id: crate::util::new_id("msg"),
            event_type: event.as_str().to_owned(),
            agent_id: agent_id.map(|a| a.as_str().to_owned()),
            payload: body.to_string(),
            now_ms,
            expires_ms: now_ms.saturating_add(window_ms),
        };
        if tx.try_send(Msg::Event(Box::new(row))).is_err() {
            metrics::counter!("weir_webhook_events_dropped_total").increment(1);
            tracing::warn!(event = event.as_str(), "webhook queue full: event dropped");
        }
    }

    /// Waits (at most `timeout`) until every event queued so far is in the
    /// store, so a gateway that stops loses none it had accepted.
    pub async fn flush(&self, timeout: Duration) {
        let Some(tx) = &self.tx else {
            return;
        };
        let (done, wait) = oneshot::channel();
        let flushed = async {
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            tracing::warn!("webhook events not all stored before shutdown");
        }
    }
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Events written in one store call (one transaction) at most.
const BATCH: usize = 256;

/// The writer: what is queued, in batches of up to [`BATCH`] events per
/// store call, retried while the store is down; a flush is answered once
/// everything queued before it is written.
async fn write_events(store: Arc<dyn Store>, wake: Arc<Notify>, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut msgs, BATCH).await > 0 {
        let mut rows = Vec::new();
        let mut flushes = Vec::new();
        for msg in msgs.drain(..) {
            match msg {
                Msg::Event(row) => rows.push(*row),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        if !rows.is_empty() {
            write_batch(store.as_ref(), &wake, rows).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// One batch, tried a few times over about 20 s before it is given up.
async fn write_batch(store: &dyn Store, wake: &Notify, rows: Vec<NewWebhookEvent>) {
    for delay_ms in [0u64, 200, 1000, 5000, 15000] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        match store.enqueue_webhook_events(rows.clone()).await {
            Ok(0) => return,
            Ok(_) => return wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, events = rows.len(), "could not queue webhook events")
            }
        }
    }
    metrics::counter!("weir_webhook_events_dropped_total").increment(rows.len() as u64);
}
