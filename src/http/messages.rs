//! `POST /v1/agents/{id}/messages` (a run, answered as SSE or JSON) and
//! `GET /v1/agents/{id}/messages` (a session's history).
//!
//! The POST subscribes to the agent's channel before it starts the run, so
//! the response cannot miss an event, and forwards only that run's events
//! (the pre-encoded SSE frames, untouched) until its `done`. The user's own
//! `user_message` events are not echoed back. A client that disconnects
//! cancels the run unless it sent `"background": true`.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    auth::Auth,
    errors::{ApiError, ApiJson},
    limits::Metered,
    params,
};
use crate::{
    agent::{sessions::DEFAULT_SESSION, CancelOnDrop, ChatMessage, RunFollower, StartRun},
    domain::ErrorCode,
    domain::{AgentEvent, AgentId, MessageType, RunId, SessionId},
    edge::StreamKind,
    state::AppState,
    store::{EventFilter, ListParams, Page, Pagination},
    stream::sse::sse_response,
};

/// Body of `POST /v1/agents/{id}/messages`; its schema is written by hand
/// (`message` or `messages`: [`crate::http::openapi::schemas::send_message`]).
#[derive(Debug, Deserialize)]
pub(crate) struct SendMessage {
    /// The user's message (or use `messages`).
    #[serde(default)]
    message: Option<String>,
    /// Chat messages; the last `user` one is the new input.
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    /// A session of this agent; default: the agent's default session.
    #[serde(default)]
    session_id: Option<String>,
    /// Answer as SSE (also chosen by `Accept: text/event-stream`).
    #[serde(default)]
    stream: Option<bool>,
    /// Emit `assistant_delta` events while the reply is produced.
    #[serde(default)]
    stream_tokens: bool,
    /// Keep running if the client goes away.
    #[serde(default)]
    background: bool,
}

impl utoipa::PartialSchema for SendMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::http::openapi::schemas::send_message()
    }
}

impl ToSchema for SendMessage {}

/// JSON-mode answer of `POST /v1/agents/{id}/messages`, sent when the run
/// ends: every event of the run except the user's own `user_message`
/// events, in seq order, ending with `done`.
// Fields in sorted order: the order a JSON map wrote them in before.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunResult {
    #[schema(value_type = Vec<crate::domain::ChannelEvent>, min_items = 1)]
    pub messages: Vec<AgentEvent>,
    pub run_id: RunId,
}

impl SendMessage {
    fn into_messages(self) -> Result<Vec<ChatMessage>, ApiError> {
        match (self.message, self.messages) {
            (Some(_), Some(_)) => Err(ApiError::validation(
                "send either `message` or `messages`, not both",
            )),
            (Some(m), None) if m.trim().is_empty() => {
                Err(ApiError::validation("`message` must not be empty"))
            }
            (Some(m), None) => Ok(vec![ChatMessage::user(m)]),
            (None, Some(ms)) if ms.is_empty() => {
                Err(ApiError::validation("`messages` must not be empty"))
            }
            (None, Some(ms)) => Ok(ms),
            (None, None) => Err(ApiError::validation(
                "`message` (or `messages`) is required",
            )),
        }
    }
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Send a message: starts a run. SSE (`text/event-stream`) when `stream` is
/// true or `Accept: text/event-stream`; each event is `id: <seq>`,
/// `event: <message_type>`, `data: <event JSON>`, ending with one `done`.
#[utoipa::path(post, path = "/v1/agents/{id}/messages", tag = "chat", params(("id" = String, Path)),
    request_body = SendMessage,
    responses((status = 200, description = "The run's result as JSON, or (`stream`, `Accept: text/event-stream`) an SSE stream of its events",
            content((RunResult = "application/json"), (crate::http::openapi::schemas::SseEvent = "text/event-stream"))),
        (status = 404, description = "agent_not_found, session_not_found; model_not_found: the agent's model is not one the key may use"),
        (status = 409, description = "agent_stopped; conflict: the agent's upstream model has no provider here")))]
