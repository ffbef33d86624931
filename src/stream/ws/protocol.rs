//! The WebSocket wire format of protocol/websocket.md: client frames parsed with errors
//! that name the problem, and the server's own (non-event) frames.
//!
//! Event frames are not built here: they are [`crate::bus::BusEvent::ws`],
//! encoded once at publish time and shared by every socket.

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    agent::ChatMessage,
    domain::{AgentId, ErrorCode, RunId, SessionId},
};

/// A parsed client frame with its optional `request_id` (echoed in replies).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub frame: ClientFrame,
    pub request_id: Option<Value>,
}

/// What a client can ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    UserMessage(UserMessage),
    Subscribe {
        channel: String,
        after: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    Cancel {
        run_id: RunId,
    },
    /// Decides a tool call waiting for approval (`approval_request`).
    ApprovalResponse(ApprovalAnswer),
    Ping,
}

/// `{"type":"approval_response", …}`: as `POST /v1/runs/{id}/approvals/{approval_id}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    pub run_id: RunId,
    pub approval_id: String,
    /// `approve` or `deny`.
    pub decision: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `{"type":"user_message", …}`: starts a run on an agent. Ids are taken
/// as given (an unknown one is not found), so the schema says `string`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct UserMessage {
    #[schema(value_type = String)]
    pub agent_id: AgentId,
    /// One user message (`message`) …
    #[serde(default)]
    pub message: Option<String>,
    /// … or a whole list (`messages`), as `POST /v1/agents/{id}/messages` takes.
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub session_id: Option<SessionId>,
    #[serde(default)]
    pub stream_tokens: bool,
    /// Keep running if this socket goes away.
    #[serde(default)]
    pub background: bool,
}

impl UserMessage {
    /// The messages to send, or a message naming what is missing.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, String> {
        match (&self.message, &self.messages) {
            (Some(_), Some(_)) => Err("give either `message` or `messages`, not both".into()),
            (Some(m), None) => Ok(vec![ChatMessage {
                role: "user".into(),
                content: m.clone(),
            }]),
            (None, Some(list)) if !list.is_empty() => Ok(list.clone()),
            (None, Some(_)) => Err("messages: must not be empty".into()),
            (None, None) => Err("missing field `message` (or `messages`)".into()),
        }
    }
}

#[derive(Deserialize)]
struct SubscribeBody {
    channel: String,
    #[serde(default)]
    after: Option<u64>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    channel: String,
}

#[derive(Deserialize)]
struct CancelBody {
    run_id: RunId,
}

/// Frame types a client may send, for the `unknown_type` message.
pub const CLIENT_TYPES: &str =
    "user_message, subscribe, unsubscribe, cancel, approval_response, ping";

/// A frame the server could not accept: sent back as an `error` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: Option<Value>,
}

impl FrameError {
    fn validation(message: impl Into<String>, request_id: Option<Value>) -> Self {
        Self {
            code: ErrorCode::ValidationError,
            message: message.into(),
            request_id,
        }
    }

    /// The `error` frame to send back.
    pub fn frame(&self) -> Utf8Bytes {
        error(self.code, &self.message, self.request_id.as_ref(), None)
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request, FrameError> {
    crate::edge::limits::check_json_depth(text.as_bytes())
        .map_err(|e| FrameError::validation(format!("frame: {e}"), None))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| FrameError::validation(format!("malformed JSON: {e}"), None))?;
    let Value::Object(mut obj) = value else {
        return Err(FrameError::validation(
            "a frame must be a JSON object",
            None,
        ));
    };
    let request_id = match obj.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
        Some(_) => {
            return Err(FrameError::validation(
                "request_id: must be a string or a number",
                None,
            ));
        }
    };
    let kind = match obj.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(FrameError::validation("type: must be a string", request_id)),
        None => return Err(FrameError::validation("missing field `type`", request_id)),
    };
    let frame = match kind.as_str() {
        "user_message" => ClientFrame::UserMessage(body(obj, &request_id)?),
        "subscribe" => {
            let b: SubscribeBody = body(obj, &request_id)?;
            ClientFrame::Subscribe {
                channel: b.channel,
                after: b.after,
            }
        }
        "unsubscribe" => ClientFrame::Unsubscribe {
            channel: body::<UnsubscribeBody>(obj, &request_id)?.channel,
        },
        "cancel" => ClientFrame::Cancel {
            run_id: body::<CancelBody>(obj, &request_id)?.run_id,
        },
        "approval_response" => ClientFrame::ApprovalResponse(body(obj, &request_id)?),
        "ping" => ClientFrame::Ping,
        other => {
            return Err(FrameError {
                code: ErrorCode::UnknownType,
                message: format!(
                    "unknown frame type `{}`; expected one of {CLIENT_TYPES}",
                    truncate(other)
                ),
                request_id,
            })
        }
    };
    Ok(Request { frame, request_id })
}

