//! Records the store keeps, and the shapes used to create, change and list them.
//!
//! These types are the wire format of the REST API *and* of the internal store
//! protocol, so a field renamed here changes both; `account_id` is kept off the
//! public JSON because tenancy is implied by the key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{
    schema::{ref_of, schema_json},
    AgentEvent, AgentId, AgentStatus, ErrorCode, KeyId, MessageType, RunId, RunStatus, SessionId,
    StopReason, Timestamp, ToolId,
};

/// A tenant. Every other record belongs to exactly one account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Account {
    pub id: String,
    pub created_at: String,
    /// Tokens per minute the whole account may spend (all its keys
    /// together); `None`: no account-wide limit. Set by the operator
    /// (`weir accounts set`), never through the API.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day the whole account may spend; `None`: no limit.
    #[serde(default)]
    pub daily_tokens: Option<u64>,
}

/// The operator's account-wide token budgets ([`Account::tpm`],
/// [`Account::daily_tokens`]); `None` clears one.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct AccountLimits {
    pub tpm: Option<u64>,
    pub daily_tokens: Option<u64>,
}

/// The scopes a key may carry. `*` grants all of them.
pub const SCOPES: &[&str] = &[
    "agents:read",
    "agents:write",
    "tools:read",
    "tools:write",
    "chat",
    "logs",
    "keys",
    "audit",
    "usage",
    "webhooks",
    "providers",
    "*",
];

/// Scopes of the deployment's operator: `*` does not include them and
/// only `weir keys create` grants them (`GET /v1/providers`).
pub const OPERATOR_SCOPES: &[&str] = &["providers"];

/// One of [`SCOPES`], as a schema (keys keep scopes as plain strings).
pub struct Scope;

impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema_json(serde_json::json!({"type": "string", "enum": SCOPES}))
    }
}

impl ToSchema for Scope {}

/// A key's scopes: at least one, each one of [`SCOPES`].
pub struct Scopes;

impl utoipa::PartialSchema for Scopes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema_json(serde_json::json!({"type": "array", "minItems": 1, "items": ref_of::<Scope>()}))
    }
}

impl ToSchema for Scopes {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            Scope::name().into_owned(),
            <Scope as utoipa::PartialSchema>::schema(),
        ));
    }
}

// The records below deny unknown fields: their schemas (the REST answers,
// protocol/schemas/) say `additionalProperties: false`, which utoipa
// derives from that attribute only.

