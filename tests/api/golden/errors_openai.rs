//! `errors_openai.txt`: the errors of `/v1/chat/completions` and
//! `/v1/models` in OpenAI's shape (`{"error":{"message","type","param",
//! "code","request_id"}}`), which the official SDKs parse: the edge's own
//! errors (401, 403, 405, 413, 429) on these paths, bad bodies, unknown
//! models, a stopped agent, a cancelled run, and every upstream failure
//! (the provider's 4xx passed through, its 5xx, unreachable, silent).
//! Errors after the first byte of a stream are in `openai.txt`.
//!
//! Not here: `internal_error` (a panic), 408 (these routes have no request
//! timeout), and `unavailable` for a lost run stream or a draining gateway,
//! as in `errors_rest.txt`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{
    check, main_key, quietly,
    socket::Socket,
    transcript::{Key, Open, Req},
    Transcript,
};
use crate::{common::TestGateway, fake_provider::FakeProvider, runs::with_provider};

const PATH: &str = "/v1/chat/completions";

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_every_openai_error() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("the OpenAI-shaped errors of /v1/chat/completions and /v1/models");
    t.section("the agents these requests name");
    let agent = create(&mut t, &gw, &key, json!({"name": "golden-oai"})).await;
    let stopped = create(&mut t, &gw, &key, json!({"name": "golden-oai-stopped"})).await;
    t.http(
        &gw,
        Req::post(format!("/v1/agents/{stopped}/stop"), &json!({})).key(&key),
    )
    .await;
    edge(&mut t, &gw, &key).await;
    bodies(&mut t, &gw, &key, &agent).await;
    t.section("404 model_not_found and 409 agent_stopped");
    for model in ["agent-missing", stopped.as_str()] {
        t.http(&gw, Req::post(PATH, &ask(model)).key(&key)).await;
    }
    upstream(&mut t, &gw, &key).await;
    cancelled(&mut t, &gw, &key).await;
    without_provider(&mut t).await;
    unreachable(&mut t).await;
    store_down(&mut t).await;
    check("errors_openai.txt", t);
}

async fn create(t: &mut Transcript, gw: &TestGateway, key: &Key, body: Value) -> String {
    t.http(gw, Req::post("/v1/agents", &body).key(key))
        .await
        .str("id")
}

