//! `errors_rest.txt`: every error code a REST or SSE route answers, in the
//! weir envelope (`{"error":{"code","message","request_id"}}`), with its
//! status and headers (`Retry-After`, `X-RateLimit-*`), and the `event:
//! error` frame a stream ends with.
//!
//! Codes (grep of `src` for `ApiError::`, `"…_not_found"`, `code:`), and how:
//! `validation_error` (bodies, fields, depth, query, cursors, run input),
//! `unauthorized`, `forbidden`, `not_found`, `agent_not_found`,
//! `tool_not_found`, `key_not_found`, `session_not_found`, `run_not_found`,
//! `method_not_allowed`, `timeout` (a gateway whose CRUD timeout is 0 s),
//! `conflict`, `agent_stopped`, `payload_too_large`, `rate_limit_exceeded`,
//! `too_many_connections`, `headers_too_large`, `unavailable` (the store
//! down, the Redis bus down, the gateway's stream cap), and
//! `history_expired` as a stream frame.
//!
//! Not triggerable from a client, so not here: `internal_error` (a panic),
//! `history_expired` as an HTTP 410 (reserved: streams answer it as a frame),
//! `lagged` (a stream that falls 1024 events behind), `unavailable` for a
//! draining gateway (it stops accepting first: `/readyz` and
//! `RunError::ShuttingDown`) and for a run whose stream was lost, and
//! `forbidden` for a route missing from the scope table (every route is in
//! it).

use reqwest::Method;
use serde_json::json;

use super::{
    check, main_key, quietly, settled,
    transcript::{Key, Open, Req},
    Transcript,
};
use crate::common::TestGateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_every_rest_error() {
    let gw = TestGateway::builder()
        .config(|c| c.history_len = 4)
        .spawn()
        .await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("every error of the REST and SSE routes, in the weir envelope");
    t.section("the agents and tool these requests name");
    let agent = t
        .http(
            &gw,
            Req::post("/v1/agents", &json!({"name": "golden-errors"})).key(&key),
        )
        .await
        .str("id");
    let stopped = t
        .http(
            &gw,
            Req::post("/v1/agents", &json!({"name": "golden-stopped"})).key(&key),
        )
        .await
        .str("id");
    t.http(
        &gw,
        Req::post(format!("/v1/agents/{stopped}/stop"), &json!({})).key(&key),
    )
    .await;
    t.http(
        &gw,
        Req::post("/v1/tools", &json!({"name": "taken", "kind": "builtin"})).key(&key),
    )
    .await;
    bodies(&mut t, &gw, &key, &agent).await;
    queries(&mut t, &gw, &key, &agent).await;
    keys(&mut t, &gw, &key).await;
    missing(&mut t, &gw, &key, &agent).await;
    t.section("405 method_not_allowed");
    for (m, path) in [(Method::PUT, "/v1/agents"), (Method::DELETE, "/v1/account")] {
        t.http(&gw, Req::new(m, path).key(&key)).await;
    }
    t.http(&gw, Req::get(format!("/v1/agents/{agent}/start")).key(&key))
        .await;
    t.section("409 conflict and agent_stopped");
    let dup = Req::post("/v1/tools", &json!({"name": "taken", "kind": "builtin"}));
    t.http(&gw, dup.key(&key)).await;
    let msg = Req::post(
        format!("/v1/agents/{stopped}/messages"),
        &json!({"message": "hi"}),
    );
    t.http(&gw, msg.key(&key)).await;
    limits(&mut t, &gw, &key).await;
    stream_frames(&mut t, &gw, &key, &agent).await;
    super::errors_edge::caps(&mut t).await;
    super::errors_edge::timeout(&mut t).await;
    super::errors_edge::store_down(&mut t).await;
    super::errors_edge::bus_down(&mut t).await;
    check("errors_rest.txt", t);
}

async fn all(t: &mut Transcript, gw: &TestGateway, key: &Key, reqs: Vec<Req>) {
    for r in reqs {
        t.http(gw, r.key(key)).await;
    }
}