/// An API key as stored: the secret itself is never kept, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: KeyId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub account_id: String,
    pub label: String,
    #[schema(value_type = Scopes)]
    pub scopes: Vec<String>,
    /// Requests per minute allowed for this key (POST /v1/keys allows 1 to
    /// 1000000; `weir keys create --rpm` any positive 32-bit number).
    #[schema(minimum = 1, maximum = 4294967295_u32)]
    pub rpm: u32,
    /// Tokens per minute; null: the gateway's default (`WEIR_TPM_PER_KEY`,
    /// unlimited unless set).
    #[serde(default)]
    #[schema(minimum = 1, required = true)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day; null: the gateway's default
    /// (`WEIR_DAILY_TOKENS_PER_KEY`, unlimited unless set).
    #[serde(default)]
    #[schema(minimum = 1, required = true)]
    pub daily_tokens: Option<u64>,
    /// Concurrent runs; null: the gateway's default (`WEIR_MAX_RUNS_PER_KEY`, 16).
    #[serde(default)]
    #[schema(minimum = 1, required = true)]
    pub max_runs: Option<u32>,
    /// Concurrent WebSockets; null: the gateway's default (`WEIR_MAX_WS_PER_KEY`).
    #[serde(default)]
    #[schema(minimum = 1, required = true)]
    pub max_websockets: Option<u32>,
    /// Concurrent SSE streams; null: the gateway's default (`WEIR_MAX_SSE_PER_KEY`).
    #[serde(default)]
    #[schema(minimum = 1, required = true)]
    pub max_sse_streams: Option<u32>,
    /// When the key stops working (401 `key_expired`); null: never.
    #[serde(default)]
    #[schema(value_type = Option<Timestamp>, required = true)]
    pub expires_at: Option<String>,
    /// The models this key may use (relay, agents and their runs); null:
    /// any. `upstream/x` and `x` name the same model.
    #[serde(default)]
    #[schema(required = true)]
    pub models: Option<Vec<String>>,
    /// Hex SHA-256 of the whole secret; stripped before a key leaves the gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub hash: String,
    /// Hex SHA-256 of the secret before the last rotation, accepted until
    /// `prev_until`; internal like `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub prev_hash: Option<String>,
    /// End of the rotation's grace period (RFC 3339); internal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub prev_until: Option<String>,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    /// Recorded in batches (every 5 s and at shutdown), so it may lag a few seconds.
    #[schema(value_type = Option<Timestamp>, required = true)]
    pub last_used_at: Option<String>,
    #[schema(value_type = Option<Timestamp>, required = true)]
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    /// True if the key may use model `name` ([`model_allowed`]).
    pub fn allows_model(&self, name: &str) -> bool {
        model_allowed(self.models.as_deref(), name)
    }

    /// True if the key grants `scope` (directly or through `*`).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == scope || (s == "*" && !OPERATOR_SCOPES.contains(&scope)))
    }

    /// The public view: no hashes, no account id.
    pub fn public(mut self) -> Self {
        self.hash.clear();
        self.account_id.clear();
        self.prev_hash = None;
        self.prev_until = None;
        self
    }

    /// The record of `key` just stored at `created_at`.
    pub fn created(key: NewKey, created_at: String) -> Self {
        Self {
            id: key.id,
            account_id: key.account_id,
            label: key.label,
            scopes: key.scopes,
            rpm: key.rpm,
            tpm: key.tpm,
            daily_tokens: key.daily_tokens,
            max_runs: key.max_runs,
            max_websockets: key.max_websockets,
            max_sse_streams: key.max_sse_streams,
            expires_at: key.expires_at,
            models: key.models,
            hash: key.hash,
            prev_hash: None,
            prev_until: None,
            created_at,
            last_used_at: None,
            revoked_at: None,
        }
    }

    /// The label and limits, as [`KeySettings`].
    pub fn settings(&self) -> KeySettings {
        KeySettings {
            label: self.label.clone(),
            rpm: self.rpm,
            tpm: self.tpm,
            daily_tokens: self.daily_tokens,
            max_runs: self.max_runs,
            max_websockets: self.max_websockets,
            max_sse_streams: self.max_sse_streams,
            models: self.models.clone(),
        }
    }

    /// Replaces the label and limits with `s`.
    pub fn apply(&mut self, s: KeySettings) {
        self.label = s.label;
        self.rpm = s.rpm;
        self.tpm = s.tpm;
        self.daily_tokens = s.daily_tokens;
        self.max_runs = s.max_runs;
        self.max_websockets = s.max_websockets;
        self.max_sse_streams = s.max_sse_streams;
        self.models = s.models;
    }
}

/// Whether a key limited to `models` (`None`: not limited) may use model
/// `name`. Names compare exactly, except that an `upstream/` prefix is
/// ignored on both sides: `upstream/gpt-4o` and `gpt-4o` are one model
/// (the relay's name and the route's or provider's), so a list need not
/// spell both.
pub fn model_allowed(models: Option<&[String]>, name: &str) -> bool {
    fn bare(m: &str) -> &str {
        m.strip_prefix("upstream/").unwrap_or(m)
    }
    let name = bare(name);
    models.is_none_or(|list| list.iter().any(|m| bare(m) == name))
}

/// What the store needs to mint a key; the caller has already hashed the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewKey {
    pub id: KeyId,
    pub account_id: String,
    pub label: String,
    pub scopes: Vec<String>,
    pub rpm: u32,
    pub hash: String,
    /// The limits ([`KeyRecord`]'s fields of the same names; `None`: the
    /// gateway's default). A store process that predates them reads none.
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub daily_tokens: Option<u64>,
    #[serde(default)]
    pub max_runs: Option<u32>,
    #[serde(default)]
    pub max_websockets: Option<u32>,
    #[serde(default)]
    pub max_sse_streams: Option<u32>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A key's label and limits as a whole, as `PATCH /v1/keys/{id}` leaves
/// them (the HTTP layer applies the patch to the current record, so the
/// store replaces them all at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySettings {
    pub label: String,
    pub rpm: u32,
    pub tpm: Option<u64>,
    pub daily_tokens: Option<u64>,
    pub max_runs: Option<u32>,
    pub max_websockets: Option<u32>,
    pub max_sse_streams: Option<u32>,
    /// The models the key may use; `None`: any. A store process that
    /// predates the field reads none.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A rotation: the new secret's hash, and until when the current one keeps
