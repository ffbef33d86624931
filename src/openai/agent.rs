//! `/v1/chat/completions` answered by an agent: the last user message of
//! `messages` starts a run (the agent keeps the history itself), and the
//! run's events are rendered as a `chat.completion` or as
//! `chat.completion.chunk`s (token deltas become content chunks).

use std::time::Duration;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::OpenAiError;
use crate::{
    agent::{CancelOnDrop, ChatMessage, RunFollower, SessionRef, StartRun},
    domain::{AgentEvent, ErrorCode, EventBody, RunId, StopReason},
    edge::RunSlot,
    http::errors::ApiError,
    state::AppState,
    store::StoreError,
    stream::sse::{frame, sse_response},
};

/// The fields weir reads; everything else OpenAI defines is accepted and ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CompletionRequest {
    /// An agent id (`agent-…`) or `upstream/<model>`.
    #[schema(min_length = 1)]
    pub model: String,
    #[schema(schema_with = crate::http::openapi::schemas::completion_messages)]
    pub messages: Vec<RequestMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Names the agent's session (made on first use); trimmed, at most
    /// 256 characters.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestMessage {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The text of a message: a string, or the `text` parts of a parts array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What a finished run said, gathered from its events.
#[derive(Debug, Default)]
struct Outcome {
    content: Option<String>,
    usage: Option<Value>,
    error: Option<(ErrorCode, String)>,
    stop_reason: Option<StopReason>,
}

impl Outcome {
    fn absorb(&mut self, ev: &AgentEvent) {
        match &ev.body {
            EventBody::AssistantMessage { message } => self.content = Some(message.clone()),
            EventBody::Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens,
            } => {
                self.usage = Some(json!({
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": total_tokens,
                }))
            }
            EventBody::Error { code, message } => self.error = Some((*code, message.clone())),
            EventBody::Done { stop_reason } => self.stop_reason = Some(*stop_reason),
            _ => {}
        }
    }

    /// OpenAI's `finish_reason` for the run's stop reason.
    fn finish_reason(&self) -> &'static str {
        match self.stop_reason {
            Some(StopReason::MaxSteps) => "length",
            _ => "stop",
        }
    }

    /// The failure to report, if the run did not answer.
    fn failure(&self) -> Option<OpenAiError> {
        if let Some((code, message)) = &self.error {
            return Some(OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                message.clone(),
                Some(*code),
            ));
        }
        match self.stop_reason {
            Some(StopReason::Cancelled) => Some(OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the run was cancelled",
                Some(ErrorCode::Cancelled),
            )),
            None => Some(OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "lost the run's event stream",
                Some(ErrorCode::Unavailable),
            )),
            _ => None,
        }
    }
}

impl CompletionRequest {
    /// The new input: the last user message (the agent keeps the history).
    fn input(&self) -> Result<String, OpenAiError> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| text_of(&m.content))
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                OpenAiError::invalid(
                    "`messages` must end with a non-empty user message",
                    "messages",
                )
            })
    }
}

/// The session `user` names (the run start makes it on first use), or the
/// default one.
fn named_session(user: Option<&str>) -> Result<SessionRef, OpenAiError> {
    match user.map(str::trim) {
        Some(u) if u.chars().count() > 256 => Err(OpenAiError::invalid(
            "`user` must be at most 256 characters",
            "user",
        )),
        Some(u) if !u.is_empty() => Ok(SessionRef::Named(u.to_owned())),
        _ => Ok(SessionRef::Default),
    }
}

