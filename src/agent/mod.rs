//! The agent runtime: agents that think, call tools and answer.
//!
//! # Layout
//!
//! - [`runtime`]: [`Runtime`]: starts runs, cancels them, answers their status.
//! - `run`: one run's step loop (model → tools → … → reply) and its terminal `done`.
//! - [`events`]: publishing events (the bus numbers them) and persisting them.
//! - [`logs`]: a run's log lines on `logs:<agent_id>`.
//! - [`models`]: `echo` and `upstream/<model>` (OpenAI-compatible providers).
//! - [`sessions`]: the default session and sessions by name.
//! - [`tools`]: built-ins (`get_time`, `calculator`) and webhook tools.
//! - `queued`: with Redis, queueing runs for workers, executing and settling
//!   the runs a worker takes, cancelling runs that execute elsewhere.
//! - [`follow`]: following one run's events from a transport, cancel-on-disconnect.
//! - [`routes`]: `/v1/agents/{id}/messages`, `/v1/runs/{id}`, `/v1/runs/{id}/cancel`,
//!   `/v1/agents/{id}/logs`.
//!
//! Events of a run, in order: `user_message` (one per message sent; kept as
//! the session's history and not echoed back on the run's own response), then
//! any of `internal_monologue`, `function_message`, `assistant_delta` (with
//! `stream_tokens`), then `assistant_message`, `usage`, and exactly one `done`
//! (preceded by `error` when the run failed).

pub mod events;
pub mod follow;
pub mod logs;
pub mod models;
mod queued;
pub mod routes;
mod run;
pub mod runtime;
pub mod sessions;
pub mod tools;

use serde::{Deserialize, Serialize};

pub use follow::{CancelOnDrop, RunFollower};
pub use queued::Settle;
pub use runtime::Runtime;

use crate::{
    domain::{AgentId, ErrorCode, RunId, SessionId},
    http::errors::ApiError,
};

/// One chat message given to a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ChatMessage {
    /// Only `user` is accepted: an agent keeps its own replies.
    #[schema(schema_with = user_role)]
    pub role: String,
    /// Must not be empty or only whitespace.
    #[schema(min_length = 1)]
    pub content: String,
}

fn user_role() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::domain::schema::schema_json(serde_json::json!({"type": "string", "enum": ["user"]}))
}

impl ChatMessage {
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A request to start a run on an agent.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// The run's id, chosen by the caller so that it can follow the run
    /// before it starts ([`RunFollower::subscribe`]); `None`: a new one.
    pub run_id: Option<RunId>,
    pub agent_id: AgentId,
    /// The session to talk in (must exist); `None` uses the agent's default session.
    pub session_id: Option<SessionId>,
    /// The new user messages (role `user`, non-empty).
    pub messages: Vec<ChatMessage>,
    /// Publish `assistant_delta` events as the reply is produced.
    pub stream_tokens: bool,
    /// The client wants the run to outlive its connection (see [`CancelOnDrop`]).
    pub background: bool,
}

/// Why a run could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error("agent {0} is stopped")]
    AgentStopped(String),
    #[error("{0}")]
    Invalid(String),
    /// The agent's model cannot run on this gateway (`upstream/…` without
    /// a provider): the agent, not the request, is at odds with it.
    #[error("{0}")]
    ModelUnavailable(String),
    #[error("agent {0} not found")]
    AgentNotFound(String),
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl RunError {
    /// The API error code (`agent_stopped`, `agent_not_found`, …), for
    /// transports that report errors in their own frames.
    pub fn code(&self) -> ErrorCode {
        ApiError::from(self).code()
    }
}

impl From<&RunError> for ApiError {
    fn from(e: &RunError) -> Self {
        match e {
            RunError::Store(s) => s.clone().into(),
            RunError::Bus(b) => b.clone().into(),
            RunError::AgentStopped(id) => ApiError::new(
                ErrorCode::AgentStopped,
                format!("agent {id} is stopped: start it first"),
            ),
            RunError::Invalid(msg) => ApiError::validation(msg.clone()),
            RunError::ModelUnavailable(msg) => ApiError::new(ErrorCode::Conflict, msg.clone()),
            RunError::AgentNotFound(id) => {
                ApiError::new(ErrorCode::AgentNotFound, format!("agent {id} not found"))
            }
            RunError::SessionNotFound(id) => ApiError::new(
                ErrorCode::SessionNotFound,
                format!("session {id} not found"),
            ),
            RunError::RunNotFound(id) => {
                ApiError::new(ErrorCode::RunNotFound, format!("run {id} not found"))
            }
            RunError::ShuttingDown => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        (&e).into()
    }
}
