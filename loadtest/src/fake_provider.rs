//! A fast fake OpenAI-compatible provider: `POST /v1/chat/completions`
//! streams `chunks` content chunks (optionally `gap` apart), a finish chunk,
//! the usage chunk when asked, and `data: [DONE]`; without `stream` it
//! answers one `chat.completion`. `GET /v1/models` lists the model asked for.
//!
//! Two models fail, for the fallback scenario: `fail-500` answers 500 at
//! once, `fail-stall` sends nothing for a minute. [`FakeProvider::drop_base`]
//! is a second port that accepts each connection and closes it unread.
//!
//! It runs on its own OS thread and single-threaded runtime, so the load
//! generator's tasks never delay it and `perf` can tell its CPU apart.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// How the fake provider answers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Content chunks per streamed answer.
    pub chunks: usize,
    /// Pause between chunks (zero: the whole answer is written at once).
    pub gap: Duration,
}

/// A running fake provider; stops when dropped.
pub struct FakeProvider {
    pub addr: SocketAddr,
    /// Base URL for clients: `http://addr/v1`.
    pub base: String,
    /// Base URL of a port that drops every connection before answering.
    pub drop_base: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the fake provider on a free loopback port.
pub fn start(opts: Options) -> anyhow::Result<FakeProvider> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let drop_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    drop_listener.set_nonblocking(true)?;
    let drop_addr = drop_listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("fake-provider".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("fake provider: {e}"),
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                if let Ok(drops) = tokio::net::TcpListener::from_std(drop_listener) {
                    tokio::spawn(async move {
                        // Accepted, then dropped: the client's request meets a
                        // closed connection before any answer.
                        while let Ok((sock, _)) = drops.accept().await {
                            drop(sock);
                        }
                    });
                }
                let app = router(opts);
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { drop(stop_rx.await) })
                    .await;
            });
        })?;
    Ok(FakeProvider {
        addr,
        base: format!("http://{addr}/v1"),
        drop_base: format!("http://{drop_addr}/v1"),
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn router(opts: Options) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(opts)
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "weir-load"}]}),
    )
}

async fn completions(State(opts): State<Options>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "bad JSON", "type": "invalid_request_error"}})),
        )
            .into_response();
    };
    let model = req["model"].as_str().unwrap_or("fake").to_owned();
    match model.as_str() {
        "fail-500" => {
            let body =
                json!({"error": {"message": "the fake provider fails", "type": "server_error"}});
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
        // Past any first-token timeout the gateway is given.
        "fail-stall" => tokio::time::sleep(Duration::from_secs(60)).await,
        _ => {}
    }
    if req["stream"].as_bool() != Some(true) {
        let text: String = (0..opts.chunks).map(|i| format!("tok{i} ")).collect();
        return Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": opts.chunks, "total_tokens": 3 + opts.chunks},
        }))
        .into_response();
    }
    let usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
    let frames = frames(&model, opts.chunks, usage);
    let body = if opts.gap.is_zero() {
        Body::from(frames.concat())
    } else {
        let gap = opts.gap;
        Body::from_stream(async_stream(frames, gap))
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn async_stream(
    frames: Vec<Vec<u8>>,
    gap: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(
        (frames.into_iter(), true),
        move |(mut it, first)| async move {
            let f = it.next()?;
            if !first {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(Bytes::from(f)), (it, false)))
        },
    )
}

/// The SSE frames of one streamed answer.
pub fn frames(model: &str, chunks: usize, usage: bool) -> Vec<Vec<u8>> {
    let chunk = |delta: Value, finish: Value| {
        let v = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {v}\n\n").into_bytes()
    };
    let mut out = Vec::with_capacity(chunks + 3);
    for i in 0..chunks {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": format!("tok{i} ")})
        } else {
            json!({"content": format!("tok{i} ")})
        };
        out.push(chunk(delta, Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if usage {
        let v = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": chunks, "total_tokens": 3 + chunks},
        });
        out.push(format!("data: {v}\n\n").into_bytes());
    }
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_k_chunks_a_finish_and_done() {
        let f = frames("m", 3, true);
        assert_eq!(f.len(), 3 + 1 + 1 + 1);
        assert!(f[0].starts_with(b"data: {") && f[0].ends_with(b"\n\n"));
        assert_eq!(f.last().unwrap(), b"data: [DONE]\n\n");
    }
}
