//! The Redis run queue with in-process gateways sharing one `weir store` and
//! a private redis-server. A dead worker is played by the test itself: it
//! takes the queue entry as consumer `dead` (XREADGROUP) and never
//! acknowledges it, exactly what a SIGKILLed worker leaves behind.
//! (tests/api/cluster/ runs the same scenarios over real `weir worker`
//! processes.)

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    cluster::{create_agent, events, next_event, until_done},
    common::{poll, within, Api, RedisServer, StoreMode, TestGateway},
};

/// A gateway on `redis` taking at most `workers` runs, with a 1 s claim
/// timeout; `store` is another gateway whose `weir store` it shares.
async fn gateway(redis: &RedisServer, workers: usize, store: Option<&TestGateway>) -> TestGateway {
    let gw = TestGateway::builder().redis(redis).config(move |cfg| {
        cfg.workers = workers;
        cfg.run_claim_secs = 1;
    });
    match store {
        Some(other) => gw.share_store(other),
        None => gw.store(StoreMode::Remote),
    }
    .spawn()
    .await
}

/// Takes the next queued job as consumer `dead`; returns (entry id, run id).
async fn take_as_dead_worker(redis: &RedisServer) -> (String, String) {
    let mut conn = redis.connection().await;
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "workers", "dead", "COUNT", "1", "BLOCK", "10000"])
        .arg(&["STREAMS", "weir:{runs}", ">"])
        .query_async(&mut conn)
        .await
        .expect("a queued run");
    let entry = &reply.keys[0].ids[0];
    let job: Value = serde_json::from_str(&entry.get::<String>("job").unwrap()).unwrap();
    (
        entry.id.clone(),
        job["run"]["id"].as_str().unwrap().to_owned(),
    )
}

/// Starts a run through `node` (SSE answer, background) and returns the
/// response, whose headers arrive once the run is queued.
async fn start_run(node: &impl Api, key: &str, agent: &str, message: &str) -> reqwest::Response {
    let body =
        json!({"message": message, "stream": true, "background": true, "stream_tokens": true});
    let r = node
        .req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "start a run");
    r
}

/// The run as GET /v1/runs/{id} shows it once it is no longer `running`.
async fn final_run(node: &impl Api, key: &str, run: &str) -> Value {
    let done = poll(Duration::from_secs(10), || async {
        let r = node.req_as(key, Method::GET, &format!("/v1/runs/{run}"));
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        (v["status"] != "running").then_some(v)
    })
    .await;
    done.unwrap_or_else(|| panic!("run {run} still running"))
}

/// Entries not yet acknowledged in the group.
async fn pending(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(&["weir:{runs}", "workers"])
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_run_whose_worker_died_ends_with_worker_lost_on_every_stream() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, 0, None).await;
    let agent = create_agent(&a, &a.key).await;
    let mut watch = events(
        a.req_as(&a.key, Method::GET, &format!("/v1/agents/{agent}/events"))
            .send()
            .await
            .unwrap(),
    );
    let _answer = start_run(&a, &a.key, &agent, "hello").await;
    // A takes no runs (workers 0): the "dead" worker gets it, marks it
    // started, and dies without a word.
    let (_, run) = take_as_dead_worker(&redis).await;
    let mut conn = redis.connection().await;
    let marker = format!("weir:{{runs}}:run:{run}:started");
    let _: () = redis::cmd("SET")
        .arg(&[marker.as_str(), "dead"])
        .query_async(&mut conn)
        .await
        .unwrap();

    // A worker comes up and reclaims it after the 1 s claim timeout.
    let b = gateway(&redis, 1, Some(&a)).await;
    let seen = until_done(&mut watch, &run).await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|e| e["run_id"] == run.as_str())
        .map(|e| e["message_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["error", "done"], "{seen:?}");
    let error = &seen[seen.len() - 2];
    assert_eq!(error["code"], "worker_lost", "{error}");
    assert_eq!(seen.last().unwrap()["stop_reason"], "error");
    let stored = final_run(&a, &a.key, &run).await;
    assert_eq!(stored["status"], "failed", "{stored}");
    assert_eq!(stored["error_code"], "worker_lost", "{stored}");
    assert!(
        stored["error"].as_str().unwrap().contains("worker"),
        "{stored}"
    );
    // Counted (the registry is per process: other tests may add to it).
    let text = b.get("/metrics").await.text().await.unwrap();
    let lost = text
        .lines()
        .find(|l| l.starts_with(r#"weir_queue_runs_total{outcome="worker_lost"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(lost >= Some(1.0), "worker_lost counted: {lost:?}");
    assert!(
        within(Duration::from_secs(5), || async {
            pending(&redis).await == 0
        })
        .await,
        "the reclaimed entry was never acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_worker_died_before_starting_it_runs_on_another_worker() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, 0, None).await;
    let agent = create_agent(&a, &a.key).await;
    let answer = start_run(&a, &a.key, &agent, "still here").await;
    let (_, run) = take_as_dead_worker(&redis).await;

    let _b = gateway(&redis, 1, Some(&a)).await;
    // The client that started it gets the whole answer, as if nothing happened.
    let mut stream = events(answer);
    let seen = until_done(&mut stream, &run).await;
    let reply = seen
        .iter()
        .find(|e| e["message_type"] == "assistant_message")
        .expect("an answer");
    assert!(
        reply["message"].as_str().unwrap().contains("still here"),
        "{reply}"
    );
    assert_eq!(seen.last().unwrap()["stop_reason"], "end_turn");
    assert_eq!(final_run(&a, &a.key, &run).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_a_gateway_reaches_the_worker_running_the_run() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis, 0, None).await;
    let b = gateway(&redis, 1, Some(&a)).await;
    let agent = create_agent(&a, &a.key).await;
    // A slow echo: one piece every 200 ms.
    let patch = json!({"metadata": {"echo_delay_ms": 200}});
    let r = a
        .req_as(&a.key, Method::PATCH, &format!("/v1/agents/{agent}"))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let words = "one two three four five six seven eight nine ten eleven twelve";
    let mut answer = events(start_run(&a, &a.key, &agent, words).await);
    let first = next_event(&mut answer).await;
    let run = serde_json::from_str::<Value>(&first.data).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let _ = &b;

    let r = a
        .req_as(&a.key, Method::POST, &format!("/v1/runs/{run}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let rest = until_done(&mut answer, &run).await;
    assert_eq!(rest.last().unwrap()["stop_reason"], "cancelled");
    assert!(
        !rest
            .iter()
            .any(|e| e["message_type"] == "assistant_message"),
        "cancelled before the answer: {rest:?}"
    );
    // The stream ends after `done`.
    let end = tokio::time::timeout(Duration::from_secs(5), answer.next()).await;
    assert!(matches!(end, Ok(None)), "stream ends after done");
}
