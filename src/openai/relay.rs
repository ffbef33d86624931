//! `model: "upstream/<m>"` or a route's name: a relay to the route's
//! providers ([`crate::providers`]).
//!
//! The request is forwarded with `model` rewritten to the target's model
//! (nothing else changes). Before the first byte, the route's targets are
//! tried in turn ([`attempt::open`]); the caller sees one response, whose
//! `X-Weir-Provider` header names the provider that served it. A streamed
//! answer is forwarded as it arrives: each upstream chunk that ends on an
//! SSE event boundary goes out as the same bytes; only an incomplete
//! trailing event is held until its end, so a keep-alive ping can never
//! split an event. A failure after the first byte follows the route's
//! `mid_stream` ([`splice`]): `data: {"error":…}` then `data: [DONE]`, or
//! the rest of the completion from the next target. Upstream errors before
//! the first byte: a caller's 4xx keeps its status and OpenAI-shaped body;
//! provider auth failures, 5xx, timeouts and connect errors, once every
//! attempt failed, are the gateway's problem: 502 (504 for a timeout), and
//! a 429 from the last provider tried is passed on with its `Retry-After`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::{timeout, Instant};

use super::{metered, OpenAiError};
use crate::{
    domain::ErrorCode,
    edge::{runs::budget_message, TokenMeter},
    metrics::Upstream,
    providers::{
        attempt::{self, Failed, Failure, Opened},
        config::Kind,
        error_message,
        splice::{self, Piece},
        Route,
    },
    state::AppState,
    stream::sse::{frame, sse_response},
};

/// Most of a non-streamed answer kept to read its usage.
const METERED_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Most of an upstream error body relayed.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The header naming the provider that served an answer.
pub static PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-weir-provider");

pub async fn relay(
    state: &AppState,
    mut body: Value,
    mut meter: TokenMeter,
    route: Arc<Route>,
) -> Result<Response, OpenAiError> {
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
    let opened = match open(&route, &mut body).await? {
        Ok(o) => o,
        Err(answer) => return Ok(answer),
    };
    let served_by = opened.target.provider.name.clone();
    meter.set_provider(&served_by);
    // Charged once the provider is known, so usage has it under its name.
    meter.prompt(prompt_chars(&body));
    // Named on the request's access line (`finished processing request`):
    // one line per request, as for every other route.
    tracing::Span::current().record("provider", served_by.as_str());
    tracing::debug!(route = %route.name, provider = %served_by, model = %opened.target.model, "relaying");
    let mut out = if stream {
        let ping = Duration::from_secs(state.config.sse_ping_secs.max(1));
        let pieces = splice::pieces(route, opened, body);
        let frames = metered_frames(pieces, meter, wants_usage);
        sse_response(frames, ping, state.edge.hard_stop.clone())
    } else {
        let content_type = opened.content_type.clone();
        let idle = opened.target.provider.idle_timeout;
        let first = futures::stream::once(std::future::ready(Ok(opened.first)));
        let body = idle_guarded(first.chain(opened.rest), idle, meter);
        let mut out = Response::new(Body::from_stream(body));
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            content_type.unwrap_or(HeaderValue::from_static("application/json")),
        );
        out
    };
    name_provider(&mut out, &served_by);
    Ok(out)
}

/// The route's first target to answer, or the answer to pass on (a
/// provider's 4xx), or the caller's error.
async fn open(route: &Route, body: &mut Value) -> Result<Result<Opened, Response>, OpenAiError> {
    let deadline = Instant::now() + route.deadline;
    match attempt::open(route, &route.plan(), body, Upstream::Relay, deadline).await {
        Ok(o) => Ok(Ok(o)),
        Err(Failed::Invalid { param, message }) => Err(OpenAiError::invalid(message, &param)),
        Err(Failed::Exhausted(f)) => Err(failure_error(route, f)),
        Err(Failed::Answer(target, resp)) => {
            let mut out = match target.provider.kind {
                Kind::Openai => error_answer(resp).await,
                // Anthropic's error body is not OpenAI's: say it in ours.
                Kind::Anthropic => {
                    let status = StatusCode::from_u16(resp.status().as_u16())
                        .unwrap_or(StatusCode::BAD_GATEWAY);
                    let message = error_message(resp).await;
                    OpenAiError::new(status, message, Some(ErrorCode::UpstreamError))
                        .into_response()
                }
            };
            name_provider(&mut out, &target.provider.name);
            Ok(Err(out))
        }
    }
}

fn name_provider(resp: &mut Response, name: &str) {
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert(PROVIDER_HEADER.clone(), v);
    }
}

/// The caller's error when no target gave a stream.
fn failure_error(route: &Route, failure: Failure) -> OpenAiError {
    let (status, message, code) = match failure {
        Failure::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "the provider did not answer in time".to_owned(),
            ErrorCode::UpstreamTimeout,
        ),
        Failure::Connect(_) => (
            StatusCode::BAD_GATEWAY,
            "the provider is unreachable".to_owned(),
            ErrorCode::UpstreamUnavailable,
        ),
        Failure::Status { status, message } => (
            StatusCode::BAD_GATEWAY,
            format!("the provider answered {status}: {message}"),
            ErrorCode::UpstreamError,
        ),
        Failure::Broken(m) => (
            StatusCode::BAD_GATEWAY,
            format!("the provider's answer broke: {m}"),
            ErrorCode::UpstreamError,
        ),
        Failure::RateLimited {
            message,
            retry_after,
        } => {
            let msg = format!("the provider is rate limited: {message}");
            return OpenAiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                msg,
                Some(ErrorCode::UpstreamError),
            )
            .retry_after(retry_after);
        }
        Failure::NoTarget { retry_after } => {
            let msg = format!(
                "every provider of `{}` is cooling down or its circuit is open",
                route.name
            );
            return OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                msg,
                Some(ErrorCode::UpstreamUnavailable),
            )
            .retry_after(retry_after);
        }
    };
    OpenAiError::new(status, message, Some(code))
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
    S: Stream<Item = Result<Bytes, crate::providers::provider::BodyError>> + Send + 'static,
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
                Ok(Some(Err(e))) => { yield Err(std::io::Error::other(e)); return; }
                Err(_) => { yield Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "provider idle")); return; }
            }
        }
    }
}

/// `pieces` charged to `meter` as they go (see [`metered`]); a budget
/// spent midway ends the stream after the frames that spent it, with an
/// error line (`token_budget_exceeded`) and `[DONE]`, and drops the
/// provider's stream. Dropping this stream (the client hung up) drops the
/// meter, which records what was charged.
fn metered_frames<S>(
    pieces: S,
    mut meter: TokenMeter,
    wants_usage: bool,
) -> impl Stream<Item = Bytes> + Send
where
    S: Stream<Item = Piece> + Send + 'static,
{
    async_stream::stream! {
        let mut pieces = std::pin::pin!(pieces);
        while let Some(piece) = pieces.next().await {
            let f = match piece {
                Piece::Frames(f) => f,
                Piece::Switched(provider) => { meter.set_provider(&provider); continue; }
                Piece::Failed(message) => {
                    let err = OpenAiError::new(StatusCode::BAD_GATEWAY, message, Some(ErrorCode::UpstreamStreamError));
                    yield frame(None, None, &serde_json::to_vec(&err.body()).unwrap_or_default());
                    yield Bytes::from_static(b"data: [DONE]\n\n");
                    return;
                }
            };
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
