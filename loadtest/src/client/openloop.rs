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
use tokio::sync::Mutex;

use super::timing::{self, Route, Timing};
use crate::hist::{AtomicHist, Hist};

/// An OpenAI-compatible endpoint to drive.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// Base URL ending in `/v1`.
    pub base: String,
    pub key: Option<String>,
    /// The model (OpenAI route), or the agent's id (agent route).
    pub model: String,
    pub route: Route,
    /// Chat sessions to spread requests over (request `i` goes to
    /// `sessions[i % len]`): `user` names on the OpenAI route, session ids
    /// on the agent route; none: no `user`, the agent's default session.
    /// Agent runs need several: one session's growing history would be
    /// read by every run.
    pub sessions: Vec<String>,
}

impl Target {
    /// The URL every request of this target goes to.
    fn url(&self) -> String {
        match self.route {
            Route::OpenAi => format!("{}/chat/completions", self.base),
            Route::Agent => format!("{}/agents/{}/messages", self.base, self.model),
        }
    }

    /// Request `i`'s body.
    fn body(&self, i: u64) -> Bytes {
        let session = (!self.sessions.is_empty())
            .then(|| self.sessions[(i % self.sessions.len() as u64) as usize].clone());
        match self.route {
            Route::OpenAi => body_for(&self.model, session),
            Route::Agent => {
                let mut v = serde_json::json!({
                    "message": "Say something.", "stream": true, "stream_tokens": true,
                });
                if let Some(s) = session {
                    v["session_id"] = s.into();
                }
                serde_json::to_vec(&v).unwrap_or_default().into()
            }
        }
    }
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
    /// Time to the first non-empty content, from the intended send time
    /// (see [`timing`]).
    pub ttft: Hist,
    /// Time to the first event the run (agent route) or the provider
    /// produced, from the intended send time.
    pub first_event: Hist,
    /// Time to `[DONE]`, from the intended send time.
    pub total: Hist,
    /// Non-empty content pieces received per request (sanity: K).
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
        self.first_event.merge(&other.first_event);
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

/// A client fit for thousands of requests per second on loopback; HTTP/1.1
/// (with keep-alive) everywhere, so that weir and nginx are compared on
/// the same protocol, over TLS too.
pub fn client() -> reqwest::Client {
    crate::tls::client_builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain reqwest client builds")
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
    first_event: AtomicHist,
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
    let url = target.url();
    let shared = Arc::new(Shared {
        ttft: AtomicHist::default(),
        first_event: AtomicHist::default(),
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
        let body = target.body(i);
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = &target.key {
            req = req.bearer_auth(k);
        }
        let shared = shared.clone();
        let due = due.into_std();
        let route = target.route;
        tasks.spawn(async move {
            match one(req, route, due).await {
                Ok(t) => {
                    shared.ttft.record(t.ttft_us);
                    shared.first_event.record(t.first_event_us);
                    shared.total.record(t.total_us);
                    shared.chunks.fetch_add(t.chunks, Relaxed);
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
        first_event: shared.first_event.snapshot(),
        total: shared.total.snapshot(),
        chunks_per_req: shared.chunks.load(Relaxed) as f64 / ok.max(1) as f64,
        first_error,
        load: crate::sys::loadavg(),
        cpu_secs: None,
    }
}

/// One streamed request, timed from `due` (see [`timing`]).
async fn one(req: reqwest::RequestBuilder, route: Route, due: Instant) -> Result<Timing, String> {
    let resp = req.send().await.map_err(|e| format!("send: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    timing::read(route, resp.bytes_stream(), || {
        due.elapsed().as_micros() as u64
    })
    .await
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
            first_event: total.clone(),
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