/// Runs the agent named by `req.model` and answers in OpenAI's format.
/// `models` is the calling key's list (its agent's model must be on it).
pub async fn complete(
    state: &AppState,
    account: &str,
    models: Option<Vec<String>>,
    req: CompletionRequest,
    slot: Option<RunSlot>,
) -> Result<Response, OpenAiError> {
    let text = req.input()?;
    let agent = match state.store.get_agent(account, &req.model).await {
        Ok(a) => a,
        Err(StoreError::NotFound(_)) => return Err(OpenAiError::model_not_found(&req.model)),
        Err(e) => return Err(ApiError::from(e).into()),
    };
    let session = named_session(req.user.as_deref())?;
    let stream = req.stream.unwrap_or(false);
    let run_id = RunId::generate();
    let follower = RunFollower::subscribe(state.bus.clone(), &agent.id, &run_id)
        .await
        .map_err(ApiError::from)?;
    let agent_id = agent.id.clone();
    let start = StartRun {
        run_id: Some(run_id),
        agent_id: agent_id.clone(),
        agent: Some(agent),
        session,
        messages: vec![ChatMessage::user(text)],
        stream_tokens: stream,
        background: false,
        slot,
        models,
    };
    let run = state
        .runtime
        .start_run(account, start)
        .await
        .map_err(ApiError::from)?;
    let guard = CancelOnDrop::new(state.runtime.clone(), &run.id, true);
    let head = Head {
        id: format!("chatcmpl-{}", run.id.as_str().trim_start_matches("run-")),
        created: crate::util::unix_now(),
        model: agent_id.into_string(),
    };
    if stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        let ping = Duration::from_secs(state.config.sse_ping_secs.max(1));
        return Ok(sse_response(
            chunks(head, follower, guard, include_usage),
            ping,
            state.edge.hard_stop.clone(),
        ));
    }
    collect(head, follower, guard).await
}

/// What every response and chunk of one completion repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
}

async fn collect(
    head: Head,
    mut follower: RunFollower,
    mut guard: CancelOnDrop,
) -> Result<Response, OpenAiError> {
    let mut out = Outcome::default();
    while let Some(ev) = follower.next().await {
        if let Ok(event) = ev.event() {
            out.absorb(&event);
        }
    }
    guard.disarm();
    if let Some(e) = out.failure() {
        return Err(e);
    }
    let body = json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": out.content, "refusal": null},
            "logprobs": null,
            "finish_reason": out.finish_reason(),
        }],
        "usage": out.usage.clone().unwrap_or(json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})),
    });
    Ok(Json(body).into_response())
}

impl Head {
    /// One `chat.completion.chunk` as an SSE `data:` frame.
    fn chunk(&self, choices: Value, usage: Option<Value>, include_usage: bool) -> Bytes {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        // With include_usage, OpenAI sends `"usage": null` on every chunk but the last.
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        frame(None, None, &serde_json::to_vec(&c).unwrap_or_default())
    }

    fn delta(&self, delta: Value, finish: Option<&str>, include_usage: bool) -> Bytes {
        let choices =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        self.chunk(choices, None, include_usage)
    }
}

/// The `[DONE]` sentinel.
fn done_frame() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

fn chunks(
    head: Head,
    mut follower: RunFollower,
    mut guard: CancelOnDrop,
    include_usage: bool,
) -> impl futures::Stream<Item = Bytes> + Send {
    async_stream::stream! {
        yield head.delta(json!({"role": "assistant", "content": ""}), None, include_usage);
        let mut out = Outcome::default();
        let mut streamed = false;
        while let Some(ev) = follower.next().await {
            let Ok(event) = ev.event() else { continue };
            match &event.body {
                EventBody::AssistantDelta { delta } => {
                    streamed = true;
                    yield head.delta(json!({"content": delta}), None, include_usage);
                }
                // A reply that came without deltas is sent whole.
                EventBody::AssistantMessage { message } if !streamed => {
                    streamed = true;
                    yield head.delta(json!({"content": message}), None, include_usage);
                }
                _ => {}
            }
            out.absorb(&event);
        }
        guard.disarm();
        if let Some(e) = out.failure() {
            yield frame(None, None, &serde_json::to_vec(&e.body()).unwrap_or_default());
            yield done_frame();
            return;
        }
        yield head.delta(json!({}), Some(out.finish_reason()), include_usage);
        if include_usage {
            let usage = out.usage.clone().unwrap_or(json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
            yield head.chunk(json!([]), Some(usage), true);
        }
        yield done_frame();
    }
}
