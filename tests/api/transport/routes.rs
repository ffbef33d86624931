//! Every kind of route over HTTP/2, by ALPN over TLS and as h2c: REST happy
//! paths, twelve SSE streams at once on one connection, the OpenAI stream,
//! and per-key SSE caps that count HTTP/2 streams, not connections.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Method, Response, Version};
use serde_json::{json, Value};

use super::{spawn_h2c_gateway, spawn_tls_gateway};
use crate::common::{expect_error, Api, TestGateway};

const WAIT: Duration = Duration::from_secs(10);

async fn send(gw: &TestGateway, method: Method, path: &str, body: Option<Value>) -> Response {
    let mut req = gw.req(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.version(), Version::HTTP_2, "{path} over HTTP/2");
    r
}

async fn json_of(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let r = send(gw, method, path, body).await;
    assert_eq!(r.status().as_u16(), status, "{path}");
    r.json().await.expect("JSON")
}

/// The REST suite's happy paths, each response over HTTP/2.
async fn rest_happy_paths(gw: &TestGateway) {
    assert_eq!(
        json_of(gw, Method::GET, "/v1/account", None, 200).await["id"],
        "default"
    );
    let agent = json_of(
        gw,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": "h2", "tags": ["a"]})),
        201,
    )
    .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let got = json_of(gw, Method::GET, &format!("/v1/agents/{id}"), None, 200).await;
    assert_eq!(got["name"], "h2");
    let patched = json_of(
        gw,
        Method::PATCH,
        &format!("/v1/agents/{id}"),
        Some(json!({"name": "h2b"})),
        200,
    )
    .await;
    assert_eq!(patched["name"], "h2b");
    let list = json_of(gw, Method::GET, "/v1/agents", None, 200).await;
    assert!(list.to_string().contains(&id), "{list}");
    let tool = json!({"name": "lookup", "description": "d", "url": "http://127.0.0.1:9/hook"});
    let tool = json_of(gw, Method::POST, "/v1/tools", Some(tool), 201).await;
    let tid = tool["id"].as_str().unwrap();
    json_of(gw, Method::GET, &format!("/v1/tools/{tid}"), None, 200).await;
    json_of(
        gw,
        Method::POST,
        &format!("/v1/agents/{id}/sessions"),
        Some(json!({"name": "s"})),
        201,
    )
    .await;
    let reply = json_of(
        gw,
        Method::POST,
        &format!("/v1/agents/{id}/messages"),
        Some(json!({"message": "hello over h2"})),
        200,
    )
    .await;
    assert!(reply["run_id"].is_string(), "{reply}");
    let run = reply["run_id"].as_str().unwrap();
    json_of(gw, Method::GET, &format!("/v1/runs/{run}"), None, 200).await;
    json_of(
        gw,
        Method::GET,
        &format!("/v1/agents/{id}/messages"),
        None,
        200,
    )
    .await;
    let key = json_of(
        gw,
        Method::POST,
        "/v1/keys",
        Some(json!({"scopes": ["agents:read"]})),
        201,
    )
    .await;
    assert!(key["secret"].is_string() || key["key"].is_string(), "{key}");
    json_of(gw, Method::GET, "/v1/models", None, 200).await;
    // An error envelope comes over HTTP/2 as well.
    expect_error(
        send(gw, Method::GET, "/v1/agents/agent-missing", None).await,
        404,
        "agent_not_found",
    )
    .await;
    let r = send(gw, Method::DELETE, &format!("/v1/agents/{id}"), None).await;
    assert!(r.status().is_success(), "{}", r.status());
    // The chat page.
    let page = gw.client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(
        (page.version(), page.status().as_u16()),
        (Version::HTTP_2, 200)
    );
    assert!(page.text().await.unwrap().contains("<html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_happy_paths_over_h2_with_tls() {
    let t = spawn_tls_gateway(|_| {}).await;
    rest_happy_paths(&t.gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_happy_paths_over_h2c() {
    rest_happy_paths(&spawn_h2c_gateway().await).await;
}

/// Events of an SSE response until the `done` of any run; their kinds.
async fn kinds_until_done(r: Response) -> Vec<String> {
    let mut s = r.bytes_stream().eventsource();
    let mut out = Vec::new();
    loop {
        let e = tokio::time::timeout(WAIT, s.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("well-formed SSE");
        out.push(e.event.clone());
        if e.event == "done" {
            return out;
        }
    }
}

async fn open_events(gw: &TestGateway, agent: &str) -> Response {
    let r = send(gw, Method::GET, &format!("/v1/agents/{agent}/events"), None).await;
    assert_eq!(r.status(), 200);
    r
}

/// Twelve SSE streams and a streamed chat reply at once: over HTTP/1.1 a
/// browser would hold six connections and stall the rest; over HTTP/2
/// they are streams of one connection and every one gets its events.
async fn twelve_streams(gw: &TestGateway) {
    let agent = gw.create_agent("fan").await;
    let mut streams = Vec::new();
    for _ in 0..12 {
        streams.push(open_events(gw, &agent).await);
    }
    let chat = send(
        gw,
        Method::POST,
        &format!("/v1/agents/{agent}/messages"),
        Some(json!({"message": "to all twelve", "stream": true})),
    )
    .await;
    assert_eq!(chat.status(), 200);
    let mut all: Vec<_> = streams.into_iter().map(kinds_until_done).collect();
    all.push(kinds_until_done(chat));
    for kinds in futures::future::join_all(all).await {
        assert!(kinds.contains(&"assistant_message".to_owned()), "{kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_sse_streams_and_a_chat_stream_share_one_h2_connection() {
    let t = spawn_tls_gateway(|_| {}).await;
    twelve_streams(&t.gw).await;
    twelve_streams(&spawn_h2c_gateway().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_stream_over_h2_with_tls() {
    let t = spawn_tls_gateway(|_| {}).await;
    let gw = &t.gw;
    let agent = gw.create_agent("oa").await;
    let body = json!({"model": agent, "stream": true, "messages": [{"role": "user", "content": "hi there"}]});
    let r = send(gw, Method::POST, "/v1/chat/completions", Some(body)).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut s = r.bytes_stream().eventsource();
    let mut text = String::new();
    let mut done = false;
    while let Some(e) = tokio::time::timeout(WAIT, s.next())
        .await
        .expect("a chunk in time")
    {
        let data = e.expect("well-formed SSE").data;
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert!(done, "the stream ends with [DONE]");
    assert!(text.contains("hi there"), "echoed: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_sse_caps_count_h2_streams_not_connections() {
    let t = spawn_tls_gateway(|c| c.edge.max_sse_per_key = 3).await;
    let gw = &t.gw;
    let agent = gw.create_agent("capped").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(open_events(gw, &agent).await);
    }
    // The fourth stream, on the same HTTP/2 connection, is over the cap.
    let r = send(gw, Method::GET, &format!("/v1/agents/{agent}/events"), None).await;
    expect_error(r, 429, "too_many_connections").await;
    // Ending one stream (an RST_STREAM, the connection stays) frees a slot.
    drop(open.pop());
    let mut reopened = None;
    for _ in 0..50 {
        let r = send(gw, Method::GET, &format!("/v1/agents/{agent}/events"), None).await;
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a slot came back when a stream ended");
}

/// HTTP/1.1 over TLS keeps the direct SSE path (src/http/serve: the first
/// head is read from the TLS stream as from a socket): a raw client sees a
/// chunked SSE stream deliver a run, and after a direct error envelope the
/// same TLS connection goes on to hyper for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_http1_with_tls_and_keep_alive_after_a_direct_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = spawn_tls_gateway(|_| {}).await;
    let gw = &t.gw;
    let agent = gw.create_agent("h1tls").await;
    let mut tls = super::connect::tls_stream(gw.addr, &t.pki.ca(), b"http/1.1").await;
    let path = format!("/v1/agents/{agent}/events");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(head.contains("content-length: "), "{head}");
    // The same connection: now with the key, the stream itself.
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        gw.key
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            json!({"message": "tls h1"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    while !text.contains("event: done") {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream open: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("event: assistant_message"), "{text}");
}
