//! The schemas of the OpenAI-shaped bodies (protocol/openai.md,
//! protocol/schemas/openai-*.json). The handlers build these bodies as JSON
//! (an agent's answer, or a provider's relayed as it came), so the schemas
//! are written by hand here, each on a type that names it. A root shape
//! (`Completion`, `Chunk`, `ErrorShape`) is OpenAI's and open, because an
//! `upstream/<model>` answer is the provider's; the `Agent…`/`WeirError`
//! ones are exactly what weir itself sends.

use std::borrow::Cow;

use serde_json::{json, Value};
use utoipa::{
    openapi::{RefOr, Schema},
    PartialSchema, ToSchema,
};

use crate::domain::{
    schema::{push_schemas, ref_of, schema_json},
    AgentId,
};

/// A type whose schema is `$json`, named `$component` in the OpenAPI
/// document, referring to the components `$dep`.
macro_rules! shape {
    ($(#[$m:meta])* $name:ident = $component:literal, [$($dep:ty),*], $json:expr) => {
        $(#[$m])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                schema_json($json)
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                $component.into()
            }

            #[allow(unused_variables)]
            fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
                $(push_schemas!(out, $dep);)*
            }
        }
    };
}

fn int0() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn completion_id() -> Value {
    json!({"type": "string", "pattern": "^chatcmpl-[A-Za-z0-9]+$",
        "description": "`chatcmpl-` + the run id's random part; the same on every chunk of a completion."})
}

shape!(
    /// Token counts of a completion.
    CompletionUsage = "CompletionUsage", [],
    json!({
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {"prompt_tokens": int0(), "completion_tokens": int0(), "total_tokens": int0()},
    })
);

shape!(
    /// Why a choice ended.
    FinishReason = "FinishReason", [],
    json!({"enum": ["stop", "length", "tool_calls", "content_filter", "function_call", null]})
);

shape!(
    /// A `chat.completion` (non-streaming answer), agent's or provider's.
    Completion = "ChatCompletion", [CompletionUsage, FinishReason],
    json!({
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "object": {"const": "chat.completion"},
            "created": int0(),
            "model": {"type": "string"},
            "choices": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": int0(),
                    "message": {"type": "object", "required": ["role"], "properties": {
                        "role": {"const": "assistant"},
                        "content": {"type": ["string", "null"]},
                        "tool_calls": {"type": "array"},
                    }},
                    "finish_reason": ref_of::<FinishReason>(),
                },
            }},
            "usage": ref_of::<CompletionUsage>(),
        },
    })
);

shape!(
    /// A `chat.completion` exactly as an agent answers it.
    AgentCompletion = "AgentChatCompletion", [AgentId, CompletionUsage],
    json!({
        "type": "object",
        "required": ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"],
        "additionalProperties": false,
        "properties": {
            "id": completion_id(),
            "object": {"const": "chat.completion"},
            "created": int0(),
            "model": ref_of::<AgentId>(),
            "system_fingerprint": {"type": "null"},
            "choices": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object",
                "required": ["index", "message", "logprobs", "finish_reason"],
                "additionalProperties": false,
                "properties": {
                    "index": {"const": 0},
                    "message": {
                        "type": "object",
                        "required": ["role", "content", "refusal"],
                        "additionalProperties": false,
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": ["string", "null"]},
                            "refusal": {"type": "null"},
                        },
                    },
                    "logprobs": {"type": "null"},
                    "finish_reason": {"enum": ["stop", "length"]},
                },
            }},
            "usage": {"$ref": ref_of::<CompletionUsage>()["$ref"], "unevaluatedProperties": false},
        },
    })
);

shape!(
    /// One choice of a chunk.
    ChunkChoice = "ChunkChoice", [FinishReason],
    json!({
        "type": "object",
        "required": ["index", "delta"],
        "properties": {
            "index": int0(),
            "delta": {"type": "object", "properties": {
                "role": {"type": ["string", "null"]},
                "content": {"type": ["string", "null"]},
                "tool_calls": {"type": "array"},
            }},
            "logprobs": {},
            "finish_reason": ref_of::<FinishReason>(),
        },
    })
);

