//! A rolling restart over two real gateways on one Redis (issue 21): 500
//! SSE and 500 WebSocket followers of one agent on A; A gets SIGTERM while
//! events keep coming through B. `/readyz` on A turns 503 while A still
//! accepts connections; A's streams are closed spread over the window, each
//! with a reconnect hint (SSE `retry:`, the WebSocket close reason); every
//! follower comes back on B with its cursor and sees every event once, with
//! no gap; B's burst of reconnects costs at most one store read per key and
//! per channel. Also: concurrent first uses of one key read it once.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::create_agent;
use crate::common::{
    poll, spawn_store_process, store_requests, Api, Cluster, WeirProcess, STORE_TOKEN,
};

const SSE: usize = 500;
const WS: usize = 500;
/// `--drain-spread-secs` on A (small, so the test stays short).
const SPREAD: Duration = Duration::from_secs(3);

/// What one follower saw: every seq, when its stream on A ended (after the
/// signal) and the reconnect hint it was given (ms).
struct Seen {
    seqs: Vec<u64>,
    closed_at: Duration,
    hint: u64,
}

/// Where the followers are and what they wait for.
#[derive(Clone)]
struct Plan {
    agent: String,
    key: String,
    a: String,
    b: String,
    signalled: Arc<std::sync::OnceLock<Instant>>,
    back_on_b: Arc<AtomicUsize>,
    /// The seq every follower reads up to (set once the last run ended).
    last: watch::Receiver<Option<u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_every_follower_to_b_spread_out_without_gap_or_duplicate() {
    let spread = SPREAD.as_secs().to_string();
    let env = [
        ("WEIR_MAX_SSE_PER_KEY", "2000"),
        ("WEIR_MAX_WS_PER_KEY", "2000"),
        ("WEIR_DRAIN_DELAY_SECS", "1"),
        ("WEIR_DRAIN_SPREAD_SECS", spread.as_str()),
    ];
    // The gateway to drain only queues runs (`--workers 0`): the other one
    // runs them all, so its store reads during the burst are the burst's.
    let mut c = Cluster::start_each(&env, &[("WEIR_WORKERS", "0")]).await;
    let publisher = c.key().await;
    let (_, follower) = c.mint(&["*"]).await;
    // `a` (the cluster's B, which only queues) is drained; `b` takes over.
    let (a, b) = (&mut c.b, &c.a);
    let agent = create_agent(b, &publisher).await;
    let (last_tx, last) = watch::channel(None);
    let plan = Plan {
        agent: agent.clone(),
        key: follower,
        a: a.host().to_owned(),
        b: b.host().to_owned(),
        signalled: Arc::default(),
        back_on_b: Arc::default(),
        last,
    };
    // Each gateway read the bootstrap key at start.
    let get_key_a = store_requests(a, "get_key").await;
    let opened = Arc::new(AtomicUsize::new(0));
    let mut followers = Vec::new();
    for i in 0..SSE + WS {
        let (plan, opened) = (plan.clone(), opened.clone());
        followers.push(tokio::spawn(async move {
            match i < SSE {
                true => follow_sse(plan, opened).await,
                false => follow_ws(plan, opened).await,
            }
        }));
    }
    poll(Duration::from_secs(40), || {
        std::future::ready((opened.load(Ordering::SeqCst) == SSE + WS).then_some(()))
    })
    .await
    .expect("every follower open on A");
    let get_key_a = store_requests(a, "get_key").await - get_key_a;
    assert_eq!(
        get_key_a, 1,
        "1,000 connections with one key: one store read"
    );

    // Events throughout: a run through B every 200 ms.
    let stop = tokio_util::sync::CancellationToken::new();
    let runs = tokio::spawn(publish(
        b.base.clone(),
        publisher.clone(),
        agent.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_b = (
        store_requests(b, "get_key").await,
        store_requests(b, "last_event_seq").await,
    );
    plan.signalled.set(Instant::now()).unwrap();
    a.signal("TERM");
    // Readiness first: new connections are still accepted, and told 503.
    let ready = poll(Duration::from_secs(1), || async {
        let fresh = reqwest::Client::new();
        let r = fresh.get(a.url("/readyz")).send().await;
        let status = r.expect("A still accepts during the delay").status();
        (status == 503).then_some(())
    })
    .await;
    assert!(ready.is_some(), "A's /readyz turned 503 within the delay");

    poll(Duration::from_secs(30), || {
        std::future::ready((plan.back_on_b.load(Ordering::SeqCst) == SSE + WS).then_some(()))
    })
    .await
    .expect("every follower back on B");
    let status = a.wait_exit(Duration::from_secs(10)).await.expect("A exits");
    assert!(status.success(), "A's exit status {status:?}");
    let after_b = (
        store_requests(b, "get_key").await,
        store_requests(b, "last_event_seq").await,
    );
    stop.cancel();
    let final_seq = runs.await.unwrap();
    last_tx.send(Some(final_seq)).unwrap();
    let mut seen = Vec::new();
    for f in followers {
        seen.push(f.await.expect("a follower"));
    }
    for (i, s) in seen.iter().enumerate() {
        let want: Vec<u64> = (s.seqs[0]..=final_seq).collect();
        assert_eq!(s.seqs, want, "follower {i}: every event once, in order");
        // At most 1 s whatever the spread (limits.md, "Drain").
        assert!(s.hint < 1000, "hint {} ms", s.hint);
    }
    check_spread(&seen);
    // One read per key the burst used (the followers' key; the publisher's
    // may be re-read once its cache entry ages out) and one floor check
    // for the channel, instead of one of each per reconnect.
    assert!(
        after_b.0 - before_b.0 <= 2,
        "get_key on B: {before_b:?} -> {after_b:?}"
    );
    assert!(
        after_b.1 - before_b.1 <= 1,
        "last_event_seq on B: {before_b:?} -> {after_b:?}"
    );
}

/// The closes on A are spread over the window: the middle 90 % take at
/// least half of it, and no 100 ms slice holds more than a fifth of them
/// (evenly, a slice holds a thirtieth; the clients' own scheduling on a
/// loaded machine bunches what they see).
fn check_spread(seen: &[Seen]) {
    let mut at: Vec<Duration> = seen.iter().map(|s| s.closed_at).collect();
    at.sort();
    let (first, last) = (at[0], at[at.len() - 1]);
    let middle = at[at.len() * 95 / 100] - at[at.len() * 5 / 100];
    let mut slices = std::collections::HashMap::<u128, usize>::new();
    for t in &at {
        *slices.entry((*t - first).as_millis() / 100).or_default() += 1;
    }
    let busiest = slices.values().copied().max().unwrap_or(0);
    let hints: std::collections::HashSet<u64> = seen.iter().map(|s| s.hint).collect();
    eprintln!(
        "closes on A: first {first:?}, last {last:?} after SIGTERM; p5..p95 {middle:?}; \
         busiest 100 ms slice {busiest} of {}; {} distinct hints",
        at.len(),
        hints.len()
    );
    assert!(middle >= SPREAD / 2, "closes spread: p5..p95 = {middle:?}");
    assert!(busiest <= at.len() / 5, "busiest 100 ms slice: {busiest}");
    assert!(hints.len() > at.len() / 4, "hints vary: {}", hints.len());
}

/// Runs through B every 200 ms until `stop`, then one last run; the seq of
/// that run's `done`.
async fn publish(
    base: String,
    key: String,
    agent: String,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    let client = reqwest::Client::new();
    let b = WeirProcess::remote(base);
    loop {
        let last = stop.is_cancelled();
        let r = client
            .request(Method::POST, b.url(&format!("/v1/agents/{agent}/messages")))
            .bearer_auth(&key)
            .json(&json!({"message": "tick"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if last {
            let seqs = body["messages"].as_array().unwrap().iter();
            return seqs.filter_map(|m| m["seq"].as_u64()).max().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An SSE follower: on A, then (after A's `retry:`) on B with
/// `Last-Event-ID`, until the last seq.
async fn follow_sse(plan: Plan, opened: Arc<AtomicUsize>) -> Seen {
    let client = reqwest::Client::new();
    let path = format!("/v1/agents/{}/events", plan.agent);
    let open = |host: &str, after: Option<u64>| {
        let mut req = client
            .get(format!("http://{host}{path}"))
            .bearer_auth(&plan.key);
        if let Some(after) = after {
            req = req.header("last-event-id", after.to_string());
        }
        req.send()
    };
    let r = open(&plan.a, None).await.unwrap();
    if r.status() != 200 {
        let status = r.status();
        panic!(
            "opening on A: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    opened.fetch_add(1, Ordering::SeqCst);
    let mut seqs = Vec::new();
    let hint = read_sse(r, &mut seqs, &plan.last)
        .await
        .expect("a retry: before A's end");
    let closed_at = plan
        .signalled
        .get()
        .expect("ended after the signal")
        .elapsed();
    tokio::time::sleep(Duration::from_millis(hint)).await;
    let r = open(&plan.b, seqs.last().copied()).await.unwrap();
    assert_eq!(r.status(), 200);
    plan.back_on_b.fetch_add(1, Ordering::SeqCst);
    read_sse(r, &mut seqs, &plan.last).await;
    Seen {
        seqs,
        closed_at,
        hint,
    }
}

/// Reads SSE frames into `seqs` until the stream ends (the `retry:` it
/// gave, if any) or the last seq is in.
async fn read_sse(
    r: reqwest::Response,
    seqs: &mut Vec<u64>,
    last: &watch::Receiver<Option<u64>>,
) -> Option<u64> {
    let mut body = r.bytes_stream();
    let (mut buf, mut retry) = (String::new(), None);
    loop {
        if let (Some(end), Some(&got)) = (*last.borrow(), seqs.last()) {
            if got >= end {
                return retry;
            }
        }
        let chunk = match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
            Err(_) => continue,
            Ok(None) => return retry,
            Ok(Some(c)) => c.expect("SSE bytes"),
        };
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            for line in buf[..end].lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    seqs.push(id.parse().unwrap());
                } else if let Some(ms) = line.strip_prefix("retry: ") {
                    retry = Some(ms.parse().unwrap());
                }
            }
            buf.drain(..end + 2);
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket follower: on A, then (after the hint in A's 1001 close
/// reason) on B, subscribed with `after`, until the last seq.
async fn follow_ws(plan: Plan, opened: Arc<AtomicUsize>) -> Seen {
    let channel = format!("agent:{}", plan.agent);
    let url = |host: &str| format!("ws://{host}/v1/ws?api_key={}", plan.key);
    let (mut ws, _) = connect_async(url(&plan.a)).await.expect("ws on A");
    subscribe(&mut ws, &channel, None).await;
    opened.fetch_add(1, Ordering::SeqCst);
    let mut seqs = Vec::new();
    let reason = read_ws(&mut ws, &mut seqs, &plan.last)
        .await
        .expect("a close from A");
    let closed_at = plan
        .signalled
        .get()
        .expect("closed after the signal")
        .elapsed();
    let hint = reason
        .strip_prefix("draining; retry in ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("a draining close reason with a hint: {reason:?}"));
    tokio::time::sleep(Duration::from_millis(hint)).await;
    let (mut ws, _) = connect_async(url(&plan.b)).await.expect("ws on B");
    subscribe(&mut ws, &channel, seqs.last().copied()).await;
    plan.back_on_b.fetch_add(1, Ordering::SeqCst);
    read_ws(&mut ws, &mut seqs, &plan.last).await;
    Seen {
        seqs,
        closed_at,
        hint,
    }
}

async fn subscribe(ws: &mut Socket, channel: &str, after: Option<u64>) {
    let mut sub = json!({"type": "subscribe", "channel": channel});
    if let Some(after) = after {
        sub["after"] = after.into();
    }
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("subscribed in time");
    let v: Value = match first {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
        other => panic!("subscribed expected: {other:?}"),
    };
    assert_eq!(v["type"], "subscribed", "{v}");
}

/// Reads `agent_response` seqs until the socket closes (its 1001 reason)
/// or the last seq is in.
async fn read_ws(
    ws: &mut Socket,
    seqs: &mut Vec<u64>,
    last: &watch::Receiver<Option<u64>>,
) -> Option<String> {
    loop {
        if let (Some(end), Some(&got)) = (*last.borrow(), seqs.last()) {
            if got >= end {
                return None;
            }
        }
        let msg = match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Err(_) => continue,
            Ok(m) => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "agent_response", "{v}");
                seqs.push(v["seq"].as_u64().unwrap());
            }
            Some(Ok(Message::Close(Some(c)))) => {
                assert_eq!(u16::from(c.code), 1001);
                return Some(c.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("the socket broke: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_uses_of_one_key_read_it_from_the_store_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = spawn_store_process(&tmp.path().join("store")).await;
    let gw = WeirProcess::serve()
        .store(&store)
        .envs(&[("WEIR_MAX_SSE_PER_KEY", "100")])
        .spawn()
        .await;
    let remote =
        weir::store::remote::RemoteStore::new(&store.url, Some(STORE_TOKEN.into())).unwrap();
    let (_, key) = crate::common::mint(&remote, "default", &["*"], 100_000).await;
    let agent = create_agent(&gw, &gw.key).await;
    let before = store_requests(&gw, "get_key").await;
    let opens = (0..50).map(|_| {
        gw.req_as(&key, Method::GET, &format!("/v1/agents/{agent}/events"))
            .send()
    });
    for r in futures::future::join_all(opens).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    assert_eq!(store_requests(&gw, "get_key").await - before, 1);
}
