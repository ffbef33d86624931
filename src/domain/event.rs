//! [`AgentEvent`]: one event of an agent's history or log stream
//! (protocol/events.md), built from typed values and encoded in one place.
//!
//! # Encoding
//!
//! Events were `serde_json::Map`s before they were types, and a `Map`
//! (without `preserve_order`) writes its keys sorted. Every event already
//! stored, kept in Redis or seen by a client has that key order, and
//! protocol/events.md promises the same bytes on every transport and on
//! replay, so [`AgentEvent`]'s `Serialize` writes the common fields and the
//! body's fields merged in sorted key order too (no intermediate map: the
//! entries are borrowed, sorted on the stack and written once). Absent
//! optional fields (`seq` before the bus numbers the event, `session_id` on
//! log lines) are left out. Decoding accepts every event the map-based code
//! wrote.

use serde::{ser::SerializeMap, Deserialize, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    error_code::ErrorCode,
    ids::{AgentId, EventId, RunId, SessionId},
    kinds::{ApprovalDecision, FunctionStatus, LogLevel, MessageType, StopReason},
};

/// One event: the common fields and what its `message_type` adds. Its
/// schema is written by hand next to its encoding ([`super::event_schema`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentEvent {
    /// `msg-…`, unique per event (`log-…` for log lines).
    pub id: EventId,
    /// The event's position in its channel: set by the bus when it is
    /// published, absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The run it belongs to.
    pub run_id: RunId,
    /// The agent it belongs to.
    pub agent_id: AgentId,
    /// The run's session; absent on log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub date: String,
    /// `message_type` and the fields that go with it.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What an event says, tagged by `message_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum EventBody {
    /// A message the user sent to the run (one per message, first).
    UserMessage {
        #[schema(min_length = 1)]
        message: String,
    },
    /// The agent thinking out loud.
    InternalMonologue { message: String },
    /// One tool call, after it returned.
    FunctionMessage { message: FunctionCall },
    /// A piece of the reply (only with `stream_tokens: true`).
    AssistantDelta { delta: String },
    /// The whole reply: the run's last model step.
    AssistantMessage { message: String },
    /// Token counts summed over the run's model calls.
    Usage {
        prompt_tokens: u64,
        completion_tokens: u64,
        total_tokens: u64,
    },
    /// Why the run failed; always followed by `done` (`error`).
    Error {
        code: ErrorCode,
        #[schema(min_length = 1)]
        message: String,
    },
    /// The last event of every run, exactly once.
    Done { stop_reason: StopReason },
    /// A log line of `logs:<agent id>`.
    Log {
        level: LogLevel,
        #[schema(min_length = 1)]
        message: String,
    },
    /// The model called a tool that needs a person's approval: the run is
    /// `waiting_approval` until `POST /v1/runs/{id}/approvals/{approval_id}`
    /// (or the WebSocket's `approval_response`) decides, or `expires_at`.
    ApprovalRequest {
        /// `appr-…`, what the decision names.
        #[schema(min_length = 1)]
        approval_id: String,
        /// The tool's name.
        #[schema(min_length = 1)]
        tool: String,
        /// The call's arguments as parsed JSON (the raw text as a string
        /// when they are not JSON).
        arguments: Value,
        /// When the request expires and counts as denied (RFC 3339).
        #[schema(value_type = super::values::Timestamp)]
        expires_at: String,
    },
    /// The approval was decided (or expired); the run goes on.
    ApprovalResponse {
        #[schema(min_length = 1)]
        approval_id: String,
        decision: ApprovalDecision,
        /// The id of the key that decided; absent when the request expired.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
        /// The decider's reason, when one was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A tool call and its result (`function_message`'s `message`). Fields are
/// declared in sorted order: that is the order they are written in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionCall {
    /// The call's arguments as parsed JSON (an object for well-behaved
    /// models); the raw text as a string when the model sent arguments that
    /// are not JSON (and then status is error).
    pub args: Value,
    /// The tool's name.
    #[schema(min_length = 1)]
    pub function: String,
    /// Built-ins: `get_time` a timestamp string, `calculator` a number.
    /// Webhooks: the response body as JSON when it parses, else as a
    /// string. On error: a string saying what went wrong.
    pub result: Value,
    pub status: FunctionStatus,
}

