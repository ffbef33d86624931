//! What a run start reads from the store, counted where it is sent: a
//! gateway on a `weir store` process counts its requests by method. The
//! handler's read of the agent is the one the run start uses, and a named
//! session is looked up once, by the run start: a refused one makes none.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{
    expect_error, names, spawn_gateway, spawn_store_process, store_requests, Api, WeirProcess,
};

/// `get_agent` and `get_session` requests the gateway has sent so far.
async fn reads(gw: &WeirProcess) -> (u64, u64) {
    (
        store_requests(gw, "get_agent").await,
        store_requests(gw, "get_session").await,
    )
}

async fn post_ok(gw: &WeirProcess, path: &str, body: Value) {
    let r = gw
        .req_as(&gw.key, Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    // The answer ends with the run (not streamed).
    r.bytes().await.unwrap();
}

#[tokio::test]
async fn a_run_start_reads_its_agent_once_and_a_known_session_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = spawn_store_process(&tmp.path().join("store")).await;
    let gw = WeirProcess::serve().store(&store).spawn().await;
    let agent = gw.create_agent_as(&gw.key, json!({"name": "reads"})).await;
    let complete = |text: &str| json!({"model": agent, "user": "alice", "messages": [{"role": "user", "content": text}]});
    // The first use of `alice` finds or makes the session; the second
    // knows it and only checks it is still there.
    post_ok(&gw, "/v1/chat/completions", complete("one")).await;
    let before = reads(&gw).await;
    post_ok(&gw, "/v1/chat/completions", complete("two")).await;
    let after = reads(&gw).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));

    // The messages route, in the default session once it exists.
    let messages = format!("/v1/agents/{agent}/messages");
    let body = json!({"messages": [{"role": "user", "content": "three"}]});
    post_ok(&gw, &messages, body.clone()).await;
    let before = reads(&gw).await;
    post_ok(&gw, &messages, body).await;
    let after = reads(&gw).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
}

#[tokio::test]
async fn a_refused_completion_leaves_no_session_behind() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("stopped").await;
    let stop = gw
        .post(&format!("/v1/agents/{agent}/stop"), json!({}))
        .await;
    assert_eq!(stop.status(), 200);
    let body =
        json!({"model": agent, "user": "bob", "messages": [{"role": "user", "content": "hi"}]});
    expect_error(
        gw.post("/v1/chat/completions", body).await,
        409,
        "agent_stopped",
    )
    .await;
    let sessions = gw.get(&format!("/v1/agents/{agent}/sessions")).await;
    let sessions: Value = sessions.json().await.unwrap();
    assert!(!names(&sessions).contains(&"bob"), "{sessions}");
}