async fn bodies(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section("400 validation_error: bodies that are not JSON, or of the wrong shape");
    let raw = |body: &str| Req::new(Method::POST, "/v1/agents").body(body);
    let deep = format!(
        r#"{{"name":"deep","metadata":{{"a":{}{}}}}}"#,
        "[".repeat(63),
        "]".repeat(63)
    );
    let mut reqs = vec![
        raw("{not json"),
        raw(r#"{"name":"x"} trailing"#),
        raw("[1]"),
        raw(&deep)
            .shown_as(r#"{"name":"deep","metadata":{"a":[[[… 63 levels …]]]}} (65 levels in all)"#),
    ];
    for body in [
        json!({"name": 5}),
        json!({"name": "x", "tags": ["a", 3]}),
        json!({}),
        json!({"name": "x", "modle": "echo"}),
        json!({"name": "x", "model": "gpt"}),
        json!({"name": "   "}),
        json!({"name": "x", "metadata": []}),
        json!({"name": "x", "tags": [""]}),
        json!({"name": "x", "tools": ["no such"]}),
        json!({"name": "x", "tools": ["tool-missing"]}),
    ] {
        reqs.push(Req::post("/v1/agents", &body));
    }
    reqs.push(Req::new(Method::PATCH, format!("/v1/agents/{agent}")).body(r#"{"name":7}"#));
    all(t, gw, key, reqs).await;
    more_bodies(t, gw, key, agent).await;
}

/// Tools, sessions and runs with bodies they refuse; a run the agent's
/// model cannot make.
async fn more_bodies(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    let mut reqs = Vec::new();
    for body in [
        json!({"name": "bad name"}),
        json!({"name": "t", "kind": "webhook"}),
        json!({"name": "t", "url": "ftp://example.com/x"}),
        json!({"name": "t", "url": "not a url"}),
        json!({"name": "t", "kind": "magic"}),
        json!({"name": "t", "kind": "builtin", "url": "http://example.com"}),
        json!({"name": "t", "json_schema": []}),
    ] {
        reqs.push(Req::post("/v1/tools", &body));
    }
    let sessions = format!("/v1/agents/{agent}/sessions");
    reqs.push(Req::post(&sessions, &json!({"name": 3})));
    let messages = format!("/v1/agents/{agent}/messages");
    for body in [
        json!({}),
        json!({"message": 5}),
        json!({"message": ""}),
        json!({"message": "a", "messages": [{"role": "user", "content": "b"}]}),
        json!({"messages": []}),
        json!({"messages": [{"role": "assistant", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": " "}]}),
    ] {
        reqs.push(Req::post(&messages, &body));
    }
    all(t, gw, key, reqs).await;
    t.section("400 validation_error: an agent whose model needs a provider this gateway lacks");
    let up = Req::post(
        "/v1/agents",
        &json!({"name": "golden-up", "model": "upstream/m"}),
    );
    let up = t.http(gw, up.key(key)).await.str("id");
    let msg = Req::post(
        format!("/v1/agents/{up}/messages"),
        &json!({"message": "hi"}),
    );
    t.http(gw, msg.key(key)).await;
}

async fn queries(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section("400 validation_error: query parameters and resume cursors");
    let events = format!("/v1/agents/{agent}/events");
    let reqs = vec![
        Req::get("/v1/agents?limit=0"),
        Req::get("/v1/agents?limit=abc"),
        Req::get("/v1/agents?offset=-1"),
        Req::get("/v1/agents?after="),
        Req::get(format!("/v1/agents/{agent}/messages?limit=5000")),
        Req::get(format!("/v1/agents/{agent}/logs?offset=x")),
        Req::get(format!("{events}?after=x")),
        Req::get(&events).header("last-event-id", "-1"),
        Req::get(format!("{events}?after=%2B3")),
        Req::get("/v1/agents/%FF"),
    ];
    all(t, gw, key, reqs).await;
}

async fn keys(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("400 validation_error: keys");
    let reqs = vec![
        Req::post("/v1/keys", &json!({"scopes": []})),
        Req::post("/v1/keys", &json!({"scopes": ["nope"]})),
        Req::post("/v1/keys", &json!({"scopes": ["chat"], "rpm": 0})),
    ];
    all(t, gw, key, reqs).await;
    t.section("401 unauthorized: no key, an unknown key, another scheme, a revoked key");
    t.http(gw, Req::get("/v1/agents")).await;
    let unknown = Key {
        label: "unknown",
        secret: "wk_nope_nope".into(),
    };
    t.http(gw, Req::get("/v1/agents").key(&unknown)).await;
    t.http(
        gw,
        Req::get("/v1/agents").header("authorization", "Basic YTpi"),
    )
    .await;
    let minted = Req::post(
        "/v1/keys",
        &json!({"scopes": ["chat"], "label": "soon revoked"}),
    );
    let minted = t.http(gw, minted.key(key)).await;
    let revoked = Key {
        label: "revoked",
        secret: minted.str("secret"),
    };
    let del = Req::new(Method::DELETE, format!("/v1/keys/{}", minted.str("id")));
    t.http(gw, del.key(key)).await;
    t.http(gw, Req::get("/v1/account").key(&revoked)).await;
    t.section("403 forbidden: a scope the key lacks; minting a scope the caller lacks");
    let read = Key {
        label: "agents:read",
        secret: gw.mint_key("default", &["agents:read", "keys"]).await,
    };
    t.http(
        gw,
        Req::post("/v1/agents", &json!({"name": "x"})).key(&read),
    )
    .await;
    t.http(
        gw,
        Req::post("/v1/keys", &json!({"scopes": ["*"]})).key(&read),
    )
    .await;
    t.http(
        gw,
        Req::post("/v1/keys", &json!({"scopes": ["chat"]})).key(&read),
    )
    .await;
}

async fn missing(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section("404 not_found: no such route (no key needed to learn that)");
    t.http(gw, Req::get("/v1/nothing")).await;
    t.http(gw, Req::get("/v1/nothing").key(key)).await;
    t.section("404 with the resource's own code");
    let a = "/v1/agents/agent-missing";
    let reqs = vec![
        Req::get(a),
        Req::new(Method::PATCH, a).body(r#"{"name":"x"}"#),
        Req::new(Method::DELETE, a),
        Req::post(format!("{a}/start"), &json!({})),
        Req::post(format!("{a}/messages"), &json!({"message": "hi"})),
        Req::get(format!("{a}/messages")),
        Req::get(format!("{a}/sessions")),
        Req::get(format!("{a}/logs")),
        Req::get(format!("{a}/events")),
        Req::get(format!("{a}/logs/stream")),
        Req::new(
            Method::DELETE,
            format!("/v1/agents/{agent}/sessions/sess-missing"),
        ),
        Req::get(format!(
            "/v1/agents/{agent}/messages?session_id=sess-missing"
        )),
        Req::post(
            format!("/v1/agents/{agent}/messages"),
            &json!({"message": "hi", "session_id": "sess-missing"}),
        ),
        Req::get("/v1/tools/tool-missing"),
        Req::new(Method::DELETE, "/v1/tools/tool-missing"),
        Req::new(Method::DELETE, "/v1/keys/key-missing"),
        Req::get("/v1/runs/run-missing"),
        Req::post("/v1/runs/run-missing/cancel", &json!({})),
        Req::get("/v1/runs/run-missing/stream"),
    ];
    all(t, gw, key, reqs).await;
}

async fn limits(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("413 payload_too_large: a body over 1 MiB");
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(1 << 20));
    let req = Req::new(Method::POST, "/v1/agents").body(big);
    t.http(
        gw,
        req.shown_as(r#"{"name":"xxxx… (1 MiB of x)"}"#).key(key),
    )
    .await;
    t.section("431 headers_too_large: 40 KiB of headers");
    let filler = "a".repeat(40 * 1024);
    let req = Req::get("/v1/account").header_shown_as("x-filler", &filler, "aaaa… (40 KiB)");
    t.http(gw, req.key(key)).await;
    t.section("429 rate_limit_exceeded: a key allowed one request per minute, twice");
    let minted = Req::post("/v1/keys", &json!({"scopes": ["agents:read"], "rpm": 1}));
    let slow = Key {
        label: "rpm 1",
        secret: t.http(gw, minted.key(key)).await.str("secret"),
    };
    for _ in 0..2 {
        t.http(gw, Req::get("/v1/agents?limit=1").key(&slow)).await;
    }
}

async fn stream_frames(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section(
        "history_expired: status 200 and one `event: error` frame (this gateway keeps 4 events)",
    );
    let body = json!({"message": "what time is it?"});
    let send = Req::post(format!("/v1/agents/{agent}/messages"), &body);
    quietly(gw, send.key(key)).await;
    settled(gw, key, agent, 1).await;
    for path in ["events", "logs/stream"] {
        let mut open = Open::new(
            gw,
            Req::get(format!("/v1/agents/{agent}/{path}?after=0")).key(key),
        )
        .await;
        open.read_to_end().await;
        t.stream(&open);
    }
}
