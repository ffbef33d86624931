//! Webhook subscriptions and their deliveries, as the store keeps them
//! (the sending side is [`crate::webhooks`]).
//!
//! A subscription's signing secret is stored sealed (encrypted under the
//! server key, [`crate::webhooks::secret`]); the store never sees it in
//! the clear. A delivery is one event for one subscription: it is queued
//! (`pending`, with `next_attempt_at`), claimed by one gateway at a time
//! (`claimed_by` until `claimed_until`, so gateways sharing a PostgreSQL
//! store never send the same attempt twice and a crashed claimer's rows
//! come back), and ends `delivered` or `failed`. Times the queue compares
//! are Unix milliseconds; the ones clients read are RFC 3339 text.

use serde::{Deserialize, Serialize};

/// Attempts kept in a delivery's history (the oldest are dropped).
pub const MAX_HISTORY: usize = 30;

/// A subscription as stored (its secret sealed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookRecord {
    pub id: String,
    pub account_id: String,
    pub url: String,
    /// Event types, e.g. `run.completed`.
    pub events: Vec<String>,
    /// Only events of this agent (events of no agent are never sent to a
    /// filtered subscription); `None`: every agent.
    pub agent_id: Option<String>,
    pub description: String,
    /// The signing secret sealed under the server key (never shown).
    pub sealed_secret: String,
    pub created_at: String,
    pub updated_at: String,
    /// `enabled`, or `disabled` once a receiver answered 410 Gone (nothing
    /// is queued for it any more).
    #[serde(default = "enabled")]
    pub status: String,
}

fn enabled() -> String {
    ENABLED.to_owned()
}

/// The status of a subscription that gets deliveries.
pub const ENABLED: &str = "enabled";

/// What `PATCH /v1/webhooks/{id}` may change; `None` keeps the value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)` removes the filter.
    pub agent_id: Option<Option<String>>,
    pub description: Option<String>,
}

/// One event to queue for every matching subscription of its account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewWebhookEvent {
    pub account_id: String,
    /// The `webhook-id` every delivery of this event is sent with.
    pub message_id: String,
    pub event_type: String,
    pub agent_id: Option<String>,
    /// The JSON body sent, exactly.
    pub payload: String,
    /// Unix ms: the first attempt is due now.
    pub now_ms: i64,
    /// Unix ms after which no attempt is made (the retry window).
    pub expires_ms: i64,
}

/// The state of a delivery.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// One attempt to send a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    /// When the request was sent (RFC 3339).
    pub at: String,
    /// The receiver's HTTP status; null when no response came.
    pub status_code: Option<u16>,
    /// The start of the response body (at most 1 KiB, lossy UTF-8).
    pub response_excerpt: Option<String>,
    /// Why the attempt failed (connection refused, timeout, a refused
    /// address, a non-2xx status); null when it succeeded.
    pub error: Option<String>,
    /// How long the attempt took, in milliseconds.
    pub duration_ms: u64,
}

/// A delivery as `GET /v1/webhooks/{id}/deliveries` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: String,
    /// The `webhook-id` header: the same on every attempt (de-duplicate on it).
    pub message_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// Unix ms of the next attempt; `None` once delivered or failed.
    pub next_attempt_ms: Option<i64>,
    /// Unix ms after which no further attempt is made.
    pub expires_ms: i64,
    pub history: Vec<DeliveryAttempt>,
    pub payload: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A delivery claimed for sending, with what sending needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DueDelivery {
    pub delivery: DeliveryRecord,
    pub url: String,
    pub sealed_secret: String,
}

/// What one attempt led to, as the claimer records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptOutcome {
    pub delivery_id: String,
    /// The claimer (only its claim may record).
    pub claimed_by: String,
    pub attempt: DeliveryAttempt,
    /// Delivered, failed for good, or pending again.
    pub status: DeliveryStatus,
    /// Unix ms of the next attempt when pending.
    pub next_attempt_ms: Option<i64>,
    /// The receiver answered 410 Gone: the subscription is disabled and its
    /// other pending deliveries fail with this one.
    #[serde(default)]
    pub gone: bool,
}

/// The history with `attempt` appended, the oldest dropped past [`MAX_HISTORY`].
pub fn append_history(
    mut history: Vec<DeliveryAttempt>,
    attempt: DeliveryAttempt,
) -> Vec<DeliveryAttempt> {
    history.push(attempt);
    let extra = history.len().saturating_sub(MAX_HISTORY);
    history.drain(..extra);
    history
}

/// The `LIKE` pattern that finds `event_type` in a stored JSON array of
/// event types (the types are fixed names without `%`, `_` or quotes).
pub fn events_pattern(event_type: &str) -> String {
    format!("%\"{event_type}\"%")
}

impl WebhookPatch {
    /// Applies the patch to `hook`, stamping `updated_at`.
    pub fn apply(self, hook: &mut WebhookRecord, now: &str) {
        if let Some(url) = self.url {
            hook.url = url;
        }
        if let Some(events) = self.events {
            hook.events = events;
        }
        if let Some(agent_id) = self.agent_id {
            hook.agent_id = agent_id;
        }
        if let Some(description) = self.description {
            hook.description = description;
        }
        hook.updated_at = now.to_owned();
    }
}
