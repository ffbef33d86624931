//! `--runtime per-core`: a gateway serving on three single-threaded loops,
//! each with its own listener on the one port. Connections land on every
//! loop, and what is shared stays exact across them: a key's rate limit,
//! runs fanned out to followers on other loops, relays through each loop's
//! own provider pool, and the drain, which ends streams on every loop; and
//! the binary itself, whose first loop runs on `main`'s runtime.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use serde_json::json;
use weir::config::RuntimeMode;

use crate::{
    common::{sse::events, Api, TestGateway, WeirProcess, BOOTSTRAP_KEY},
    fake_provider::FakeProvider,
    streams::{run_to_end, seqs, setup, until_done},
};

const LOOPS: usize = 3;

/// A client that opens a new connection for every request, so the kernel
/// spreads them over the loops' listeners.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The agent's event stream, on a connection of `client`'s.
async fn follow(
    client: &reqwest::Client,
    gw: &impl Api,
    key: &str,
    agent: &str,
) -> reqwest::Response {
    let r = client
        .get(gw.url(&format!("/v1/agents/{agent}/events")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// Accepted connections by loop, from `/metrics` (process-wide counters:
/// loops above 0 exist only in this test's gateway).
async fn accepted(gw: &impl Api) -> BTreeMap<String, f64> {
    let text = gw.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("weir_connections_accepted_total{loop=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(lp, n)| (lp.to_owned(), n.trim().parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_loop_serves_and_limits_and_fan_out_hold_across_them() {
    let fp = FakeProvider::start().await;
    let url = fp.url.clone();
    let mut gw = TestGateway::builder()
        .config(move |c| {
            c.runtime = RuntimeMode::PerCore;
            c.cores = LOOPS;
            c.provider_url = Some(url);
            c.provider_key = Some("sk-fake".into());
        })
        .spawn()
        .await;
    let fresh = fresh_connections();

    // Followers on many connections (so on every loop), one run: each
    // follower gets all of its events, in order.
    let (key, agent) = setup(&gw, json!({})).await;
    let mut followers = Vec::new();
    for _ in 0..12 {
        followers.push(events(follow(&fresh, &gw, &key, &agent).await));
    }
    let run = run_to_end(&gw, &key, &agent, json!({"message": "hi"})).await;
    for (i, f) in followers.iter_mut().enumerate() {
        let seqs = seqs(&until_done(f, &run).await);
        let want: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
        assert_eq!(seqs, want, "follower {i}: every event once, in order");
    }

    // The relay on fresh connections, so through several loops' own
    // provider pools (how a loop picks its pool: `weir::cores` tests).
    for i in 0..12 {
        let r = fresh
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "upstream/fake-text", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "relay {i}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("Hello") && body.ends_with("data: [DONE]\n\n"),
            "relay {i}: {body}"
        );
    }

    // One key's limit, counted once across the loops.
    let limited = gw.mint_key_rpm("default", &["*"], 10).await;
    let mut ok = 0;
    for _ in 0..20 {
        let r = fresh
            .get(gw.url("/v1/account"))
            .bearer_auth(&limited)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    assert_eq!(
        ok, 10,
        "the key's 10 requests a minute, whichever loop served them"
    );

    let by_loop = accepted(&gw).await;
    for lp in 1..LOOPS {
        assert!(
            by_loop.get(&lp.to_string()).copied().unwrap_or(0.0) > 0.0,
            "loop {lp} accepted connections: {by_loop:?}"
        );
    }

    // The drain ends every loop's streams cleanly, and the gateway's run
    // returns. `accepted` reuses one pooled connection, so the difference
    // is these streams' connections.
    let streamer = gw.mint_key("default", &["*"]).await;
    let before = accepted(&gw).await;
    let mut open = Vec::new();
    for _ in 0..9 {
        open.push(follow(&fresh, &gw, &streamer, &agent).await.bytes_stream());
    }
    let after = accepted(&gw).await;
    let count =
        |m: &BTreeMap<String, f64>, lp: usize| m.get(&lp.to_string()).copied().unwrap_or(0.0);
    let on_others: f64 = (1..LOOPS)
        .map(|lp| count(&after, lp) - count(&before, lp))
        .sum();
    assert!(
        on_others > 0.0,
        "some streams are on loops 1 and up: {before:?} -> {after:?}"
    );
    let ends = futures::future::join_all(open.into_iter().map(|mut s| async move {
        loop {
            match s.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    }));
    let ((), ends) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(gw.shutdown(), ends)
    })
    .await
    .expect("the drain ends on every loop");
    for (i, end) in ends.iter().enumerate() {
        assert!(end.is_ok(), "stream {i} ended cleanly: {end:?}");
    }
}

/// The binary itself, where `main` runs loop 0 on a single-threaded
/// runtime: every follower on either loop gets the run, and SIGTERM ends
/// the process cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_two_loops_and_drains() {
    let mut p = WeirProcess::serve()
        .args(&["--runtime", "per-core", "--cores", "2"])
        .spawn()
        .await;
    let fresh = fresh_connections();
    let agent = p
        .create_agent_as(BOOTSTRAP_KEY, json!({"metadata": {"echo_delay_ms": 10}}))
        .await;
    let mut followers = Vec::new();
    for _ in 0..16 {
        followers.push(events(follow(&fresh, &p, BOOTSTRAP_KEY, &agent).await));
    }
    let run = run_to_end(
        &p,
        BOOTSTRAP_KEY,
        &agent,
        json!({"message": "one two three"}),
    )
    .await;
    for f in followers.iter_mut() {
        until_done(f, &run).await;
    }
    let by_loop = accepted(&p).await;
    assert!(
        by_loop.get("1").copied().unwrap_or(0.0) > 0.0,
        "loop 1 accepted connections: {by_loop:?}"
    );
    p.signal("TERM");
    let status = p
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("weir exits after SIGTERM");
    assert!(status.success(), "{status:?}: {}", p.logs());
}