fn body<T: serde::de::DeserializeOwned>(
    obj: Map<String, Value>,
    request_id: &Option<Value>,
) -> Result<T, FrameError> {
    // serde's message names the field: "missing field `channel`", "invalid type: …".
    serde_json::from_value(Value::Object(obj))
        .map_err(|e| FrameError::validation(e.to_string(), request_id.clone()))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn text(v: Value) -> Utf8Bytes {
    Utf8Bytes::from(v.to_string())
}

fn with_request_id(mut v: Value, request_id: Option<&Value>) -> Value {
    if let (Some(id), Some(obj)) = (request_id, v.as_object_mut()) {
        obj.insert("request_id".into(), id.clone());
    }
    v
}

/// `{"type":"run_started","run_id":…,"request_id":…}`.
pub fn run_started(run_id: &str, request_id: Option<&Value>) -> Utf8Bytes {
    text(json!({"type": "run_started", "run_id": run_id, "request_id": request_id}))
}

/// `{"type":"subscribed","channel":…}`.
pub fn subscribed(channel: &str, request_id: Option<&Value>) -> Utf8Bytes {
    text(with_request_id(
        json!({"type": "subscribed", "channel": channel}),
        request_id,
    ))
}

/// `{"type":"unsubscribed","channel":…}`.
pub fn unsubscribed(channel: &str, request_id: Option<&Value>) -> Utf8Bytes {
    text(with_request_id(
        json!({"type": "unsubscribed", "channel": channel}),
        request_id,
    ))
}

/// `{"type":"pong"}`.
pub fn pong(request_id: Option<&Value>) -> Utf8Bytes {
    text(with_request_id(json!({"type": "pong"}), request_id))
}

/// `{"type":"error","code":…,"message":…,"request_id":…}`, with the channel
/// it concerns when there is one.
pub fn error(
    code: ErrorCode,
    message: &str,
    request_id: Option<&Value>,
    channel: Option<&str>,
) -> Utf8Bytes {
    let mut v =
        json!({"type": "error", "code": code, "message": message, "request_id": request_id});
    if let (Some(c), Some(obj)) = (channel, v.as_object_mut()) {
        obj.insert("channel".into(), c.into());
    }
    text(v)
}

/// [`error`] with `retry_after` (seconds), when the refusal says when to
/// retry (a run start over the key's rate).
pub fn error_retry(
    code: ErrorCode,
    message: &str,
    request_id: Option<&Value>,
    retry_after: Option<u64>,
) -> Utf8Bytes {
    let mut v =
        json!({"type": "error", "code": code, "message": message, "request_id": request_id});
    if let (Some(secs), Some(obj)) = (retry_after, v.as_object_mut()) {
        obj.insert("retry_after".into(), secs.into());
    }
    text(v)
}

/// The last frame of a socket closed for falling behind: where each channel
/// got to, so the client can resubscribe with `after`.
pub fn lagged(
    channel: Option<&str>,
    last_seq: Option<u64>,
    positions: &Map<String, Value>,
) -> Utf8Bytes {
    text(json!({
        "type": "error",
        "code": ErrorCode::Lagged,
        "message": "the client fell too far behind; reconnect and subscribe with `after` to resume",
        "request_id": null,
        "channel": channel,
        "last_seq": last_seq,
        "channels": positions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FrameError {
        parse(text).unwrap_err()
    }

    #[test]
    fn parses_every_client_frame() {
        let r = parse(
            r#"{"type":"user_message","agent_id":"agent-1","message":"Hi","request_id":"r1"}"#,
        )
        .unwrap();
        assert_eq!(r.request_id, Some(json!("r1")));
        let ClientFrame::UserMessage(m) = r.frame else {
            panic!()
        };
        assert_eq!(m.chat_messages().unwrap()[0].content, "Hi");
        assert!(!m.background && !m.stream_tokens);
        assert_eq!(
            parse(r#"{"type":"subscribe","channel":"agent:a","after":42}"#)
                .unwrap()
                .frame,
            ClientFrame::Subscribe {
                channel: "agent:a".into(),
                after: Some(42)
            }
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","channel":"logs:a","request_id":7}"#).unwrap(),
            Request {
                frame: ClientFrame::Unsubscribe {
                    channel: "logs:a".into()
                },
                request_id: Some(json!(7))
            }
        );
        assert_eq!(
            parse(r#"{"type":"cancel","run_id":"run-1"}"#)
                .unwrap()
                .frame,
            ClientFrame::Cancel {
                run_id: "run-1".into()
            }
        );
        assert_eq!(
            parse(r#"{"type":"ping"}"#).unwrap().frame,
            ClientFrame::Ping
        );
    }

    #[test]
    fn bad_frames_get_codes_that_say_why() {
        assert_eq!(err("{nope").code, ErrorCode::ValidationError);
        assert!(err("{nope").message.starts_with("malformed JSON"));
        assert_eq!(err("[1]").code, ErrorCode::ValidationError);
        assert!(err(r#"{"channel":"x"}"#).message.contains("`type`"));
        let e = err(r#"{"type":"shout","request_id":"r9"}"#);
        assert_eq!(
            (e.code, e.request_id),
            (ErrorCode::UnknownType, Some(json!("r9")))
        );
        assert!(e.message.contains("shout") && e.message.contains("subscribe"));
        let e = err(r#"{"type":"subscribe","request_id":"r2"}"#);
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(e.message.contains("`channel`"), "{}", e.message);
        assert_eq!(e.request_id, Some(json!("r2")));
        assert!(err(r#"{"type":"subscribe","channel":"a","after":-1}"#)
            .message
            .contains("invalid value"));
        assert!(err(r#"{"type":"ping","request_id":{}}"#)
            .message
            .starts_with("request_id"));
    }

    #[test]
    fn user_message_needs_exactly_one_form() {
        let m = |s: &str| match parse(s).unwrap().frame {
            ClientFrame::UserMessage(m) => m.chat_messages(),
            _ => panic!(),
        };
        assert!(m(r#"{"type":"user_message","agent_id":"a"}"#)
            .unwrap_err()
            .contains("`message`"));
        assert!(m(r#"{"type":"user_message","agent_id":"a","messages":[]}"#).is_err());
        assert!(m(r#"{"type":"user_message","agent_id":"a","message":"x","messages":[{"role":"user","content":"y"}]}"#).is_err());
        let two = m(
            r#"{"type":"user_message","agent_id":"a","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}"#,
        );
        assert_eq!(two.unwrap().len(), 2);
    }

    #[test]
    fn server_frames_have_the_documented_shape() {
        let v: Value =
            serde_json::from_str(&error(ErrorCode::UnknownType, "m", None, Some("agent:a")))
                .unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"unknown_type","message":"m","request_id":null,"channel":"agent:a"})
        );
        let v: Value = serde_json::from_str(&run_started("run-1", Some(&json!("r1")))).unwrap();
        assert_eq!(
            v,
            json!({"type":"run_started","run_id":"run-1","request_id":"r1"})
        );
        let v: Value = serde_json::from_str(&pong(None)).unwrap();
        assert_eq!(v, json!({"type":"pong"}));
        let v: Value = serde_json::from_str(&subscribed("logs:a", Some(&json!(3)))).unwrap();
        assert_eq!(
            v,
            json!({"type":"subscribed","channel":"logs:a","request_id":3})
        );
    }
}
