//! The errors of `errors_rest.txt` that need a gateway of their own: stream
//! caps (429 `too_many_connections` per key, 503 with `Retry-After` per
//! gateway), the CRUD timeout (408, through a store that answers one call
//! slowly), and a store or a Redis bus that cannot be reached (503).

use std::time::Duration;

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post, Router};
use serde_json::json;

use super::{
    main_key, quietly,
    socket::{ws_refused, Socket},
    transcript::{Key, Open, Req},
    Transcript,
};
use crate::common::{free_port, spawn_store_process, TestGateway, STORE_TOKEN};

pub async fn caps(t: &mut Transcript) {
    t.section("stream caps: 1 SSE stream and 1 WebSocket per key, 3 streams per gateway");
    let gw = TestGateway::builder()
        .config(|c| {
            (
                c.edge.max_sse_per_key,
                c.edge.max_ws_per_key,
                c.edge.max_streams,
            ) = (1, 1, 3);
        })
        .spawn()
        .await;
    let a = main_key(&gw).await;
    let agent = quietly(
        &gw,
        Req::post("/v1/agents", &json!({"name": "caps"})).key(&a),
    )
    .await
    .str("id");
    let events = format!("/v1/agents/{agent}/events");
    t.note("key main holds an SSE stream, then asks for another (429):");
    let _sse = Open::new(&gw, Req::get(&events).key(&a)).await;
    t.http(&gw, Req::get(&events).key(&a)).await;
    t.note("key main holds a WebSocket, then asks for another (429):");
    let _ws = Socket::connect(&gw, &a).await;
    ws_refused(t, &gw, Some(&a)).await;
    t.note("key other takes the gateway's third stream; key third finds it full (503):");
    let other = Key {
        label: "other",
        secret: gw.mint_key("default", &["*"]).await,
    };
    let _third = Open::new(&gw, Req::get(&events).key(&other)).await;
    let third = Key {
        label: "third",
        secret: gw.mint_key("default", &["*"]).await,
    };
    t.http(&gw, Req::get(&events).key(&third)).await;
    ws_refused(t, &gw, Some(&third)).await;
}

/// A `weir store` behind a proxy that holds `list_tools` calls for 3 s.
struct SlowStore {
    url: String,
    _store: crate::common::StoreProcess,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlowStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn slow_store() -> SlowStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = spawn_store_process(dir.path()).await;
    let upstream = format!("{}/rpc", store.url);
    let app = Router::new()
        .route("/rpc", post(forward))
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    SlowStore {
        url,
        _store: store,
        _dir: dir,
        task,
    }
}

async fn forward(State(upstream): State<String>, body: Bytes) -> (StatusCode, Bytes) {
    if body.windows(21).any(|w| w == br#""method":"list_tools""#) {
        // A real stall, on purpose: longer than the gateway's 1 s limit.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let resp = reqwest::Client::new()
        .post(upstream)
        .bearer_auth(STORE_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the store answers");
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("a status");
    (status, resp.bytes().await.expect("store body"))
}

pub async fn timeout(t: &mut Transcript) {
    t.section("408 timeout: a CRUD route over its 1 s limit (the store is held 3 s)");
    let store = slow_store().await;
    let gw = TestGateway::builder()
        .store_url(&store.url)
        .config(|c| c.request_timeout_secs = 1)
        .spawn()
        .await;
    let key = main_key(&gw).await;
    t.http(&gw, Req::get("/v1/tools").key(&key)).await;
}

pub async fn store_down(t: &mut Transcript) {
    t.section("503 unavailable: a gateway whose store cannot be reached");
    let gw = TestGateway::builder().store_unreachable().spawn().await;
    let key = Key {
        label: "any",
        secret: crate::common::BOOTSTRAP_KEY.into(),
    };
    t.http(&gw, Req::get("/v1/agents").key(&key)).await;
    t.http(&gw, Req::get("/readyz")).await;
}

pub async fn bus_down(t: &mut Transcript) {
    t.section("503 unavailable: a gateway whose Redis bus cannot be reached");
    let gw = TestGateway::builder()
        .config(|c| {
            c.redis_url = Some(format!("redis://127.0.0.1:{}", free_port()));
            c.redis.timeout_ms = 300;
            c.redis.connect_timeout_ms = 300;
        })
        .spawn()
        .await;
    let key = main_key(&gw).await;
    let agent = t
        .http(
            &gw,
            Req::post("/v1/agents", &json!({"name": "no-bus"})).key(&key),
        )
        .await
        .str("id");
    t.http(
        &gw,
        Req::get(format!("/v1/agents/{agent}/events")).key(&key),
    )
    .await;
    let send = Req::post(
        format!("/v1/agents/{agent}/messages"),
        &json!({"message": "hi"}),
    );
    t.http(&gw, send.key(&key)).await;
    t.http(&gw, Req::get("/readyz")).await;
}
