//! A real local OpenAI-compatible provider for tests: an axum server on
//! 127.0.0.1:0 that streams `chat.completion.chunk`s. Its behaviour is chosen
//! by the requested `model`:
//!
//! - `fake-text`: "Hello" + " world", finish `stop`, a usage chunk when
//!   `stream_options.include_usage`, `[DONE]`; non-streamed: a `chat.completion`.
//! - `fake-tools`: first call (no `tool` message yet) asks for the first
//!   offered tool, with the arguments `{"expression":"6*7","city":"Paris"}`
//!   split over chunks, interleaved with a second call to `get_time`; once a
//!   tool result is in the messages, answers `Tool said: <first result>`.
//! - `fake-500`: HTTP 500 with an OpenAI-shaped error body.
//! - `fake-400`: HTTP 400 with an OpenAI-shaped error body.
//! - `fake-broken`: one chunk, then the connection breaks mid-body.
//! - `fake-slow`: a chunk every 50 ms, 200 of them (for cancellation).
//! - `fake-stall`: the role chunk, then silence (for idle timeouts).
//! - `fake-pause`: "Hello", half a second of silence, " world", finish
//!   `stop` (a relay held in flight for a while, then complete).
//! - `fake-part`: the role chunk and [`PART`]'s five pieces, then silence
//!   (for a client that hangs up mid-stream having read all that was sent).
//!
//! - `fake-429`: HTTP 429 with `Retry-After: 30` and an OpenAI-shaped body.
//! - `fake-stall-first`: a 200 head, then no body byte at all (for
//!   first-token timeouts).
//! - `fake-drop`: the role chunk and [`PART`]'s first two pieces, with its
//!   own chunk `id` (`chatcmpl-drop`) and `model` (`fake-drop`), then the
//!   connection breaks (for `mid_stream`).
//! - `fake-malformed`: one good chunk, then an event whose data is not JSON.
//!
//! It records every request body and counts streams the client hung up on.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures::Stream;
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    /// The `authorization` header of each request, in the same order.
    auths: Mutex<Vec<Option<String>>>,
    hangups: AtomicUsize,
    completed: AtomicUsize,
}

/// A running fake provider; `url` is its base (`http://127.0.0.1:P/v1`).
pub struct FakeProvider {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProvider {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let (addr, task) = serve_locally(app, "fake provider").await;
        Self {
            url: format!("http://{addr}/v1"),
            shared,
            task,
        }
    }

    /// Every request body received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The `authorization` header each request came with, oldest first.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.auths.lock().unwrap().clone()
    }

    /// Streams whose client went away before the end.
    pub fn hangups(&self) -> usize {
        self.shared.hangups.load(Ordering::SeqCst)
    }

    /// Whether a client hangs up on a stream within `limit`.
    pub async fn hung_up_within(&self, limit: Duration) -> bool {
        crate::common::within(limit, || std::future::ready(self.hangups() > 0)).await
    }

    /// Streams sent to the end.
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": "fake-text", "object": "model", "created": 1700000000, "owned_by": "fake"},
        {"id": "fake-tools", "object": "model", "created": 1700000000, "owned_by": "fake"},
    ]}))
}

/// The non-streamed answer of `fake-text`, byte for byte.
pub const TEXT_COMPLETION: &str = r#"{"id":"chatcmpl-fake","object":"chat.completion","created":1700000000,"model":"fake-text","choices":[{"index":0,"message":{"role":"assistant","content":"Hello world","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}"#;

/// The pieces `fake-part` streams before it stalls (43 characters).
pub const PART: [&str; 5] = [
    "The quick ",
    "brown fox ",
    "jumps over ",
    "the lazy ",
    "dog",
];

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let c = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "fake", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {c}\n\n")
}