impl EventBody {
    /// The `message_type` of this body.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::UserMessage { .. } => MessageType::UserMessage,
            Self::InternalMonologue { .. } => MessageType::InternalMonologue,
            Self::FunctionMessage { .. } => MessageType::FunctionMessage,
            Self::AssistantDelta { .. } => MessageType::AssistantDelta,
            Self::AssistantMessage { .. } => MessageType::AssistantMessage,
            Self::Usage { .. } => MessageType::Usage,
            Self::Error { .. } => MessageType::Error,
            Self::Done { .. } => MessageType::Done,
            Self::Log { .. } => MessageType::Log,
            Self::ApprovalRequest { .. } => MessageType::ApprovalRequest,
            Self::ApprovalResponse { .. } => MessageType::ApprovalResponse,
        }
    }
}

impl AgentEvent {
    /// A new event of a run, dated now, not yet numbered.
    pub fn new(agent_id: AgentId, run_id: RunId, session_id: SessionId, body: EventBody) -> Self {
        Self {
            id: EventId::message(),
            seq: None,
            run_id,
            agent_id,
            session_id: Some(session_id),
            date: crate::util::now(),
            body,
        }
    }

    /// A new log line of a run (no session), dated now, not yet numbered.
    pub fn log(agent_id: AgentId, run_id: RunId, level: LogLevel, message: String) -> Self {
        Self {
            id: EventId::log(),
            seq: None,
            run_id,
            agent_id,
            session_id: None,
            date: crate::util::now(),
            body: EventBody::Log { level, message },
        }
    }

    pub fn message_type(&self) -> MessageType {
        self.body.message_type()
    }

    /// The event's JSON with `seq` set to `seq` (or left out with `None`),
    /// whatever the event's own `seq` is: what the bus publishes.
    pub fn to_json_with_seq(&self, seq: Option<u64>) -> Vec<u8> {
        serde_json::to_vec(&Numbered { event: self, seq })
            .expect("an event always serialises: its keys are strings")
    }

    /// Decodes an event as stored or carried by the bus.
    pub fn from_json(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }
}

impl Serialize for AgentEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Numbered {
            event: self,
            seq: self.seq,
        }
        .serialize(s)
    }
}

/// An event written with the given `seq`.
struct Numbered<'a> {
    event: &'a AgentEvent,
    seq: Option<u64>,
}

/// One field's value, borrowed from the event.
#[derive(Clone, Copy)]
enum Field<'a> {
    Str(&'a str),
    Num(u64),
    Call(&'a FunctionCall),
    Json(&'a Value),
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::Num(v) => s.serialize_u64(*v),
            Field::Call(v) => v.serialize(s),
            Field::Json(v) => v.serialize(s),
        }
    }
}

/// The most fields an event has (`approval_request` and
/// `approval_response`: 7 common + 4).
const MAX_FIELDS: usize = 11;

/// Fields gathered on the stack, written in sorted key order.
struct Fields<'a> {
    entries: [(&'static str, Field<'a>); MAX_FIELDS],
    len: usize,
}

impl<'a> Fields<'a> {
    fn push(&mut self, key: &'static str, value: Field<'a>) {
        self.entries[self.len] = (key, value);
        self.len += 1;
    }
}

