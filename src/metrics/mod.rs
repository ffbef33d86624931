//! Prometheus metrics, served as text at `GET /metrics` (public, like
//! `/healthz`). The names and labels are listed in `protocol/metrics.md`.
//!
//! One process-wide recorder (the `metrics` facade allows one) is installed
//! on first use. The hot paths (a connection opening, an event published or
//! delivered) touch pre-registered handles kept in a [`OnceLock`]: one atomic
//! add each, no key lookup, no allocation. Label values are a small fixed set
//! of `&'static str`, so the number of series stays bounded.
//!
//! - [`http`]: the request latency (by matched route, recorded by the
//!   outer middleware, [`crate::http::layers`]) and the 429 counter.
//! - [`bus`]: [`MeteredBus`], counting publishes on any bus backend.
//! - [`health`]: store and bus up/down gauges, refreshed periodically and by
//!   `/readyz`.
//! - [`provider`]: a provider's handles for what every relayed request
//!   records.

pub mod bus;
pub mod health;
pub mod http;
pub mod provider;

use std::{sync::OnceLock, time::Duration};

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Unit};
use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use bus::MeteredBus;

use crate::domain::{Channel, RunStatus};

/// Histogram buckets (seconds) for every `*_seconds` metric: from 1 ms
/// (REST on a warm cache) to 5 minutes (a long agent run).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid histogram buckets: {0}")]
    Build(String),
    #[error("another metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// The process's Prometheus handle; `None` if an embedder installed its own
/// recorder first (then `/metrics` says so and the handles record there).
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match install() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "/metrics disabled");
                None
            }
        })
        .as_ref()
}

fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    describe();
    Ok(handle)
}

/// Help text for every metric (shown as `# HELP` lines).
fn describe() {
    describe_gauge!(
        "weir_connections_open",
        "Open streaming connections, by kind (sse, ws)."
    );
    describe_counter!(
        "weir_connections_accepted_total",
        "Connections accepted, by serving loop (one per core with --runtime per-core, else 0)."
    );
    describe_counter!(
        "weir_events_published_total",
        "Events published on the bus, by channel kind (agent, logs)."
    );
    describe_counter!(
        "weir_events_delivered_total",
        "Events handed to stream subscribers (one per event per subscriber)."
    );
    describe_counter!(
        "weir_lagged_closes_total",
        "Streams closed because the client fell behind, by kind (sse, ws)."
    );
    describe_counter!(
        "weir_rate_limited_total",
        "429 answers, by reason (the error code)."
    );
    describe_histogram!(
        "weir_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head, by method, matched route and status class."
    );
    describe_histogram!(
        "weir_run_duration_seconds",
        Unit::Seconds,
        "Agent run durations, by final status."
    );
    describe_histogram!(
        "weir_upstream_duration_seconds",
        Unit::Seconds,
        "Time to the provider's response head, by caller (agent, relay) and provider."
    );
    describe_counter!(
        "weir_upstream_errors_total",
        "Provider failures, by caller, provider and kind (connect, timeout, status, rate_limited, broken)."
    );
    describe_counter!(
        "weir_provider_attempts_total",
        "Attempts at a provider before the first byte, by provider and outcome (ok or the failure's kind)."
    );
    describe_gauge!(
        "weir_provider_circuit",
        "A provider's circuit breaker: 0 closed, 1 open, 2 half-open."
    );
    describe_gauge!(
        "weir_bus_up",
        "1 if the bus answered its last check, else 0, by backend (memory, redis)."
    );
    describe_counter!(
        "weir_store_requests_total",
        "Requests this gateway sent to `weir store` (--store-url), by store method."
    );
    describe_counter!(
        "weir_bus_replays_total",
        "Resumes (a subscribe with a cursor) on the Redis bus, by where their history was read."
    );
    describe_gauge!(
        "weir_store_up",
        "1 if the store answered its last check, else 0."
    );
}

/// Pre-registered handles for the per-event and per-connection paths.
struct Handles {
    sse_open: Gauge,
    ws_open: Gauge,
    published_agent: Counter,
    published_logs: Counter,
    published_other: Counter,
    delivered: Counter,
    lagged_sse: Counter,
    lagged_ws: Counter,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        // Handles made before the recorder exists would be no-ops.
        let _ = prometheus();
        Handles {
            sse_open: ::metrics::gauge!("weir_connections_open", "kind" => "sse"),
            ws_open: ::metrics::gauge!("weir_connections_open", "kind" => "ws"),
            published_agent: ::metrics::counter!("weir_events_published_total", "kind" => "agent"),
            published_logs: ::metrics::counter!("weir_events_published_total", "kind" => "logs"),
            published_other: ::metrics::counter!("weir_events_published_total", "kind" => "other"),
            delivered: ::metrics::counter!("weir_events_delivered_total"),
            lagged_sse: ::metrics::counter!("weir_lagged_closes_total", "kind" => "sse"),
            lagged_ws: ::metrics::counter!("weir_lagged_closes_total", "kind" => "ws"),
        }
    })
}

/// Makes sure the recorder and every handle exist, so `/metrics` lists the
/// metrics (at zero) before anything happened. Called by `Gateway::bind`.
pub fn init() {
    handles();
}

/// Drains buffered histogram samples into their buckets (a scrape does it
/// too); bounds memory when nobody scrapes.
pub fn upkeep() {
    if let Some(h) = prometheus() {
        h.run_upkeep();
    }
}

