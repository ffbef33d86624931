//! A receiver that holds every request open (it never answers; weir gives
//! up on an attempt after 10 s and retries) never slows a run: a JSON-mode
//! run and a streamed run end in well under the time the receiver holds
//! the delivery of an earlier run (webhooks.md: "Runs and streams never
//! wait for a receiver"). The bound is a behaviour check with a wide
//! margin, not a benchmark: an echo run takes milliseconds, and a run that
//! waited for the receiver would take 10 s or more.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{gateway_allowing_loopback, subscribe, Receiver};
use crate::{
    common::{poll, Api},
    runs::all,
};

/// Far below the receiver's hold (forever; 10 s per attempt for weir).
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_holds_its_requests_never_slows_a_run() {
    let gw = gateway_allowing_loopback().await;
    let stuck = Receiver::start_hanging().await;
    subscribe(&gw, &stuck.url, &["run.completed"]).await;
    let agent = gw.create_agent("unhurried").await;
    let path = format!("/v1/agents/{agent}/messages");
    let mut runs = Vec::new();

    // A first run: its run.completed reaches the receiver, which holds it.
    let r = gw.post(&path, json!({"message": "first"})).await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    runs.push(first["run_id"].as_str().unwrap().to_owned());
    poll(Duration::from_secs(15), || async {
        (!stuck.requests().is_empty()).then_some(())
    })
    .await
    .expect("the receiver got the first delivery (and holds it open)");

    // While it is held, runs end promptly, JSON mode and streamed.
    for i in 0..3 {
        let started = Instant::now();
        let r = gw
            .post(&path, json!({"message": format!("json {i}")}))
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let took = started.elapsed();
        assert!(took < PROMPT, "a JSON-mode run took {took:?}");
        let messages = body["messages"].as_array().unwrap();
        let done = messages.last().unwrap();
        assert_eq!(done["message_type"], "done");
        assert_eq!(done["stop_reason"], "end_turn");
        runs.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    let r = gw
        .post(&path, json!({"message": "streamed", "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let evs = all(r).await;
    let took = started.elapsed();
    assert!(took < PROMPT, "a streamed run took {took:?}");
    let last = &evs.last().expect("events").data;
    assert_eq!(last["message_type"], "done");
    assert_eq!(last["stop_reason"], "end_turn");
    runs.push(last["run_id"].as_str().unwrap().to_owned());

    // Each run's event was still sent, the earlier ones unanswered: one
    // held delivery does not hold back the next.
    runs.sort();
    let run_ids = |got: Vec<super::Received>| -> Vec<String> {
        let mut ids: Vec<String> = got
            .iter()
            .map(|g| {
                let body: Value = serde_json::from_slice(&g.body).unwrap();
                body["data"]["run_id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let sent = poll(Duration::from_secs(15), || {
        let ids = run_ids(stuck.requests());
        let want = runs.clone();
        async move { (ids == want).then_some(ids) }
    })
    .await;
    assert_eq!(
        sent.unwrap_or_else(|| run_ids(stuck.requests())),
        runs,
        "every run's delivery reached the receiver"
    );
}
