//! Cluster mode over real processes: two `weir serve` gateways sharing one
//! `weir store` and one private redis-server behave as one gateway (fan-out,
//! resume, revocation, agent stop), survive a Redis outage, and report
//! history expiry, and runs executed by `weir worker` processes. See
//! `harness` for how a cluster is started.

mod fanout;
pub(crate) mod harness;
mod outage;
mod script;
mod workers;

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use harness::Node;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Creates an echo agent through `node` and returns its id.
pub(crate) async fn create_agent(node: &Node, key: &str) -> String {
    create_agent_from(node, key, json!({"name": "clustered"})).await
}

/// Creates the agent `body` describes through `node` and returns its id.
pub(crate) async fn create_agent_from(node: &Node, key: &str, body: Value) -> String {
    let r = node
        .req(key, Method::POST, "/v1/agents")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create agent");
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends a message through `node` and waits for the run's JSON answer.
async fn run_to_end(node: &Node, key: &str, agent: &str, message: &str) -> Value {
    let r = node
        .req(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "send message on {}: {body}", node.base);
    body
}

/// Opens an SSE stream (200 expected); the bus subscription exists once the
/// headers are here.
async fn open_sse(node: &Node, key: &str, path: &str, last_event_id: Option<u64>) -> Response {
    let mut req = node.req(key, Method::GET, path);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path} on {}", node.base);
    r
}

pub(crate) fn events(r: Response) -> impl Stream<Item = Event> + Unpin {
    Box::pin(
        r.bytes_stream()
            .eventsource()
            .map(|e| e.expect("well-formed SSE")),
    )
}

pub(crate) async fn next_event(s: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("an event in time")
        .expect("stream open")
}

/// Events up to and including the `done` of `run_id`, as JSON, checking that
/// each SSE id is the event's seq.
pub(crate) async fn until_done(
    s: &mut (impl Stream<Item = Event> + Unpin),
    run_id: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = next_event(s).await;
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["seq"].to_string(), e.id, "SSE id is the seq: {v}");
        let done = e.event == "done" && v["run_id"] == run_id;
        out.push(v);
        if done {
            return out;
        }
    }
}

/// What a run's own response shows: its events minus the user's message.
fn answer(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|v| v["message_type"] != "user_message")
        .cloned()
        .collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}
