//! SSE and JSON-mode runs against `event.json`, `run.json`,
//! `stream-error.json` and the framing of sse.md: `: ping` first, then
//! `id: <seq>` / `event: <message_type>` / `data: <event JSON>` frames.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use super::{
    assert_valid,
    sse::{Frame, SseReader},
};
use crate::common::{spawn_gateway, Api, TestGateway};

/// Validates an agent event frame: schema, `id:` = seq, `event:` = message_type.
pub fn check_event(frame: &Frame, schema: &str) -> Value {
    assert_eq!(
        frame.fields,
        ["id", "event", "data"],
        "frame layout: {frame:?}"
    );
    let ev: Value = serde_json::from_str(&frame.data).expect("event JSON");
    assert_valid(schema, &ev);
    assert_eq!(
        frame.id.as_deref(),
        Some(ev["seq"].to_string().as_str()),
        "id: is the seq"
    );
    assert_eq!(
        frame.event.as_deref(),
        ev["message_type"].as_str(),
        "event: is the message_type"
    );
    ev
}

/// Seqs strictly increase.
fn assert_increasing(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs strictly increase: {seqs:?}"
    );
}

async fn send(gw: &TestGateway, agent: &str, body: Value) -> Response {
    gw.post(&format!("/v1/agents/{agent}/messages"), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_run_is_schema_valid_frame_by_frame() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("sse").await;
    let body = json!({"message": "what time is it?", "stream": true, "stream_tokens": true});
    assert_valid("run.json#/$defs/send", &body);
    let mut sse = SseReader::new(send(&gw, &agent, body).await);
    let frames = sse.all().await;
    assert!(
        sse.raw.starts_with(b": ping\n\n"),
        "a ping is the first byte"
    );
    let events: Vec<Value> = frames
        .iter()
        .map(|f| check_event(f, "event.json#/$defs/agent_event"))
        .collect();
    assert_increasing(&events);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["message_type"].as_str().unwrap())
        .collect();
    for t in [
        "internal_monologue",
        "function_message",
        "assistant_delta",
        "assistant_message",
        "usage",
        "done",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    assert!(
        !types.contains(&"user_message"),
        "the user's message is not echoed: {types:?}"
    );
    assert_eq!(types.iter().filter(|t| **t == "done").count(), 1);
    assert_eq!(types.last(), Some(&"done"));
    assert_eq!(events.last().unwrap()["stop_reason"], "end_turn");
    let run_id = events[0]["run_id"].as_str().unwrap().to_owned();
    assert!(events
        .iter()
        .all(|e| e["run_id"] == run_id.as_str() && e["agent_id"] == agent.as_str()));

    // What a standard EventSource client sees: the same events.
    let seen: Vec<_> =
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(sse.raw.clone()))])
            .eventsource()
            .map(|e| e.expect("event"))
            .collect()
            .await;
    assert_eq!(seen.len(), frames.len());
    for (e, f) in seen.iter().zip(&frames) {
        assert_eq!(
            (Some(&e.id), Some(&e.event), &e.data),
            (f.id.as_ref(), f.event.as_ref(), &f.data)
        );
    }

    // The run record, the run's replay, the session history, the logs.
    let run: Value = gw
        .get(&format!("/v1/runs/{run_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_valid("run.json", &run);
    assert_eq!(
        (run["status"].as_str(), run["stop_reason"].as_str()),
        (Some("completed"), Some("end_turn"))
    );
    let mut replay = SseReader::new(gw.get(&format!("/v1/runs/{run_id}/stream")).await);
    let replayed: Vec<Value> = replay
        .all()
        .await
        .iter()
        .map(|f| check_event(f, "event.json#/$defs/agent_event"))
        .collect();
    assert_eq!(
        replayed, events,
        "a run's replay is the run's own stream, event for event"
    );
    let history: Value = gw
        .get(&format!("/v1/agents/{agent}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_valid("list.json#/$defs/messages", &history);
    // The session history has the user's message too.
    assert_eq!(history["data"][0]["message_type"], "user_message");
    assert_eq!(
        history["data"].as_array().unwrap().len(),
        replayed.len() + 1
    );
    let logs: Value = gw
        .get(&format!("/v1/agents/{agent}/logs"))
        .await
        .json()
        .await
        .unwrap();
    assert_valid("list.json#/$defs/logs", &logs);
    assert!(logs["pagination"]["total"].as_u64().unwrap() >= 2, "{logs}");
    let cancelled: Value = gw
        .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_valid("run.json", &cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_and_accept_header() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("json").await;
    let body = json!({"messages": [{"role": "user", "content": "hello there"}]});
    assert_valid("run.json#/$defs/send", &body);
    let r = send(&gw, &agent, body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let result: Value = r.json().await.unwrap();
    assert_valid("run.json#/$defs/result", &result);
    let last = result["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["message_type"], "done");

    // Accept: text/event-stream streams without `stream: true`.
    let r = gw
        .req(Method::POST, &format!("/v1/agents/{agent}/messages"))
        .header("accept", "text/event-stream")
        .json(&json!({"message": "again"}))
        .send()
        .await
        .unwrap();
    let frames = SseReader::new(r).all().await;
    let events: Vec<Value> = frames
        .iter()
        .map(|f| check_event(f, "event.json#/$defs/agent_event"))
        .collect();
    assert!(
        !events
            .iter()
            .any(|e| e["message_type"] == "assistant_delta"),
        "no deltas without stream_tokens"
    );
    assert_eq!(events.last().unwrap()["message_type"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tails_resume_and_say_when_history_is_gone() {
    let gw = TestGateway::builder()
        .config(|c| c.history_len = 4)
        .spawn()
        .await;
    let agent = gw.create_agent("tails").await;
    let first: Value = send(&gw, &agent, json!({"message": "one"}))
        .await
        .json()
        .await
        .unwrap();
    let n = first["messages"].as_array().unwrap().len() as u64 + 1; // + the user_message

    // The whole history of a fresh agent is gone past 4 events.
    let mut gone = SseReader::new(gw.get(&format!("/v1/agents/{agent}/events?after=0")).await);
    let frames = gone.all().await;
    assert!(gone.raw.starts_with(b": ping\n\n"));
    assert_eq!(frames.len(), 1, "{frames:?}");
    stream_error(&frames[0], "history_expired");

    // Resuming inside the kept history replays from there, then goes live.
    let after = n - 2;
    let mut tail = SseReader::new(
        gw.req(Method::GET, &format!("/v1/agents/{agent}/events"))
            .header("last-event-id", after.to_string())
            .send()
            .await
            .unwrap(),
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(check_event(
            &tail.next().await.expect("replayed"),
            "event.json#/$defs/agent_event",
        ));
    }
    assert_eq!(seen[0]["seq"], after + 1, "no gap, no duplicate");
    send(&gw, &agent, json!({"message": "two"})).await;
    loop {
        let ev = check_event(
            &tail.next().await.expect("live"),
            "event.json#/$defs/agent_event",
        );
        seen.push(ev.clone());
        if ev["message_type"] == "done" {
            break;
        }
    }
    assert_increasing(&seen);
    assert!(
        seen.iter().any(|e| e["message_type"] == "user_message"),
        "/events shows user messages"
    );

    // A live log tail (its own numbering: its history is long gone past 4 lines).
    let mut logs = SseReader::new(gw.get(&format!("/v1/agents/{agent}/logs/stream")).await);
    send(&gw, &agent, json!({"message": "three"})).await;
    let line = logs.next().await.expect("a log line");
    let ev = check_event(&line, "event.json#/$defs/log_line");
    assert!(ev.get("session_id").is_none());
}

/// Validates a stream's final error frame: `event: error`, no `id:`.
fn stream_error(frame: &Frame, code: &str) {
    assert_eq!(
        frame.fields,
        ["event", "data"],
        "no id: on a stream error: {frame:?}"
    );
    assert_eq!(frame.event.as_deref(), Some("error"));
    let data: Value = serde_json::from_str(&frame.data).unwrap();
    assert_valid("stream-error.json", &data);
    assert_eq!(data["code"], code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_ends_with_error_then_done() {
    // A provider that refuses connections: the run fails with an error event.
    let gw = TestGateway::builder().provider_unreachable().spawn().await;
    let r = gw
        .post("/v1/agents", json!({"name": "up", "model": "upstream/m"}))
        .await;
    let agent = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let frames = SseReader::new(send(&gw, &agent, json!({"message": "hi", "stream": true})).await)
        .all()
        .await;
    let events: Vec<Value> = frames
        .iter()
        .map(|f| check_event(f, "event.json#/$defs/agent_event"))
        .collect();
    let tail: Vec<&str> = events
        .iter()
        .rev()
        .take(2)
        .map(|e| e["message_type"].as_str().unwrap())
        .collect();
    assert_eq!(tail, ["done", "error"], "{events:?}");
    assert_eq!(events.last().unwrap()["stop_reason"], "error");
    let run: Value = gw
        .get(&format!(
            "/v1/runs/{}",
            events[0]["run_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_valid("run.json", &run);
    assert_eq!(run["status"], "failed");
}
