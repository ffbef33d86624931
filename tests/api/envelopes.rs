//! The edges of the core API: every error status in the envelope, account
//! and ops routes, OpenAPI and docs, key hashing at rest, and the remote
//! store answering like the embedded one.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::{
    common::{expect_error, spawn_gateway, Api, StoreMode, TestGateway},
    rest::{get_json, status_as},
};

/// Expects a 400 `validation_error` envelope; returns its message.
pub(crate) async fn validation_message(resp: Response) -> String {
    let body = expect_error(resp, 400, "validation_error").await;
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn envelopes_on_every_error_status() {
    let gw = spawn_gateway().await;
    // 400: malformed JSON, wrong type (names the field), missing field, unknown field.
    let r = gw
        .req(Method::POST, "/v1/agents")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(validation_message(r).await.contains("malformed JSON"));
    // A wrong value: the message starts with the field's path.
    let wrong_values = [
        (json!({"name": 5}), "name:"),
        (json!({"name": "x", "tags": ["a", 3]}), "tags[1]:"),
        (json!({"name": "x", "model": "gpt"}), "model:"),
    ];
    for (body, field) in wrong_values {
        let message = validation_message(gw.post("/v1/agents", body).await).await;
        assert!(message.starts_with(field), "{message}");
    }
    // A missing or unknown field: the message names it.
    for (body, field) in [
        (json!({}), "`name`"),
        (json!({"name": "x", "modle": "echo"}), "`modle`"),
    ] {
        let message = validation_message(gw.post("/v1/agents", body).await).await;
        assert!(message.contains(field), "{message}");
    }
    // 401: none, wrong, malformed.
    let r = gw.client.get(gw.url("/v1/agents")).send().await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = gw
        .req_as("wk_nope_nope", Method::GET, "/v1/agents")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // 403.
    let ro = gw.mint_key("default", &["agents:read"]).await;
    let r = gw
        .req_as(&ro, Method::POST, "/v1/agents")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    // 404: unknown route (even without a key) and unknown resource.
    expect_error(
        gw.client.get(gw.url("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        gw.get("/v1/agents/agent-none").await,
        404,
        "agent_not_found",
    )
    .await;
    // 405.
    let r = gw.req(Method::PUT, "/v1/agents").send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    // 409 (tool name taken).
    gw.post("/v1/tools", json!({"name": "t", "kind": "builtin"}))
        .await;
    expect_error(
        gw.post("/v1/tools", json!({"name": "t", "kind": "builtin"}))
            .await,
        409,
        "conflict",
    )
    .await;
    // 413: a body over 1 MiB, with and without Content-Length known up front.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    let r = gw
        .req(Method::POST, "/v1/agents")
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large").await;
    let chunks = futures::stream::iter(
        big.into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = gw
        .req(Method::POST, "/v1/agents")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large").await;
    // X-Request-Id is echoed when the client sends one, on success too.
    let r = gw
        .req(Method::GET, "/v1/account")
        .header("x-request-id", "client-id-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-id-7");
    let r = gw
        .req(Method::GET, "/v1/agents/agent-none")
        .header("x-request-id", "client-id-8")
        .send()
        .await
        .unwrap();
    let b = expect_error(r, 404, "agent_not_found").await;
    assert_eq!(b["error"]["request_id"], "client-id-8");
}

/// serde's derived structs read a JSON array positionally; a body must be
/// an object (found by schemathesis: `[]` created a session).
#[tokio::test]
async fn an_array_body_is_refused_not_read_positionally() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("arrays").await;
    for (path, body) in [
        (format!("/v1/agents/{agent}/sessions"), "[]"),
        ("/v1/agents".to_owned(), r#"["x"]"#),
        ("/v1/tools".to_owned(), " []"),
    ] {
        let r = gw
            .req(Method::POST, &path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let msg = validation_message(r).await;
        assert!(msg.contains("expected a JSON object"), "{path}: {msg}");
    }
    let r = gw.get(&format!("/v1/agents/{agent}/sessions")).await;
    let sessions: Value = r.json().await.unwrap();
    assert!(
        sessions["data"].as_array().unwrap().len() <= 1,
        "no session was made from an array: {sessions}"
    );
}

#[tokio::test]
async fn account_ops_and_docs() {
    let gw = spawn_gateway().await;
    let acct = get_json(&gw, "/v1/account").await;
    assert_eq!(acct["id"], "default");
    assert_eq!(acct["limits"]["max_websockets"], 10);
    assert_eq!(acct["limits"]["max_sse_streams"], 20);
    assert_eq!(acct["key"]["scopes"], json!(["*"]));
    for path in ["/healthz", "/readyz", "/v1/openapi.json", "/docs"] {
        let r = gw.client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} needs no key");
    }
    let doc: Value = gw
        .client
        .get(gw.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/v1/agents",
        "/v1/agents/{id}",
        "/v1/keys",
        "/v1/tools",
        "/v1/agents/{id}/sessions",
        "/v1/account",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi documents {p}");
    }
    let html = gw
        .client
        .get(gw.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("/v1/openapi.json") && !html.contains("https://"),
        "docs load nothing from the network"
    );
}

#[tokio::test]
async fn sqlite_file_holds_no_secret() {
    let mut gw = spawn_gateway().await;
    let secret = gw.create_key(json!({"scopes": ["chat"]})).await;
    assert_eq!(status_as(&gw, &secret, "/v1/account").await, 200);
    gw.shutdown().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&gw.data_dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!bytes.is_empty());
    let hay = String::from_utf8_lossy(&bytes);
    for s in [secret.as_str(), crate::common::BOOTSTRAP_KEY] {
        assert!(!hay.contains(s), "a secret is stored in plaintext");
        assert!(hay.contains(&weir::keys::hash(s)), "its hash is stored");
    }
}

#[tokio::test]
async fn remote_store_answers_like_embedded() {
    // The same requests through both deployments give the same shapes.
    let a = spawn_gateway().await;
    let b = TestGateway::builder()
        .store(StoreMode::Remote)
        .spawn()
        .await;
    for gw in [&a, &b] {
        gw.create_agent("x").await;
    }
    let la = get_json(&a, "/v1/agents").await;
    let lb = get_json(&b, "/v1/agents").await;
    let strip = |v: &Value| {
        let mut v = v.clone();
        for a in v["data"].as_array_mut().unwrap() {
            for k in ["id", "created_at", "updated_at"] {
                a[k] = Value::Null;
            }
        }
        v["pagination"]["next_cursor"] = Value::Null;
        v
    };
    assert_eq!(strip(&la), strip(&lb));
}