/// A streaming transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Sse,
    Ws,
}

/// Counts one open connection while it lives.
#[must_use = "the connection counts as open only while the guard lives"]
pub struct ConnGuard(&'static Gauge);

impl ConnGuard {
    pub fn open(kind: Conn) -> Self {
        let h = handles();
        let gauge = match kind {
            Conn::Sse => &h.sse_open,
            Conn::Ws => &h.ws_open,
        };
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// One event published on `channel` (`agent:…`, `logs:…`).
pub fn event_published(channel: &Channel) {
    let h = handles();
    match channel {
        Channel::Agent(_) => h.published_agent.increment(1),
        Channel::Logs(_) => h.published_logs.increment(1),
        Channel::Run(_) => h.published_other.increment(1),
    }
}

/// One event handed to one subscriber.
pub fn event_delivered() {
    handles().delivered.increment(1);
}

/// A stream closed because its client lagged.
pub fn lagged_close(kind: Conn) {
    let h = handles();
    match kind {
        Conn::Sse => h.lagged_sse.increment(1),
        Conn::Ws => h.lagged_ws.increment(1),
    }
}

/// One request sent to a remote store (`method`: the store method, a
/// fixed set of names).
pub fn store_request(method: &str) {
    ::metrics::counter!("weir_store_requests_total", "method" => method.to_owned()).increment(1);
}

/// A resume on the Redis bus replayed its history from this process's
/// memory (`true`) or from the Redis stream.
pub fn bus_replay(from_memory: bool) {
    let source = if from_memory { "memory" } else { "redis" };
    ::metrics::counter!("weir_bus_replays_total", "source" => source).increment(1);
}

/// An agent run ended with `status` (`completed`, `cancelled`, `failed`)
/// after `took`.
pub fn run_finished(status: RunStatus, took: Duration) {
    let status = match status {
        RunStatus::Completed | RunStatus::Cancelled | RunStatus::Failed => status.as_str(),
        RunStatus::Running | RunStatus::WaitingApproval => "other",
    };
    ::metrics::histogram!("weir_run_duration_seconds", "status" => status)
        .record(took.as_secs_f64());
}

/// What happened to a run in the Redis run queue, seen by this process:
/// `queued` (a gateway queued it), `taken` (a worker took a new one),
/// `reclaimed` (a worker took one over from a dead or silent worker),
/// `worker_lost` (ended because the worker that began it died),
/// `claim_lost` (another worker took over a run this process was running).
pub fn queue_run(outcome: &'static str) {
    ::metrics::counter!("weir_queue_runs_total", "outcome" => outcome).increment(1);
}

/// Runs this process holds from the queue now (running or about to).
pub fn queue_held(n: usize) {
    ::metrics::gauge!("weir_queue_runs_held").set(n as f64);
}

/// Who called the provider.
#[derive(Debug, Clone, Copy)]
pub enum Upstream {
    /// An agent run with an `upstream/…` model.
    Agent,
    /// `/v1/chat/completions` relayed as is.
    Relay,
}

impl Upstream {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Relay => "relay",
        }
    }
}

/// A provider call failed: `kind` is `connect`, `timeout`, `status` or `broken`.
pub fn upstream_error(caller: Upstream, provider: &str, kind: &'static str) {
    ::metrics::counter!("weir_upstream_errors_total", "caller" => caller.label(), "provider" => provider.to_owned(), "kind" => kind)
        .increment(1);
}

/// One attempt at a provider ended (`ok`, or the failure's kind); its
/// circuit is now `circuit` (0 closed, 1 open, 2 half-open).
pub fn provider_attempt(provider: &str, outcome: &'static str, circuit: f64) {
    ::metrics::counter!("weir_provider_attempts_total", "provider" => provider.to_owned(), "outcome" => outcome)
        .increment(1);
    ::metrics::gauge!("weir_provider_circuit", "provider" => provider.to_owned()).set(circuit);
}

/// `GET /metrics`.
/// Prometheus text exposition format 0.0.4 (also served by `weir worker`).
pub async fn render() -> Response {
    let body = match prometheus() {
        Some(h) => h.render(),
        None => "# metrics disabled: another recorder is installed in this process\n".to_owned(),
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of an exported series in this process's registry.
    fn value(series: &str) -> f64 {
        let text = prometheus().expect("the recorder installs").render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn a_lagged_sse_error_frame_is_counted() {
        let series = r#"weir_lagged_closes_total{kind="sse"}"#;
        let before = value(series);
        use crate::domain::ErrorCode;
        crate::stream::sse::error_frame(ErrorCode::Lagged, "behind", Some(3));
        crate::stream::sse::error_frame(ErrorCode::HistoryExpired, "gone", None);
        assert!(value(series) >= before + 1.0);
    }

    #[test]
    fn runs_are_bucketed_by_known_status_only() {
        // Installed first: recorded before the recorder is, a run is lost
        // (the test failed when it ran before the others installed it).
        prometheus().expect("recorder");
        run_finished(RunStatus::Completed, Duration::from_millis(30));
        run_finished(RunStatus::Running, Duration::from_millis(30));
        let text = prometheus().expect("recorder").render();
        assert!(text.contains(r#"weir_run_duration_seconds_bucket{status="completed",le="0.05"}"#));
        assert!(text.contains(r#"weir_run_duration_seconds_count{status="other"}"#));
        assert!(!text.contains(r#"status="running""#));
    }
}
