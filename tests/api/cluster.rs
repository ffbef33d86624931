//! Cluster mode over real processes: two `weir serve` gateways sharing one
//! `weir store` and one private redis-server behave as one gateway (fan-out,
//! resume, revocation, agent stop), survive a Redis outage, and report
//! history expiry, and runs executed by `weir worker` processes; a rolling
//! restart moves every follower from one gateway to the other. See
//! `common::Cluster` for how a cluster is started.

mod failover_limits;
mod fanout;
mod outage;
mod redis_cluster;
mod rolling;
mod script;
mod sentinel;
mod workers;

use eventsource_stream::Event;
use futures::Stream;
use reqwest::{Method, Response};
use serde_json::{json, Value};

pub(crate) use crate::common::sse::{events, next_event, WAIT};
use crate::common::Api;

/// Creates an echo agent through `node` and returns its id.
pub(crate) async fn create_agent(node: &impl Api, key: &str) -> String {
    node.create_agent_as(key, json!({"name": "clustered"}))
        .await
}

/// Sends a message through `node` and waits for the run's JSON answer.
async fn run_to_end(node: &impl Api, key: &str, agent: &str, message: &str) -> Value {
    let r = node
        .req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "send message on {}: {body}", node.base());
    body
}

/// Opens an SSE stream (200 expected); the bus subscription exists once the
/// headers are here.
async fn open_sse(node: &impl Api, key: &str, path: &str, last_event_id: Option<u64>) -> Response {
    let mut req = node.req_as(key, Method::GET, path);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path} on {}", node.base());
    r
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
