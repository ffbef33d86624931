//! Schemas of `/v1/openapi.json` that no derive can state: the error bodies
//! (built by the envelope middleware, not by a handler), query parameters
//! validated by hand ([`crate::http::params`], [`crate::http::cursor`])
//! and request fields whose rules are patterns or alternatives. Each says
//! exactly what the server accepts, no more and no less: a schemathesis
//! run (tests/api/openapi.rs) sends data on both sides of every rule.
//!
//! Patterns are read by JSON Schema validators as ECMA 262 and by
//! schemathesis' as Rust's `regex`: `\s` is Unicode `White_Space` there,
//! the set `str::trim` removes.

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::ErrorCode;
use utoipa::{
    openapi::{schema::Schema, RefOr},
    IntoParams, ToSchema,
};

pub use crate::domain::schema::schema_json as from_json;

/// weir's error envelope (protocol/errors.md, schemas/error.json).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorEnvelope {
    #[schema(inline)]
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable, machine-readable. New codes are added in minor versions
    /// (CHANGELOG.md); clients should treat an unknown code by its HTTP
    /// status.
    #[schema(schema_with = rest_error_code)]
    pub code: String,
    /// For people, not programs. A validation_error message starts with
    /// the field it is about (`name: …`, `tags[1]: …`, `limit: …`) or says
    /// `malformed JSON: …` / `body: …`.
    #[schema(min_length = 1)]
    pub message: String,
    /// Equal to the response's X-Request-Id header (the client's own id
    /// when it sent one, else `req-…`).
    #[schema(min_length = 1)]
    pub request_id: String,
}

/// The codes a REST route answers with (protocol/errors.md); the others of
/// [`ErrorCode`] belong to runs, streams and the OpenAI routes.
pub const REST_ERROR_CODES: &[ErrorCode] = {
    use ErrorCode::*;
    &[
        ValidationError,
        Unauthorized,
        KeyExpired,
        Forbidden,
        NotFound,
        AgentNotFound,
        ToolNotFound,
        KeyNotFound,
        SessionNotFound,
        RunNotFound,
        ModelNotFound,
        MethodNotAllowed,
        Timeout,
        Conflict,
        AgentStopped,
        HistoryExpired,
        PayloadTooLarge,
        RateLimitExceeded,
        TooManyConnections,
        TooManyRuns,
        TokenBudgetExceeded,
        HeadersTooLarge,
        InternalError,
        Unavailable,
    ]
};

fn rest_error_code() -> RefOr<Schema> {
    from_json(json!({"type": "string", "enum": REST_ERROR_CODES}))
}

/// The paging parameters of every list ([`crate::http::params`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct PageParams {
    /// Page size. `count` is accepted as its alias (protocol/rest.md,
    /// "Pagination"); it is left out of this document because OpenAPI
    /// cannot say "not both", and both at once is a 400.
    #[param(schema_with = limit, required = false)]
    limit: u32,
    /// Rows to skip (from the cursor, if one is given).
    #[param(schema_with = offset, required = false)]
    offset: u64,
    /// The `next_cursor` of the previous page (not with `before`).
    #[param(schema_with = page_cursor, required = false)]
    after: String,
    /// The `prev_cursor` of the next page: the rows just before it (not
    /// with `after`).
    #[param(schema_with = page_cursor, required = false)]
    before: String,
    /// `asc` or `desc`; default: the list's own order (protocol/rest.md).
    #[param(schema_with = order, required = false)]
    order: String,
}

/// `tags` of `GET /v1/agents`: 1 to 32 comma-separated tags of 1 to 64
/// characters (what `POST /v1/agents` takes, minus commas).
pub fn tag_list() -> RefOr<Schema> {
    from_json(json!({"type": "string", "pattern": "^[^,]{1,64}(,[^,]{1,64}){0,31}$"}))
}

/// `order` of a list.
pub fn order() -> RefOr<Schema> {
    from_json(json!({"type": "string", "enum": ["asc", "desc"]}))
}

/// The resume cursor of an SSE route in the query ([`crate::http::cursor`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct ResumeQuery {
    /// Start after this event `seq` (`Last-Event-ID` wins over it).
    #[param(schema_with = seq_cursor, required = false)]
    after: u64,
}

/// The resume cursor of an SSE route in a header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only
pub struct ResumeHeader {
    /// Sent by EventSource when it reconnects: the last `seq` it saw
    /// (empty: no cursor).
    #[param(rename = "Last-Event-ID", schema_with = last_event_id, required = false)]
    last_event_id: String,
}

fn limit() -> RefOr<Schema> {
    from_json(
        json!({"type": "integer", "minimum": 1, "maximum": crate::http::params::MAX_LIMIT, "default": 50}),
    )
}

fn offset() -> RefOr<Schema> {
    from_json(json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "default": 0}))
}

/// A row number or `seq` the store can read (`u64` up to `i64::MAX`).
fn page_cursor() -> RefOr<Schema> {
    from_json(json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}))
}

fn seq_cursor() -> RefOr<Schema> {
    from_json(json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}))
}

