//! The publisher of `fanout` and `soak`: real echo-model runs started on a
//! fixed schedule, so the offered event rate is what `--rate` says.
//!
//! Issue 15: the publisher used to keep `round(rate x delay_ms / 1000)`
//! closed-loop runs going, which is one run for every rate the published
//! commands used (10, 30 and 100 events/s all offered the same load: one
//! run after the other). Now run `i` starts at `t0 + i x E / rate`, open
//! loop (whether or not earlier runs have ended), where `E` is the number of
//! events one run publishes on the agent's channel, measured by a
//! calibration run. Offered events/s = runs started per second x `E`.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs in flight at most; a start due while this many are running is
/// skipped and counted (the machine is saturated: the report says so).
const MAX_IN_FLIGHT: u64 = 4096;

/// When each run starts: `runs_per_s`, open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub runs_per_s: f64,
}

impl Schedule {
    /// The runs/s that offer `events_per_s` when each run publishes
    /// `events_per_run` events.
    pub fn for_events(events_per_s: f64, events_per_run: f64) -> Self {
        Self {
            runs_per_s: events_per_s / events_per_run.max(1.0),
        }
    }

    /// Run `i`'s start, from `t0`.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.runs_per_s.max(f64::MIN_POSITIVE))
    }

    /// Starts every run due before `window` ends: sleeps until each one's
    /// due time with `sleep_until` (which answers false when the publisher
    /// was stopped), then calls `start(i)`. Returns the runs started. The
    /// clock is the caller's, so a test can drive it.
    pub async fn drive<S, F>(
        &self,
        window: Duration,
        mut sleep_until: S,
        mut start: impl FnMut(u64),
    ) -> u64
    where
        S: FnMut(Duration) -> F,
        F: Future<Output = bool>,
    {
        let mut i = 0;
        while self.due(i) < window {
            if !sleep_until(self.due(i)).await {
                break;
            }
            start(i);
            i += 1;
        }
        i
    }
}

/// Counters of a publisher.
#[derive(Debug, Default)]
pub struct Counts {
    pub started: AtomicU64,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    /// Starts skipped because [`MAX_IN_FLIGHT`] runs were running.
    pub skipped: AtomicU64,
    in_flight: AtomicU64,
}

/// Real echo runs on one agent, started on a [`Schedule`].
pub struct Publisher {
    stop: CancellationToken,
    driver: JoinSet<()>,
    pub counts: Arc<Counts>,
    pub schedule: Schedule,
    pub events_per_run: f64,
}

/// Where runs are posted, and what.
#[derive(Clone)]
struct Poster {
    client: reqwest::Client,
    /// Run `i` is posted to `endpoints[i % len]` (one agent's messages
    /// each, or nchan's publisher location).
    endpoints: Arc<[String]>,
    key: String,
    body: Value,
    /// Whether each publish carries a first-event stamp (`pub@<µs>@`).
    stamp: bool,
    /// `Some(pad)`: an nchan publisher, posting `{"data":"<stamp> <pad>"}`
    /// rather than starting a run.
    nchan: Option<String>,
}

impl Poster {
    /// Posts one run and waits for its JSON answer (sent once it ended);
    /// the events it published on the agent channel: its messages plus the
    /// `user_message`, which the answer leaves out. An nchan publish is one
    /// event.
    async fn run(&self, i: u64) -> Option<u64> {
        let endpoint = &self.endpoints[i as usize % self.endpoints.len()];
        if let Some(pad) = &self.nchan {
            let body = json!({"data": format!("{} {pad}", crate::client::event::stamp())});
            let resp = self.client.post(endpoint).json(&body).send().await;
            return resp.ok()?.status().is_success().then_some(1);
        }
        let mut req = self.client.post(endpoint).bearer_auth(&self.key);
        req = match self.stamp {
            true => {
                let text = self.body["message"].as_str().unwrap_or("");
                let mut body = self.body.clone();
                body["message"] = format!("{} {text}", crate::client::event::stamp()).into();
                req.json(&body)
            }
            false => req.json(&self.body),
        };
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        Some(v["messages"].as_array()?.len() as u64 + 1)
    }
}

