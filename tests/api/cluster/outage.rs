//! A Redis outage: both gateways stay up and serve what needs only the
//! store, /readyz says Redis is the problem, runs are refused with a clear
//! error rather than vanishing, and when redis-server comes back on the same
//! port the gateways reconnect and resubscribe by themselves: a stream opened
//! before the outage carries the next run, numbered after the last one.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{create_agent, events, harness::Cluster, open_sse, run_to_end, seqs, until_done};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_ride_out_a_redis_restart_and_resume_fan_out() {
    let mut c = Cluster::start(&[]).await;
    let key = c.key().await;
    let agent = create_agent(&c.a, &key).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut kept_open = events(open_sse(&c.b, &key, &path, None).await);
    let before = run_to_end(&c.a, &key, &agent, "before").await;
    let before_seqs = seqs(&until_done(&mut kept_open, before["run_id"].as_str().unwrap()).await);

    c.redis.kill();
    for node in [&c.a, &c.b] {
        let (status, body) = wait_status(node, 503).await;
        assert_eq!(status, 503, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        let msg = v["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(msg.contains("redis"), "readyz names Redis: {msg}");
    }
    // What needs only the store still works.
    let r =
        c.b.req(&key, Method::GET, &format!("/v1/agents/{agent}"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    // A run cannot be delivered: refused at once with a clear 503.
    let t0 = Instant::now();
    let r =
        c.a.req(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
            .json(&json!({"message": "during"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "no hang: {:?}",
        t0.elapsed()
    );
    // No busy loop and no crash while Redis stays away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.a.alive() && c.b.alive(), "gateways stay up");

    c.redis.restart().await;
    c.a.wait_ready().await;
    c.b.wait_ready().await;
    // The stream opened before the outage is still subscribed.
    let after = run_to_end(&c.a, &key, &agent, "after").await;
    let got = until_done(&mut kept_open, after["run_id"].as_str().unwrap()).await;
    let after_seqs = seqs(&got);
    assert!(
        after_seqs[0] > *before_seqs.last().unwrap(),
        "numbering goes on after Redis lost its data: {before_seqs:?} then {after_seqs:?}"
    );
    // And new streams on both gateways get runs from either.
    let mut on_a = events(open_sse(&c.a, &key, &path, None).await);
    let from_b = run_to_end(&c.b, &key, &agent, "from B").await;
    let run = from_b["run_id"].as_str().unwrap();
    assert_eq!(
        seqs(&until_done(&mut on_a, run).await),
        seqs(&until_done(&mut kept_open, run).await)
    );
}

/// Polls /readyz until it answers `want` (10 s at most); the last answer.
async fn wait_status(node: &super::harness::Node, want: u16) -> (u16, String) {
    let mut last = node.readyz().await;
    for _ in 0..200 {
        if last.0 == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = node.readyz().await;
    }
    last
}
