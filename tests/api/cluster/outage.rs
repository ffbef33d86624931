//! A Redis outage: both gateways stay up and serve what needs only the
//! store, /readyz says Redis is the problem, runs are refused with a clear
//! error rather than vanishing, and when redis-server comes back on the same
//! port the gateways reconnect and resubscribe by themselves: a stream opened
//! before the outage carries the next run, numbered after the last one.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{create_agent, events, open_sse, run_to_end, seqs, until_done};
use crate::common::{Api, Cluster, RedisServer, TestGateway};

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
        let (status, body) = node.wait_readyz(503).await;
        assert_eq!(status, 503, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        let msg = v["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(msg.contains("redis"), "readyz names Redis: {msg}");
    }
    // What needs only the store still works.
    let r =
        c.b.req_as(&key, Method::GET, &format!("/v1/agents/{agent}"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    // A run cannot be delivered: refused at once with a clear 503.
    let t0 = Instant::now();
    let r =
        c.a.req_as(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
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
    // No busy loop and no crash while Redis stays away (a real wait, on
    // purpose: the gateways must live through some time without Redis).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_by_the_outage_goes_on_when_redis_comes_back() {
    let fp = crate::fake_provider::FakeProvider::start().await;
    // Debug logs of the bus say when a publish finds Redis gone.
    let env = [
        ("WEIR_PROVIDER_URL", fp.url.as_str()),
        ("RUST_LOG", "info,weir::bus=debug"),
    ];
    let mut c = Cluster::start(&env).await;
    let key = c.key().await;
    let r =
        c.a.req_as(&key, Method::POST, "/v1/agents")
            .json(&json!({"name": "slow", "model": "upstream/fake-slow"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let agent = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut on_b = events(open_sse(&c.b, &key, &format!("/v1/agents/{agent}/events"), None).await);
    let r =
        c.a.req_as(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
            .json(&json!({"message": "go", "stream": true, "stream_tokens": true}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let mut on_a = events(r);
    let first = super::next_event(&mut on_a).await;
    assert_eq!(first.event, "assistant_delta");
    let run: Value = serde_json::from_str(&first.data).unwrap();
    let run = run["run_id"].as_str().unwrap().to_owned();

    c.redis.kill();
    // The run's next publish fails; it is retried (within the publish
    // patience) until Redis is back, and the run goes on to its end.
    c.a.wait_for_line(|l| l.contains("bus unavailable; retrying"))
        .await;
    c.redis.restart().await;
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let events = until_done(stream, &run).await;
        let last = events.last().unwrap();
        assert_eq!(last["stop_reason"], "end_turn", "{name}: {last}");
        assert!(
            events.iter().all(|e| e["message_type"] != "error"),
            "{name}: no error event"
        );
        let s = seqs(&events);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "{name}: in order: {s:?}");
    }
    let r =
        c.b.req_as(&key, Method::GET, &format!("/v1/runs/{run}"))
            .send()
            .await
            .unwrap();
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["status"], "completed", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_survives_redis_losing_its_data_under_a_live_link() {
    let redis = RedisServer::start().await;
    let gw = TestGateway::builder().redis(&redis).spawn().await;
    let key = gw.mint_key("default", &["*"]).await;
    let agent = create_agent(&gw, &key).await;
    let first = run_to_end(&gw, &key, &agent, "one").await;
    let last = *seqs(first["messages"].as_array().unwrap()).last().unwrap();
    // Redis forgets every counter and history, but the link stays up: the
    // next publish finds no counter and the run seeds it again from the store.
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let second = run_to_end(&gw, &key, &agent, "two").await;
    let next = seqs(second["messages"].as_array().unwrap());
    assert!(next[0] > last, "after {last}: {next:?}");
    // The store kept every event once: nothing was numbered twice.
    let r = gw
        .get(&format!("/v1/agents/{agent}/messages?limit=1000"))
        .await;
    let page: Value = r.json().await.unwrap();
    let stored = seqs(page["data"].as_array().unwrap());
    let mut dedup = stored.clone();
    dedup.dedup();
    assert_eq!(stored, dedup, "one event per seq");
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
}
