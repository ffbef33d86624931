//! Server-Sent Events responses built from pre-encoded frames.
//!
//! Events arrive already framed (`BusEvent::sse`), so the response body is a
//! plain byte stream: no per-subscriber serialisation. A `: ping` comment is
//! sent as the first bytes (so proxies and EventSource see the stream open at
//! once) and again whenever the stream has been quiet for `ping`. The stream
//! ends when the source ends or its [`Stop`] fires: an idle tail's drain
//! ticket (after a `retry:` line with the ticket's reconnect hint), or the
//! hard stop for the streams of running runs.

use std::time::Duration;

use axum::{
    body::Body,
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::drain::Ticket;
use crate::domain::ErrorCode;

/// Tells nginx not to buffer the stream (a `&str` name would be parsed per
/// response).
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The SSE comment sent as keep-alive.
pub const PING: &[u8] = b": ping\n\n";

/// What ends a stream early.
pub enum Stop {
    /// This token (the hard stop: streams of running runs).
    Token(CancellationToken),
    /// The stream's turn in the drain of idle streams; its reconnect hint
    /// goes out as `retry:` first. Held (registered) while the stream lives.
    Drain(Ticket),
}

impl From<CancellationToken> for Stop {
    fn from(token: CancellationToken) -> Self {
        Self::Token(token)
    }
}

impl From<Ticket> for Stop {
    fn from(ticket: Ticket) -> Self {
        Self::Drain(ticket)
    }
}

impl Stop {
    fn token(&self) -> &CancellationToken {
        match self {
            Self::Token(t) => t,
            Self::Drain(t) => &t.token,
        }
    }

    /// The `retry:` line sent before the stream ends, if any.
    fn last_words(&self) -> Option<Bytes> {
        match self {
            Self::Drain(Ticket {
                retry: Some(retry), ..
            }) => Some(format!("retry: {}\n\n", retry.as_millis()).into()),
            _ => None,
        }
    }
}

/// Wraps `frames` (complete SSE frames) into a streaming response with
/// keep-alive pings and the headers protocol/sse.md requires.
pub fn sse_response<S>(frames: S, ping: Duration, stop: impl Into<Stop>) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let stop = stop.into();
    let body = async_stream::stream! {
        // Counted open until the body is dropped (sent out, or client gone).
        let _open = crate::metrics::ConnGuard::open(crate::metrics::Conn::Sse);
        yield Ok::<Bytes, std::io::Error>(Bytes::from_static(PING));
        let mut frames = std::pin::pin!(frames);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.token().cancelled() => {
                    if let Some(words) = stop.last_words() {
                        yield Ok(words);
                    }
                    break;
                }
                next = frames.next() => match next {
                    Some(frame) => {
                        tick.reset();
                        yield Ok(frame);
                    }
                    None => break,
                },
                _ = tick.tick() => yield Ok(Bytes::from_static(PING)),
            }
        }
    };
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
    resp
}

/// Frames one SSE event by hand, for events that are not on the bus (OpenAI
/// chunks, stream-level errors).
pub fn frame(id: Option<u64>, event: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 48);
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    if let Some(ev) = event {
        out.extend_from_slice(format!("event: {ev}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// The final `event: error` frame of a stream that cannot go on (`lagged`,
/// `history_expired`, …). It has no `id:`, so the client's `Last-Event-ID`
/// stays the last event it really got; `last_seq` repeats it for clients
/// that resume with `?after=`.
pub fn error_frame(code: ErrorCode, message: &str, last_seq: Option<u64>) -> Bytes {
    if code == ErrorCode::Lagged {
        crate::metrics::lagged_close(crate::metrics::Conn::Sse);
    }
    let body = StreamError {
        code,
        last_seq,
        message,
    };
    let data = serde_json::to_vec(&body).unwrap_or_default();
    frame(None, Some("error"), &data)
}

/// The `data:` of [`error_frame`] (protocol/schemas/stream-error.json).
/// Fields in sorted order: the order they were written in as a map.
#[derive(serde::Serialize)]
pub struct StreamError<'a> {
    pub code: ErrorCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    pub message: &'a str,
}

impl utoipa::PartialSchema for StreamError<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::domain::schema::schema_json(serde_json::json!({
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": false,
            "properties": {
                "code": {
                    "description": "`lagged`: the client read too slowly and events were dropped for it; reconnect with Last-Event-ID / ?after= = last_seq. `history_expired`: the cursor is older than the kept history (the stream answers 200 with only this frame). `unavailable`: the bus or store failed.",
                    "type": "string",
                    "enum": [ErrorCode::Lagged, ErrorCode::HistoryExpired, ErrorCode::Unavailable],
                },
                "message": {"type": "string", "minLength": 1},
                "last_seq": {
                    "description": "Only with `lagged`: the seq of the last event this stream delivered.",
                    "type": "integer",
                    "minimum": 0,
                },
            },
            "if": {"properties": {"code": {"const": "lagged"}}},
            "then": {"required": ["last_seq"]},
            "else": {"not": {"required": ["last_seq"]}},
        }))
    }
}

impl utoipa::ToSchema for StreamError<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "StreamError".into()
    }
}
