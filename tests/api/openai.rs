//! `/v1/chat/completions` and `/v1/models` against the real gateway: agents
//! answering in OpenAI's wire format (compared field by field with recorded
//! OpenAI responses), the `upstream/<model>` relay against a real local fake
//! provider, OpenAI-shaped errors, and cancellation when the client leaves.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::{
    common::{names, spawn_gateway, Api, TestGateway},
    fake_provider::{FakeProvider, TEXT_COMPLETION},
    runs::{agent_with, get_json, wait_run, with_provider},
};

/// A real `chat.completion` from OpenAI (gpt-4o-mini), as recorded.
const RECORDED_COMPLETION: &str = r#"{"id":"chatcmpl-AbC12","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;

/// Real OpenAI stream chunks with `stream_options.include_usage`, as recorded:
/// the first, a content chunk, the finish chunk and the usage chunk.
const RECORDED_CHUNKS: [&str; 4] = [
    r#"{"id":"chatcmpl-AbC12","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-AbC12","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-AbC12","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"{"id":"chatcmpl-AbC12","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#,
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Field by field: the same keys, each of the same JSON type (a nullable
/// field may be null on one side), recursively (arrays by their items).
fn same_shape(ours: &Value, recorded: &Value, path: &str) {
    match (ours, recorded) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            assert_eq!(ka, kb, "keys at {path}");
            for (k, v) in a {
                same_shape(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                same_shape(x, y, &format!("{path}[0]"));
            }
            assert_eq!(a.is_empty(), b.is_empty(), "emptiness at {path}");
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (a, b) => assert_eq!(kind(a), kind(b), "type at {path}: {a} vs {b}"),
    }
}

async fn complete(gw: &TestGateway, body: Value) -> Response {
    gw.post("/v1/chat/completions", body).await
}

/// The `data:` payloads of a stream, read with eventsource-stream.
async fn data_lines(resp: Response) -> Vec<String> {
    let mut s = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a chunk within 10 s")
    {
        let ev = ev.expect("well-formed SSE");
        assert_eq!(ev.event, "message", "chunks have no event: field");
        out.push(ev.data);
    }
    out
}

/// An OpenAI-shaped error with this status, `type` and `code`.
async fn openai_error(resp: Response, status: u16, kind: &str, code: Option<&str>) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.expect("JSON error");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(e["type"], kind, "{body}");
    assert!(e.as_object().unwrap().contains_key("param"), "{body}");
    assert_eq!(e["code"].as_str(), code, "{body}");
    body
}

#[tokio::test]
async fn an_agent_answers_a_chat_completion() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("oa").await;
    let msgs = json!([{"role": "system", "content": "ignored"}, {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "x"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]);
    let r = complete(
        &gw,
        json!({"model": agent, "messages": msgs, "temperature": 0.2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    same_shape(&c, &serde_json::from_str(RECORDED_COMPLETION).unwrap(), "$");
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], agent.as_str());
    let id = c["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert_eq!(
        c["choices"][0]["message"]["content"], "You said: \"hi\"",
        "only the last user message is new input"
    );
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let u = &c["usage"];
    assert!(u["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // The run behind it is a normal run.
    let run_id = format!("run-{}", id.trim_start_matches("chatcmpl-"));
    assert_eq!(
        get_json(&gw, &format!("/v1/runs/{run_id}")).await["status"],
        "completed"
    );
    // A run that hits max_steps finishes with `length` and no content.
    let capped = agent_with(&gw, json!({"metadata": {"max_steps": 1}})).await;
    let c: Value = complete(
        &gw,
        json!({"model": capped, "messages": [{"role": "user", "content": "time?"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert!(c["choices"][0]["message"]["content"].is_null());
}

#[tokio::test]
async fn an_agent_streams_chunks_with_usage_and_done() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("oa").await;
    let body = json!({"model": agent, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "stream me please"}]});
    let r = complete(&gw, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let lines = data_lines(r).await;
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded: Vec<Value> = RECORDED_CHUNKS
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    same_shape(&chunks[0], &recorded[0], "first");
    same_shape(&chunks[1], &recorded[1], "content");
    same_shape(&chunks[chunks.len() - 2], &recorded[2], "finish");
    same_shape(&chunks[chunks.len() - 1], &recorded[3], "usage");
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| c["id"] == *id
        && c["object"] == "chat.completion.chunk"
        && c["model"] == agent.as_str()));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "You said: \"stream me please\"");
    assert!(chunks.len() >= 6, "token by token: {}", chunks.len());
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));

    // Without include_usage: no usage anywhere, no choices-less chunk.
    let body =
        json!({"model": agent, "stream": true, "messages": [{"role": "user", "content": "again"}]});
    let lines = data_lines(complete(&gw, body).await).await;
    for l in &lines[..lines.len() - 1] {
        let c: Value = serde_json::from_str(l).unwrap();
        assert!(c.get("usage").is_none(), "{c}");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn user_names_the_session() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("oa").await;
    for text in ["one", "two"] {
        let body = json!({"model": agent, "user": "alice", "messages": [{"role": "user", "content": text}]});
        assert_eq!(complete(&gw, body).await.status(), 200);
    }
    let body = json!({"model": agent, "messages": [{"role": "user", "content": "three"}]});
    assert_eq!(complete(&gw, body).await.status(), 200);
    let sessions = get_json(&gw, &format!("/v1/agents/{agent}/sessions")).await;
    assert_eq!(names(&sessions), ["alice", "default"]);
    let alice = sessions["data"][0]["id"].as_str().unwrap();
    let h = get_json(
        &gw,
        &format!("/v1/agents/{agent}/messages?session_id={alice}"),
    )
    .await;
    let users: Vec<&str> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message_type"] == "user_message")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["one", "two"]);
}

#[tokio::test]
async fn upstream_models_are_relayed_as_is() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    // Non-streaming: the provider's body, byte for byte.
    let r = complete(&gw, json!({"model": "upstream/fake-text", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), TEXT_COMPLETION);
    let seen = fp.requests().pop().unwrap();
    assert_eq!(
        seen,
        json!({"model": "fake-text", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]})
    );

    // Streaming: the same bytes as asking the provider directly (after weir's `: ping`).
    let body = json!({"model": "upstream/fake-text", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let r = complete(&gw, body.clone()).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let relayed = r.bytes().await.unwrap();
    let mut direct_body = body.clone();
    direct_body["model"] = json!("fake-text");
    let direct = reqwest::Client::new()
        .post(format!("{}/chat/completions", fp.url))
        .json(&direct_body)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let relayed = String::from_utf8(relayed.to_vec())
        .unwrap()
        .replace(": ping\n\n", "");
    assert_eq!(relayed, String::from_utf8(direct.to_vec()).unwrap());
    assert!(relayed.ends_with("data: [DONE]\n\n"));
    assert!(
        relayed.contains("\"choices\":[],"),
        "the provider's usage chunk is relayed"
    );
    let auth = fp.requests();
    assert!(auth.iter().all(|r| r["model"] == "fake-text"));
    // weir's two relayed requests carried the configured provider key (the
    // test's own direct request, third, carried none); the caller's weir key
    // never reaches the provider.
    assert_eq!(
        fp.authorizations(),
        [
            Some("Bearer sk-fake".to_owned()),
            Some("Bearer sk-fake".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn upstream_failures_are_openai_errors() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // After the first byte: an error line, then [DONE].
    let r = complete(
        &gw,
        json!({"model": "upstream/fake-broken", "stream": true, "messages": msgs}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let lines = data_lines(r).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains("\"Hel\""));
    let err: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_stream_error");
    assert_eq!(err["error"]["type"], "server_error");
    assert_eq!(lines[2], "[DONE]");
    // A stream that stalls after its first chunk: the idle timeout ends it the same way.
    let started = Instant::now();
    let lines = data_lines(
        complete(
            &gw,
            json!({"model": "upstream/fake-stall", "stream": true, "messages": msgs}),
        )
        .await,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(lines[lines.len() - 2].contains("upstream_stream_error"));
    assert_eq!(lines.last().unwrap(), "[DONE]");
    // Before the first byte: provider 5xx is 502, provider 4xx passes through.
    let r = complete(&gw, json!({"model": "upstream/fake-500", "messages": msgs})).await;
    let e = openai_error(r, 502, "server_error", Some("upstream_error")).await;
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the fake provider failed"));
    let r = complete(
        &gw,
        json!({"model": "upstream/fake-400", "stream": true, "messages": msgs}),
    )
    .await;
    let e = openai_error(r, 400, "invalid_request_error", Some("fake_error")).await;
    assert_eq!(e["error"]["message"], "the fake provider refuses");
    // An agent on a failing model: after the first byte, an error line and [DONE];
    // without streaming, a 502 carrying the run's error code.
    let agent = agent_with(&gw, json!({"model": "upstream/fake-500"})).await;
    let lines = data_lines(
        complete(
            &gw,
            json!({"model": agent, "stream": true, "messages": msgs}),
        )
        .await,
    )
    .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let err: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_error");
    assert_eq!(lines[2], "[DONE]");
    let r = complete(&gw, json!({"model": agent, "messages": msgs})).await;
    openai_error(r, 502, "server_error", Some("upstream_error")).await;
    // No provider: the model does not exist.
    let plain = spawn_gateway().await;
    let r = complete(
        &plain,
        json!({"model": "upstream/gpt-4o", "messages": msgs}),
    )
    .await;
    openai_error(r, 404, "invalid_request_error", Some("model_not_found")).await;
}

#[tokio::test]
async fn errors_are_openai_shaped() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("oa").await;
    let raw = gw
        .req(Method::POST, "/v1/chat/completions")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    openai_error(raw, 400, "invalid_request_error", Some("invalid_json")).await;
    let user = json!([{"role": "user", "content": "hi"}]);
    for (body, param) in [
        (json!({"messages": user}), "model"),
        (json!({"model": agent}), "messages"),
        (
            json!({"model": agent, "messages": [{"role": "assistant", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": agent, "messages": user, "stream": "yes"}),
            "stream",
        ),
        (json!({"model": 7, "messages": user}), "model"),
    ] {
        let e = openai_error(
            complete(&gw, body.clone()).await,
            400,
            "invalid_request_error",
            None,
        )
        .await;
        assert_eq!(e["error"]["param"], param, "{body} -> {e}");
    }
    let e = openai_error(
        complete(&gw, json!({"model": "agent-nope", "messages": user})).await,
        404,
        "invalid_request_error",
        Some("model_not_found"),
    )
    .await;
    assert_eq!(e["error"]["param"], "model");
    let other = gw.mint_key("other", &["*"]).await;
    let r = gw
        .req_as(&other, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": agent, "messages": user}))
        .send()
        .await
        .unwrap();
    openai_error(r, 404, "invalid_request_error", Some("model_not_found")).await;
    assert_eq!(
        gw.post(&format!("/v1/agents/{agent}/stop"), json!({}))
            .await
            .status(),
        200
    );
    openai_error(
        complete(&gw, json!({"model": agent, "messages": user})).await,
        409,
        "invalid_request_error",
        Some("agent_stopped"),
    )
    .await;
}

/// Auth runs before the handlers, in the gateway router, whose envelope
/// gives these routes the OpenAI shape too.
#[tokio::test]
async fn auth_errors_are_openai_shaped_too() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("oa").await;
    let body = json!({"model": agent, "messages": [{"role": "user", "content": "hi"}]});
    let reader = gw.mint_key("default", &["agents:read"]).await;
    let r = gw
        .req_as(&reader, Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    openai_error(r, 403, "permission_error", Some("forbidden")).await;
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    openai_error(r, 401, "authentication_error", Some("unauthorized")).await;
    let r = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth("wk_nope")
        .send()
        .await
        .unwrap();
    openai_error(r, 401, "authentication_error", Some("unauthorized")).await;
}

#[tokio::test]
async fn models_lists_agents_and_upstream_models() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let a = gw.create_agent("a").await;
    let b = gw.create_agent("b").await;
    let list = get_json(&gw, "/v1/models").await;
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            a.as_str(),
            b.as_str(),
            "upstream/fake-text",
            "upstream/fake-tools"
        ]
    );
    for m in list["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert!(m["created"].as_i64().unwrap() > 0);
        assert!(m["owned_by"].as_str().is_some());
    }
    assert_eq!(list["data"][0]["owned_by"], "default");
    // Another account sees only its own agents; no provider, no upstream entries.
    let plain = spawn_gateway().await;
    let list = get_json(&plain, "/v1/models").await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_run_or_the_relay() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    // The relay: the provider sees the hang-up.
    let r = complete(&gw, json!({"model": "upstream/fake-slow", "stream": true, "messages": [{"role": "user", "content": "go"}]})).await;
    let mut s = r.bytes_stream().eventsource();
    let first = s.next().await.unwrap().unwrap();
    assert!(first.data.contains("chat.completion.chunk"));
    drop(s);
    assert!(
        fp.hung_up_within(Duration::from_millis(500)).await,
        "the provider saw no hang-up"
    );
    // An agent answering: its run is cancelled.
    let agent = agent_with(&gw, json!({"metadata": {"echo_delay_ms": 100}})).await;
    let body = json!({"model": agent, "stream": true, "messages": [{"role": "user", "content": "a b c d e f g h i j k l"}]});
    let mut s = complete(&gw, body).await.bytes_stream().eventsource();
    let first: Value = serde_json::from_str(&s.next().await.unwrap().unwrap().data).unwrap();
    let run_id = format!(
        "run-{}",
        first["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("chatcmpl-")
    );
    drop(s);
    assert_eq!(wait_run(&gw, &run_id).await["status"], "cancelled");
}
