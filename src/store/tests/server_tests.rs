//! The store server as a client meets it: tokens, health, bad requests,
//! start-up refusal and shutdown.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use serde_json::{json, Value};

use super::{open, serve};
use crate::{
    config::StoreConfig,
    store::{remote::RemoteStore, server::StoreServer, Store, StoreError},
};

async fn post_rpc(url: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn rpc_requires_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(Arc::new(open(dir.path())), "s3cret").await;
    let ping = r#"{"method":"ping"}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret2"),
        Some("Basic s3cret"),
        Some("s3cret"),
    ] {
        let (status, body) = post_rpc(&served.url, auth, ping).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(body["error"]["code"], "unauthorized", "{auth:?}");
    }
    assert_eq!(
        post_rpc(&served.url, Some("Bearer s3cret"), ping).await,
        (200, json!({"Ok": null}))
    );
    let (status, body) = post_rpc(&served.url, Some("Bearer s3cret"), r#"{"method":"nope"}"#).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("validation_error"))
    );

    for token in [Some("wrong".to_owned()), None] {
        let remote = RemoteStore::new(&served.url, token).expect("client");
        let rejected = Err(StoreError::Unavailable("store rejected the token".into()));
        assert_eq!(remote.ping().await, rejected);
    }
    served.stop().await;
}

#[tokio::test]
async fn empty_token_admits_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(Arc::new(open(dir.path())), "").await;
    let (status, _) = post_rpc(&served.url, Some("Bearer "), r#"{"method":"ping"}"#).await;
    assert_eq!(status, 401);
    served.stop().await;
}

#[tokio::test]
async fn health_routes_need_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(Arc::new(open(dir.path())), "t").await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let resp = client
            .get(format!("{}{path}", served.url))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let resp = client
        .get(format!("{}/nowhere", served.url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    let resp = client
        .get(format!("{}/rpc", served.url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 405);
    served.stop().await;
}

#[tokio::test]
async fn unreachable_store_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let remote = RemoteStore::new(&format!("http://{addr}"), Some("t".into())).expect("client");
    match remote.get_agent("a", "agent-x").await {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    for bad in ["not a url", "ftp://host/", ""] {
        assert!(
            matches!(RemoteStore::new(bad, None), Err(StoreError::Invalid(_))),
            "{bad:?}"
        );
    }
}

fn store_config(dir: &std::path::Path, token: Option<&str>) -> StoreConfig {
    let dir = dir.to_str().expect("utf-8 temp dir");
    let mut cfg =
        StoreConfig::try_parse_from(["store", "--listen", "127.0.0.1:0", "--data-dir", dir])
            .expect("parse");
    cfg.store_token = token.map(str::to_owned);
    cfg
}

#[tokio::test]
async fn run_store_refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    for token in [None, Some("")] {
        let cfg = store_config(dir.path(), token);
        let err = crate::store::server::run_store(cfg, std::future::pending()).await;
        let msg = format!("{:#}", err.expect_err("must refuse"));
        assert!(
            msg.contains("WEIR_STORE_TOKEN") && msg.contains("--store-token"),
            "{msg}"
        );
    }
}

/// `weir store`'s own start-up path: data dir, port 0, a real client, then
/// graceful shutdown with a kept-alive connection still open.
#[tokio::test]
async fn store_server_serves_its_data_dir_and_shuts_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = StoreServer::bind(&store_config(&dir.path().join("nested"), Some("tk")))
        .await
        .expect("bind");
    let url = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let remote = RemoteStore::new(&url, Some("tk".into())).expect("client");
    let account = remote
        .ensure_account("acct-srv")
        .await
        .expect("ensure over http");
    assert!(dir.path().join("nested/weir.db").exists());
    tx.send(()).expect("signal");
    let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
    ended
        .expect("stops within 5 s")
        .expect("join")
        .expect("serve ok");
    assert!(
        remote.ping().await.is_err(),
        "nothing answers after shutdown"
    );

    let reopened = open(&dir.path().join("nested"));
    assert_eq!(reopened.get_account("acct-srv").await, Ok(account));
}

