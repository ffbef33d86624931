//! The agent runtime: agents that think, call tools and answer.
//!
//! # Layout
//!
//! - [`runtime`]: [`Runtime`]: starts runs, cancels them, answers their status.
//! - [`mode`]: [`RunMode`], where runs execute, chosen at start-up: [`Local`]
//!   (in this process, [`local`]) or queued for workers ([`crate::work::Queued`]).
//! - [`engine`]: [`Engine`], what executes runs in this process in either
//!   mode: live runs' handles, run tasks, settling runs left behind.
//! - `run`: one run's step loop (model → tools → … → reply) and its terminal `done`.
//! - [`approval`]: parking a run on a tool call that needs approval, and
//!   resuming it once decided; `decide`: [`Runtime::decide_approval`] and
//!   the sweeper that expires undecided requests.
//! - [`events`]: publishing events (the bus numbers them) and persisting them.
//! - [`logs`]: a run's log lines on `logs:<agent_id>`.
//! - `metering`: a run's token meter (budgets and usage).
//! - [`models`]: `echo` and `upstream/<model>` (OpenAI-compatible providers).
//! - [`sessions`]: the default session and sessions by name.
//! - [`tools`]: built-ins (`get_time`, `calculator`) and webhook tools.
//! - [`follow`]: following one run's events from a transport, cancel-on-disconnect.
//! - [`row`]: a new run's row, written beside its start; what waits for it.
//!
//! Events of a run, in order: `user_message` (one per message sent; kept as
//! the session's history and not echoed back on the run's own response), then
//! any of `internal_monologue`, `function_message`, `assistant_delta` (with
//! `stream_tokens`), then `assistant_message`, `usage`, and exactly one `done`
//! (preceded by `error` when the run failed).

pub mod approval;
mod decide;
pub mod engine;
pub mod events;
pub mod follow;
pub mod local;
pub mod logs;
mod metering;
pub mod mode;
pub mod models;
pub(crate) mod row;
mod run;
pub mod runtime;
pub mod sessions;
pub mod tools;

use serde::{Deserialize, Serialize};

pub use engine::{Ending, Engine, RunHandle};
pub use follow::{CancelOnDrop, RunFollower};
pub use local::Local;
pub use mode::RunMode;
pub use runtime::Runtime;

use crate::{
    domain::{AgentId, ErrorCode, RunId, SessionId},
    edge::{RunSlot, SlotRef},
    store::{Agent, Run},
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
#[derive(Debug)]
pub struct StartRun {
    /// The run's id, chosen by the caller so that it can follow the run
    /// before it starts ([`RunFollower::subscribe`]); `None`: a new one.
    pub run_id: Option<RunId>,
    pub agent_id: AgentId,
    /// The agent as the caller has just read it for the same account, so
    /// the start does not read it a second time; `None` (or an agent of
    /// another id or account): the start reads it. A snapshot: an agent
    /// stopped since is still run, as with a stop just after the read.
    pub agent: Option<Agent>,
    /// The session to talk in.
    pub session: SessionRef,
    /// The new user messages (role `user`, non-empty).
    pub messages: Vec<ChatMessage>,
    /// Publish `assistant_delta` events as the reply is produced.
    pub stream_tokens: bool,
    /// The client wants the run to outlive its connection (see [`CancelOnDrop`]).
    pub background: bool,
    /// The key's run slot the edge gave this start ([`crate::edge::Edge::start_run`]),
    /// held until the run ends; `None` for runs no key started (tests).
    pub slot: Option<RunSlot>,
    /// The models the starting key may use (its `models`); `None`: any. An
    /// agent on another model does not run (`model_not_found`).
    pub models: Option<Vec<String>>,
}

/// Which of an agent's sessions a run talks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRef {
    /// The agent's default session, made on first use.
    Default,
    /// A session by id: it must exist.
    Id(SessionId),
    /// The session called this (OpenAI's `user`), made on first use.
    Named(String),
}

impl From<Option<SessionId>> for SessionRef {
    fn from(id: Option<SessionId>) -> Self {
        id.map_or(Self::Default, Self::Id)
    }
}

/// What a key is told when it may not use `model`: OpenAI's words, which do
/// not say whether the model exists.
pub fn model_refused(model: &str) -> String {
    format!("The model `{model}` does not exist or you do not have access to it.")
}

/// A run ready to execute: everything an executor needs without asking the
/// gateway that accepted it (a queued run travels as this, in JSON). The
/// agent is the one the run was validated against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub account: String,
    pub agent: Agent,
    pub run: Run,
    pub messages: Vec<ChatMessage>,
    pub stream_tokens: bool,
    pub background: bool,
    /// The run's slot, handed off by the gateway that accepted it, for the
    /// process that executes it to hold ([`crate::edge::runs::RunSlots::adopt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotRef>,
    /// The decided approval a parked run resumes from
    /// ([`approval`]); `None` for a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// The models the starting key may use ([`StartRun::models`]), carried
    /// with the run (and kept with it while it is parked) so that every
    /// model call, a resumed run's included, is held to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
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
    /// The agent's model is not one the starting key may use.
    #[error("{}", model_refused(.0))]
    ModelNotAllowed(String),
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("approval {0} not found")]
    ApprovalNotFound(String),
    /// A change the record's state does not allow (an approval decided already).
    #[error("{0}")]
    Conflict(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl RunError {
    /// The code a client is shown, whatever the transport (an HTTP error,
    /// a WebSocket `error` frame).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Store(e) => e.code(),
            Self::Bus(e) => e.code(),
            Self::AgentStopped(_) => ErrorCode::AgentStopped,
            Self::Invalid(_) => ErrorCode::ValidationError,
            Self::ModelUnavailable(_) => ErrorCode::Conflict,
            Self::AgentNotFound(_) => ErrorCode::AgentNotFound,
            Self::ModelNotAllowed(_) => ErrorCode::ModelNotFound,
            Self::SessionNotFound(_) => ErrorCode::SessionNotFound,
            Self::RunNotFound(_) => ErrorCode::RunNotFound,
            Self::ApprovalNotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::ShuttingDown => ErrorCode::Unavailable,
        }
    }

    /// What a client is told: backend details stay in the logs.
    pub fn client_message(&self) -> String {
        match self {
            Self::Store(e) => e.client_message(),
            Self::Bus(e) => e.client_message(),
            Self::AgentStopped(id) => format!("agent {id} is stopped: start it first"),
            Self::Invalid(msg) | Self::ModelUnavailable(msg) | Self::Conflict(msg) => msg.clone(),
            other => other.to_string(),
        }
    }
}
