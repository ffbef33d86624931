//! Stream caps on a real gateway: the 11th WebSocket and the 21st SSE stream
//! of a key get 429 `too_many_connections` before the upgrade / first byte,
//! slots come back when streams end, and the gateway-wide cap answers 503.

use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite};

use super::rate::key_with_rpm;
use crate::common::{eventually, expect_error, spawn_gateway, Api, TestGateway};

/// Opens a WebSocket; `Err(status, body)` when the handshake is refused.
pub async fn open_ws(addr: &str, key: &str) -> Result<impl Send + 'static, (u16, Value)> {
    match connect_async(format!("ws://{addr}/v1/ws?api_key={key}")).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn open_sse(gw: &TestGateway, key: &str, agent: &str) -> reqwest::Response {
    gw.req_as(key, Method::GET, &format!("/v1/agents/{agent}/events"))
        .send()
        .await
        .expect("sse request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_websocket_of_a_key_is_refused_before_the_upgrade() {
    let gw = spawn_gateway().await;
    let key = key_with_rpm(&gw, 1000).await;
    let addr = gw.addr.to_string();
    let mut open = Vec::new();
    for i in 0..10 {
        open.push(
            open_ws(&addr, &key)
                .await
                .unwrap_or_else(|e| panic!("socket {i}: {e:?}")),
        );
    }
    let (status, body) = open_ws(&addr, &key).await.err().expect("11th refused");
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    // Another key is not affected.
    let other = key_with_rpm(&gw, 1000).await;
    let _other = open_ws(&addr, &other).await.expect("other key");
    // Closing one gives its slot back.
    drop(open.pop());
    assert!(eventually(|| async { open_ws(&addr, &key).await.is_ok() }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twenty_first_sse_stream_of_a_key_is_refused_before_the_first_byte() {
    let gw = spawn_gateway().await;
    let key = key_with_rpm(&gw, 1000).await;
    let agent = gw.create_agent("caps").await;
    let mut open = Vec::new();
    for i in 0..20 {
        let r = open_sse(&gw, &key, &agent).await;
        assert_eq!(r.status(), 200, "stream {i}");
        open.push(r);
    }
    let r = open_sse(&gw, &key, &agent).await;
    expect_error(r, 429, "too_many_connections").await;
    // Every SSE route counts: a run streamed by POST …/messages and an
    // OpenAI stream are refused too, and start no run.
    let r = gw
        .req_as(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({"message": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    expect_error(r, 429, "too_many_connections").await;
    let r = gw
        .req_as(&key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": agent, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    let history = gw.get(&format!("/v1/agents/{agent}/messages")).await;
    let history: Value = history.json().await.unwrap();
    assert_eq!(
        history["data"].as_array().map(Vec::len),
        Some(0),
        "no run started: {history}"
    );
    // A non-streamed request is not a stream: still served.
    let r = gw
        .req_as(&key, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Dropping a stream gives its slot back.
    drop(open.pop());
    assert!(
        eventually(|| async { open_sse(&gw, &key, &agent).await.status() == 200 }).await,
        "the slot came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_wide_cap_answers_503() {
    let gw = TestGateway::builder()
        .config(|c| c.edge.max_streams = 2)
        .spawn()
        .await;
    let agent = gw.create_agent("global").await;
    let (a, b) = (key_with_rpm(&gw, 1000).await, key_with_rpm(&gw, 1000).await);
    let _s1 = open_sse(&gw, &a, &agent).await;
    let _s2 = open_sse(&gw, &b, &agent).await;
    let r = open_sse(&gw, &a, &agent).await;
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    expect_error(r, 503, "unavailable").await;
    let (status, body) = open_ws(&gw.addr.to_string(), &b)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
}