/// Digits only (no sign), or empty, or only spaces and tabs (trimmed).
fn last_event_id() -> RefOr<Schema> {
    from_json(json!({"type": "string", "pattern": "^[ \\t]*[0-9]{0,19}[ \\t]*$"}))
}

// White space as the server trims it (Rust's `char::is_whitespace`, the
// Unicode White_Space property) written out: a pattern's `\s` is
// ECMAScript's, which leaves out U+0085 and takes in U+FEFF, so a name
// of white space and U+0085 would pass the schema and fail the server.
/// A name trimmed by the server, then 1 to 200 characters.
pub const TRIMMED_NAME: &str = concat!(
    r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    r"(?:[\s\S]{0,198}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?",
    r"[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
);
/// Text with something besides white space (as the server trims it).
pub const NOT_BLANK: &str =
    r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// `scopes` of `POST /v1/keys`: at least one, each a scope a key may
/// grant (the operator scopes only `weir keys create` grants are left out).
pub fn scopes() -> RefOr<Schema> {
    let grantable: Vec<&str> = crate::store::SCOPES
        .iter()
        .copied()
        .filter(|s| !crate::store::OPERATOR_SCOPES.contains(s))
        .collect();
    from_json(
        json!({"type": "array", "minItems": 1, "items": {"type": "string", "enum": grantable}}),
    )
}

/// `models` of a key's create and patch bodies: null (any model, or on
/// create the caller's own list) or up to 100 names.
pub fn key_models() -> RefOr<Schema> {
    from_json(json!({
        "description": "Models the key may use (`upstream/x` and `x` are one model); null: any.",
        "type": ["array", "null"], "maxItems": crate::http::key_body::MAX_MODELS,
        "items": {"type": "string", "pattern": TRIMMED_NAME},
    }))
}

/// The agent fields, for `schema_with` (plain, and nullable for PATCH).
pub fn agent_name() -> RefOr<Schema> {
    name(false)
}
pub fn agent_name_or_null() -> RefOr<Schema> {
    name(true)
}
pub fn agent_model() -> RefOr<Schema> {
    model(false)
}
pub fn agent_model_or_null() -> RefOr<Schema> {
    model(true)
}
pub fn agent_tools() -> RefOr<Schema> {
    tools(false)
}
pub fn agent_tools_or_null() -> RefOr<Schema> {
    tools(true)
}
/// The `url` of a webhook (tool or subscription): an http(s) URL that
/// parses (host of letters, digits, dots and dashes; an optional port; a
/// plain path). The last label of a name starts with a letter: one that is
/// a number makes the host an IPv4 address, which must then be one (four
/// octets, 0 to 255, no leading zeros).
pub fn url_pattern() -> String {
    let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let name = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    format!(
        r"^https?://(?:{name}|(?:{octet}\.){{3}}{octet})(?::[1-9][0-9]{{0,3}})?(?:/[A-Za-z0-9._~-]*)*$"
    )
}

pub fn agent_tags() -> RefOr<Schema> {
    tags(false)
}
pub fn agent_tags_or_null() -> RefOr<Schema> {
    tags(true)
}
pub fn agent_approval_required() -> RefOr<Schema> {
    approval_required(false)
}
pub fn agent_approval_required_or_null() -> RefOr<Schema> {
    approval_required(true)
}
pub fn agent_metadata() -> RefOr<Schema> {
    metadata(false)
}
pub fn agent_metadata_or_null() -> RefOr<Schema> {
    metadata(true)
}

/// Agent `model`.
fn model(nullable: bool) -> RefOr<Schema> {
    let pattern = r"^(?:echo|upstream/[\s\S]+)$";
    from_json(json!({"type": types("string", nullable), "pattern": pattern}))
}

/// Agent `tools`: built-in names. Ids of the account's tools (`tool-…`)
/// are accepted too, but only existing ones, which no schema can know.
fn tools(nullable: bool) -> RefOr<Schema> {
    from_json(json!({
        "description": "Built-in tool names; ids (`tool-…`) of the account's own tools are accepted too.",
        "type": types("array", nullable), "maxItems": 64,
        "items": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"},
    }))
}

/// Agent `approval_required`: built-in tool names only (the account's own
/// tools carry `requires_approval` themselves).
fn approval_required(nullable: bool) -> RefOr<Schema> {
    from_json(json!({
        "description": "Built-in tools whose every call waits for a person's approval.",
        "description": "Built-in tool names whose calls wait for a decision; a name given twice counts once.",
        "type": types("array", nullable), "maxItems": 64,
        "items": {"type": "string", "enum": crate::domain::BUILTIN_TOOLS},
    }))
}

/// Agent `tags`.
fn tags(nullable: bool) -> RefOr<Schema> {
    from_json(json!({
        "type": types("array", nullable), "maxItems": 32,
        "items": {"type": "string", "minLength": 1, "maxLength": 64},
    }))
}

/// Agent `metadata`: any object (`echo_delay_ms`, `max_steps` are read).
fn metadata(nullable: bool) -> RefOr<Schema> {
    from_json(json!({"type": types("object", nullable)}))
}

