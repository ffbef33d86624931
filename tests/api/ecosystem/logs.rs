//! `weir serve --log-format json`: one JSON object per line; every line
//! logged inside a request carries its request id and (once authenticated)
//! its key id, and no line ever carries a key's secret.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{Api, WeirProcess};

/// The `request` span of a JSON log line, if it was logged inside one.
fn request_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_and_key_ids_and_never_the_secret() {
    let filter = "info,weir::stream::ws=debug";
    let proc = WeirProcess::serve()
        .args(&["--log-format", "json"])
        .envs(&[("RUST_LOG", filter)])
        .spawn()
        .await;
    let client = Client::new();
    let key = proc.key.clone();

    let r = client
        .get(proc.url("/v1/agents"))
        .bearer_auth(&key)
        .header("x-request-id", "req-logtest-header")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(proc.url(&format!("/v1/agents?api_key={key}")))
        .header("x-request-id", "req-logtest-query")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(proc.url("/v1/agents"))
        .header("x-request-id", "req-logtest-anon")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A run logs from its own task, under its own span.
    let agent: Value = client
        .post(proc.url("/v1/agents"))
        .bearer_auth(&key)
        .json(&json!({"name": "logged"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client
        .post(proc.url(&format!(
            "/v1/agents/{}/messages",
            agent["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .header("x-request-id", "req-logtest-run")
        .json(&json!({"message": "what time is it?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    proc.wait_for_line(|l| l.contains("req-logtest-run") && l.contains("finished processing"))
        .await;
    // A WebSocket outlives its request; its lines keep the request's span.
    let mut ws_req = proc.ws_url(&key).into_client_request().unwrap();
    ws_req
        .headers_mut()
        .insert("x-request-id", "req-logtest-ws".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(ws_req).await.unwrap();
    drop(ws); // no close frame: the server's read fails, and says so
    let ws_line = proc
        .wait_for_line(|l| l.contains("websocket read failed"))
        .await;
    let ws_line: Value = serde_json::from_str(&ws_line).unwrap();
    let span = request_span(&ws_line).expect("the socket's line is in its request's span");
    assert_eq!(span["request_id"], "req-logtest-ws");
    assert_eq!(span["key_id"], "key-bootstrap");

    let lines: Vec<Value> = proc
        .stderr()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = |rid: &str| {
        lines
            .iter()
            .find(|l| {
                l["message"] == "finished processing request"
                    && request_span(l).is_some_and(|s| s["request_id"] == rid)
            })
            .unwrap_or_else(|| panic!("no access line for {rid}"))
    };
    for rid in ["req-logtest-header", "req-logtest-query", "req-logtest-run"] {
        let line = access(rid);
        let span = request_span(line).unwrap();
        assert_eq!(span["key_id"], "key-bootstrap", "{line}");
        assert!(!span["path"].as_str().unwrap().contains('?'), "{line}");
        assert_eq!(line["level"], "INFO");
        assert!(line["status"].is_number(), "{line}");
    }
    let anon = request_span(access("req-logtest-anon")).unwrap();
    assert!(anon.get("key_id").is_none(), "no key, no key id: {anon}");

    // Every line logged inside a request names it.
    let mut in_requests = 0;
    for line in &lines {
        if let Some(span) = request_span(line) {
            in_requests += 1;
            let rid = span["request_id"].as_str().unwrap_or("");
            assert!(rid.starts_with("req-"), "{line}");
            assert!(
                span["method"].is_string() && span["path"].is_string(),
                "{line}"
            );
        }
    }
    assert!(in_requests >= 6, "lines inside requests: {in_requests}");

    // The secret is nowhere, whether it came as a header or in the query.
    let secret_part = key.rsplit('_').next().unwrap();
    for l in proc.stderr() {
        assert!(!l.contains(secret_part), "a log line leaks the key: {l}");
    }
}
