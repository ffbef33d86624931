//! The open-loop driver of the proxy scenarios: requests leave on a fixed
//! schedule (request `i` is due at `t0 + i / rate`) whatever the previous
//! ones are doing, and every latency is measured from the *intended* send
//! time, so a server that stalls is charged for the requests that queued
//! behind the stall (no coordinated omission).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::hist::{AtomicHist, Hist};

/// An OpenAI-compatible endpoint to drive.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// Base URL ending in `/v1`.
    pub base: String,
    pub key: Option<String>,
    pub model: String,
    /// Chat sessions to spread requests over, named by the request's `user`
    /// (request `i` is `u{i % sessions}`); 0 sends no `user`. Agent runs need
    /// it: one session's growing history would be read by every run.
    pub sessions: u64,
}

/// One fixed-rate step.
#[derive(Clone)]
pub struct Step {
    pub rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Completed requests per second of the step.
    pub achieved: f64,
    /// Time to the first content chunk, from the intended send time.
    pub ttft: Hist,
    /// Time to `[DONE]`, from the intended send time.
    pub total: Hist,
    /// Chunks received per request (sanity: should be K + role/finish).
    pub chunks_per_req: f64,
    pub first_error: Option<String>,
    /// 1-minute load average when the step ended.
    pub load: f64,
}

/// A client fit for thousands of requests per second on loopback.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain reqwest client builds")
}

/// The streaming chat request every target gets.
pub fn body(model: &str) -> Bytes {
    body_for(model, None)
}

/// [`body`], in the chat session named `user` when given.
pub fn body_for(model: &str, user: Option<String>) -> Bytes {
    let mut v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": true,
    });
    if let Some(u) = user {
        v["user"] = u.into();
    }
    serde_json::to_vec(&v).unwrap_or_default().into()
}

struct Shared {
    ttft: AtomicHist,
    total: AtomicHist,
    ok: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    chunks: std::sync::atomic::AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Sends `rate` requests per second for `secs` to `target`, then waits for
/// the stragglers (up to the client timeout).
pub async fn run_step(client: &reqwest::Client, target: &Target, rate: f64, secs: f64) -> Step {
    use std::sync::atomic::Ordering::Relaxed;
    let n = (rate * secs).round().max(1.0) as u64;
    let url = format!("{}/chat/completions", target.base);
    let body = body(&target.model);
    let shared = Arc::new(Shared {
        ttft: AtomicHist::default(),
        total: AtomicHist::default(),
        ok: Default::default(),
        errors: Default::default(),
        chunks: Default::default(),
        first_error: Mutex::new(None),
    });
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let body = match target.sessions {
            0 => body.clone(),
            n => body_for(&target.model, Some(format!("u{}", i % n))),
        };
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = &target.key {
            req = req.bearer_auth(k);
        }
        let shared = shared.clone();
        let due = due.into_std();
        tasks.spawn(async move {
            match one(req, due).await {
                Ok((ttft, total, chunks)) => {
                    shared.ttft.record(ttft);
                    shared.total.record(total);
                    shared.chunks.fetch_add(chunks, Relaxed);
                    shared.ok.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    shared.errors.fetch_add(1, Relaxed);
                    let mut first = shared.first_error.lock().await;
                    if first.is_none() {
                        *first = Some(e);
                    }
                }
            }
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64().max(secs);
    let ok = shared.ok.load(Relaxed);
    let first_error = shared.first_error.lock().await.clone();
    Step {
        rate,
        sent: n,
        ok,
        errors: shared.errors.load(Relaxed),
        achieved: ok as f64 / elapsed,
        ttft: shared.ttft.snapshot(),
        total: shared.total.snapshot(),
        chunks_per_req: shared.chunks.load(Relaxed) as f64 / ok.max(1) as f64,
        first_error,
        load: crate::sys::loadavg(),
    }
}

/// One streamed request: (ttft µs, total µs, content chunks).
async fn one(req: reqwest::RequestBuilder, due: Instant) -> Result<(u64, u64, u64), String> {
    let resp = req.send().await.map_err(|e| format!("send: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
    let mut ttft = None;
    let mut chunks = 0;
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| format!("stream: {e}"))?;
        if ev.data == "[DONE]" {
            let total = due.elapsed().as_micros() as u64;
            return match ttft {
                Some(t) => Ok((t, total, chunks)),
                None => Err("[DONE] before any content".into()),
            };
        }
        if ev.data.contains("\"error\"") && !ev.data.contains("\"choices\"") {
            return Err(format!("error chunk: {}", ev.data));
        }
        if ev.data.contains("\"content\"") {
            chunks += 1;
            ttft.get_or_insert_with(|| due.elapsed().as_micros() as u64);
        }
    }
    Err("stream ended without [DONE]".into())
}
