//! REST behaviour of the core: CRUD, pagination, tenancy, keys,
//! persistence — each run against the embedded store and a remote store.

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::{
    both_stores,
    common::{expect_error, Api, TestGateway},
    envelopes::validation_message,
};

both_stores!(agent_crud_round_trip, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let r = gw
        .post(
            "/v1/agents",
            json!({"name": "helper", "system": "be brief", "tags": ["a"], "metadata": {"k": 1}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let agent: Value = r.json().await.unwrap();
    let id = id_of(&agent);
    assert!(id.starts_with("agent-"));
    assert_eq!(agent["model"], "echo");
    assert_eq!(agent["status"], "running");
    assert!(
        agent.get("account_id").is_none(),
        "account id stays private"
    );
    let got = get_json(&gw, &format!("/v1/agents/{id}")).await;
    assert_eq!(got, agent);
    let r = gw
        .req(Method::PATCH, &format!("/v1/agents/{id}"))
        .json(&json!({"name": "renamed", "tags": ["b", "c"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["tags"], json!(["b", "c"]));
    assert_eq!(patched["system"], "be brief", "untouched fields stay");
    for (action, status) in [("stop", "stopped"), ("start", "running")] {
        let r = gw
            .post(&format!("/v1/agents/{id}/{action}"), json!({}))
            .await;
        assert_eq!(r.json::<Value>().await.unwrap()["status"], status);
    }
    delete_then_missing(&gw, &format!("/v1/agents/{id}"), "agent_not_found").await;
});

both_stores!(tools_and_sessions, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let r = gw
        .post(
            "/v1/tools",
            json!({"name": "lookup", "description": "d", "url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let tool: Value = r.json().await.unwrap();
    assert_eq!(tool["kind"], "webhook");
    let tid = id_of(&tool);
    let dup = gw
        .post(
            "/v1/tools",
            json!({"name": "lookup", "url": "http://127.0.0.1:9/x"}),
        )
        .await;
    expect_error(dup, 409, "conflict").await;
    let bad = gw
        .post("/v1/tools", json!({"name": "x", "kind": "webhook"}))
        .await;
    assert!(validation_message(bad).await.starts_with("url"));
    // An agent may name the tool by id; an unknown id is refused.
    let r = gw
        .post(
            "/v1/agents",
            json!({"name": "a", "tools": [tid, "get_time"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let aid = id_of(&r.json().await.unwrap());
    let bad = gw
        .post("/v1/agents", json!({"name": "a", "tools": ["tool-nope"]}))
        .await;
    assert!(validation_message(bad).await.starts_with("tools[0]"));
    // Sessions: body optional.
    let r = gw
        .req(Method::POST, &format!("/v1/agents/{aid}/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let s1: Value = r.json().await.unwrap();
    let r = gw
        .post(
            &format!("/v1/agents/{aid}/sessions"),
            json!({"name": "second"}),
        )
        .await;
    let s2: Value = r.json().await.unwrap();
    assert_eq!(s2["name"], "second");
    let list = get_json(&gw, &format!("/v1/agents/{aid}/sessions")).await;
    assert_eq!(list["pagination"]["total"], 2);
    assert_eq!(list["data"][0]["id"], s1["id"]);
    let sid = s1["id"].as_str().unwrap();
    let session = format!("/v1/agents/{aid}/sessions/{sid}");
    assert_eq!(delete(&gw, &session).await.status(), 204);
    expect_error(delete(&gw, &session).await, 404, "session_not_found").await;
    expect_error(
        gw.get("/v1/agents/agent-missing/sessions").await,
        404,
        "agent_not_found",
    )
    .await;
    delete_then_missing(&gw, &format!("/v1/tools/{tid}"), "tool_not_found").await;
});

both_stores!(pagination_walks_with_cursor_and_offset, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let mut made = Vec::new();
    for i in 0..25 {
        made.push(gw.create_agent(&format!("a{i}")).await);
    }
    // Cursor walk.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/agents?limit=10&after={c}"),
            None => "/v1/agents?limit=10".to_owned(),
        };
        let page = get_json(&gw, &path).await;
        assert_eq!(page["pagination"]["total"], 25);
        assert_eq!(page["pagination"]["limit"], 10);
        seen.extend(page_ids(&page));
        pages += 1;
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made, "oldest first, none missed, none twice");
    // Offset walk gives the same order.
    let mut by_offset = Vec::new();
    for offset in [0, 10, 20] {
        let page = get_json(&gw, &format!("/v1/agents?limit=10&offset={offset}")).await;
        assert_eq!(page["pagination"]["offset"], offset);
        by_offset.extend(page_ids(&page));
    }
    assert_eq!(by_offset, made);
    let message = validation_message(gw.get("/v1/agents?limit=1001").await).await;
    assert!(message.starts_with("limit"));
    let message = validation_message(gw.get("/v1/agents?after=garbage").await).await;
    assert!(message.contains("after"));
    let page = get_json(&gw, "/v1/agents?limit=1000").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 25);
    assert!(page["pagination"]["next_cursor"].is_null());
});

both_stores!(tenancy_hides_other_accounts, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let mine = gw.create_agent("mine").await;
    let other = gw.mint_key("acme", &["*"]).await;
    let theirs = gw
        .req_as(&other, Method::POST, "/v1/agents")
        .json(&json!({"name": "theirs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    let list = get_json_as(&gw, &other, "/v1/agents").await;
    assert_eq!(
        list["pagination"]["total"], 1,
        "acme sees only its own agent"
    );
    for (method, path) in [
        (Method::GET, format!("/v1/agents/{mine}")),
        (Method::PATCH, format!("/v1/agents/{mine}")),
        (Method::DELETE, format!("/v1/agents/{mine}")),
        (Method::POST, format!("/v1/agents/{mine}/stop")),
        (Method::GET, format!("/v1/agents/{mine}/sessions")),
    ] {
        let r = gw
            .req_as(&other, method.clone(), &path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "agent_not_found").await;
    }
    // The owner still has it, untouched.
    let got = get_json(&gw, &format!("/v1/agents/{mine}")).await;
    assert_eq!(got["status"], "running");
    // Keys of another account cannot be listed or revoked.
    let keys = get_json_as(&gw, &other, "/v1/keys").await;
    assert_eq!(keys["pagination"]["total"], 1);
    let my_keys = get_json(&gw, "/v1/keys").await;
    let my_key_id = my_keys["data"][0]["id"].as_str().unwrap();
    let r = gw
        .req_as(&other, Method::DELETE, &format!("/v1/keys/{my_key_id}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "key_not_found").await;
    assert_eq!(
        gw.get("/v1/account").await.status(),
        200,
        "my key still works"
    );
});

both_stores!(keys_mint_list_revoke, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let r = gw
        .post(
            "/v1/keys",
            json!({"scopes": ["agents:read"], "label": "ro", "rpm": 60}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let minted: Value = r.json().await.unwrap();
    let secret = minted["secret"].as_str().unwrap().to_owned();
    let kid = id_of(&minted);
    assert!(minted.get("hash").is_none());
    assert_eq!(
        status_as(&gw, &secret, "/v1/agents").await,
        200,
        "the new key works (and is now cached)"
    );
    let list = get_json(&gw, "/v1/keys").await;
    let text = list.to_string();
    assert!(!text.contains(&secret), "list never shows secrets");
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("secret").is_none() && k.get("hash").is_none()));
    let r = delete(&gw, &format!("/v1/keys/{kid}")).await;
    assert_eq!(r.status(), 204);
    let r = gw
        .req_as(&secret, Method::GET, "/v1/agents")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // A key cannot grant scopes it lacks.
    let limited = gw.mint_key("default", &["keys"]).await;
    let r = gw
        .req_as(&limited, Method::POST, "/v1/keys")
        .json(&json!({"scopes": ["*"]}))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    let r = gw.post("/v1/keys", json!({"scopes": ["root"]})).await;
    assert!(validation_message(r).await.starts_with("scopes[0]"));
});

both_stores!(data_and_key_usage_survive_restart, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let id = gw.create_agent("durable").await;
    let secret = gw.create_key(json!({"scopes": ["agents:read"]})).await;
    assert_eq!(status_as(&gw, &secret, "/v1/agents").await, 200);
    let gw = gw.restart().await;
    let got = gw.get(&format!("/v1/agents/{id}")).await;
    assert_eq!(got.status(), 200);
    assert_eq!(status_as(&gw, &secret, "/v1/agents").await, 200);
    let keys = get_json(&gw, "/v1/keys").await;
    let used = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["last_used_at"].is_string())
        .count();
    assert!(used >= 2, "last_used_at was flushed on shutdown: {keys}");
});

/// The body of `GET path` (with the gateway's key) as JSON.
pub(crate) async fn get_json(gw: &TestGateway, path: &str) -> Value {
    gw.get(path).await.json().await.unwrap()
}

/// The body of `GET path` as `key`, as JSON.
async fn get_json_as(gw: &TestGateway, key: &str, path: &str) -> Value {
    let r = gw.req_as(key, Method::GET, path).send().await.unwrap();
    r.json().await.unwrap()
}

/// The status of `GET path` as `key`.
pub(crate) async fn status_as(gw: &TestGateway, key: &str, path: &str) -> StatusCode {
    let r = gw.req_as(key, Method::GET, path).send().await.unwrap();
    r.status()
}

/// `DELETE path` with the gateway's key.
async fn delete(gw: &TestGateway, path: &str) -> Response {
    gw.req(Method::DELETE, path).send().await.unwrap()
}

/// Deletes `path` (204), then checks that reading it is `code` (404).
async fn delete_then_missing(gw: &TestGateway, path: &str, code: &str) {
    assert_eq!(delete(gw, path).await.status(), 204, "DELETE {path}");
    expect_error(gw.get(path).await, 404, code).await;
}

/// The `id` of a record the API returned.
fn id_of(record: &Value) -> String {
    record["id"].as_str().unwrap().to_owned()
}

/// The ids of a page's records, in order.
fn page_ids(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(id_of).collect()
}