/// A publisher that knows how many events one run publishes.
#[derive(Clone)]
pub struct Calibrated {
    poster: Poster,
    pub events_per_run: f64,
    /// How long the calibration run took, start to answer: about how long
    /// each run stays in flight on an idle gateway.
    pub run_secs: f64,
}

impl Publisher {
    /// Posts one run of `words` words to count its events (it ends before
    /// this returns, so the caller can take its baselines after it).
    pub async fn calibrate(
        url: &str,
        key: &str,
        agent_id: &str,
        words: usize,
    ) -> anyhow::Result<Calibrated> {
        Self::calibrate_with(url, key, agent_id, words, false).await
    }

    /// [`Publisher::calibrate`], every run's message stamped for
    /// first-event latency (the stamp is one more word, so it is in the
    /// calibration run too).
    pub async fn calibrate_stamped(
        url: &str,
        key: &str,
        agent_id: &str,
        words: usize,
    ) -> anyhow::Result<Calibrated> {
        Self::calibrate_with(url, key, agent_id, words, true).await
    }

    async fn calibrate_with(
        url: &str,
        key: &str,
        agent_id: &str,
        words: usize,
        stamp: bool,
    ) -> anyhow::Result<Calibrated> {
        let text = (0..words)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let poster = Poster {
            client: crate::tls::client_builder().no_proxy().build()?,
            endpoints: [format!("{url}/v1/agents/{agent_id}/messages")].into(),
            key: key.to_owned(),
            body: json!({"message": text, "stream_tokens": true}),
            stamp,
            nchan: None,
        };
        let started = std::time::Instant::now();
        let events = poster
            .run(0)
            .await
            .ok_or_else(|| anyhow::anyhow!("the calibration run failed"))?;
        Ok(Calibrated {
            poster,
            events_per_run: events as f64,
            run_secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Stops starting runs, and cancels the requests of those in flight.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.driver.join_next().await.is_some() {}
    }
}

impl Calibrated {
    /// A publisher of one-event messages to nchan's publisher location
    /// `endpoint`, each stamped and padded with `pad_bytes` bytes (to the
    /// size of the events it is compared with).
    pub fn nchan(endpoint: &str, pad_bytes: usize) -> anyhow::Result<Self> {
        let poster = Poster {
            client: crate::tls::client_builder().no_proxy().build()?,
            endpoints: [endpoint.to_owned()].into(),
            key: String::new(),
            body: Value::Null,
            stamp: true,
            nchan: Some("x".repeat(pad_bytes)),
        };
        Ok(Self {
            poster,
            events_per_run: 1.0,
            run_secs: 0.0,
        })
    }

    /// The same runs posted to each of `agent_ids` (on the gateway at
    /// `url`) in turn; their agents must publish as many events per run
    /// as the calibrated one (the same model and settings).
    pub fn across(mut self, url: &str, agent_ids: &[String]) -> Self {
        assert!(!agent_ids.is_empty(), "runs go to at least one agent");
        self.poster.endpoints = agent_ids
            .iter()
            .map(|id| format!("{url}/v1/agents/{id}/messages"))
            .collect();
        self
    }

    /// Starts runs so that `events_per_s` events are offered per second
    /// for `window`, from now.
    pub fn start(self, events_per_s: f64, window: Duration) -> Publisher {
        let schedule = Schedule::for_events(events_per_s, self.events_per_run);
        let stop = CancellationToken::new();
        let counts = Arc::new(Counts::default());
        let mut driver = JoinSet::new();
        let (c, s, poster) = (counts.clone(), stop.clone(), self.poster);
        driver.spawn(async move {
            let mut runs = JoinSet::new();
            let t0 = tokio::time::Instant::now();
            let sleep = |due: Duration| {
                let s = s.clone();
                async move {
                    tokio::select! {
                        _ = s.cancelled() => false,
                        _ = tokio::time::sleep_until(t0 + due) => true,
                    }
                }
            };
            schedule
                .drive(window, sleep, |i| launch(&mut runs, &poster, i, &c, &s))
                .await;
            s.cancelled().await;
            runs.shutdown().await;
        });
        Publisher {
            stop,
            driver,
            counts,
            schedule,
            events_per_run: self.events_per_run,
        }
    }
}

/// The publisher's figures for a report.
impl Publisher {
    pub fn json(&self) -> Value {
        let c = &self.counts;
        json!({
            "events_per_run": self.events_per_run, "runs_per_s": self.schedule.runs_per_s,
            "runs_started": c.started.load(Relaxed), "runs_done": c.done.load(Relaxed),
            "run_errors": c.errors.load(Relaxed), "runs_skipped": c.skipped.load(Relaxed),
        })
    }
}

/// Starts one run unless too many are in flight.
fn launch(
    runs: &mut JoinSet<()>,
    poster: &Poster,
    i: u64,
    counts: &Arc<Counts>,
    stop: &CancellationToken,
) {
    while runs.try_join_next().is_some() {}
    if counts.in_flight.load(Relaxed) >= MAX_IN_FLIGHT {
        counts.skipped.fetch_add(1, Relaxed);
        return;
    }
    counts.started.fetch_add(1, Relaxed);
    counts.in_flight.fetch_add(1, Relaxed);
    let (poster, counts, stop) = (poster.clone(), counts.clone(), stop.clone());
    runs.spawn(async move {
        let res = tokio::select! {
            _ = stop.cancelled() => None,
            r = poster.run(i) => Some(r),
        };
        counts.in_flight.fetch_sub(1, Relaxed);
        match res {
            Some(Some(_)) => counts.done.fetch_add(1, Relaxed),
            Some(None) => counts.errors.fetch_add(1, Relaxed),
            None => 0,
        };
    });
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Drives a schedule on a simulated clock; returns each start's time.
    fn starts(s: Schedule, window: Duration) -> Vec<Duration> {
        let now = Cell::new(Duration::ZERO);
        let mut at = Vec::new();
        let sleep = |due: Duration| {
            assert!(due >= now.get(), "the schedule never goes back");
            now.set(due);
            std::future::ready(true)
        };
        let n = futures::executor::block_on(s.drive(window, sleep, |_| at.push(now.get())));
        assert_eq!(n as usize, at.len());
        at
    }

    /// The published commands' rates now offer different loads: with 57
    /// events per run, 10, 30 and 100 events/s over 20 s start 4, 11 and
    /// 36 runs (the old `runs_for` gave one closed-loop run for all three).
    #[test]
    fn the_offered_event_rate_is_the_asked_one() {
        let window = Duration::from_secs(20);
        for (rate, runs) in [(10.0, 4), (30.0, 11), (100.0, 36), (1000.0, 351)] {
            let s = Schedule::for_events(rate, 57.0);
            let at = starts(s, window);
            assert_eq!(at.len(), runs, "{rate} events/s");
            // Offered over the window: runs x events per run / seconds,
            // within one run's worth of the asked rate.
            let offered = at.len() as f64 * 57.0 / window.as_secs_f64();
            assert!((offered - rate).abs() <= 57.0 / 20.0, "{rate}: {offered}");
            // Evenly spaced, the first at once.
            assert_eq!(at[0], Duration::ZERO);
            let gap = Duration::from_secs_f64(57.0 / rate);
            for w in at.windows(2) {
                let d = w[1] - w[0];
                assert!(
                    d.abs_diff(gap) < Duration::from_micros(1),
                    "{d:?} vs {gap:?}"
                );
            }
        }
    }

    #[test]
    fn a_stop_ends_the_schedule() {
        let s = Schedule { runs_per_s: 10.0 };
        let mut calls = 0;
        let sleep = |_| {
            calls += 1;
            std::future::ready(calls <= 3)
        };
        let n = futures::executor::block_on(s.drive(Duration::from_secs(60), sleep, |_| {}));
        assert_eq!(n, 3);
    }
}
