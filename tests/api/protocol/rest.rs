//! REST responses against `error.json`, `list.json`, `agent.json`,
//! `tool.json`, `session.json`, `key.json` and `account.json`; and request
//! bodies: the server accepts exactly what the `create` schemas allow.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use super::{assert_invalid, assert_valid, validator};
use crate::common::{expect_error, spawn_gateway, Api, TestGateway};

/// Asserts status and code, then the envelope against `error.json`.
async fn error_shape(resp: Response, status: u16, code: &str) -> Value {
    let body = expect_error(resp, status, code).await;
    assert_valid("error.json", &body);
    body
}

/// The JSON body after asserting the status.
async fn body(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "{}", resp.url());
    resp.json().await.expect("JSON body")
}

#[tokio::test]
async fn error_envelopes_match_the_schema() {
    let gw = spawn_gateway().await;
    // 400: malformed JSON, wrong type, bad query, bad cursor.
    let r = gw
        .req(Method::POST, "/v1/agents")
        .body("{oops")
        .send()
        .await
        .unwrap();
    error_shape(r, 400, "validation_error").await;
    error_shape(
        gw.post("/v1/agents", json!({"name": 7})).await,
        400,
        "validation_error",
    )
    .await;
    error_shape(gw.get("/v1/agents?limit=0").await, 400, "validation_error").await;
    let b = error_shape(gw.get("/v1/agents?after=x").await, 400, "validation_error").await;
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("after:"),
        "{b}"
    );
    // 401 without a key, with a wrong one, and on a route that does not exist.
    let r = gw.client.get(gw.url("/v1/account")).send().await.unwrap();
    error_shape(r, 401, "unauthorized").await;
    let r = gw
        .req_as("wk_nope_nope", Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    error_shape(r, 401, "unauthorized").await;
    // 403: a valid key without the scope.
    let reader = gw.mint_key("default", &["agents:read"]).await;
    let r = gw
        .req_as(&reader, Method::GET, "/v1/keys")
        .send()
        .await
        .unwrap();
    error_shape(r, 403, "forbidden").await;
    // 404 by route and by kind of resource.
    let r = gw.client.get(gw.url("/v1/nope")).send().await.unwrap();
    error_shape(r, 404, "not_found").await;
    error_shape(
        gw.get("/v1/agents/agent-none").await,
        404,
        "agent_not_found",
    )
    .await;
    error_shape(gw.get("/v1/tools/tool-none").await, 404, "tool_not_found").await;
    error_shape(gw.get("/v1/runs/run-none").await, 404, "run_not_found").await;
    let r = gw
        .req(Method::DELETE, "/v1/keys/key-none")
        .send()
        .await
        .unwrap();
    error_shape(r, 404, "key_not_found").await;
    let agent = gw.create_agent("errors").await;
    let r = gw
        .req(
            Method::DELETE,
            &format!("/v1/agents/{agent}/sessions/sess-none"),
        )
        .send()
        .await
        .unwrap();
    error_shape(r, 404, "session_not_found").await;
    // 405.
    let r = gw.req(Method::PUT, "/v1/agents").send().await.unwrap();
    error_shape(r, 405, "method_not_allowed").await;
    // 409: a taken tool name, and a stopped agent.
    assert_eq!(
        gw.post("/v1/tools", json!({"name": "dup"})).await.status(),
        201
    );
    error_shape(
        gw.post("/v1/tools", json!({"name": "dup"})).await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(
        gw.post(&format!("/v1/agents/{agent}/stop"), json!({}))
            .await
            .status(),
        200
    );
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            json!({"message": "hi"}),
        )
        .await;
    error_shape(r, 409, "agent_stopped").await;
    // 413.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    let r = gw
        .req(Method::POST, "/v1/agents")
        .body(big)
        .send()
        .await
        .unwrap();
    error_shape(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn resources_match_their_schemas() {
    let gw = spawn_gateway().await;
    // Tools: a built-in and a webhook.
    let builtin = body(gw.post("/v1/tools", json!({"name": "get_time"})).await, 201).await;
    assert_valid("tool.json", &builtin);
    let hook = json!({"name": "lookup", "description": "d", "url": "http://127.0.0.1:9/hook",
        "json_schema": {"type": "object", "properties": {"q": {"type": "string"}}}});
    assert_valid("tool.json#/$defs/create", &hook);
    let hook = body(gw.post("/v1/tools", hook).await, 201).await;
    assert_valid("tool.json", &hook);
    assert_eq!(hook["kind"], "webhook");
    let tool_id = hook["id"].as_str().unwrap();
    assert_valid(
        "tool.json",
        &body(gw.get(&format!("/v1/tools/{tool_id}")).await, 200).await,
    );
    assert_valid(
        "list.json#/$defs/tools",
        &body(gw.get("/v1/tools").await, 200).await,
    );

    // Agents: every field set, then read, changed, stopped, started, listed.
    let mut create = json!({"name": "full", "model": "echo", "system": "be brief",
        "tools": ["calculator"], "tags": ["a", "b"], "metadata": {"echo_delay_ms": 0}});
    assert_valid("agent.json#/$defs/create", &create);
    // A tool id is accepted only when the tool exists, which no request
    // schema can say (the OpenAPI fuzzer would send made-up ones): the
    // schema lists built-in names, and the answer shows the id.
    create["tools"] = json!(["calculator", tool_id]);
    let agent = body(gw.post("/v1/agents", create).await, 201).await;
    assert_valid("agent.json", &agent);
    let id = agent["id"].as_str().unwrap().to_owned();
    assert_valid(
        "agent.json",
        &body(gw.get(&format!("/v1/agents/{id}")).await, 200).await,
    );
    let patch = json!({"name": "renamed", "tags": null});
    assert_valid("agent.json#/$defs/update", &patch);
    let r = gw
        .req(Method::PATCH, &format!("/v1/agents/{id}"))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_valid("agent.json", &body(r, 200).await);
    let stopped = body(
        gw.post(&format!("/v1/agents/{id}/stop"), json!({})).await,
        200,
    )
    .await;
    assert_valid("agent.json", &stopped);
    assert_eq!(stopped["status"], "stopped");
    assert_valid(
        "agent.json",
        &body(
            gw.post(&format!("/v1/agents/{id}/start"), json!({})).await,
            200,
        )
        .await,
    );
    gw.create_agent("second").await;
    let page = body(gw.get("/v1/agents?limit=1").await, 200).await;
    assert_valid("list.json#/$defs/agents", &page);
    let cursor = page["pagination"]["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let last = body(
        gw.get(&format!("/v1/agents?limit=1&after={cursor}")).await,
        200,
    )
    .await;
    assert_valid("list.json#/$defs/agents", &last);
    assert!(last["pagination"]["next_cursor"].is_null(), "{last}");

    // Sessions: without a body, and named.
    let r = gw
        .req(Method::POST, &format!("/v1/agents/{id}/sessions"))
        .send()
        .await
        .unwrap();
    assert_valid("session.json", &body(r, 201).await);
    let named = json!({"name": "support"});
    assert_valid("session.json#/$defs/create", &named);
    let s = body(
        gw.post(&format!("/v1/agents/{id}/sessions"), named).await,
        201,
    )
    .await;
    assert_valid("session.json", &s);
    assert_valid(
        "list.json#/$defs/sessions",
        &body(gw.get(&format!("/v1/agents/{id}/sessions")).await, 200).await,
    );

    keys_and_account(&gw).await;
}

async fn keys_and_account(gw: &TestGateway) {
    let create = json!({"scopes": ["chat", "logs"], "label": "ui", "rpm": 60});
    assert_valid("key.json#/$defs/create", &create);
    let minted = body(gw.post("/v1/keys", create).await, 201).await;
    assert_valid("key.json#/$defs/minted", &minted);
    // The secret never appears in a key record.
    assert_invalid("key.json", &minted);
    let list = body(gw.get("/v1/keys").await, 200).await;
    assert_valid("list.json#/$defs/keys", &list);
    let key_id = minted["id"].as_str().unwrap();
    let r = gw
        .req(Method::DELETE, &format!("/v1/keys/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty(), "204 has no body");
    let list = body(gw.get("/v1/keys?limit=1000").await, 200).await;
    assert_valid("list.json#/$defs/keys", &list);
    let revoked = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id)
        .expect("listed");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    let account = body(gw.get("/v1/account").await, 200).await;
    assert_valid("account.json", &account);
    // The minted key's own view of its account.
    let secret = minted["secret"].as_str().unwrap();
    let r = gw
        .req_as(secret, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    error_shape(r, 401, "unauthorized").await;
}

/// Request bodies: the `create` schemas accept exactly what the server accepts.
#[tokio::test]
async fn request_schemas_agree_with_the_server() {
    let gw = spawn_gateway().await;
    let cases = [
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "ok"}),
        ),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "x", "model": "upstream/gpt-4o"}),
        ),
        ("agent.json#/$defs/create", "/v1/agents", json!({})),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "   "}),
        ),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "x", "modle": "echo"}),
        ),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "x", "model": "gpt"}),
        ),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "x", "tags": [""]}),
        ),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "x", "metadata": []}),
        ),
        (
            "agent.json#/$defs/create",
            "/v1/agents",
            json!({"name": "x", "tools": ["no such tool"]}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "t1"}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "t2", "url": "https://example.com/x"}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "bad name"}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "t3", "kind": "shell"}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "t4", "kind": "webhook"}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "t5", "kind": "builtin", "url": "http://x"}),
        ),
        (
            "tool.json#/$defs/create",
            "/v1/tools",
            json!({"name": "t6", "json_schema": "no"}),
        ),
        (
            "key.json#/$defs/create",
            "/v1/keys",
            json!({"scopes": ["chat"]}),
        ),
        ("key.json#/$defs/create", "/v1/keys", json!({"scopes": []})),
        (
            "key.json#/$defs/create",
            "/v1/keys",
            json!({"scopes": ["root"]}),
        ),
        (
            "key.json#/$defs/create",
            "/v1/keys",
            json!({"scopes": ["chat"], "rpm": 0}),
        ),
        (
            "key.json#/$defs/create",
            "/v1/keys",
            json!({"scopes": ["chat"], "extra": 1}),
        ),
    ];
    for (schema, path, body) in cases {
        let schema_ok = validator(schema).is_valid(&body);
        let status = gw.post(path, body.clone()).await.status().as_u16();
        assert!(status == 201 || status == 400, "{path} {body}: {status}");
        assert_eq!(
            schema_ok,
            status == 201,
            "{schema} says {schema_ok}, server {status}, for {body}"
        );
    }
}