/// `/readyz` reflects the store: served over a store that cannot be
/// reached (a RemoteStore pointing at a closed port), it answers 503.
#[tokio::test]
async fn readyz_is_503_when_the_store_is_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let down = RemoteStore::new(&dead, Some("t".into())).expect("client");
    let served = serve(Arc::new(down), "t").await;
    let resp = reqwest::get(format!("{}/readyz", served.url))
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        reqwest::get(format!("{}/healthz", served.url))
            .await
            .expect("send")
            .status(),
        200
    );
    served.stop().await;
}

/// A server that fails (5xx) or is not a store at all is `Unavailable`,
/// with the status in the reason.
#[tokio::test]
async fn server_failures_are_unavailable() {
    let app = axum::Router::new().route(
        "/rpc",
        axum::routing::post(|| async { (axum::http::StatusCode::BAD_GATEWAY, "upstream down") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let remote = RemoteStore::new(&url, Some("t".into())).expect("client");
    match remote.get_key("key-x").await {
        Err(StoreError::Unavailable(msg)) => assert!(
            msg.contains("502") && msg.contains("upstream down"),
            "{msg}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    task.abort();
}

/// A `weir store` from before `session_history` (a gateway upgraded first,
/// in a rolling upgrade): it refuses the method as any older server
/// refuses an unknown one, and the gateway reads the same history through
/// `list_events`. The older server is the real dispatcher behind a request
/// decoder that knows nothing newer than `list_events`.
#[tokio::test]
async fn history_falls_back_on_a_store_that_predates_it() {
    use axum::{body::Bytes, extract::State, response::Response, routing::post, Router};

    use super::fixtures::{event, new_agent};
    use crate::{domain::ErrorCode, domain::MessageType, store::server};

    #[derive(serde::Deserialize)]
    #[serde(tag = "method", content = "args", rename_all = "snake_case")]
    enum Older {
        #[allow(dead_code)]
        ListEvents(serde::de::IgnoredAny),
    }
    async fn older(State(store): State<Arc<dyn Store>>, body: Bytes) -> Response {
        let v: Value = serde_json::from_slice(&body).expect("json");
        if v["method"] == "session_history" {
            let e = serde_json::from_value::<Older>(v).err().expect("unknown");
            return server::refuse(
                ErrorCode::ValidationError,
                &format!("invalid store request: {e}"),
            );
        }
        let req = serde_json::from_slice(&body).expect("a request");
        axum::response::IntoResponse::into_response(server::dispatch(&*store, req).await)
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(open(dir.path()));
    let a = super::fixtures::acct();
    store.ensure_account(&a).await.expect("account");
    let agent = store.create_agent(&a, new_agent("h")).await.expect("agent");
    let mut batch: Vec<_> = (1..=5)
        .map(|s| event(agent.id.as_str(), s, "run-1", "sess-1"))
        .collect();
    batch[2].message_type = MessageType::AssistantDelta;
    store.append_events(&a, batch).await.expect("append");

    let app = Router::new()
        .route("/rpc", post(older))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let remote = RemoteStore::new(&url, None).expect("client");
    let seqs = |limit| {
        let remote = &remote;
        let agent = agent.id.as_str();
        let a = &a;
        async move {
            let got = remote.session_history(a, agent, "sess-1", limit).await;
            got.map(|r| r.iter().map(|e| e.seq).collect::<Vec<_>>())
        }
    };
    assert_eq!(seqs(10).await, Ok(vec![1, 2, 4, 5]), "no delta");
    assert_eq!(seqs(2).await, Ok(vec![4, 5]), "the last two, oldest first");
    assert_eq!(
        seqs(10).await,
        store
            .session_history(&a, agent.id.as_str(), "sess-1", 10)
            .await
            .map(|r| r.iter().map(|e| e.seq).collect::<Vec<_>>()),
        "the same as a current store answers"
    );
    // More than a page holds (1,000): the newest are kept, not the oldest.
    let more: Vec<_> = (6..=1_105)
        .map(|s| event(agent.id.as_str(), s, "run-2", "sess-1"))
        .collect();
    store.append_events(&a, more).await.expect("append more");
    let long = seqs(1_050).await.expect("history");
    assert_eq!(long.len(), 1_000, "one page at most");
    assert_eq!(long.last(), Some(&1_105), "the newest message is in");
    assert_eq!(long.first(), Some(&106), "a tail, in order");
    served.abort();
}