/// working (`None`: it stops at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotation {
    pub hash: String,
    pub prev_until: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: AgentId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub account_id: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `echo` (built in, offline) or `upstream/<model>` (the configured
    /// OpenAI-compatible provider).
    #[schema(pattern = r"^(echo|upstream/[\s\S]+)$")]
    pub model: String,
    /// System prompt; empty string when none.
    pub system: String,
    /// Tool ids (`tool-…`, of this account) or built-in tool names
    /// (`get_time`, `calculator`; other names of `[A-Za-z0-9_]{1,64}` are
    /// accepted and skipped with a log warning when a run cannot resolve them).
    #[schema(schema_with = agent_tools)]
    pub tools: Vec<String>,
    #[schema(schema_with = agent_tags)]
    pub tags: Vec<String>,
    /// Free-form object. Keys the runtime reads: `echo_delay_ms` (integer,
    /// the echo model sleeps this long before each token), `max_steps`
    /// (integer, 1 to 100, overrides the gateway's default of 10).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Built-in tools (`get_time`, `calculator`) whose every call waits for
    /// a person's approval. Tools of the account say so themselves
    /// (`requires_approval`).
    #[serde(default)]
    #[schema(schema_with = agent_approval_required)]
    pub approval_required: Vec<String>,
    /// A `stopped` agent refuses messages with 409 agent_stopped.
    pub status: AgentStatus,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    #[schema(value_type = Timestamp)]
    pub updated_at: String,
}

fn agent_tools() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema_json(serde_json::json!({"type": "array", "maxItems": 64,
        "items": {"type": "string", "pattern": "^(tool-[A-Za-z0-9]+|[A-Za-z0-9_]{1,64})$"}}))
}

fn agent_approval_required() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema_json(
        serde_json::json!({"type": "array", "maxItems": 64, "uniqueItems": true,
        "items": {"type": "string", "enum": crate::domain::BUILTIN_TOOLS}}),
    )
}

fn agent_tags() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema_json(serde_json::json!({"type": "array", "maxItems": 32,
        "items": {"type": "string", "minLength": 1, "maxLength": 64}}))
}

/// A validated new agent (defaults already applied by the HTTP layer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAgent {
    pub name: String,
    pub model: String,
    pub system: String,
    pub tools: Vec<String>,
    pub tags: Vec<String>,
    pub metadata: Value,
    #[serde(default)]
    pub approval_required: Vec<String>,
}

/// A partial update; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub model: Option<String>,
    pub system: Option<String>,
    pub tools: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Value>,
    pub status: Option<AgentStatus>,
    #[serde(default)]
    pub approval_required: Option<Vec<String>>,
}

/// Its schema is written by hand ([`super::schemas`]): `url` goes with `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub id: ToolId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account_id: String,
    pub name: String,
    pub description: String,
    pub json_schema: Value,
    /// `builtin` or `webhook`.
    pub kind: String,
    pub url: Option<String>,
    /// Every call of it waits for a person's approval.
    #[serde(default)]
    pub requires_approval: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTool {
    pub name: String,
    pub description: String,
    pub json_schema: Value,
    pub kind: String,
    pub url: Option<String>,
    #[serde(default)]
    pub requires_approval: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub id: SessionId,
    pub agent_id: AgentId,
    /// Trimmed; may be empty.
    #[schema(max_length = 200)]
    pub name: String,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
}

/// Its schema is written by hand ([`super::schemas`]): `stop_reason` goes
/// with `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub id: RunId,
    pub agent_id: AgentId,
    pub session_id: SessionId,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub status: RunStatus,
    pub stop_reason: Option<StopReason>,
    pub error: Option<String>,
    /// The code of the run's `error` event when it failed; `None` for a
    /// run that did not fail (or failed before codes were stored). Read as
    /// `None` from a store process that predates the field, and a code this
    /// build does not know (a newer gateway's, during a rolling upgrade)
    /// reads as `None` rather than failing the read ([`lenient_code`]).
    #[serde(default, deserialize_with = "deserialize_lenient_code")]
    pub error_code: Option<ErrorCode>,
    pub created_at: String,
    pub updated_at: String,
}

/// A stored error code, or `None` for one this build does not know: a
/// newer gateway sharing the store may write codes an older one lacks, and
/// one unknown code must not fail a read of the run (or a whole page).
pub fn lenient_code(code: Option<String>) -> Option<ErrorCode> {
    let code = code?;
    match code.parse() {
        Ok(c) => Some(c),
        Err(_) => {
            tracing::warn!(code = %code, "a run's error code unknown to this build; read as null");
            None
        }
    }
}

fn deserialize_lenient_code<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ErrorCode>, D::Error> {
    Ok(lenient_code(Option::<String>::deserialize(d)?))
}

