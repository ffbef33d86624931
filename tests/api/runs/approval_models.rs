//! A parked run keeps the starting key's `models` (issue 19 item 6 with
//! issue 18's approvals): the run a decision resumes is held to them, so an
//! agent moved meanwhile to a model that key may not use ends with
//! `model_not_found` instead of calling it; on an allowed model the resumed
//! run goes on as usual.

use reqwest::Method;
use serde_json::{json, Value};

use super::{next, sse, EvStream};
use crate::{
    common::{Api, TestGateway},
    fake_provider::FakeProvider,
    routing,
};

/// A key limited to `echo`, as `POST /v1/keys` mints it.
async fn echo_only(gw: &TestGateway) -> String {
    let minted: Value = gw
        .post(
            "/v1/keys",
            json!({"scopes": ["*"], "rpm": 10_000, "models": ["echo"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    minted["secret"].as_str().unwrap().to_owned()
}

/// Starts, as `key`, a run of an echo agent whose `get_time` needs
/// approval; returns the agent, the stream and the `approval_request`.
async fn parked(gw: &TestGateway, key: &str) -> (String, EvStream, Value) {
    let agent = gw
        .create_agent_as(
            key,
            json!({"tools": ["get_time"], "approval_required": ["get_time"]}),
        )
        .await;
    let r = gw
        .req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({"message": "what time is it?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = sse(r);
    loop {
        let ev = next(&mut s).await.expect("an approval_request");
        if ev.event == "approval_request" {
            return (agent, s, ev.data);
        }
    }
}

/// Approves `req` as `key`; the rest of the run's stream.
async fn approve_and_read(
    gw: &TestGateway,
    key: &str,
    req: &Value,
    s: &mut EvStream,
) -> Vec<Value> {
    let path = format!(
        "/v1/runs/{}/approvals/{}",
        req["run_id"].as_str().unwrap(),
        req["approval_id"].as_str().unwrap()
    );
    let r = gw
        .req_as(key, Method::POST, &path)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut out = Vec::new();
    while let Some(ev) = next(s).await {
        let done = ev.event == "done";
        out.push(ev.data);
        if done {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_is_held_to_the_starting_keys_models() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = routing::route("fast", "fake-text", "fake-text", "error");
    let gw = routing::gateway(&a, &b, "", &routes).await;
    let key = echo_only(&gw).await;
    let (agent, mut s, req) = parked(&gw, &key).await;
    // Meanwhile a key that may use any model moves the agent to a route.
    let r = gw
        .req(Method::PATCH, &format!("/v1/agents/{agent}"))
        .json(&json!({"model": "upstream/fast"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rest = approve_and_read(&gw, &key, &req, &mut s).await;
    let error = rest
        .iter()
        .find(|e| e["message_type"] == "error")
        .unwrap_or_else(|| panic!("an error event: {rest:?}"));
    assert_eq!(error["code"], "model_not_found", "{error}");
    assert!(
        rest.iter().all(|e| e["message_type"] != "function_message"),
        "the approved tool did not run either: {rest:?}"
    );
    assert_eq!(rest.last().unwrap()["stop_reason"], "error", "{rest:?}");
    assert_eq!(
        a.requests().len() + b.requests().len(),
        0,
        "no provider was called"
    );
    let run: Value = gw
        .get(&format!("/v1/runs/{}", req["run_id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "failed", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_on_an_allowed_model_goes_on() {
    let gw = TestGateway::builder().spawn().await;
    let key = echo_only(&gw).await;
    let (_, mut s, req) = parked(&gw, &key).await;
    let rest = approve_and_read(&gw, &key, &req, &mut s).await;
    let kinds: Vec<&str> = rest
        .iter()
        .map(|e| e["message_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "approval_response",
            "function_message",
            "assistant_message",
            "usage",
            "done"
        ]
    );
}
