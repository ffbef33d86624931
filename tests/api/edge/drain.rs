//! Graceful drain of a real `weir serve` process: SIGTERM mid-run lets the
//! run finish (its stream ends with `done`), idle tails end at once,
//! WebSockets close with 1001, no new connections, exit code 0; runs past
//! the grace period are cancelled; a second signal exits at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::support::{create_agent, Frame, SseReader, WeirProcess};
use crate::common::BOOTSTRAP_KEY;

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a run of a slow echo agent (50 ms per token) streamed as SSE and
/// reads until its first token.
async fn slow_run(
    p: &WeirProcess,
    client: &reqwest::Client,
    n_words: usize,
) -> (String, SseReader) {
    let agent = create_agent(client, &p.base, BOOTSTRAP_KEY, json!({"echo_delay_ms": 50})).await;
    let r = client
        .post(p.url(&format!("/v1/agents/{agent}/messages")))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&json!({"message": words(n_words), "stream": true, "stream_tokens": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut sse = SseReader::new(r);
    loop {
        let f = sse.next().await.expect("frames before the first token");
        if f.event == "assistant_delta" {
            return (agent, sse);
        }
    }
}

/// Every frame left, with a bound on how long the stream may take.
async fn rest_of(sse: &mut SseReader, limit: Duration) -> Vec<Frame> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while let Ok(Some(f)) =
        tokio::time::timeout(limit.saturating_sub(t0.elapsed()), sse.next()).await
    {
        out.push(f);
    }
    assert!(t0.elapsed() < limit, "the stream ended within {limit:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_lets_the_run_finish_with_done_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = WeirProcess::start(&tmp.path().join("d"), &["--grace-secs", "10"], &[]).await;
    let client = reqwest::Client::new();
    let (agent, mut run) = slow_run(&p, &client, 40).await;
    // An idle tail and a WebSocket, open before the signal.
    let tail = client
        .get(p.url(&format!("/v1/agents/{agent}/logs/stream")))
        .bearer_auth(BOOTSTRAP_KEY)
        .send()
        .await
        .unwrap();
    let mut tail = SseReader::new(tail);
    let (mut ws, _) = connect_async(format!(
        "ws://{}/v1/ws?api_key={BOOTSTRAP_KEY}",
        &p.base[7..]
    ))
    .await
    .unwrap();

    let t0 = Instant::now();
    p.signal("TERM");
    // The tail ends at once (it is not waiting for anything that will end).
    rest_of(&mut tail, Duration::from_secs(2)).await;
    // The WebSocket is closed with 1001 (going away).
    let close = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(c) = m {
                return c.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("a close frame in time");
    assert_eq!(close, Some(1001));
    // No new connections: the listener is gone (or, on a kept-alive
    // connection, /readyz says 503).
    match reqwest::Client::new().get(p.url("/readyz")).send().await {
        Err(_) => {}
        Ok(r) => assert_eq!(r.status(), 503),
    }
    // The run goes on to its natural end.
    let frames = rest_of(&mut run, Duration::from_secs(10)).await;
    let last = frames.last().expect("frames after the signal");
    assert_eq!(last.event, "done", "{frames:?}");
    assert_eq!(last.data["stop_reason"], "end_turn", "{:?}", last.data);
    assert!(frames.iter().any(|f| f.event == "assistant_message"));
    assert!(
        t0.elapsed() > Duration::from_millis(1000),
        "the run really was mid-way: {:?}",
        t0.elapsed()
    );
    let status = p
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits within the grace period");
    assert!(status.success(), "exit status {status:?}\n{}", p.logs());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_past_the_grace_period_are_cancelled_and_end_with_done() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = WeirProcess::start(&tmp.path().join("d"), &["--grace-secs", "1"], &[]).await;
    let client = reqwest::Client::new();
    // 200 tokens at 50 ms: 10 s, far past the 1 s grace period.
    let (_, mut run) = slow_run(&p, &client, 200).await;
    let t0 = Instant::now();
    p.signal("TERM");
    let frames = rest_of(&mut run, Duration::from_secs(6)).await;
    let last = frames.last().expect("frames after the signal");
    assert_eq!(last.event, "done", "{frames:?}");
    assert_eq!(last.data["stop_reason"], "cancelled", "{:?}", last.data);
    let status = p.wait_exit(Duration::from_secs(8)).await.expect("exits");
    assert!(status.success(), "exit status {status:?}\n{}", p.logs());
    assert!(t0.elapsed() < Duration::from_secs(7), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = WeirProcess::start(&tmp.path().join("d"), &["--grace-secs", "30"], &[]).await;
    let client = reqwest::Client::new();
    let (_, _run) = slow_run(&p, &client, 200).await;
    p.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    p.signal("INT");
    let status = p
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("exits at once");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}
