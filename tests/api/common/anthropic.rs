//! A real local Anthropic-style provider for tests: an axum server on
//! 127.0.0.1:0 that answers `POST /v1/messages` as the Messages API does
//! (its published request checks, error bodies and SSE events). Its
//! behaviour is chosen by the requested `model`:
//!
//! - `claude-text`: "Hello" + " world", `end_turn`, usage 11 in / 2 out, with
//!   a `ping`; when the last message is an assistant turn (a prefill) that
//!   "Hello world" starts with, only the rest of it. Non-streamed: a Message.
//! - `claude-tools`: text, then a `tool_use` of the first offered tool with
//!   `{"expression":"6*7"}` split over `input_json_delta`s, `tool_use`; once
//!   a `tool_result` is in the messages, `Tool said: <result>`.
//! - `claude-500` / `claude-529`: `api_error` / `overloaded_error` bodies.
//! - `claude-429`: `rate_limit_error` with `retry-after: 1`.
//! - `claude-overloaded-mid`: a 200 whose stream has a text delta, then an
//!   `error` event (`overloaded_error`), as the streaming docs describe.
//! - `claude-stall`: `message_start` and a `ping`, then silence (no token).
//! - `claude-drop`: [`PART`]'s pieces as text deltas, then the connection
//!   breaks.
//! - `claude-malformed`: `message_start`, then a delta whose data is not JSON,
//!   then the rest of a normal stream.
//!
//! Every answer checks what Anthropic checks first: `x-api-key` (401
//! `authentication_error` when missing), `anthropic-version` and
//! `max_tokens` (400 `invalid_request_error`). It records every request
//! body and its headers, and counts streams the client hung up on.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};

pub use crate::fake_provider::PART;

/// The text `claude-text` answers.
pub const TEXT: &str = "Hello world";

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<(HeaderMap, Value)>>,
    hangups: AtomicUsize,
    completed: AtomicUsize,
}

/// A running fake Anthropic provider; `url` is its base
/// (`http://127.0.0.1:P`, to which `/v1/messages` is added).
pub struct FakeAnthropic {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAnthropic {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake anthropic");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Every request body received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        let r = self.shared.requests.lock().unwrap();
        r.iter().map(|(_, body)| body.clone()).collect()
    }

    /// The value of header `name` on each request, oldest first.
    pub fn header(&self, name: &str) -> Vec<Option<String>> {
        let r = self.shared.requests.lock().unwrap();
        r.iter()
            .map(|(h, _)| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned))
            .collect()
    }

    /// Streams whose client went away before the end.
    pub fn hangups(&self) -> usize {
        self.shared.hangups.load(Ordering::SeqCst)
    }

    /// Streams sent to the end.
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }
}

/// Counts a hang-up if dropped before `finish()`.
struct Watch {
    shared: Arc<Shared>,
    done: bool,
}

impl Watch {
    fn finish(&mut self) {
        self.done = true;
        self.shared.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            self.shared.hangups.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One SSE event as Anthropic writes it: `event:` then `data:`.
fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("message")
    )
}

fn error_body(status: u16, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let status = StatusCode::from_u16(status).expect("status");
    (status, Json(body)).into_response()
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refused = refusal(&headers, &req);
    shared.requests.lock().unwrap().push((headers, req.clone()));
    if let Some(r) = refused {
        return r;
    }
    let watch = Watch {
        shared,
        done: false,
    };
    let model = req["model"].as_str().unwrap_or_default();
    match model {
        "claude-500" => error_body(500, "api_error", "Internal server error"),
        "claude-529" => error_body(529, "overloaded_error", "Overloaded"),
        "claude-429" => {
            let msg = "Number of requests has exceeded your rate limit";
            let mut r = error_body(429, "rate_limit_error", msg);
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r
        }
        "claude-text" | "claude-tools" if req["stream"] != true => non_streamed(&req, watch),
        "claude-text" => {
            let mut frames = vec![message_start(), text_start(), ping()];
            frames.extend(remainder(&req).iter().map(|t| text_delta(0, t)));
            frames.extend(finish(0, "end_turn", 2));
            to_the_end(frames, watch)
        }
        "claude-tools" => to_the_end(tools(&req), watch),
        "claude-overloaded-mid" => {
            let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            let frames = vec![
                message_start(),
                text_start(),
                text_delta(0, "Hel"),
                event(error),
            ];
            to_the_end(frames, watch)
        }
        "claude-stall" => stall(watch),
        "claude-drop" => drop_after_part(watch),
        "claude-malformed" => {
            let mut frames = vec![message_start(), text_start()];
            frames.push("event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\n\n".into());
            frames.extend(finish(0, "end_turn", 1));
            to_the_end(frames, watch)
        }
        other => error_body(404, "not_found_error", &format!("model: {other}")),
    }
}

