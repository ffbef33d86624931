//! `/v1/chat/completions` and `/v1/models` against `openai-completion.json`,
//! `openai-chunk.json`, `openai-error.json` and `openai-models.json`.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use super::{assert_valid, sse::SseReader};
use crate::common::{expect_error, spawn_gateway, Api, TestGateway};

async fn complete(gw: &TestGateway, body: Value) -> Response {
    gw.post("/v1/chat/completions", body).await
}

/// An OpenAI-shaped error made by weir, with its status and code.
async fn openai_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("JSON error");
    assert_valid("openai-error.json#/$defs/weir_error", &body);
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

/// The `data:` payloads of a completion stream, `[DONE]` last.
async fn chunks(resp: Response) -> Vec<String> {
    let frames = SseReader::new(resp).all().await;
    for f in &frames {
        assert_eq!(f.fields, ["data"], "chunks are bare data: lines: {f:?}");
    }
    frames.into_iter().map(|f| f.data).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_match_the_openai_schemas() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("oa").await;
    let msgs = json!([{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]);

    let r = complete(&gw, json!({"model": agent, "messages": msgs})).await;
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_valid("openai-completion.json", &c);
    assert_valid("openai-completion.json#/$defs/agent_completion", &c);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");

    // Streaming with the usage chunk.
    let body = json!({"model": agent, "messages": msgs, "stream": true, "stream_options": {"include_usage": true}});
    let data = chunks(complete(&gw, body).await).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for c in &parsed {
        assert_valid("openai-chunk.json", c);
        assert_valid("openai-chunk.json#/$defs/agent_chunk", c);
    }
    let (usage, rest) = parsed.split_last().expect("chunks");
    assert_eq!(
        usage["choices"],
        json!([]),
        "the usage chunk has no choices"
    );
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(
        rest.iter().all(|c| c["usage"].is_null()),
        "usage: null on every other chunk"
    );
    assert_eq!(
        rest[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    let ids: std::collections::HashSet<&Value> = parsed.iter().map(|c| &c["id"]).collect();
    assert_eq!(ids.len(), 1, "one id per completion");

    // Without include_usage, no chunk has `usage`.
    let data = chunks(
        complete(
            &gw,
            json!({"model": agent, "messages": msgs, "stream": true}),
        )
        .await,
    )
    .await;
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert_valid("openai-chunk.json#/$defs/agent_chunk", &c);
        assert!(c.get("usage").is_none(), "{c}");
    }

    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    assert_valid("openai-models.json", &models);
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == agent.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_routes_answer_openai_shaped_errors() {
    let gw = spawn_gateway().await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let b = openai_error(
        complete(&gw, json!({"model": "agent-none", "messages": msgs})).await,
        404,
        "model_not_found",
    )
    .await;
    assert_eq!(b["error"]["param"], "model");
    let r = gw
        .req(Method::POST, "/v1/chat/completions")
        .body("{oops")
        .send()
        .await
        .unwrap();
    let b = openai_error(r, 400, "invalid_json").await;
    assert_eq!(b["error"]["type"], "invalid_request_error");
    // Errors from before the handler (auth, scope, body size) take the same
    // shape, with the response's request id.
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let b = openai_error(r, 401, "unauthorized").await;
    assert_eq!(b["error"]["type"], "authentication_error");
    assert_eq!(b["error"]["request_id"], rid.as_str());
    let reader = gw.mint_key("default", &["agents:read"]).await;
    let r = gw
        .req_as(&reader, Method::GET, "/v1/models")
        .send()
        .await
        .unwrap();
    let b = openai_error(r, 403, "forbidden").await;
    assert_eq!(b["error"]["type"], "permission_error");
    let big = format!("{{\"model\":\"{}\"}}", "x".repeat(1 << 20));
    let r = gw
        .req(Method::POST, "/v1/chat/completions")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    openai_error(r, 413, "payload_too_large").await;
    // Other routes keep the REST envelope.
    let r = gw.client.get(gw.url("/v1/agents")).send().await.unwrap();
    let b = expect_error(r, 401, "unauthorized").await;
    assert_valid("error.json", &b);
}
