//! `model: "upstream/<m>"`: a straight relay to the configured provider.
//!
//! The request is forwarded with `model` rewritten to `<m>` (nothing else
//! changes). A streamed answer is forwarded as it arrives: each upstream
//! chunk that ends on an SSE event boundary goes out as the same bytes; only
//! an incomplete trailing event is held until its end, so a keep-alive ping
//! can never split an event. A failure after the first byte (transport error,
//! idle timeout, a stream that ends without `[DONE]`) is sent as
//! `data: {"error":…}` then `data: [DONE]`. Upstream errors before the first
//! byte keep their status and OpenAI-shaped body, except provider auth
//! failures and 5xx, which are the gateway's problem: 502.

use std::time::Duration;

use axum::{
    body::Body,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::{timeout, timeout_at, Instant};

use super::{metered, OpenAiError};
use crate::{
    agent::models::upstream::error_message,
    domain::ErrorCode,
    edge::{runs::budget_message, TokenMeter},
    metrics::{upstream_answered, upstream_error, Upstream},
    state::AppState,
    stream::sse::{frame, sse_response},
};

/// Most of a non-streamed answer kept to read its usage.
const METERED_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Most of an upstream error body relayed.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

pub async fn relay(
    state: &AppState,
    mut body: Value,
    mut meter: TokenMeter,
) -> Result<Response, OpenAiError> {
    let requested = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(provider) = state.runtime.provider().cloned() else {
        return Err(OpenAiError::model_not_found(&requested));
    };
    let model = requested.trim_start_matches("upstream/");
    if model.is_empty() {
        return Err(OpenAiError::invalid(
            "`model` must name a provider model after `upstream/`",
            "model",
        ));
    }
    body["model"] = Value::from(model);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let wants_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if stream && !wants_usage {
        // The provider's count corrects the estimate (module doc of
        // `metered`); the client, which did not ask, does not see it.
        match body
            .get_mut("stream_options")
            .and_then(Value::as_object_mut)
        {
            Some(o) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            None => body["stream_options"] = serde_json::json!({"include_usage": true}),
        }
    }
    meter.prompt(prompt_chars(&body));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let sent = Instant::now();
    let deadline = sent + provider.first_token_timeout;
    let resp = match timeout_at(deadline, provider.chat_request(bytes).send()).await {
        Err(_) => {
            upstream_error(Upstream::Relay, "timeout");
            return Err(OpenAiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the provider did not answer in time",
                Some(ErrorCode::UpstreamTimeout),
            ));
        }
        Ok(Err(e)) => {
            upstream_error(Upstream::Relay, "connect");
            tracing::warn!(error = %e.without_url(), "provider unreachable");
            return Err(OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "the provider is unreachable",
                Some(ErrorCode::UpstreamUnavailable),
            ));
        }
        Ok(Ok(r)) => r,
    };
    upstream_answered(Upstream::Relay, sent.into_std());
    if !resp.status().is_success() {
        upstream_error(Upstream::Relay, "status");
        return Ok(error_answer(resp).await);
    }
    if stream {
        let ping = Duration::from_secs(state.config.sse_ping_secs.max(1));
        let frames = relay_frames(resp.bytes_stream(), deadline, provider.idle_timeout);
        let frames = metered_frames(frames, meter, wants_usage);
        return Ok(sse_response(frames, ping, state.edge.hard_stop.clone()));
    }
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = idle_guarded(resp.bytes_stream(), provider.idle_timeout, meter);
    let mut out = Response::new(Body::from_stream(body));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    Ok(out)
}

/// An upstream error answer as the client sees it.
async fn error_answer(resp: reqwest::Response) -> Response {
    let status = resp.status();
    let passthrough = status.is_client_error()
        && status != StatusCode::UNAUTHORIZED
        && status != StatusCode::FORBIDDEN;
    if !passthrough {
        let message = error_message(resp).await;
        tracing::warn!(status = %status, message = %message, "provider error");
        let msg = format!("the provider answered {}: {message}", status.as_u16());
        return OpenAiError::new(StatusCode::BAD_GATEWAY, msg, Some(ErrorCode::UpstreamError))
            .into_response();
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > ERROR_BODY_LIMIT {
            body.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    let shaped = serde_json::from_slice::<Value>(&body)
        .is_ok_and(|v| v.get("error").is_some_and(Value::is_object));
    if shaped {
        let mut out = Response::new(Body::from(body));
        *out.status_mut() = status;
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return out;
    }
    let text: String = String::from_utf8_lossy(&body).chars().take(500).collect();
    OpenAiError::new(
        status,
        format!("the provider answered {}: {text}", status.as_u16()),
        Some(ErrorCode::UpstreamError),
    )
    .into_response()
}

/// A non-streamed body that fails (the connection is cut) when the provider
/// stalls for longer than `idle`.
fn idle_guarded<S>(
    body: S,
    idle: Duration,
    mut meter: TokenMeter,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    async_stream::stream! {
        let mut body = std::pin::pin!(body);
        // The whole answer, to charge its usage once it is complete.
        let mut seen = BytesMut::new();
        loop {
            match timeout(idle, body.next()).await {
                Ok(Some(Ok(b))) => {
                    if seen.len() + b.len() <= METERED_BODY_LIMIT {
                        seen.extend_from_slice(&b);
                    }
                    yield Ok(b)
                }
                Ok(None) => {
                    metered::meter_body(&seen, &mut meter);
                    return;
                }
                Ok(Some(Err(e))) => { yield Err(std::io::Error::other(e.without_url())); return; }
                Err(_) => { yield Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "provider idle")); return; }
            }
        }
    }
}

