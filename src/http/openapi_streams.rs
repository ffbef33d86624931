//! OpenAPI path items for the streaming, runtime and OpenAI-compatible
//! routes. Their handlers live in `agent/`, `stream/` and `openai/`; the
//! items are declared here so the document is built in one place. The
//! framing of SSE and WebSocket messages is beyond OpenAPI: `protocol/`
//! (sse.md, websocket.md, events.md) and its JSON Schemas are the reference.

#![allow(dead_code)]

use serde::Deserialize;
use utoipa::ToSchema;

use crate::store::Run;

/// Body of `POST /v1/agents/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendMessage {
    /// The user's message (or use `messages`).
    pub message: Option<String>,
    /// OpenAI-style messages; the last `user` one is sent.
    pub messages: Option<Vec<serde_json::Value>>,
    /// A session of this agent; default: the agent's default session.
    pub session_id: Option<String>,
    /// Answer as SSE (also chosen by `Accept: text/event-stream`).
    pub stream: Option<bool>,
    /// Emit `assistant_delta` events while the reply is produced.
    pub stream_tokens: Option<bool>,
    /// Keep running if the client goes away.
    pub background: Option<bool>,
}

/// `POST /v1/agents/{id}/messages` without streaming: the run's events once it ends.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RunResult {
    pub run_id: String,
    /// The run's events (protocol/schemas/event.json).
    pub messages: Vec<serde_json::Value>,
}

/// Send a message: starts a run. SSE (`text/event-stream`) when `stream` is
/// true or `Accept: text/event-stream`; each event is `id: <seq>`,
/// `event: <message_type>`, `data: <event JSON>`, ending with one `done`.
#[utoipa::path(post, path = "/v1/agents/{id}/messages", tag = "chat", params(("id" = String, Path)),
    request_body = SendMessage,
    responses((status = 200, description = "JSON run result, or an SSE stream of the run's events", body = RunResult),
        (status = 404, description = "agent_not_found"), (status = 409, description = "agent_stopped")),
    security(("api_key" = [])))]
fn send_message() {}

/// An agent's message history, oldest first (`session_id` narrows to one session).
#[utoipa::path(get, path = "/v1/agents/{id}/messages", tag = "chat",
    params(("id" = String, Path), ("session_id" = Option<String>, Query), ("limit" = Option<u32>, Query),
        ("offset" = Option<u64>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "list envelope of events")), security(("api_key" = [])))]
fn list_messages() {}

/// Live SSE of every event of the agent; resume with `Last-Event-ID` or `?after=`.
#[utoipa::path(get, path = "/v1/agents/{id}/events", tag = "streams",
    params(("id" = String, Path), ("after" = Option<u64>, Query)),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")),
    security(("api_key" = [])))]
fn agent_events() {}

/// A run's status.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "chat", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, description = "run_not_found")), security(("api_key" = [])))]
fn get_run() {}

/// Cancel a running run; its stream ends with `done` (`stop_reason: cancelled`).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "chat", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, description = "run_not_found")), security(("api_key" = [])))]
fn cancel_run() {}

/// SSE replay and live tail of one run, resumable; ends after the run's `done`.
#[utoipa::path(get, path = "/v1/runs/{id}/stream", tag = "streams",
    params(("id" = String, Path), ("after" = Option<u64>, Query)),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")),
    security(("api_key" = [])))]
fn run_stream() {}

/// Recent log lines of an agent, paginated.
#[utoipa::path(get, path = "/v1/agents/{id}/logs", tag = "logs",
    params(("id" = String, Path), ("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "list envelope of log events")), security(("api_key" = [])))]
fn list_logs() {}

/// Live SSE tail of an agent's log lines, resumable.
#[utoipa::path(get, path = "/v1/agents/{id}/logs/stream", tag = "logs",
    params(("id" = String, Path), ("after" = Option<u64>, Query)),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")),
    security(("api_key" = [])))]
fn logs_stream() {}

/// OpenAI-compatible chat completion: `model` is an agent id or `upstream/<model>`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = serde_json::Value, description = "OpenAI chat completion request"),
    responses((status = 200, description = "chat.completion, or chat.completion.chunk SSE ending with data: [DONE]")),
    security(("api_key" = [])))]
fn chat_completions() {}

/// OpenAI-compatible model list: the account's agents (and upstream models).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "OpenAI list of models")), security(("api_key" = [])))]
fn models() {}

/// WebSocket: JSON text frames (protocol/websocket.md). The key may be sent as `?api_key=`.
#[utoipa::path(get, path = "/v1/ws", tag = "streams",
    responses((status = 101, description = "switching protocols"), (status = 400, description = "not a WebSocket upgrade")),
    security(("api_key" = [])))]
fn websocket() {}