/// One agent event as persisted: the indexed columns plus the full event
/// exactly as it was published (so history replays byte-for-byte).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub agent_id: AgentId,
    pub seq: u64,
    pub run_id: RunId,
    pub session_id: SessionId,
    pub message_type: MessageType,
    /// The complete event (`id`, `seq`, `date`, `message_type`, …).
    pub event: AgentEvent,
}

impl EventRecord {
    /// The record of `event` published as `seq`, its columns taken from the
    /// event itself. `None` for a log line: it has no session (see [`LogRecord`]).
    pub fn new(seq: u64, mut event: AgentEvent) -> Option<Self> {
        event.seq = Some(seq);
        Some(Self {
            agent_id: event.agent_id.clone(),
            seq,
            run_id: event.run_id.clone(),
            session_id: event.session_id.clone()?,
            message_type: event.message_type(),
            event,
        })
    }
}

/// Narrows [`crate::store::Store::list_events`]; `None` matches everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventFilter {
    pub session_id: Option<SessionId>,
    pub run_id: Option<RunId>,
    /// Only events whose `message_type` is one of these. A run's history
    /// load asks for the messages alone: token deltas are most of a
    /// session's events and none of its conversation. A store process that
    /// predates the field ignores it and returns every type, so callers
    /// still match on `message_type` themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_types: Option<Vec<MessageType>>,
}

/// One log line of an agent's log stream, numbered by its own `seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    pub agent_id: AgentId,
    pub seq: u64,
    /// The complete log event (`message_type: "log"`, `level`, …).
    pub event: AgentEvent,
}

impl LogRecord {
    /// The record of log line `event` published as `seq`.
    pub fn new(seq: u64, mut event: AgentEvent) -> Self {
        event.seq = Some(seq);
        Self {
            agent_id: event.agent_id.clone(),
            seq,
            event,
        }
    }
}

/// A tool call that needs a person's approval, and the parked run's state
/// to go on with once it is decided (`state`: the runtime's, opaque here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    /// `appr-…`.
    pub id: String,
    pub account_id: String,
    pub run_id: RunId,
    pub agent_id: AgentId,
    pub tool: String,
    pub arguments: Value,
    pub state: Value,
    /// `pending`, then `approve`, `deny` or `expired` ([`crate::domain::ApprovalDecision`]).
    pub status: String,
    pub expires_at: String,
    /// The key that decided (none when it expired).
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// A decision to record on a pending [`Approval`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalVerdict {
    pub decision: crate::domain::ApprovalDecision,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
}

/// Which of an agent's runs `list_runs` returns; `None` matches every run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub session_id: Option<SessionId>,
}

/// Which agents `list_agents` returns: `name` exactly, and any (or, with
/// `match_all_tags`, every) one of `tags`; empty matches every agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentFilter {
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub match_all_tags: bool,
}

impl AgentFilter {
    /// The distinct wanted tags (`None`: no tag filter) and how many of
    /// them an agent must have: one, or all with `match_all_tags`.
    pub fn wanted_tags(&self) -> (Option<Vec<String>>, i64) {
        let mut tags = self.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        let need = if self.match_all_tags { tags.len() } else { 1 };
        let need = i64::try_from(need).unwrap_or(i64::MAX);
        ((!tags.is_empty()).then_some(tags), need)
    }
}

/// Which way a list is read: `asc` oldest (or lowest) first, `desc` newest first.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    /// The other way round.
    pub fn flip(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// Paging request: `limit` rows from `offset`, after the `after` cursor or
/// before the `before` one, in `order` (`None`: the list's own default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListParams {
    pub limit: u32,
    pub offset: u64,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub after: Option<String>,
    /// Opaque cursor from a previous page's `prev_cursor`: the rows just
    /// before it (in the list's order), still answered in that order.
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub order: Option<Order>,
}

impl Default for ListParams {
    fn default() -> Self {
        Self {
            limit: 50,
            offset: 0,
            after: None,
            before: None,
            order: None,
        }
    }
}

/// The list envelope (protocol/rest.md): `{"data":[…],"pagination":{…}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    /// Rows in the whole list (not only this page).
    pub total: u64,
    /// The page size used: the `limit` asked for, default 50.
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: u32,
    /// The `offset` asked for, default 0 (echoed as sent, also with `after`).
    pub offset: u64,
    /// Opaque: pass it as `after` to get the next page. null on the last page.
    #[schema(min_length = 1, required = true)]
    pub next_cursor: Option<String>,
    /// Opaque: pass it as `before` to get the previous page. null on the
    /// first page.
    #[serde(default)]
    #[schema(min_length = 1, required = true)]
    pub prev_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Converts the items, keeping the pagination.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            pagination: self.pagination,
        }
    }
}
