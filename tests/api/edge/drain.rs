//! Graceful drain of a real `weir serve` process: SIGTERM mid-run lets the
//! run finish (its stream ends with `done`), idle tails end at once,
//! WebSockets close with 1001, no new connections, exit code 0; runs past
//! the grace period are cancelled; a second signal exits at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::common::{within, Api, WeirProcess, BOOTSTRAP_KEY};

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
    let agent = p
        .create_agent_as(BOOTSTRAP_KEY, json!({"metadata": {"echo_delay_ms": 50}}))
        .await;
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
    let mut p = WeirProcess::serve()
        .args(&["--grace-secs", "10"])
        .spawn()
        .await;
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
    let (mut ws, _) = connect_async(p.ws_url(BOOTSTRAP_KEY)).await.unwrap();

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
    let mut p = WeirProcess::serve()
        .args(&["--grace-secs", "1"])
        .spawn()
        .await;
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
    let mut p = WeirProcess::serve()
        .args(&["--grace-secs", "30"])
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let (_, _run) = slow_run(&p, &client, 200).await;
    p.signal("TERM");
    // The second signal must come after the first was taken: draining shows
    // as /readyz no longer answering 200.
    let draining = within(Duration::from_secs(3), || async {
        p.readyz().await.0 != 200
    })
    .await;
    assert!(draining, "the first signal starts the drain");
    let t0 = Instant::now();
    p.signal("INT");
    let status = p
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("exits at once");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

/// One parsed SSE frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub data: Value,
}

/// Reads SSE frames from a streaming response (comments skipped).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next frame, `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&raw);
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // a `: ping` comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Frame { event, data });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}
