//! Size limits besides the body (413) and WebSocket frame (1009) limits,
//! which `envelopes.rs` and `ws.rs` test: the request head (431) and JSON
//! nesting depth on REST, OpenAI and WebSocket input.

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::common::{expect_error, spawn_gateway, Api};

/// `{"name":"deep","metadata":{"a": [[…]]}}` with `depth` levels in all.
fn nested_agent(depth: usize) -> String {
    let inner = depth - 2; // the body object and `metadata`
    format!(
        r#"{{"name":"deep","metadata":{{"a":{}{}}}}}"#,
        "[".repeat(inner),
        "]".repeat(inner)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_limit_gets_431() {
    let gw = spawn_gateway().await;
    let r = gw
        .req(Method::GET, "/v1/account")
        .header("x-filler", "a".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    expect_error(r, 431, "headers_too_large").await;
    // A long query string counts too, also on unauthenticated routes.
    let r = gw
        .client
        .get(gw.url(&format!("/healthz?x={}", "b".repeat(40 * 1024))))
        .send()
        .await
        .unwrap();
    expect_error(r, 431, "headers_too_large").await;
    let r = gw
        .req(Method::GET, "/v1/account")
        .header("x-filler", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "8 KiB of headers is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_deeper_than_64_levels_is_refused_with_a_message_that_says_so() {
    let gw = spawn_gateway().await;
    let post = |body: String| {
        gw.req(Method::POST, "/v1/agents")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post(nested_agent(64)).await.unwrap().status(), 201);
    let body = expect_error(
        post(nested_agent(65)).await.unwrap(),
        400,
        "validation_error",
    )
    .await;
    assert_eq!(
        body["error"]["message"], "body: JSON nested deeper than 64 levels",
        "{body}"
    );
    // Far deeper than serde_json's own recursion limit: the same answer, no crash.
    let r = post(nested_agent(200_000)).await.unwrap();
    expect_error(r, 400, "validation_error").await;

    // The OpenAI route: OpenAI's shape.
    let deep = format!(
        r#"{{"model":"x","messages":[{{"role":"user","content":"hi"}}],"metadata":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let r = gw
        .req(Method::POST, "/v1/chat/completions")
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 levels"),
        "{v}"
    );

    // A WebSocket frame: an error frame, and the socket stays open.
    let url = gw.ws_url(&gw.key);
    let (mut ws, _) = connect_async(url).await.unwrap();
    let frame = format!(
        r#"{{"type":"ping","x":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    ws.send(Message::text(frame)).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "validation_error");
    assert!(
        reply["message"].as_str().unwrap().contains("64 levels"),
        "{reply}"
    );
    ws.send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("json");
        }
    }
}