pub(crate) async fn send_message(
    State(state): State<AppState>,
    auth: Auth,
    Extension(metered): Extension<Metered>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    auth.require("chat")?;
    let sse = body.stream.unwrap_or(false) || wants_sse(&headers);
    let (session_id, stream_tokens, background) =
        (body.session_id.clone(), body.stream_tokens, body.background);
    let messages = body.into_messages()?;
    // A run start: one request against the key's rpm and one of its
    // `max_runs` slots, held by the run until it ends.
    let run_slot = super::limits::start_run(&state, &auth, &metered).await?;
    // The key's SSE slot is taken before the run starts: a refused stream
    // starts nothing.
    let slot = match sse {
        true => Some(state.edge.open_stream(&auth.key, StreamKind::Sse).await?),
        false => None,
    };
    let account = auth.account();
    // Check ownership before touching the bus: no channels for unknown ids.
    let agent = super::agents::owned(&state, account, &agent_id).await?;
    let (agent_id, run_id) = (agent.id.clone(), RunId::generate());
    let mut follower = RunFollower::subscribe(state.bus.clone(), &agent_id, &run_id).await?;
    let start = StartRun {
        run_id: Some(run_id),
        agent_id,
        agent: Some(agent),
        session: session_id.map(SessionId::from).into(),
        messages,
        stream_tokens,
        background,
        slot: Some(run_slot),
        models: auth.key.models.clone(),
    };
    let run = state.runtime.start_run(account, start).await?;
    let mut guard = CancelOnDrop::new(state.runtime.clone(), &run.id, !background);
    if let Some(slot) = slot {
        let frames = async_stream::stream! {
            while let Some(ev) = follower.next().await {
                if ev.message_type == Some(MessageType::UserMessage) {
                    continue;
                }
                if ev.message_type == Some(MessageType::Done) {
                    guard.disarm();
                }
                yield ev.sse.clone();
            }
            // Lost the channel without a `done`: the run itself goes on.
            guard.disarm();
        };
        let ping = Duration::from_secs(state.config.sse_ping_secs.max(1));
        // A draining gateway keeps the stream open until the run's `done`.
        let stop = state.edge.hard_stop.clone();
        return Ok(sse_response(slot.hold(frames), ping, stop));
    }
    let mut events = Vec::new();
    while let Some(ev) = follower.next().await {
        if !ev.is_gap() && ev.message_type != Some(MessageType::UserMessage) {
            events.push(ev.event().map_err(|_| ApiError::internal())?);
        }
    }
    guard.disarm();
    // The JSON answer comes after the run's last store write: a client that
    // reads the session next sees every event it was just given.
    state.runtime.settled(&run.id).await;
    if !follower.finished() {
        return Err(ApiError::unavailable(format!(
            "lost the event stream of run {}; it goes on: see GET /v1/runs/{}",
            run.id, run.id
        )));
    }
    Ok(Json(RunResult {
        messages: events,
        run_id: run.id,
    })
    .into_response())
}

/// A session's events, oldest first (`?session_id=`, else the default session).
#[utoipa::path(get, path = "/v1/agents/{id}/messages", tag = "chat",
    params(("id" = String, Path), ("session_id" = Option<String>, Query, description = "A session of the agent; default: its default session"),
        crate::http::openapi::schemas::PageParams),
    responses((status = 200, description = "list envelope of events", body = Page<crate::domain::ChannelEvent>)))]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    auth: Auth,
    Path(agent_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<params::Paged<AgentEvent>, ApiError> {
    auth.require("chat")?;
    let Query(q) = query.map_err(|e| ApiError::validation(format!("query: {e}")))?;
    let params = params::parse_list(&q, &["session_id"])?;
    let account = auth.account();
    super::agents::owned(&state, account, &agent_id).await?;
    let session_id = match q.get("session_id").cloned() {
        Some(sid) => {
            state
                .store
                .get_session(account, &agent_id, &sid)
                .await
                .map_err(|e| ApiError::from_store(e, ErrorCode::SessionNotFound))?
                .id
        }
        None => match state
            .runtime
            .find_session(account, &AgentId::from(agent_id.as_str()), DEFAULT_SESSION)
            .await?
        {
            Some(id) => id,
            None => {
                params::check_int_cursors(&params)?;
                return Ok(params::Paged(empty_page(&params)));
            }
        },
    };
    let filter = EventFilter {
        session_id: Some(session_id),
        run_id: None,
        message_types: None,
    };
    let page = state
        .store
        .list_events(account, &agent_id, filter, params)
        .await?;
    Ok(params::Paged(page.map(|r| r.event)))
}

fn empty_page<T>(params: &ListParams) -> Page<T> {
    Page {
        data: Vec::new(),
        pagination: Pagination {
            total: 0,
            limit: params.limit,
            offset: params.offset,
            next_cursor: None,
            prev_cursor: None,
        },
    }
}
