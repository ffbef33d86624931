//! Human approval mid-run: a tool call the agent field
//! `approval_required` names parks the run (`approval_request`,
//! `waiting_approval`, no `max_runs` slot held) until
//! `POST /v1/runs/{id}/approvals/{approval_id}` decides or it expires; the
//! run then goes on, on whichever process takes it, with no event lost or
//! repeated.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{get_json, next, sse, Ev, EvStream};
use crate::{
    common::{expect_error, poll, spawn_gateway, Api, Cluster, TestGateway},
    protocol::assert_valid,
};

/// An echo agent whose `get_time` needs approval.
async fn approval_agent(node: &impl Api, key: &str) -> String {
    node.create_agent_as(
        key,
        json!({"tools": ["get_time"], "approval_required": ["get_time"]}),
    )
    .await
}

/// Starts a streamed run asking for the time; its SSE stream.
async fn ask_time(node: &impl Api, key: &str, agent: &str) -> EvStream {
    let r = node
        .req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({"message": "what time is it?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sse(r)
}

/// Events up to and including the first of type `kind`, schema-checked.
async fn until(s: &mut EvStream, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let ev: Ev = next(s)
            .await
            .unwrap_or_else(|| panic!("stream ended before {kind}: {out:?}"));
        assert_valid("event.json", &ev.data);
        assert_eq!(ev.id, ev.data["seq"].to_string());
        let last = ev.event == kind;
        out.push(ev.data);
        if last {
            return out;
        }
    }
}

/// What a decided run publishes until its end (one tool call, echo model).
const RESUMED: [&str; 5] = [
    "approval_response",
    "function_message",
    "assistant_message",
    "usage",
    "done",
];

fn kinds(evs: &[Value]) -> Vec<&str> {
    evs.iter()
        .map(|e| e["message_type"].as_str().unwrap())
        .collect()
}

/// Decides through `node` as `key`.
async fn decide(node: &impl Api, key: &str, req: &Value, body: Value) -> reqwest::Response {
    let path = format!(
        "/v1/runs/{}/approvals/{}",
        req["run_id"].as_str().unwrap(),
        req["approval_id"].as_str().unwrap()
    );
    node.req_as(key, Method::POST, &path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn run_status(node: &impl Api, key: &str, run_id: &str) -> String {
    let r = node
        .req_as(key, Method::GET, &format!("/v1/runs/{run_id}"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["status"].as_str().unwrap().to_owned()
}

/// The run's stored events, oldest first.
async fn stored(gw: &TestGateway, agent: &str, run_id: &str) -> Vec<Value> {
    let page = get_json(gw, &format!("/v1/agents/{agent}/messages?limit=1000")).await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["run_id"] == run_id)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_runs_and_the_waiting_run_holds_no_slot() {
    let gw = spawn_gateway().await;
    let minted: Value = gw
        .post(
            "/v1/keys",
            json!({"scopes": ["*"], "rpm": 10_000, "max_runs": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (key_id, key) = (
        minted["id"].as_str().unwrap(),
        minted["secret"].as_str().unwrap(),
    );
    let agent = approval_agent(&gw, key).await;
    let mut s = ask_time(&gw, key, &agent).await;
    let before = until(&mut s, "approval_request").await;
    assert_eq!(kinds(&before), ["internal_monologue", "approval_request"]);
    let req = before.last().unwrap().clone();
    let run_id = req["run_id"].as_str().unwrap().to_owned();
    assert_eq!(req["tool"], "get_time");
    assert!(req["approval_id"].as_str().unwrap().starts_with("appr-"));
    assert!(req["expires_at"].as_str().unwrap() > req["date"].as_str().unwrap());
    assert_eq!(run_status(&gw, key, &run_id).await, "waiting_approval");
    // The waiting run holds none of the key's `max_runs` (1) slots.
    let other = gw.create_agent_as(key, json!({})).await;
    let r = gw
        .req_as(key, Method::POST, &format!("/v1/agents/{other}/messages"))
        .json(&json!({"message": "meanwhile"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a key with max_runs 1 starts another run");
    // Resuming needs the slot again: while a slow run of the key holds it,
    // the decision is refused (429) and the run stays parked.
    let slow = gw
        .create_agent_as(key, json!({"metadata": {"echo_delay_ms": 30_000}}))
        .await;
    let r = gw
        .req_as(key, Method::POST, &format!("/v1/agents/{slow}/messages"))
        .json(&json!({"message": "slow", "stream": true, "background": true}))
        .send()
        .await
        .unwrap();
    let mut slow_run = sse(r);
    let first = next(&mut slow_run).await.unwrap();
    let slow_id = first.data["run_id"].as_str().unwrap().to_owned();
    let refused = decide(&gw, key, &req, json!({"decision": "approve"})).await;
    expect_error(refused, 429, "too_many_runs").await;
    assert_eq!(run_status(&gw, key, &run_id).await, "waiting_approval");
    let r = gw
        .req_as(key, Method::POST, &format!("/v1/runs/{slow_id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = decide(&gw, key, &req, json!({"decision": "maybe"})).await;
    expect_error(bad, 400, "validation_error").await;
    let r = decide(&gw, key, &req, json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["key_id"], key_id);
    let rest = until(&mut s, "done").await;
    assert_eq!(kinds(&rest), RESUMED);
    assert_eq!(rest[0]["decision"], "approve");
    assert_eq!(rest[0]["key_id"], key_id);
    assert_eq!(rest[1]["message"]["status"], "success");
    assert_eq!(run_status(&gw, key, &run_id).await, "completed");
    // Decided once only.
    let again = decide(&gw, key, &req, json!({"decision": "deny"})).await;
    expect_error(again, 409, "conflict").await;
    // Nothing lost or repeated: the stored history is the user's message
    // and exactly what the stream carried, seqs in order.
    let mut seen = vec![];
    seen.extend(before.iter().cloned());
    seen.extend(rest.iter().cloned());
    let history = stored(&gw, &agent, &run_id).await;
    assert_eq!(history[0]["message_type"], "user_message");
    assert_eq!(history[1..], seen[..]);
    // Resuming by cursor from the request gives the rest, once.
    let r = gw
        .req_as(key, Method::GET, &format!("/v1/runs/{run_id}/stream"))
        .header("last-event-id", req["seq"].to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = sse(r);
    assert_eq!(until(&mut resumed, "done").await, rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_does_not_run_and_the_decision_is_audited() {
    let gw = spawn_gateway().await;
    let key = gw.key.clone();
    let agent = approval_agent(&gw, &key).await;
    let mut s = ask_time(&gw, &key, &agent).await;
    let req = until(&mut s, "approval_request").await.pop().unwrap();
    // Another key of the account (not the one that started the run)
    // decides: the event and the audit row name it.
    let minted: Value = gw
        .post("/v1/keys", json!({"scopes": ["chat"], "rpm": 10_000}))
        .await
        .json()
        .await
        .unwrap();
    let (decider_id, decider) = (
        minted["id"].as_str().unwrap(),
        minted["secret"].as_str().unwrap(),
    );
    let r = decide(
        &gw,
        decider,
        &req,
        json!({"decision": "deny", "reason": "not now"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rest = until(&mut s, "done").await;
    assert_eq!(kinds(&rest), RESUMED);
    assert_eq!(rest[0]["decision"], "deny");
    assert_eq!(rest[0]["reason"], "not now");
    assert_eq!(rest[0]["key_id"], decider_id);
    let call = &rest[1]["message"];
    assert_eq!(call["status"], "denied");
    assert_eq!(call["function"], "get_time");
    assert_eq!(call["result"], "denied: not now");
    assert!(rest[2]["message"]
        .as_str()
        .unwrap()
        .contains("denied: not now"));
    let approval_id = req["approval_id"].as_str().unwrap();
    let found = poll(Duration::from_secs(5), || async {
        let audit = get_json(&gw, "/v1/audit?limit=1000").await;
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["target"] == approval_id)
            .cloned()
    })
    .await
    .expect("the decision is in the audit log");
    assert_eq!(found["action"], "approvals.update");
    assert_eq!(
        found["actor_key_id"], decider_id,
        "the deciding key: {found}"
    );
    assert_eq!(found["method"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_request_expires_as_denied() {
    let gw = TestGateway::builder()
        .config(|c| c.approval_timeout_secs = 1)
        .spawn()
        .await;
    let key = gw.key.clone();
    let agent = approval_agent(&gw, &key).await;
    let mut s = ask_time(&gw, &key, &agent).await;
    let req = until(&mut s, "approval_request").await.pop().unwrap();
    let rest = until(&mut s, "done").await;
    assert_eq!(rest[0]["message_type"], "approval_response");
    assert_eq!(rest[0]["decision"], "expired");
    assert!(rest[0].get("key_id").is_none());
    assert_eq!(rest[1]["message"]["status"], "denied");
    assert_eq!(rest.last().unwrap()["stop_reason"], "end_turn");
    let late = decide(&gw, &key, &req, json!({"decision": "approve"})).await;
    expect_error(late, 409, "conflict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_survives_a_gateway_restart() {
    let gw = spawn_gateway().await;
    let key = gw.key.clone();
    let agent = approval_agent(&gw, &key).await;
    let mut s = ask_time(&gw, &key, &agent).await;
    let req = until(&mut s, "approval_request").await.pop().unwrap();
    drop(s);
    let run_id = req["run_id"].as_str().unwrap().to_owned();
    let gw = gw.restart().await;
    // Not settled as interrupted: it is parked, not running.
    assert_eq!(run_status(&gw, &key, &run_id).await, "waiting_approval");
    let r = gw
        .req_as(&key, Method::GET, &format!("/v1/runs/{run_id}/stream"))
        .header("last-event-id", req["seq"].to_string())
        .send()
        .await
        .unwrap();
    let mut s = sse(r);
    let r = decide(&gw, &key, &req, json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 200);
    let rest = until(&mut s, "done").await;
    assert_eq!(kinds(&rest), RESUMED);
    assert_eq!(run_status(&gw, &key, &run_id).await, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_on_gateway_b_a_run_started_on_gateway_a_goes_on() {
    let c = Cluster::start(&[]).await;
    let key = c.key().await;
    let agent = approval_agent(&c.a, &key).await;
    let mut s = ask_time(&c.a, &key, &agent).await;
    let req = until(&mut s, "approval_request").await.pop().unwrap();
    let run_id = req["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run_status(&c.b, &key, &run_id).await, "waiting_approval");
    let r = decide(&c.b, &key, &req, json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 200);
    let rest = until(&mut s, "done").await;
    assert_eq!(kinds(&rest), RESUMED);
    assert_eq!(rest[1]["message"]["status"], "success");
    let done = poll(Duration::from_secs(5), || async {
        (run_status(&c.a, &key, &run_id).await == "completed").then_some(())
    });
    assert!(done.await.is_some());
}

/// With Redis, both gateways run the expiry sweeper, one at a time (the
/// `approvals:sweeper` lock): an undecided request expires once, its call
/// is denied once, and the run goes on to `done` with no event repeated,
/// on the stream that started it and on one opened through the other
/// gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_swept_by_two_gateways_denies_the_call_once() {
    let c = Cluster::start(&[("WEIR_APPROVAL_TIMEOUT_SECS", "1")]).await;
    let key = c.key().await;
    let agent = approval_agent(&c.a, &key).await;
    let mut s = ask_time(&c.a, &key, &agent).await;
    let before = until(&mut s, "approval_request").await;
    let req = before.last().unwrap().clone();
    let run_id = req["run_id"].as_str().unwrap().to_owned();
    let r =
        c.b.req_as(&key, Method::GET, &format!("/v1/runs/{run_id}/stream"))
            .header("last-event-id", req["seq"].to_string())
            .send()
            .await
            .unwrap();
    let mut on_b = sse(r);
    let rest = until(&mut s, "done").await;
    assert_eq!(kinds(&rest), RESUMED);
    assert_eq!(rest[0]["decision"], "expired");
    assert_eq!(rest[1]["message"]["status"], "denied");
    assert_eq!(rest.last().unwrap()["stop_reason"], "end_turn");
    assert!(next(&mut s).await.is_none(), "nothing after done");
    assert_eq!(
        until(&mut on_b, "done").await,
        rest,
        "B saw the same events"
    );
    // Give a second sweep the time to happen (the tick is 250 ms here),
    // then count what the run stored.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r =
        c.b.req_as(
            &key,
            Method::GET,
            &format!("/v1/runs/{run_id}/messages?limit=1000"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    let stored = page["data"].as_array().unwrap();
    let seqs: Vec<u64> = stored.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "no seq repeated: {seqs:?}"
    );
    let count = |kind: &str| stored.iter().filter(|e| e["message_type"] == kind).count();
    assert_eq!(count("function_message"), 1, "{stored:?}");
    assert_eq!(count("approval_response"), 1, "{stored:?}");
    assert_eq!(count("done"), 1, "{stored:?}");
    let mut seen = before.clone();
    seen.extend(rest.iter().cloned());
    assert_eq!(stored[0]["message_type"], "user_message");
    assert_eq!(
        stored[1..],
        seen[..],
        "stored exactly what the stream carried"
    );
    assert_eq!(run_status(&c.a, &key, &run_id).await, "completed");
    // One process expired it: one "approval expired" line in both logs.
    let approval_id = req["approval_id"].as_str().unwrap();
    let expired = [&c.a, &c.b]
        .iter()
        .flat_map(|node| node.stderr())
        .filter(|l| l.contains("approval expired") && l.contains(approval_id))
        .count();
    assert_eq!(expired, 1, "A:\n{}\nB:\n{}", c.a.logs(), c.b.logs());
    let late = decide(&c.b, &key, &req, json!({"decision": "approve"})).await;
    expect_error(late, 409, "conflict").await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame of the socket (control frames skipped).
async fn ws_recv(ws: &mut Socket) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("readable frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn ws_send(ws: &mut Socket, frame: Value) {
    use futures::SinkExt;
    let m = tokio_tungstenite::tungstenite::Message::text(frame.to_string());
    ws.send(m).await.unwrap();
}

/// WebSocket frames until the one of `kind`, inclusive (`type` removed).
async fn ws_until(ws: &mut Socket, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let mut v = ws_recv(ws).await;
        if v["type"] != "agent_response" {
            continue;
        }
        v.as_object_mut().unwrap().remove("type");
        let last = v["message_type"] == kind;
        out.push(v);
        if last {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_decides_and_sees_what_an_sse_client_sees() {
    let gw = spawn_gateway().await;
    let key = gw.key.clone();
    let agent = approval_agent(&gw, &key).await;
    let r = gw
        .req_as(&key, Method::GET, &format!("/v1/agents/{agent}/events"))
        .send()
        .await
        .unwrap();
    let mut over_sse = sse(r);
    let url = gw.ws_url(&key);
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let start = json!({"type": "user_message", "agent_id": agent, "message": "what time is it?"});
    ws_send(&mut ws, start).await;
    let mut seen_ws = ws_until(&mut ws, "approval_request").await;
    let req = seen_ws.last().unwrap().clone();
    ws_send(
        &mut ws,
        json!({"type": "approval_response", "run_id": req["run_id"], "approval_id": req["approval_id"],
               "decision": "deny", "reason": "over the socket", "request_id": "a1"}),
    )
    .await;
    seen_ws.extend(ws_until(&mut ws, "done").await);
    let seen_sse = until(&mut over_sse, "done").await;
    assert_eq!(seen_ws, seen_sse, "one event, one seq, every transport");
    let resp = seen_ws
        .iter()
        .find(|e| e["message_type"] == "approval_response")
        .unwrap();
    assert_eq!(resp["reason"], "over the socket");
    assert!(kinds(&seen_ws).contains(&"function_message"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_registered_with_requires_approval_asks_for_it() {
    let gw = spawn_gateway().await;
    let key = gw.key.clone();
    let r = gw
        .post(
            "/v1/tools",
            json!({"name": "get_time", "kind": "builtin", "requires_approval": true}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let tool: Value = r.json().await.unwrap();
    assert_eq!(tool["requires_approval"], true, "stored and shown: {tool}");
    let shown = get_json(&gw, &format!("/v1/tools/{}", tool["id"].as_str().unwrap())).await;
    assert_eq!(shown["requires_approval"], true);
    let plain = gw
        .post(
            "/v1/tools",
            json!({"name": "calculator", "kind": "builtin"}),
        )
        .await;
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["requires_approval"], false);
    let agent = gw
        .create_agent_as(&key, json!({"tools": [tool["id"]]}))
        .await;
    let mut s = ask_time(&gw, &key, &agent).await;
    let req = until(&mut s, "approval_request").await.pop().unwrap();
    assert_eq!(req["tool"], "get_time");
    let r = decide(&gw, &key, &req, json!({"decision": "approve"})).await;
    assert_eq!(r.status(), 200);
    let rest = until(&mut s, "done").await;
    assert_eq!(rest[1]["message"]["status"], "success");
}