/// What Anthropic checks before anything else: the key, the version
/// header and `max_tokens`.
fn refusal(headers: &HeaderMap, req: &Value) -> Option<Response> {
    if !headers.contains_key("x-api-key") {
        let msg = "x-api-key header is required";
        return Some(error_body(401, "authentication_error", msg));
    }
    if !headers.contains_key("anthropic-version") {
        let msg = "anthropic-version: header is required";
        return Some(error_body(400, "invalid_request_error", msg));
    }
    if !req["max_tokens"].is_u64() {
        let msg = "max_tokens: Field required";
        return Some(error_body(400, "invalid_request_error", msg));
    }
    None
}

/// `message_start` and a `ping`, then silence: no token ever comes.
fn stall(watch: Watch) -> Response {
    sse(async_stream::stream! {
        let _watch = watch;
        yield Ok::<_, std::io::Error>(Bytes::from(message_start() + &ping()));
        futures::future::pending::<()>().await;
    })
}

/// [`PART`]'s pieces as text deltas, then the connection breaks.
fn drop_after_part(watch: Watch) -> Response {
    sse(async_stream::stream! {
        let _watch = watch;
        yield Ok::<_, std::io::Error>(Bytes::from(message_start() + &text_start()));
        for piece in PART {
            yield Ok(Bytes::from(text_delta(0, piece)));
        }
        // Paced so the pieces leave before the break, as a provider's would.
        tokio::time::sleep(Duration::from_millis(20)).await;
        yield Err(std::io::Error::other("the fake provider breaks the stream"));
    })
}

/// An empty text block at index 0.
fn text_start() -> String {
    block_start(0, json!({"type": "text", "text": ""}))
}

fn message_start() -> String {
    event(json!({"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "content": [],
        "model": "claude-fake", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 11, "output_tokens": 1}}}))
}

fn ping() -> String {
    event(json!({"type": "ping"}))
}

fn block_start(index: u32, block: Value) -> String {
    event(json!({"type": "content_block_start", "index": index, "content_block": block}))
}

fn text_delta(index: u32, text: &str) -> String {
    event(
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
    )
}

/// Closes block `last`, then `message_delta` and `message_stop`.
fn finish(last: u32, stop: &str, output_tokens: u64) -> Vec<String> {
    vec![
        event(json!({"type": "content_block_stop", "index": last})),
        event(
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}),
        ),
        event(json!({"type": "message_stop"})),
    ]
}

/// `claude-text`'s pieces: all of [`TEXT`], or what follows a prefill of it.
fn remainder(req: &Value) -> Vec<String> {
    let last = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let prefill: String = match (&last["role"], &last["content"]) {
        (r, Value::String(s)) if r == "assistant" => s.clone(),
        (r, Value::Array(blocks)) if r == "assistant" => {
            blocks.iter().filter_map(|b| b["text"].as_str()).collect()
        }
        _ => String::new(),
    };
    match TEXT.strip_prefix(prefill.as_str()) {
        Some(rest) if !prefill.is_empty() => vec![rest.to_owned()],
        _ => vec!["Hello".into(), " world".into()],
    }
}

/// The tool result `claude-tools` was given, if any.
fn tool_result(req: &Value) -> Option<String> {
    let messages = req["messages"].as_array()?;
    messages
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .find_map(|b| {
            (b["type"] == "tool_result").then(|| match &b["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
}

fn tools(req: &Value) -> Vec<String> {
    let mut frames = vec![message_start(), text_start()];
    if let Some(result) = tool_result(req) {
        frames.push(text_delta(0, &format!("Tool said: {result}")));
        frames.extend(finish(0, "end_turn", 4));
        return frames;
    }
    let name = req["tools"][0]["name"].as_str().unwrap_or("none");
    frames.push(text_delta(0, "Let me check."));
    frames.push(event(json!({"type": "content_block_stop", "index": 0})));
    frames.push(block_start(
        1,
        json!({"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}),
    ));
    for part in ["", "{\"expression\":", " \"6*7\"}"] {
        frames.push(event(json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": part}})));
    }
    frames.extend(finish(1, "tool_use", 20));
    frames
}

fn non_streamed(req: &Value, mut watch: Watch) -> Response {
    watch.finish();
    let (content, stop) = match (req["model"].as_str(), tool_result(req)) {
        (Some("claude-tools"), None) => (
            json!([{"type": "tool_use", "id": "toolu_fake1", "name": req["tools"][0]["name"], "input": {"expression": "6*7"}}]),
            "tool_use",
        ),
        (Some("claude-tools"), Some(r)) => (
            json!([{"type": "text", "text": format!("Tool said: {r}")}]),
            "end_turn",
        ),
        _ => (
            json!([{"type": "text", "text": remainder(req).concat()}]),
            "end_turn",
        ),
    };
    Json(json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": 11, "output_tokens": 2}
    }))
    .into_response()
}

fn sse(
    body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

/// Sends `frames` one by one; completed once the client took the last.
fn to_the_end(frames: Vec<String>, mut watch: Watch) -> Response {
    sse(async_stream::stream! {
        for f in frames {
            yield Ok::<_, std::io::Error>(Bytes::from(f));
        }
        watch.finish();
    })
}