impl Serialize for Numbered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut f = Fields {
            entries: [("", Field::Num(0)); MAX_FIELDS],
            len: 0,
        };
        f.push("id", Field::Str(e.id.as_str()));
        if let Some(seq) = self.seq {
            f.push("seq", Field::Num(seq));
        }
        f.push("run_id", Field::Str(e.run_id.as_str()));
        f.push("agent_id", Field::Str(e.agent_id.as_str()));
        if let Some(session) = &e.session_id {
            f.push("session_id", Field::Str(session.as_str()));
        }
        f.push("date", Field::Str(&e.date));
        f.push("message_type", Field::Str(e.message_type().as_str()));
        push_body(&mut f, &e.body);
        let entries = &mut f.entries[..f.len];
        entries.sort_unstable_by_key(|(k, _)| *k);
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn push_body<'a>(f: &mut Fields<'a>, body: &'a EventBody) {
    match body {
        EventBody::UserMessage { message }
        | EventBody::InternalMonologue { message }
        | EventBody::AssistantMessage { message } => f.push("message", Field::Str(message)),
        EventBody::FunctionMessage { message } => f.push("message", Field::Call(message)),
        EventBody::AssistantDelta { delta } => f.push("delta", Field::Str(delta)),
        EventBody::Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
        } => {
            f.push("prompt_tokens", Field::Num(*prompt_tokens));
            f.push("completion_tokens", Field::Num(*completion_tokens));
            f.push("total_tokens", Field::Num(*total_tokens));
        }
        EventBody::Error { code, message } => {
            f.push("code", Field::Str(code.as_str()));
            f.push("message", Field::Str(message));
        }
        EventBody::Done { stop_reason } => f.push("stop_reason", Field::Str(stop_reason.as_str())),
        EventBody::Log { level, message } => {
            f.push("level", Field::Str(level.as_str()));
            f.push("message", Field::Str(message));
        }
        EventBody::ApprovalRequest {
            approval_id,
            tool,
            arguments,
            expires_at,
        } => {
            f.push("approval_id", Field::Str(approval_id));
            f.push("tool", Field::Str(tool));
            f.push("arguments", Field::Json(arguments));
            f.push("expires_at", Field::Str(expires_at));
        }
        EventBody::ApprovalResponse {
            approval_id,
            decision,
            key_id,
            reason,
        } => {
            f.push("approval_id", Field::Str(approval_id));
            f.push("decision", Field::Str(decision.as_str()));
            if let Some(k) = key_id {
                f.push("key_id", Field::Str(k));
            }
            if let Some(r) = reason {
                f.push("reason", Field::Str(r));
            }
        }
    }
}

/// Events for tests of what carries them: fixed ids and dates, so the same
/// call gives the same bytes.
#[cfg(test)]
impl AgentEvent {
    /// A log line of `run` saying `n`.
    pub(crate) fn test_line(run: &str, n: u64) -> Self {
        let mut e = Self::log("agent-t".into(), run.into(), LogLevel::Info, n.to_string());
        (e.id, e.date) = (format!("log-{n}").into(), "2026-11-23T15:54:15.538Z".into());
        e
    }

    /// An event of `run` on an agent's channel saying `body`.
    pub(crate) fn test_event(run: &str, body: EventBody) -> Self {
        let mut e = Self::new("agent-t".into(), run.into(), "sess-t".into(), body);
        (e.id, e.date) = ("msg-t".into(), "2026-11-23T15:54:15.538Z".into());
        e
    }

    /// An event of `run` of type `kind`, with made-up fields.
    pub(crate) fn test_of(kind: MessageType, run: &str) -> Self {
        let m = || "m".to_owned();
        let body = match kind {
            MessageType::UserMessage => EventBody::UserMessage { message: m() },
            MessageType::InternalMonologue => EventBody::InternalMonologue { message: m() },
            MessageType::FunctionMessage => EventBody::FunctionMessage {
                message: FunctionCall {
                    args: serde_json::json!({}),
                    function: "get_time".into(),
                    result: m().into(),
                    status: FunctionStatus::Success,
                },
            },
            MessageType::AssistantDelta => EventBody::AssistantDelta { delta: m() },
            MessageType::AssistantMessage => EventBody::AssistantMessage { message: m() },
            MessageType::Usage => EventBody::Usage {
                prompt_tokens: 1,
                completion_tokens: 1,
                total_tokens: 2,
            },
            MessageType::Error => EventBody::Error {
                code: ErrorCode::InternalError,
                message: m(),
            },
            MessageType::Done => EventBody::Done {
                stop_reason: StopReason::EndTurn,
            },
            MessageType::Log => return Self::test_line(run, 0),
            MessageType::ApprovalRequest => EventBody::ApprovalRequest {
                approval_id: "appr-t".into(),
                tool: "get_time".into(),
                arguments: serde_json::json!({}),
                expires_at: "2026-11-23T16:04:15.538Z".into(),
            },
            MessageType::ApprovalResponse => EventBody::ApprovalResponse {
                approval_id: "appr-t".into(),
                decision: ApprovalDecision::Approve,
                key_id: Some("key-t".into()),
                reason: None,
            },
        };
        Self::test_event(run, body)
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
