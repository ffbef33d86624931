//! The schema of [`AgentEvent`], written by hand because its encoding is
//! (protocol/events.md, protocol/schemas/event.json): the common fields and
//! [`EventBody`]'s derived variants, one per `message_type`, with the rules
//! that tie them together (a log line has a `log-…` id and no session,
//! every other event a `msg-…` id and its session) and nothing else.
//!
//! [`EventFields`] is the open form (what the WebSocket's `agent_response`
//! frame extends with `type`); [`AgentEvent`], [`ChannelEvent`] and
//! [`LogLine`] close it with `unevaluatedProperties: false`.

use serde_json::json;
use utoipa::{
    openapi::{RefOr, Schema},
    PartialSchema, ToSchema,
};

use super::{
    event::{AgentEvent, EventBody},
    ids::{AgentId, EventId, RunId, SessionId},
    kinds::MessageType,
    schema::{push_schemas, ref_of, schema_json},
    values::{Seq, Timestamp},
};

/// The fields every event has, and its body by `message_type`, open to
/// more fields (a schema to extend; see the module docs).
pub struct EventFields;

impl PartialSchema for EventFields {
    fn schema() -> RefOr<Schema> {
        let log =
            json!({"properties": {"message_type": {"const": "log"}}, "required": ["message_type"]});
        schema_json(json!({
            "type": "object",
            "required": ["id", "seq", "run_id", "agent_id", "date", "message_type"],
            "properties": {
                "id": ref_of::<EventId>(),
                "seq": ref_of::<Seq>(),
                "run_id": ref_of::<RunId>(),
                "agent_id": ref_of::<AgentId>(),
                "date": ref_of::<Timestamp>(),
                "message_type": ref_of::<MessageType>(),
            },
            "allOf": [
                {
                    "description": "Log lines have `log-…` ids and no session; every other event has a `msg-…` id and its session.",
                    "if": log,
                    "then": {"properties": {"id": {"pattern": "^log-"}}},
                    "else": {
                        "required": ["session_id"],
                        "properties": {"id": {"pattern": "^msg-"}, "session_id": ref_of::<SessionId>()},
                    },
                },
                ref_of::<EventBody>(),
            ],
        }))
    }
}

impl ToSchema for EventFields {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(
            out,
            EventId,
            Seq,
            RunId,
            AgentId,
            Timestamp,
            MessageType,
            SessionId,
            EventBody
        );
    }
}

/// [`EventFields`], closed.
fn closed(description: &str, message_type: serde_json::Value) -> RefOr<Schema> {
    let mut s = json!({
        "$ref": format!("#/components/schemas/{}", EventFields::name()),
        "unevaluatedProperties": false,
        "description": description,
    });
    if !message_type.is_null() {
        s["properties"] = json!({ "message_type": message_type });
    }
    schema_json(s)
}

impl PartialSchema for AgentEvent {
    fn schema() -> RefOr<Schema> {
        closed(
            "One event of an agent's history or log stream: an agent event or a log line.",
            serde_json::Value::Null,
        )
    }
}

impl ToSchema for AgentEvent {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, EventFields);
    }
}

/// An event of an agent's channel (`agent:<id>`): any [`AgentEvent`] but a
/// log line. A schema only: such events are [`AgentEvent`]s in the code.
pub struct ChannelEvent;

impl PartialSchema for ChannelEvent {
    fn schema() -> RefOr<Schema> {
        closed(
            "An event of `agent:<id>` (anything but a log line).",
            json!({"not": {"const": "log"}}),
        )
    }
}

impl ToSchema for ChannelEvent {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, EventFields);
    }
}

/// A log line (`logs:<id>`): an [`AgentEvent`] of type `log`. A schema
/// only, like [`ChannelEvent`].
pub struct LogLine;

impl PartialSchema for LogLine {
    fn schema() -> RefOr<Schema> {
        closed("A line of `logs:<id>`.", json!({"const": "log"}))
    }
}

impl ToSchema for LogLine {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, EventFields);
    }
}
