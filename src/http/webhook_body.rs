//! The bodies and views of `/v1/webhooks` (protocol/webhooks.md): what a
//! client sends, how it is checked, and what it is shown (never the
//! sealed secret; the secret itself only in the answer to `POST`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::{
    openapi::{schema::Schema, RefOr},
    ToSchema,
};

use super::errors::ApiError;
use crate::{
    domain::schema::schema_json,
    store::{webhooks::DeliveryAttempt, DeliveryRecord, WebhookRecord},
    webhooks::WebhookEvent,
};

/// Longest `url`.
const MAX_URL: usize = 2048;
/// Longest `description`, in characters.
const MAX_DESCRIPTION: usize = 1024;

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: an http(s) URL.
    #[schema(schema_with = url_schema)]
    pub url: String,
    /// The event types wanted (at least one, no repeats).
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    /// Only events of this agent (`agent-…`). Absent or null: every agent's, and events of no agent.
    #[schema(schema_with = agent_or_null_schema)]
    pub agent_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
}

/// Body of `PATCH /v1/webhooks/{id}`: only the fields given change;
/// `agent_id: null` removes the filter. The secret never changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[schema(schema_with = url_schema)]
    pub url: Option<String>,
    #[schema(schema_with = events_schema)]
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = agent_or_null_schema)]
    pub agent_id: Option<Option<String>>,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

/// A field that may be given as `null` (`Some(None)`) or left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    #[schema(pattern = "^wh-[A-Za-z0-9]{1,64}$")]
    pub id: String,
    pub url: String,
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    #[schema(schema_with = agent_or_null_schema, required = true)]
    pub agent_id: Option<String>,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    /// `enabled`; `disabled` once a receiver answered 410 Gone (nothing is
    /// sent to it any more; delete it and subscribe again).
    #[schema(schema_with = status_schema)]
    pub status: String,
}

/// The answer of `POST /v1/webhooks`: the subscription and its signing
/// secret, shown this once.
/// (The fields are spelled out rather than flattened: a flattened schema
/// would be `allOf` with a closed [`Webhook`], which no object matches.)
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedWebhook {
    #[schema(pattern = "^wh-[A-Za-z0-9]{1,64}$")]
    pub id: String,
    pub url: String,
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    #[schema(schema_with = agent_or_null_schema, required = true)]
    pub agent_id: Option<String>,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    #[schema(schema_with = status_schema)]
    pub status: String,
    /// `whsec_` and the base64 of 32 random bytes: the HMAC key is the decoded base64.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    pub secret: String,
}

impl CreatedWebhook {
    /// The subscription with its secret, for the one answer that shows it.
    pub fn new(h: WebhookRecord, secret: String) -> Self {
        Self {
            id: h.id,
            url: h.url,
            events: h.events,
            agent_id: h.agent_id,
            description: h.description,
            created_at: h.created_at,
            updated_at: h.updated_at,
            status: h.status,
            secret,
        }
    }
}

/// One delivery of an event to a subscription, with its attempts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    #[schema(pattern = "^dlv-[A-Za-z0-9]{1,64}$")]
    pub id: String,
    pub webhook_id: String,
    /// The `webhook-id` header: the same on every attempt; de-duplicate on it.
    pub message_id: String,
    pub event_type: String,
    /// `pending` (queued or waiting for a retry), `delivered` (a 2xx came back) or `failed` (the retry window closed).
    #[schema(schema_with = delivery_status_schema)]
    pub status: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due; null once delivered or failed.
    #[schema(required = true)]
    pub next_attempt_at: Option<String>,
    /// After this no further attempt is made.
    pub retry_until: String,
    /// The last attempts (at most 30), oldest first.
    pub history: Vec<DeliveryAttempt>,
    /// The body sent: `{"type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<WebhookRecord> for Webhook {
    fn from(h: WebhookRecord) -> Self {
        Self {
            id: h.id,
            url: h.url,
            events: h.events,
            agent_id: h.agent_id,
            description: h.description,
            created_at: h.created_at,
            updated_at: h.updated_at,
            status: h.status,
        }
    }
}

impl From<DeliveryRecord> for Delivery {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            message_id: d.message_id,
            event_type: d.event_type,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_ms.map(rfc3339),
            retry_until: rfc3339(d.expires_ms),
            history: d.history,
            payload: serde_json::from_str(&d.payload).unwrap_or(Value::Null),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// Unix milliseconds as the API writes times.
fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::util::format_millis(t)
}

/// Checks a URL: http(s), parseable, not too long. Where it points is
/// checked when it is called (the egress guard), not here.
pub fn check_url(url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_URL {
        return Err(ApiError::validation(format!(
            "url: at most {MAX_URL} bytes"
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| ApiError::validation(format!("url: {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        _ => Err(ApiError::validation("url: must be an http or https URL")),
    }
}

/// Checks the event types: known, at least one, no repeats.
pub fn check_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() {
        return Err(ApiError::validation("events: at least one event type"));
    }
    for (i, e) in events.iter().enumerate() {
        if WebhookEvent::parse(e).is_none() {
            let known: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
            return Err(ApiError::validation(format!(
                "events: unknown event type `{e}` (known: {})",
                known.join(", ")
            )));
        }
        if events[..i].contains(e) {
            return Err(ApiError::validation(format!(
                "events: `{e}` is listed twice"
            )));
        }
    }
    Ok(())
}

/// Checks the shape of an agent filter (`agent-` and 1 to 64 letters or digits).
pub fn check_agent(agent_id: Option<&str>) -> Result<(), ApiError> {
    match agent_id.map(crate::domain::AgentId::parse) {
        Some(Err(e)) => Err(ApiError::validation(format!("agent_id: {e}"))),
        _ => Ok(()),
    }
}

/// Checks the description's length.
pub fn check_description(d: &str) -> Result<(), ApiError> {
    match d.chars().count() > MAX_DESCRIPTION {
        true => Err(ApiError::validation(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        ))),
        false => Ok(()),
    }
}

fn url_schema() -> RefOr<Schema> {
    let pattern = super::openapi::schemas::url_pattern();
    schema_json(json!({"type": "string", "maxLength": MAX_URL, "pattern": pattern}))
}

fn events_schema() -> RefOr<Schema> {
    let names: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
    schema_json(json!({"type": "array", "minItems": 1, "uniqueItems": true,
        "items": {"type": "string", "enum": names}}))
}

fn status_schema() -> RefOr<Schema> {
    schema_json(json!({"type": "string", "enum": ["enabled", "disabled"]}))
}

fn agent_or_null_schema() -> RefOr<Schema> {
    schema_json(json!({"type": ["string", "null"], "pattern": "^agent-[A-Za-z0-9]{1,64}$"}))
}

fn delivery_status_schema() -> RefOr<Schema> {
    schema_json(json!({"type": "string", "enum": ["pending", "delivered", "failed"]}))
}