fn usage_chunk() -> String {
    let c = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake",
        "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    });
    format!("data: {c}\n\n")
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

fn sse(body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

/// Sends `frames` as one SSE body; the stream counts as completed once the
/// client has taken the last frame.
fn sse_to_the_end(frames: Vec<String>, mut watch: Watch) -> Response {
    sse(async_stream::stream! {
        for f in frames {
            yield Ok::<_, std::io::Error>(Bytes::from(f));
        }
        watch.finish();
    })
}

fn error_body(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "fake_error"}});
    (status, Json(body)).into_response()
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared.auths.lock().unwrap().push(auth);
    shared.requests.lock().unwrap().push(req.clone());
    let model = req["model"].as_str().unwrap_or_default().to_owned();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let mut watch = Watch {
        shared,
        done: false,
    };
    match model.as_str() {
        "fake-500" => error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the fake provider failed",
        ),
        "fake-400" => error_body(StatusCode::BAD_REQUEST, "the fake provider refuses"),
        "fake-429" => {
            let mut r = error_body(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("30"));
            r
        }
        "fake-stall-first" => sse(async_stream::stream! {
            let _watch = watch;
            futures::future::pending::<()>().await;
            yield Ok::<_, std::io::Error>(Bytes::new());
        }),
        "fake-drop" => sse(async_stream::stream! {
            let _watch = watch;
            let drop_chunk = |delta: Value| chunk(delta, None)
                .replace("chatcmpl-fake", "chatcmpl-drop")
                .replace("\"model\":\"fake\"", "\"model\":\"fake-drop\"");
            yield Ok::<_, std::io::Error>(Bytes::from(drop_chunk(json!({"role": "assistant", "content": ""}))));
            for piece in &PART[..2] {
                yield Ok(Bytes::from(drop_chunk(json!({"content": piece}))));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            yield Err(std::io::Error::other("the fake provider drops the stream"));
        }),
        "fake-malformed" => sse(async_stream::stream! {
            let _watch = watch;
            yield Ok::<_, std::io::Error>(Bytes::from(chunk(json!({"role": "assistant", "content": "Hi"}), None)));
            yield Ok(Bytes::from_static(b"data: {\"choices\": [oops\n\n"));
            futures::future::pending::<()>().await;
        }),
        "fake-text" if !stream => {
            watch.finish();
            ([("content-type", "application/json")], TEXT_COMPLETION).into_response()
        }
        "fake-text" => {
            let mut frames = vec![
                chunk(json!({"role": "assistant", "content": ""}), None),
                chunk(json!({"content": "Hello"}), None),
                chunk(json!({"content": " world"}), None),
                chunk(json!({}), Some("stop")),
            ];
            if usage {
                frames.push(usage_chunk());
            }
            frames.push("data: [DONE]\n\n".into());
            sse_to_the_end(frames, watch)
        }
        "fake-tools" => tools(req, usage, watch),
        "fake-broken" => sse(async_stream::stream! {
            let _watch = watch;
            yield Ok(Bytes::from(chunk(json!({"role": "assistant", "content": "Hel"}), None)));
            // Paced on purpose (here and below): the fake streams as a provider does.
            tokio::time::sleep(Duration::from_millis(20)).await;
            yield Err(std::io::Error::other("the fake provider breaks the stream"));
        }),
        "fake-slow" => sse(async_stream::stream! {
            yield Ok::<_, std::io::Error>(Bytes::from(chunk(json!({"role": "assistant", "content": ""}), None)));
            for i in 0..200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                yield Ok(Bytes::from(chunk(json!({"content": format!("t{i} ")}), None)));
            }
            yield Ok(Bytes::from(chunk(json!({}), Some("stop"))));
            yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
            watch.finish();
        }),
        "fake-pause" => sse(async_stream::stream! {
            yield Ok::<_, std::io::Error>(Bytes::from(chunk(json!({"role": "assistant", "content": "Hello"}), None)));
            tokio::time::sleep(Duration::from_millis(500)).await;
            yield Ok(Bytes::from(chunk(json!({"content": " world"}), None)));
            yield Ok(Bytes::from(chunk(json!({}), Some("stop"))));
            yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
            watch.finish();
        }),
        "fake-part" => sse(async_stream::stream! {
            let _watch = watch;
            yield Ok::<_, std::io::Error>(Bytes::from(chunk(json!({"role": "assistant", "content": ""}), None)));
            for piece in PART {
                yield Ok(Bytes::from(chunk(json!({"content": piece}), None)));
            }
            futures::future::pending::<()>().await;
        }),
        "fake-stall" => sse(async_stream::stream! {
            let _watch = watch;
            yield Ok::<_, std::io::Error>(Bytes::from(chunk(json!({"role": "assistant", "content": ""}), None)));
            futures::future::pending::<()>().await;
        }),
        other => error_body(StatusCode::NOT_FOUND, &format!("no model {other}")),
    }
}

fn tools(req: Value, usage: bool, watch: Watch) -> Response {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let result = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned());
    let mut frames = Vec::new();
    match result {
        Some(result) => {
            frames.push(chunk(json!({"role": "assistant", "content": ""}), None));
            frames.push(chunk(
                json!({"content": format!("Tool said: {result}")}),
                None,
            ));
            frames.push(chunk(json!({}), Some("stop")));
        }
        None => {
            let first = req["tools"][0]["function"]["name"]
                .as_str()
                .unwrap_or("none")
                .to_owned();
            let call = |index: u32, id: Option<&str>, name: Option<&str>, args: &str| {
                let mut f = json!({"arguments": args});
                if let Some(n) = name {
                    f["name"] = json!(n);
                }
                let mut c = json!({"index": index, "function": f});
                if let Some(id) = id {
                    c["id"] = json!(id);
                    c["type"] = json!("function");
                }
                chunk(json!({"tool_calls": [c]}), None)
            };
            frames.push(chunk(json!({"role": "assistant", "content": null}), None));
            frames.push(call(0, Some("call_1"), Some(&first), ""));
            frames.push(call(0, None, None, "{\"expression\":"));
            frames.push(call(1, Some("call_2"), Some("get_time"), "{}"));
            frames.push(call(0, None, None, "\"6*7\",\"city\":\"Paris\"}"));
            frames.push(chunk(json!({}), Some("tool_calls")));
        }
    }
    if usage {
        frames.push(usage_chunk());
    }
    frames.push("data: [DONE]\n\n".into());
    sse_to_the_end(frames, watch)
}

/// Serves `app` on 127.0.0.1:0 until the task is aborted (on drop).
async fn serve_locally(app: Router, what: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// A webhook target: `POST /ok` answers `{"temp":21}`, `/fail` answers 500.
/// Records the bodies it received.
pub struct Webhook {
    pub base: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    pub async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let b1 = bodies.clone();
        let b2 = bodies.clone();
        let app = Router::new()
            .route(
                "/ok",
                post(move |Json(v): Json<Value>| async move {
                    b1.lock().unwrap().push(v);
                    Json(json!({"temp": 21}))
                }),
            )
            .route(
                "/fail",
                post(move |Json(v): Json<Value>| async move {
                    b2.lock().unwrap().push(v);
                    (StatusCode::INTERNAL_SERVER_ERROR, "webhook exploded")
                }),
            );
        let (addr, task) = serve_locally(app, "webhook").await;
        Self {
            base: format!("http://{addr}"),
            bodies,
            task,
        }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}