async fn edge(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("401 and 403 (the edge's errors, in OpenAI's shape on these paths)");
    t.http(gw, Req::post(PATH, &ask("echo"))).await;
    t.http(gw, Req::get("/v1/models")).await;
    let unknown = Key {
        label: "unknown",
        secret: "wk_nope_nope".into(),
    };
    t.http(gw, Req::get("/v1/models").key(&unknown)).await;
    let read = Key {
        label: "agents:read",
        secret: gw.mint_key("default", &["agents:read"]).await,
    };
    t.http(gw, Req::post(PATH, &ask("echo")).key(&read)).await;
    t.http(gw, Req::get("/v1/models").key(&read)).await;
    t.section("405, 413");
    t.http(gw, Req::get(PATH).key(key)).await;
    let big = format!(r#"{{"model":"{}"}}"#, "x".repeat(1 << 20));
    let req = Req::new(Method::POST, PATH).body(big);
    t.http(
        gw,
        req.shown_as(r#"{"model":"xxxx… (1 MiB of x)"}"#).key(key),
    )
    .await;
    t.section("429 rate_limit_exceeded: a key allowed one request per minute, twice");
    let minted = Req::post("/v1/keys", &json!({"scopes": ["chat"], "rpm": 1}));
    let slow = Key {
        label: "rpm 1",
        secret: quietly(gw, minted.key(key)).await.str("secret"),
    };
    for _ in 0..2 {
        t.http(gw, Req::get("/v1/models").key(&slow)).await;
    }
}

async fn bodies(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section("400: bodies that are not JSON, not an object, or without what is needed");
    let raw = |body: &str| Req::new(Method::POST, PATH).body(body);
    let deep = format!(
        r#"{{"model":"m","x":{}{}}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    let long_user = "u".repeat(300);
    let user = json!({"role": "user", "content": "hi"});
    let mut reqs = vec![
        raw("{nope"),
        raw(r#"{"model":"m"} x"#),
        raw(&deep).shown_as(r#"{"model":"m","x":[[[… 64 levels …]]]} (65 levels in all)"#),
        raw("[1]"),
    ];
    for body in [
        json!({"messages": [user]}),
        json!({"model": "", "messages": [user]}),
        json!({"model": 5, "messages": [user]}),
        json!({"model": agent}),
        json!({"model": agent, "messages": "hi"}),
        json!({"model": agent, "messages": [user], "stream": "yes"}),
        json!({"model": agent, "messages": [{"role": "user"}]}),
        json!({"model": agent, "messages": [{"role": "assistant", "content": "x"}]}),
        json!({"model": agent, "messages": [user], "user": long_user}),
        json!({"model": "upstream/", "messages": [user]}),
    ] {
        reqs.push(Req::post(PATH, &body));
    }
    for r in reqs {
        t.http(gw, r.key(key)).await;
    }
}

async fn upstream(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("the provider's errors: a 4xx passes through (request_id added), a 5xx is a 502");
    for model in ["upstream/fake-400", "upstream/fake-500"] {
        t.http(gw, Req::post(PATH, &ask(model)).key(key)).await;
    }
    t.section("an agent whose run fails: 502 with the run's error code");
    let body = json!({"name": "golden-oai-fails", "model": "upstream/fake-500"});
    let failing = create(t, gw, key, body).await;
    t.http(gw, Req::post(PATH, &ask(&failing)).key(key)).await;
}

async fn cancelled(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("503 cancelled: the agent's run is cancelled while the client waits");
    let body = json!({"name": "golden-oai-slow", "metadata": {"echo_delay_ms": 5000}});
    let slow = create(t, gw, key, body).await;
    let mut ws = Socket::connect(gw, key).await;
    let sub = json!({"type": "subscribe", "channel": format!("agent:{slow}")});
    ws.send(&mut Transcript::new("unrecorded"), &sub.to_string())
        .await;
    assert!(ws.text().await.contains("subscribed"));
    let canceller = async {
        let first: Value = serde_json::from_str(&ws.text().await).expect("an event");
        let run = first["run_id"].as_str().expect("run id").to_owned();
        quietly(
            gw,
            Req::post(format!("/v1/runs/{run}/cancel"), &json!({})).key(key),
        )
        .await;
    };
    let answer = t.http(gw, Req::post(PATH, &ask(&slow)).key(key));
    let (answer, ()) = tokio::join!(answer, canceller);
    assert_eq!(answer.status, 503, "{}", answer.text());
}

async fn without_provider(t: &mut Transcript) {
    t.section("a gateway without a provider, allowing 1 SSE stream per key");
    let gw = TestGateway::builder()
        .config(|c| c.edge.max_sse_per_key = 1)
        .spawn()
        .await;
    let key = main_key(&gw).await;
    t.http(&gw, Req::post(PATH, &ask("upstream/fake-text")).key(&key))
        .await;
    let agent = quietly(
        &gw,
        Req::post("/v1/agents", &json!({"name": "capped"})).key(&key),
    )
    .await
    .str("id");
    t.note("key main holds an SSE stream open; a streamed completion needs another:");
    let _held = Open::new(
        &gw,
        Req::get(format!("/v1/agents/{agent}/events")).key(&key),
    )
    .await;
    let mut body = ask(&agent);
    body["stream"] = json!(true);
    t.http(&gw, Req::post(PATH, &body).key(&key)).await;
}

async fn unreachable(t: &mut Transcript) {
    t.section("502 upstream_unavailable: a provider that refuses connections");
    let gw = TestGateway::builder().provider_unreachable().spawn().await;
    let key = main_key(&gw).await;
    t.http(&gw, Req::post(PATH, &ask("upstream/m")).key(&key))
        .await;
    t.section("504 upstream_timeout: a provider that accepts and never answers (1 s)");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let gw = TestGateway::builder()
        .config(move |c| {
            c.provider_url = Some(format!("http://{addr}/v1"));
            c.first_token_timeout_secs = 1;
        })
        .spawn()
        .await;
    let key = main_key(&gw).await;
    let answer = t.http(&gw, Req::post(PATH, &ask("upstream/m")).key(&key));
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the timeout answers");
    assert_eq!(answer.status, 504);
    holder.abort();
}

async fn store_down(t: &mut Transcript) {
    t.section("503 unavailable: a gateway whose store cannot be reached");
    let gw = TestGateway::builder().store_unreachable().spawn().await;
    let key = Key {
        label: "any",
        secret: crate::common::BOOTSTRAP_KEY.into(),
    };
    t.http(&gw, Req::post(PATH, &ask("echo")).key(&key)).await;
    t.http(&gw, Req::get("/v1/models").key(&key)).await;
}