shape!(
    /// One `chat.completion.chunk` of a stream, agent's or provider's.
    Chunk = "ChatCompletionChunk", [ChunkChoice, CompletionUsage],
    json!({
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "object": {"const": "chat.completion.chunk"},
            "created": {"description": "Unix seconds.", "type": "integer", "minimum": 0},
            "model": {"type": "string"},
            "system_fingerprint": {"type": ["string", "null"]},
            "choices": {"description": "One choice per chunk; empty in the final usage chunk.",
                "type": "array", "items": ref_of::<ChunkChoice>()},
            "usage": {"oneOf": [ref_of::<CompletionUsage>(), {"type": "null"}]},
        },
    })
);

shape!(
    /// A chunk exactly as an agent streams it.
    AgentChunk = "AgentChatCompletionChunk", [AgentId, CompletionUsage],
    json!({
        "description": "A chunk of an agent's answer (model = an agent id). The first chunk's delta is {\"role\":\"assistant\",\"content\":\"\"}; then {\"content\":piece} per token; then {} with finish_reason `stop` (or `length` for a run that hit max_steps); then, only with stream_options.include_usage, a chunk with `choices: []` and `usage`. With include_usage every other chunk has `usage: null`; without it, no chunk has `usage`.",
        "type": "object",
        "required": ["id", "object", "created", "model", "system_fingerprint", "choices"],
        "additionalProperties": false,
        "properties": {
            "id": completion_id(),
            "object": {"const": "chat.completion.chunk"},
            "created": int0(),
            "model": ref_of::<AgentId>(),
            "system_fingerprint": {"type": "null"},
            "choices": {"type": "array", "maxItems": 1, "items": {
                "type": "object",
                "required": ["index", "delta", "logprobs", "finish_reason"],
                "additionalProperties": false,
                "properties": {
                    "index": {"const": 0},
                    "delta": {"type": "object", "additionalProperties": false,
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}}},
                    "logprobs": {"type": "null"},
                    "finish_reason": {"enum": ["stop", "length", null]},
                },
            }},
            "usage": {"oneOf": [ref_of::<CompletionUsage>(), {"type": "null"}]},
        },
        "if": {"properties": {"choices": {"maxItems": 0}}},
        "then": {"required": ["usage"], "properties": {"usage": {"type": "object"}}},
    })
);

shape!(
    /// An OpenAI-shaped error, weir's or a provider's passed through.
    ErrorShape = "OpenAiErrorEnvelope", [],
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string",
                    "description": "From the status: 401 authentication_error, 403 permission_error, 429 rate_limit_error, 5xx server_error, other 4xx invalid_request_error."},
                "param": {"type": ["string", "null"], "description": "The request field at fault, when known."},
                "code": {"type": ["string", "null"],
                    "description": "weir's error code (the REST codes of errors.md, and model_not_found, invalid_json, upstream_error, upstream_stream_error, cancelled, and the run error codes of events.md), or null."},
                "request_id": {"type": "string"},
            },
        }},
    })
);

shape!(
    /// An OpenAI-shaped error exactly as weir makes it ([`super::OpenAiError::body`]).
    WeirError = "WeirOpenAiError", [],
    json!({
        "description": "An error weir made itself (not passed through from a provider): exactly these fields.",
        "type": "object",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type", "param", "code", "request_id"],
            "additionalProperties": false,
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "enum": ["invalid_request_error", "authentication_error", "permission_error", "rate_limit_error", "server_error"]},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
                "request_id": {"type": "string", "minLength": 1,
                    "description": "The X-Request-Id of the response (weir adds it to OpenAI's four fields)."},
            },
        }},
    })
);

shape!(
    /// `GET /v1/models` ([`super::models`]).
    ModelList = "ModelList", [],
    json!({
        "type": "object",
        "required": ["object", "data"],
        "additionalProperties": false,
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "additionalProperties": false,
                "properties": {
                    "id": {"type": "string", "pattern": r"^(agent-[A-Za-z0-9]+|upstream/[\s\S]+)$"},
                    "object": {"const": "model"},
                    "created": {"description": "Unix seconds (the agent's created_at).", "type": "integer"},
                    "owned_by": {"type": "string",
                        "description": "The account id for agents; the provider's owned_by (or `upstream`) for upstream models."},
                },
            }},
        },
    })
);
