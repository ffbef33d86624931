//! The `api_key` query parameter never reaches a log line: a real `weir
//! serve` with every log target at `trace`, JSON logs, and keys sent only as
//! `?api_key=` on REST, SSE, WebSocket, refused and failing requests.

use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::connect_async;

use crate::common::{Api, WeirProcess, BOOTSTRAP_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_query_parameters_are_never_logged() {
    let p = WeirProcess::serve()
        .args(&["--log-format", "json"])
        .envs(&[("RUST_LOG", "trace")])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let secret = p.create_key(json!({"scopes": ["*"], "rpm": 1000})).await;
    let agent = p.create_agent_as(BOOTSTRAP_KEY, json!({})).await;
    let q = |path: &str, key: &str| {
        let sep = if path.contains('?') { '&' } else { '?' };
        p.url(&format!("{path}{sep}api_key={key}"))
    };
    let wrong = format!("{secret}x");
    let requests = [
        (Method::GET, q("/v1/account", &secret)),
        (Method::GET, q("/v1/account", &wrong)),
        (Method::GET, q("/v1/nope", &secret)),
        (Method::GET, q(&format!("/v1/agents/{agent}"), &secret)),
        (Method::GET, q("/v1/agents/agent-missing", &secret)),
        (Method::DELETE, q("/v1/account", &secret)),
        (
            Method::GET,
            q(&format!("/v1/agents/{agent}/logs/stream?after=x"), &secret),
        ),
        (
            Method::GET,
            q(&format!("/healthz?x={}", "y".repeat(40_000)), &secret),
        ),
    ];
    for (method, url) in requests {
        let _ = c.request(method, url).send().await.unwrap().bytes().await;
    }
    // A run streamed over SSE, and a body that fails to parse.
    let r = c
        .post(q(&format!("/v1/agents/{agent}/messages"), &secret))
        .json(&json!({"message": "hello", "stream": true}))
        .send()
        .await
        .unwrap();
    let _ = r.bytes().await;
    let r = c
        .post(q("/v1/chat/completions", &secret))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A live tail, dropped mid-stream, and a WebSocket.
    let tail = c
        .get(q(&format!("/v1/agents/{agent}/events"), &secret))
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 200);
    drop(tail);
    let (ws, _) = connect_async(p.ws_url(&secret)).await.expect("websocket");
    drop(ws);
    // The socket's end is the last thing logged.
    p.wait_for_line(|l| l.contains("websocket read failed"))
        .await;

    let logs = p.logs();
    assert!(
        logs.contains(r#""level":"TRACE""#),
        "trace logging is on:\n{logs}"
    );
    assert!(
        logs.contains("/v1/account") && logs.contains("/v1/ws"),
        "access logs name the paths"
    );
    let key_id = weir::keys::key_id_of(&secret);
    assert!(logs.contains(&key_id), "auth logs the key id");
    // Neither the whole secret nor its random part, in any line.
    let random = secret.rsplit('_').next().unwrap();
    for (i, line) in logs.lines().enumerate() {
        assert!(!line.contains(random), "line {i} leaks the key: {line}");
        assert!(
            !line.contains("api_key="),
            "line {i} logs a query string: {line}"
        );
    }
}
