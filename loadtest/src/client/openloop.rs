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
    /// CPU seconds (user + system) the target's own processes spent during
    /// the step, when they are known (see `ramp_together`); /proc counts in
    /// 10 ms ticks, so a step needs ~1 s of CPU for a figure within 1 %.
    pub cpu_secs: Option<f64>,
}

impl Step {
    /// Folds `other` (the same rate, another slice of time) into this step:
    /// counts and histograms add up, the completion rate is over both
    /// slices' time.
    pub fn merge(&mut self, other: Step) {
        let secs = |s: &Step| s.ok as f64 / s.achieved.max(f64::MIN_POSITIVE);
        let elapsed = secs(self) + secs(&other);
        let chunks = self.chunks_per_req * self.ok as f64 + other.chunks_per_req * other.ok as f64;
        self.sent += other.sent;
        self.ok += other.ok;
        self.errors += other.errors;
        self.achieved = if elapsed > 0.0 {
            self.ok as f64 / elapsed
        } else {
            0.0
        };
        self.chunks_per_req = chunks / self.ok.max(1) as f64;
        self.ttft.merge(&other.ttft);
        self.total.merge(&other.total);
        self.first_error = self.first_error.take().or(other.first_error);
        self.load = other.load;
        self.cpu_secs = match (self.cpu_secs, other.cpu_secs) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    /// CPU microseconds the target's processes spent per completed request.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        self.cpu_secs
            .filter(|_| self.ok > 0)
            .map(|s| s * 1e6 / self.ok as f64)
    }
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
    // The rate is over the schedule's time, not the 20 ms lead before it.
    let started = t0.into_std();
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
        cpu_secs: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(ok: u64, achieved: f64, latencies: &[u64], cpu: Option<f64>) -> Step {
        let mut total = Hist::default();
        for &us in latencies {
            total.record(us);
        }
        Step {
            rate: 100.0,
            sent: ok,
            ok,
            errors: 0,
            achieved,
            ttft: total.clone(),
            total,
            chunks_per_req: 4.0,
            first_error: None,
            load: 1.0,
            cpu_secs: cpu,
        }
    }

    #[test]
    fn merged_slices_add_up_counts_time_latencies_and_cpu() {
        // 50 requests in 0.5 s, then 100 in 1.0 s: 150 in 1.5 s.
        let mut a = step(50, 100.0, &[1_000; 50], Some(0.010));
        a.merge(step(100, 100.0, &[3_000; 100], Some(0.020)));
        assert_eq!((a.sent, a.ok), (150, 150));
        assert!((a.achieved - 100.0).abs() < 1e-9, "{}", a.achieved);
        assert_eq!(a.total.count(), 150);
        assert!(a.total.quantile_ms(0.5) > 2.0, "the larger half sets p50");
        assert!((a.cpu_us_per_request().unwrap() - 200.0).abs() < 1e-6);
        // A slice without a CPU figure keeps the other's.
        a.merge(step(0, 0.0, &[], None));
        assert_eq!(a.ok, 150);
        assert!(a.cpu_secs.is_some());
    }
}