/// `frames` charged to `meter` as they go (see [`metered`]); a budget
/// spent midway ends the stream after the frames that spent it, with an
/// error line (`token_budget_exceeded`) and `[DONE]`, and drops the
/// provider's stream. Dropping this stream (the client hung up) drops the
/// meter, which records what was charged.
fn metered_frames<S>(
    frames: S,
    mut meter: TokenMeter,
    wants_usage: bool,
) -> impl Stream<Item = Bytes> + Send
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    async_stream::stream! {
        let mut frames = std::pin::pin!(frames);
        while let Some(f) = frames.next().await {
            let (out, spent) = metered::meter_frames(f, &mut meter, wants_usage);
            if !out.is_empty() {
                yield out;
            }
            if let Some(s) = spent {
                let err = OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, budget_message(&s), Some(ErrorCode::TokenBudgetExceeded));
                yield frame(None, None, &serde_json::to_vec(&err.body()).unwrap_or_default());
                yield Bytes::from_static(b"data: [DONE]\n\n");
                return;
            }
        }
    }
}

/// Characters of a chat request's messages (its prompt, for the estimate).
fn prompt_chars(body: &Value) -> u64 {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.chars().count() as u64,
        // Content parts: the text ones.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|s| s.chars().count() as u64)
            .sum(),
        _ => 0,
    };
    messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(text)
        .sum()
}

/// The provider's SSE stream, re-cut only at event boundaries, ending with
/// an error frame and `[DONE]` if it breaks.
pub fn relay_frames<S>(
    body: S,
    first_deadline: Instant,
    idle: Duration,
) -> impl Stream<Item = Bytes> + Send
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    async_stream::stream! {
        let mut body = std::pin::pin!(body);
        let mut pending = BytesMut::new();
        let mut started = false;
        let mut saw_done = false;
        let failure = loop {
            let next = if started { timeout(idle, body.next()).await } else { timeout_at(first_deadline, body.next()).await };
            match next {
                Ok(Some(Ok(chunk))) => {
                    started = true;
                    if let Some(frames) = take_frames(&mut pending, chunk) {
                        saw_done = ends_with_done(&frames);
                        yield frames;
                    }
                }
                Ok(None) if saw_done => return,
                Ok(None) => break ("broken", "the provider's stream ended before [DONE]".to_owned()),
                Ok(Some(Err(e))) => break ("broken", format!("the provider's stream broke: {}", e.without_url())),
                Err(_) if started => break ("timeout", format!("the provider sent nothing for {} s", idle.as_secs())),
                Err(_) => break ("timeout", "the provider sent no token in time".to_owned()),
            }
        };
        let (kind, failure) = failure;
        tracing::warn!(reason = %failure, "relay stream failed");
        upstream_error(Upstream::Relay, kind);
        let err = OpenAiError::new(StatusCode::BAD_GATEWAY, failure, Some(ErrorCode::UpstreamStreamError));
        yield frame(None, None, &serde_json::to_vec(&err.body()).unwrap_or_default());
        yield Bytes::from_static(b"data: [DONE]\n\n");
    }
}

/// The complete events now available: `chunk` itself when nothing is
/// pending and it ends on a boundary (the common case: zero copy), else
/// everything up to the last boundary of the pending bytes.
fn take_frames(pending: &mut BytesMut, chunk: Bytes) -> Option<Bytes> {
    if pending.is_empty() && boundary_end(&chunk) == Some(chunk.len()) {
        return Some(chunk);
    }
    pending.extend_from_slice(&chunk);
    let end = boundary_end(pending)?;
    Some(pending.split_to(end).freeze())
}

/// The end of the last blank line (`\n\n` or `\r\n\r\n`) in `buf`.
fn boundary_end(buf: &[u8]) -> Option<usize> {
    (1..buf.len()).rev().find_map(|i| {
        let blank = buf[i] == b'\n'
            && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'));
        blank.then_some(i + 1)
    })
}

fn ends_with_done(frames: &[u8]) -> bool {
    frames.trim_ascii_end().ends_with(b"[DONE]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pass_whole_and_partials_wait() {
        let mut p = BytesMut::new();
        let whole = Bytes::from_static(b"data: {\"a\":1}\n\n");
        let out = take_frames(&mut p, whole.clone()).unwrap();
        assert_eq!(out.as_ptr(), whole.as_ptr(), "zero copy on the fast path");
        assert_eq!(
            take_frames(&mut p, Bytes::from_static(b"data: {\"b\"")),
            None
        );
        let out = take_frames(&mut p, Bytes::from_static(b":2}\n\ndata: [DO")).unwrap();
        assert_eq!(&out[..], b"data: {\"b\":2}\n\n");
        let out = take_frames(&mut p, Bytes::from_static(b"NE]\r\n\r\n")).unwrap();
        assert_eq!(&out[..], b"data: [DONE]\r\n\r\n");
        assert!(ends_with_done(&out));
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn a_broken_stream_ends_with_error_then_done() {
        let chunks: Vec<reqwest::Result<Bytes>> =
            vec![Ok(Bytes::from_static(b"data: {\"x\":1}\n\ndata: {\"half"))];
        let out: Vec<Bytes> = relay_frames(
            futures::stream::iter(chunks),
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .collect()
        .await;
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"data: {\"x\":1}\n\n");
        let err: Value =
            serde_json::from_slice(out[1].strip_prefix(b"data: ").unwrap().trim_ascii()).unwrap();
        assert_eq!(err["error"]["code"], "upstream_stream_error");
        assert_eq!(&out[2][..], b"data: [DONE]\n\n");
    }
}
