//! `kind = "anthropic"`: the Anthropic Messages API behind the same
//! attempts, `mid_stream` and metering as an OpenAI-compatible provider.
//!
//! The request is translated to a Messages request before it is sent, and
//! the answer back to OpenAI's shapes right where it is read: an SSE stream
//! becomes `data: {chat.completion.chunk}` events ending with
//! `data: [DONE]` once `message_stop` came; a non-streamed Message becomes
//! a `chat.completion` body. Everything after this point (first-byte
//! fallback, [`super::splice`], usage) sees an OpenAI provider. An `error`
//! event after the 200, or an event the translation cannot read, becomes an
//! event with an `error` object, which the relay treats as a failure after
//! the first byte. The translation itself is [`super`].

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use serde_json::{json, Value};

use super::{self as anthropic, AnthropicError, StreamTranslator, TranslateError};
use crate::providers::provider::BodyStream;

/// Most of a non-streamed Message read.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The Messages request for an OpenAI `body` (whose `model` is the
/// target's).
pub fn request(body: &Value) -> Result<Vec<u8>, TranslateError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let messages = anthropic::request_from_openai(body, model)?;
    Ok(serde_json::to_vec(&messages).unwrap_or_default())
}

/// What every translated chunk carries.
pub struct Ids {
    pub id: String,
    pub model: String,
    pub created: i64,
}

impl Ids {
    pub fn new(model: &str) -> Self {
        Self {
            id: crate::util::new_id("chatcmpl"),
            model: model.to_owned(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

fn event_bytes(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn error_event(e: &AnthropicError) -> Bytes {
    let kind = match e {
        AnthropicError::Upstream { kind, .. } => kind.as_str(),
        AnthropicError::Malformed(_) => "malformed",
    };
    event_bytes(&json!({"error": {"message": e.to_string(), "type": kind}}))
}

/// An Anthropic SSE body as an OpenAI SSE body.
pub fn stream(body: BodyStream, ids: Ids) -> BodyStream {
    async_stream::stream! {
        let mut events = body.eventsource();
        let mut t = StreamTranslator::new(ids.id, ids.model, ids.created, true);
        while let Some(next) = events.next().await {
            let event = match next {
                Ok(e) => e,
                Err(EventStreamError::Transport(e)) => { yield Err(e); return; }
                Err(e) => { yield Ok(error_event(&AnthropicError::Malformed(e.to_string()))); return; }
            };
            match t.on_event(&event.event, &event.data) {
                Ok(chunks) => {
                    if chunks.is_empty() {
                        continue;
                    }
                    let out: Vec<u8> = chunks.iter().flat_map(|c| event_bytes(c).to_vec()).collect();
                    yield Ok(Bytes::from(out));
                }
                Err(e) => { yield Ok(error_event(&e)); return; }
            }
            if t.done() {
                yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                return;
            }
        }
    }
    .boxed()
}

/// A non-streamed Message body as a `chat.completion` body (read whole).
pub fn whole(body: BodyStream, ids: Ids) -> BodyStream {
    async_stream::stream! {
        let mut body = body;
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) if all.len() + b.len() <= BODY_LIMIT => all.extend_from_slice(&b),
                Ok(_) => break,
                Err(e) => { yield Err(e); return; }
            }
        }
        let message: Value = serde_json::from_slice(&all).unwrap_or(Value::Null);
        let out = anthropic::response_to_openai(&message, &ids.id, &ids.model, ids.created)
            .unwrap_or_else(|e| json!({"error": {"message": e.to_string(), "type": "server_error"}}));
        yield Ok(Bytes::from(serde_json::to_vec(&out).unwrap_or_default()));
    }
    .boxed()
}
