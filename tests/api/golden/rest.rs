//! `rest.txt`: the success bodies of every REST resource (account, keys with
//! the secret shown once, agents, tools, sessions, runs), the list envelope
//! with its pagination, 204s, and the ops routes.

use reqwest::Method;
use serde_json::json;

use super::{
    check, main_key, settled,
    transcript::{Key, Req},
    Transcript,
};
use crate::common::{spawn_gateway, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_rest_bodies() {
    let gw = spawn_gateway().await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("REST success bodies");
    t.section("ops (no key)");
    t.http(&gw, Req::get("/healthz")).await;
    t.http(&gw, Req::get("/readyz")).await;
    t.section("the account, as seen by the key asking");
    t.http(&gw, Req::get("/v1/account").key(&key)).await;
    keys(&mut t, &gw, &key).await;
    let agent = agents(&mut t, &gw, &key).await;
    tools(&mut t, &gw, &key).await;
    sessions_and_runs(&mut t, &gw, &key, &agent).await;
    t.section("deleting the agent");
    let path = format!("/v1/agents/{agent}");
    t.http(&gw, Req::new(Method::DELETE, &path).key(&key)).await;
    t.http(&gw, Req::get("/v1/agents").key(&key)).await;
    check("rest.txt", t);
}

async fn keys(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("keys: mint (the secret is shown once), list, page, revoke");
    let body = json!({"scopes": ["chat", "logs"], "label": "ci", "rpm": 600});
    let minted = t.http(gw, Req::post("/v1/keys", &body).key(key)).await;
    let body = json!({"scopes": ["agents:read"]});
    t.http(gw, Req::post("/v1/keys", &body).key(key)).await;
    t.http(gw, Req::get("/v1/keys").key(key)).await;
    let page = t.http(gw, Req::get("/v1/keys?limit=2").key(key)).await;
    let cursor = page.json()["pagination"]["next_cursor"].clone();
    let cursor = cursor.as_str().expect("a next page");
    t.http(
        gw,
        Req::get(format!("/v1/keys?limit=2&after={cursor}")).key(key),
    )
    .await;
    let path = format!("/v1/keys/{}", minted.str("id"));
    t.http(gw, Req::new(Method::DELETE, path).key(key)).await;
    t.http(gw, Req::get("/v1/keys?offset=2").key(key)).await;
}

async fn agents(t: &mut Transcript, gw: &TestGateway, key: &Key) -> String {
    t.section("agents: create (every field, then defaults), list, page, read, change, stop, start");
    let body = json!({"name": "golden-rest", "model": "echo", "system": "be brief",
        "tools": ["get_time", "calculator"], "tags": ["a", "b"], "metadata": {"k": 1, "echo_delay_ms": 0}});
    let agent = t
        .http(gw, Req::post("/v1/agents", &body).key(key))
        .await
        .str("id");
    for name in ["second", "third"] {
        t.http(gw, Req::post("/v1/agents", &json!({"name": name})).key(key))
            .await;
    }
    t.http(gw, Req::get("/v1/agents").key(key)).await;
    let page = t.http(gw, Req::get("/v1/agents?limit=1").key(key)).await;
    let cursor = page.json()["pagination"]["next_cursor"].clone();
    let cursor = cursor.as_str().expect("a next page");
    t.http(
        gw,
        Req::get(format!("/v1/agents?limit=1&after={cursor}")).key(key),
    )
    .await;
    t.http(gw, Req::get("/v1/agents?limit=1&offset=2").key(key))
        .await;
    let path = format!("/v1/agents/{agent}");
    t.http(gw, Req::get(&path).key(key)).await;
    let patch =
        Req::new(Method::PATCH, &path).body(r#"{"name":"renamed","tags":["c"],"metadata":{}}"#);
    t.http(gw, patch.key(key)).await;
    for action in ["stop", "start"] {
        let req = Req::post(format!("{path}/{action}"), &json!({}));
        t.http(gw, req.key(key)).await;
    }
    agent
}

async fn tools(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("tools: a built-in and a webhook, list, read, delete");
    let body = json!({"name": "calc", "kind": "builtin", "description": "arithmetic"});
    t.http(gw, Req::post("/v1/tools", &body).key(key)).await;
    let body = json!({"name": "weather", "url": "https://example.com/hook",
        "json_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let tool = t
        .http(gw, Req::post("/v1/tools", &body).key(key))
        .await
        .str("id");
    t.http(gw, Req::get("/v1/tools").key(key)).await;
    let path = format!("/v1/tools/{tool}");
    t.http(gw, Req::get(&path).key(key)).await;
    t.http(gw, Req::new(Method::DELETE, &path).key(key)).await;
    t.http(gw, Req::get("/v1/tools").key(key)).await;
}

async fn sessions_and_runs(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section("sessions: create (no body, then named), list, delete");
    let path = format!("/v1/agents/{agent}/sessions");
    t.http(gw, Req::new(Method::POST, &path).key(key)).await;
    let named = t
        .http(gw, Req::post(&path, &json!({"name": "named"})).key(key))
        .await
        .str("id");
    t.http(gw, Req::get(&path).key(key)).await;
    let one = format!("{path}/{named}");
    t.http(gw, Req::new(Method::DELETE, &one).key(key)).await;
    t.section("a run's record, and cancelling a finished run (unchanged)");
    let send = Req::post(
        format!("/v1/agents/{agent}/messages"),
        &json!({"message": "hi"}),
    );
    let run = super::quietly(gw, send.key(key)).await.str("run_id");
    settled(gw, key, agent, 1).await;
    t.http(gw, Req::get(format!("/v1/runs/{run}")).key(key))
        .await;
    let cancel = Req::post(format!("/v1/runs/{run}/cancel"), &json!({}));
    t.http(gw, cancel.key(key)).await;
    t.section("the account again: its usage counts");
    t.http(gw, Req::get("/v1/account").key(key)).await;
}
