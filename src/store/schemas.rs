//! The schemas of the records whose fields depend on each other, which no
//! derive can state: a tool's `url` goes with its `kind`, a run's
//! `stop_reason` with its `status`. Written by hand, next to the records,
//! and checked against what they serialise (tests below).

use serde_json::json;
use utoipa::{
    openapi::{RefOr, Schema},
    PartialSchema, ToSchema,
};

use super::model::{Run, Tool};
use crate::domain::{
    schema::{push_schemas, ref_of, schema_json},
    AgentId, ErrorCode, RunId, RunStatus, SessionId, StopReason, Timestamp, ToolId,
};

/// The tool's `name`: the function name the model calls.
pub const TOOL_NAME: &str = "^[A-Za-z0-9_-]{1,64}$";

impl PartialSchema for Tool {
    fn schema() -> RefOr<Schema> {
        schema_json(json!({
            "type": "object",
            "required": ["id", "name", "description", "json_schema", "kind", "url", "requires_approval", "created_at"],
            "additionalProperties": false,
            "properties": {
                "id": ref_of::<ToolId>(),
                "name": {"type": "string", "pattern": TOOL_NAME,
                    "description": "The function name the model calls; unique per account (409 conflict otherwise)."},
                "description": {"type": "string", "maxLength": 4096},
                "json_schema": {"type": "object",
                    "description": "JSON Schema of the call's arguments, offered to the model as the function's `parameters`."},
                "kind": {"type": "string", "enum": ["builtin", "webhook"]},
                "url": {"type": ["string", "null"],
                    "description": "The http(s) URL a webhook tool's arguments are POSTed to; null for built-ins."},
                "requires_approval": {"type": "boolean",
                    "description": "Every call waits for a person's approval (`approval_request`)."},
                "created_at": ref_of::<Timestamp>(),
            },
            "if": {"properties": {"kind": {"const": "webhook"}}},
            "then": {"properties": {"url": {"type": "string", "minLength": 1}}},
            "else": {"properties": {"url": {"type": "null"}}},
        }))
    }
}

impl ToSchema for Tool {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, ToolId, Timestamp);
    }
}

impl PartialSchema for Run {
    fn schema() -> RefOr<Schema> {
        schema_json(json!({
            "type": "object",
            "required": ["id", "agent_id", "session_id", "status", "stop_reason", "error", "error_code", "created_at", "updated_at"],
            "additionalProperties": false,
            "properties": {
                "id": ref_of::<RunId>(),
                "agent_id": ref_of::<AgentId>(),
                "session_id": ref_of::<SessionId>(),
                "status": ref_of::<RunStatus>(),
                "stop_reason": {"description": "null while running or waiting_approval; then the stop_reason of the run's `done` event.",
                    "oneOf": [ref_of::<StopReason>(), {"type": "null"}]},
                "error": {"type": ["string", "null"],
                    "description": "Why a run failed (or was cancelled by a shutdown); null otherwise."},
                "error_code": {"description": "The code of the run's `error` event when it failed (`token_budget_exceeded`, `upstream_unavailable`, `worker_lost`, …); null otherwise.",
                    "oneOf": [ref_of::<ErrorCode>(), {"type": "null"}]},
                "created_at": ref_of::<Timestamp>(),
                "updated_at": ref_of::<Timestamp>(),
            },
            "allOf": [
                {
                    "if": {"properties": {"status": {"enum": ["running", "waiting_approval"]}}},
                    "then": {"properties": {"stop_reason": {"type": "null"}}},
                    "else": {"properties": {"stop_reason": {"type": "string"}}},
                },
                {
                    "if": {"properties": {"status": {"const": "completed"}}},
                    "then": {"properties": {"stop_reason": {"enum": ["end_turn", "max_steps"]}}},
                },
                {
                    "if": {"properties": {"status": {"const": "failed"}}},
                    "else": {"properties": {"error_code": {"type": "null"}}},
                },
            ],
        }))
    }
}

impl ToSchema for Run {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        push_schemas!(out, RunId, AgentId, SessionId, RunStatus, StopReason, ErrorCode, Timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The property names of `T`'s schema.
    pub(crate) fn properties<T: PartialSchema>() -> Vec<String> {
        let mut v = serde_json::to_value(T::schema()).unwrap();
        crate::domain::schema::lift(&mut v);
        let mut names: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn keys(v: impl serde::Serialize) -> Vec<String> {
        let mut names: Vec<String> = serde_json::to_value(v)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[test]
    fn hand_written_schemas_name_the_serialised_fields() {
        let ts = "2026-11-23T15:45:35.123Z".to_owned();
        let tool = Tool {
            id: "tool-a".into(),
            account_id: String::new(),
            name: "n".into(),
            description: String::new(),
            json_schema: json!({}),
            kind: "builtin".into(),
            url: None,
            requires_approval: false,
            created_at: ts.clone(),
        };
        assert_eq!(properties::<Tool>(), keys(&tool));
        let run = Run {
            id: "run-a".into(),
            agent_id: "agent-a".into(),
            session_id: "sess-a".into(),
            status: RunStatus::Running,
            stop_reason: None,
            error: None,
            error_code: None,
            created_at: ts.clone(),
            updated_at: ts,
        };
        assert_eq!(properties::<Run>(), keys(&run));
    }
}