fn name(nullable: bool) -> RefOr<Schema> {
    from_json(json!({"type": types("string", nullable), "pattern": TRIMMED_NAME}))
}

fn types(t: &str, nullable: bool) -> Value {
    if nullable {
        json!([t, "null"])
    } else {
        json!(t)
    }
}

/// Body of `POST /v1/tools`: a built-in tool or a webhook, by `kind` (or,
/// without one, by whether `url` is given).
pub fn create_tool() -> RefOr<Schema> {
    let common = json!({
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
            "description": "The function name the model calls; unique per account (409)."},
        "description": {"type": "string", "maxLength": 4096, "default": ""},
        "json_schema": {"type": ["object", "null"],
            "description": "The arguments' JSON Schema; default `{\"type\":\"object\",\"properties\":{}}`."},
        "requires_approval": {"type": ["boolean", "null"], "default": false,
            "description": "Every call waits for a person's approval (`approval_request`)."},
    });
    let with = |extra: Value| {
        let mut props = common.clone();
        props
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        props
    };
    let url = url_pattern();
    from_json(json!({
        "oneOf": [
            {"title": "builtin", "type": "object", "additionalProperties": false, "required": ["name"],
             "properties": with(json!({"kind": {"type": ["string", "null"], "enum": ["builtin", null]}, "url": {"type": "null"}}))},
            {"title": "webhook", "type": "object", "additionalProperties": false, "required": ["name", "url"],
             "properties": with(json!({"kind": {"type": ["string", "null"], "enum": ["webhook", null]}, "url": {"type": "string", "pattern": url}}))},
        ],
    }))
}

/// Body of `POST /v1/agents/{id}/messages`: `message` or `messages`.
pub fn send_message() -> RefOr<Schema> {
    let common = json!({
        "session_id": {"type": ["string", "null"], "description": "A session of this agent; default: its default session."},
        "stream": {"type": ["boolean", "null"], "description": "Answer as SSE (also chosen by `Accept: text/event-stream`)."},
        "stream_tokens": {"type": "boolean", "default": false, "description": "Emit `assistant_delta` events."},
        "background": {"type": "boolean", "default": false, "description": "Keep running if the client goes away."},
    });
    let with = |extra: Value| {
        let mut props = common.clone();
        props
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        props
    };
    let user = json!({"type": "object", "required": ["role", "content"],
        "properties": {"role": {"type": "string", "enum": ["user"]}, "content": {"type": "string", "pattern": NOT_BLANK}}});
    from_json(json!({
        "oneOf": [
            {"title": "message", "type": "object", "required": ["message"],
             "properties": with(json!({"message": {"type": "string", "pattern": NOT_BLANK,
                "description": "The user's message."}, "messages": {"type": "null"}}))},
            {"title": "messages", "type": "object", "required": ["messages"],
             "properties": with(json!({"messages": {"type": "array", "minItems": 1, "items": user,
                "description": "User messages, sent in order."}, "message": {"type": "null"}}))},
        ],
    }))
}

/// `messages` of `POST /v1/chat/completions` as this schema states them:
/// user messages with text. The server reads the last `user` message (the
/// agent keeps the history) and ignores the others, of any role.
pub fn completion_messages() -> RefOr<Schema> {
    from_json(json!({
        "type": "array", "minItems": 1,
        "items": {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string", "enum": ["user"]}, "content": {"type": "string", "pattern": NOT_BLANK}}},
    }))
}

/// One event of a `text/event-stream` response, as SSE clients read it:
/// `data` is JSON (an event of protocol/events.md, an error frame, or an
/// OpenAI chunk), or `[DONE]` at the end of an OpenAI stream.
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    /// The event's `seq` (resume cursor); absent on error frames and chunks.
    pub id: Option<String>,
    /// The event's `message_type`, or `error`; absent on OpenAI chunks.
    pub event: Option<String>,
    pub data: String,
}

/// `200` of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: String,
}

/// `200` of `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready`
    pub status: String,
    pub store: String,
    pub bus: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns say what the server's checks (`str::trim`, then 1 to
    /// 200 characters) accept, for the characters on which ECMAScript's
    /// `\s` and Rust's white space differ too.
    #[test]
    fn the_name_patterns_trim_as_the_server_does() {
        let name =
            jsonschema::validator_for(&json!({"type": "string", "pattern": TRIMMED_NAME})).unwrap();
        let text =
            jsonschema::validator_for(&json!({"type": "string", "pattern": NOT_BLANK})).unwrap();
        let long = "x".repeat(201);
        let cases = [
            "a",
            " a\t",
            "\n\u{c}\t\u{85}\n \u{b} \r",
            "\u{85}",
            "\u{85}a\u{85}",
            "\u{a0}\u{3000}",
            "\u{feff}",
            " \u{feff} ",
            "a b",
            "",
            &long,
            &long[1..],
        ];
        for s in cases {
            let trimmed = s.trim();
            let server_name = (1..=200).contains(&trimmed.chars().count());
            assert_eq!(name.is_valid(&json!(s)), server_name, "name {s:?}");
            assert_eq!(text.is_valid(&json!(s)), !trimmed.is_empty(), "text {s:?}");
        }
    }
}
