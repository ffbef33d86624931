//! The schemas of `/v1/ws` frames (protocol/websocket.md,
//! protocol/schemas/ws-client.json and ws-server.json), next to the code
//! that reads and writes them ([`super::protocol`]). Written by hand: a
//! frame's fields depend on its `type`, and an `agent_response` frame is an
//! event with `type` added ([`EventFields`]).

use serde_json::json;
use utoipa::{
    openapi::{RefOr, Schema},
    PartialSchema, ToSchema,
};

use super::protocol::{Request, UserMessage, CLIENT_TYPES};
use crate::{
    agent::ChatMessage,
    domain::{
        schema::{push_schemas, ref_of, schema_json},
        Channel, EventFields, RunId,
    },
};

/// A frame's `request_id`: the client's own correlation id, echoed.
pub struct RequestId;

impl PartialSchema for RequestId {
    fn schema() -> RefOr<Schema> {
        schema_json(json!({
            "description": "The client's own correlation id on a WebSocket frame: a string or a number, echoed as sent.",
            "type": ["string", "number"],
        }))
    }
}

impl ToSchema for RequestId {}

/// `message` or `messages`, not both.
fn exactly_one_message() -> serde_json::Value {
    json!([
        {"required": ["message"], "properties": {"message": {"type": "string"}},
         "not": {"required": ["messages"], "properties": {"messages": {"type": "array"}}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array"}},
         "not": {"required": ["message"], "properties": {"message": {"type": "string"}}}},
    ])
}

/// One text frame a client sends ([`super::protocol::parse`] reads it).
impl PartialSchema for Request {
    fn schema() -> RefOr<Schema> {
        let types: Vec<&str> = CLIENT_TYPES.split(", ").collect();
        let when = |t: &str, then: serde_json::Value| json!({"if": {"properties": {"type": {"const": t}}}, "then": then});
        schema_json(json!({
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": types},
                "request_id": {"oneOf": [ref_of::<RequestId>(), {"type": "null"}]},
            },
            "allOf": [
                when("user_message", json!({"allOf": [ref_of::<UserMessage>()], "oneOf": exactly_one_message()})),
                when("subscribe", json!({
                    "required": ["channel"],
                    "properties": {
                        "channel": ref_of::<Channel>(),
                        "after": {"type": ["integer", "null"], "minimum": 0},
                    },
                })),
                when("unsubscribe", json!({"required": ["channel"], "properties": {"channel": {"type": "string"}}})),
                when("cancel", json!({"required": ["run_id"], "properties": {"run_id": {"type": "string"}}})),
                when("approval_response", json!({
                    "required": ["run_id", "approval_id", "decision"],
                    "properties": {
                        "run_id": {"type": "string"},
                        "approval_id": {"type": "string"},
                        "decision": {"type": "string", "enum": ["approve", "deny"]},
                        "reason": {"type": ["string", "null"], "maxLength": 1000},
                    },
                })),
            ],
        }))
    }
}

impl ToSchema for Request {
    fn name() -> std::borrow::Cow<'static, str> {
        "WsClientFrame".into()
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, RequestId, UserMessage, Channel, ChatMessage);
    }
}

/// One text frame the server sends: an event as `agent_response`
/// ([`crate::bus::BusEvent`]), or an answer built by [`super::protocol`].
pub struct ServerFrame;

impl PartialSchema for ServerFrame {
    fn schema() -> RefOr<Schema> {
        let types = [
            "agent_response",
            "run_started",
            "subscribed",
            "unsubscribed",
            "pong",
            "error",
            "gap",
        ];
        let when = |t: &str, then: serde_json::Value| json!({"if": {"properties": {"type": {"const": t}}}, "then": then});
        let echo = json!({"description": "The client frame's request_id, as sent.", "$ref": ref_of::<RequestId>()["$ref"]});
        let echo_or_null = json!({"oneOf": [ref_of::<RequestId>(), {"type": "null"}]});
        let subscription = json!({
            "description": "Answer to subscribe / unsubscribe, with the channel's canonical name. For subscribe, sent before the replayed and live events of the channel; after unsubscribed, no event of the channel follows.",
            "required": ["channel"],
            "properties": {"channel": ref_of::<Channel>(), "request_id": echo},
        });
        schema_json(json!({
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "enum": types}},
            "allOf": [
                when("agent_response", ref_of::<EventFields>()),
                when("run_started", json!({
                    "description": "Answer to user_message: sent before any event of the run. `request_id` is always present (null when the client sent none).",
                    "required": ["run_id", "request_id"],
                    "properties": {"run_id": ref_of::<RunId>(), "request_id": echo_or_null},
                })),
                when("subscribed", subscription.clone()),
                when("unsubscribed", subscription),
                when("pong", json!({
                    "description": "`request_id` is present only when the client frame had one.",
                    "properties": {"request_id": echo},
                })),
                when("error", error_frame()),
                when("gap", gap_frame()),
            ],
            "unevaluatedProperties": false,
        }))
    }
}

/// The `gap` frame: events of a channel that Redis lost in a failover and
/// that will never be delivered (see sse.md "Gaps").
fn gap_frame() -> serde_json::Value {
    json!({
        "description": "Events `from_seq`..=`to_seq` of `channel` were lost by the cluster's Redis in a failover and will never be delivered; the channel goes on with the next seq. Not stored, never replayed.",
        "required": ["channel", "from_seq", "to_seq"],
        "properties": {
            "channel": ref_of::<Channel>(),
            "from_seq": {"type": "integer", "minimum": 1},
            "to_seq": {"type": "integer", "minimum": 1},
        },
    })
}

/// The `error` frame: a frame the server could not accept, or a channel
/// that ended with an error (`lagged` says where every channel got to).
fn error_frame() -> serde_json::Value {
    json!({
        "description": "A frame the server could not accept, or a channel that ended with an error. `request_id` is always present (null when unknown). `channel` names the channel concerned, when there is one. The `lagged` error is the last frame before close 1013 and says where every channel got to. A `user_message` refused with `rate_limit_exceeded` or `token_budget_exceeded` carries `retry_after`.",
        "required": ["code", "message", "request_id"],
        "properties": {
            "code": {"description": "See websocket.md for the list.", "type": "string", "pattern": "^[a-z][a-z_]*$"},
            "message": {"type": "string", "minLength": 1},
            "request_id": {"oneOf": [ref_of::<RequestId>(), {"type": "null"}]},
            "channel": {"type": ["string", "null"]},
            "last_seq": {"type": ["integer", "null"], "minimum": 0},
            "retry_after": {"description": "Seconds to wait before the next run start (`rate_limit_exceeded`, `token_budget_exceeded`).", "type": "integer", "minimum": 1},
            "channels": {
                "description": "Channel name → seq of the last event of it delivered.",
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
        },
        "if": {"properties": {"code": {"const": "lagged"}}},
        "then": {"required": ["channel", "last_seq", "channels"]},
        "else": {
            "properties": {"channel": {"type": "string"}},
            "not": {"anyOf": [{"required": ["last_seq"]}, {"required": ["channels"]}]},
        },
    })
}

impl ToSchema for ServerFrame {
    fn name() -> std::borrow::Cow<'static, str> {
        "WsServerFrame".into()
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, RequestId, Channel, RunId, EventFields);
    }
}
