//! `weir worker`: a process that only executes runs from the Redis run
//! queue. It takes the settings of `weir serve` (store, Redis, provider,
//! `--workers`, `--run-claim-secs`, `--grace-secs`) but the listener's, and
//! serves nothing but
//! `/healthz`, `/readyz` and `/metrics` on `--listen`, for an orchestrator's
//! probes and a Prometheus scrape. Its runtime is the gateway's in the queued
//! mode ([`super::Queued`]). The probes are plain HTTP: the listener's TLS
//! and HTTP/2 flags are `weir serve`'s alone
//! ([`crate::config::ServeCommand`]), so `weir worker --tls-cert …` is
//! refused by the parser, and a config file shared with the gateways may
//! set them.
//!
//! On SIGTERM it stops taking runs, lets the ones it holds finish for
//! `--grace-secs`, cancels what is left (each ends with `done`,
//! `cancelled`), acknowledges them all and exits.

use std::{future::Future, future::IntoFuture, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{bus::Bus, config::ServeConfig, domain::ErrorCode, store::Store};

/// Time the runs cancelled at the end of the grace period get to publish
/// their `done` and be acknowledged.
const RUN_END_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Probe {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    draining: CancellationToken,
}

/// Runs a worker until `shutdown` resolves, then drains it.
pub async fn run_worker(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::providers::check(&cfg)
        .map_err(|e| anyhow::anyhow!("[[providers]] / [[routes]]: {e}"))?;
    if !cfg.uses_redis() {
        anyhow::bail!(
            "weir worker needs --redis (WEIR_REDIS_URL): it takes runs from the Redis run queue"
        );
    }
    if cfg.workers == 0 {
        anyhow::bail!("--workers (WEIR_WORKERS) must be at least 1 for weir worker");
    }
    // The recorder before anything is counted: a counter bumped before it
    // exists is lost (a gateway installs it as its metered bus is built).
    crate::metrics::init();
    let cfg = Arc::new(cfg);
    let store = crate::store::open(&cfg.data).await?;
    let bus = crate::bus::build(&cfg)?;
    let draining = CancellationToken::new();
    let tracker = TaskTracker::new();
    let runtime = super::build_runtime(&cfg, store.clone(), bus.clone(), &tracker, &draining)?;
    // The run slots of the runs this worker executes are leases it
    // refreshes and gives back (its own tracker: they outlive the runs').
    let edge = run_slots(&cfg)?;
    runtime.set_run_slots(edge.runs.clone());
    // Runs executed here record their usage here.
    let usage = Arc::new(crate::usage::UsageMeter::default());
    runtime.set_usage(usage.clone());
    // Runs ending here queue their webhook events in the store; gateways
    // deliver them.
    let webhooks = crate::webhooks::Hub::notifier_only(&cfg, &store);
    runtime.set_notifier(webhooks.notifier.clone());
    let edge_tasks = TaskTracker::new();
    edge.start(&edge_tasks);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (WEIR_LISTEN)", cfg.listen))?;
    bus.start();
    runtime.start(&tracker);
    // What this worker's runs meter (tokens, run starts) goes to the store
    // like a gateway's.
    let usage = crate::usage::writer::start(usage, store.clone());
    let probe = Probe {
        store,
        bus,
        draining: draining.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .with_state(probe);
    let consumer = runtime.worker_name().unwrap_or_default().to_owned();
    tracing::info!(addr = %listener.local_addr()?, %consumer, slots = cfg.workers, "weir worker started");
    let stopped = draining.clone();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .into_future(),
    );
    shutdown.await;
    tracing::info!("shutdown requested: taking no more runs, finishing the ones held");
    draining.cancel();
    tracker.close();
    let grace = Duration::from_secs(cfg.grace_secs);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_secs = cfg.grace_secs,
            "grace period over: cancelling the runs still going"
        );
        runtime.stop_runs();
        if tokio::time::timeout(RUN_END_WAIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("runs did not end in time; exiting anyway (they will be reclaimed)");
        }
    }
    let _ = server.await;
    usage.close().await;
    webhooks.notifier.flush(RUN_END_WAIT).await;
    edge.close().await;
    edge_tasks.close();
    edge_tasks.wait().await;
    Ok(())
}

/// The edge of a worker: only its run slots (leases in Redis) are used.
fn run_slots(cfg: &ServeConfig) -> anyhow::Result<Arc<crate::edge::Edge>> {
    let redis = crate::bus::redis::RedisBusConfig::from_serve(cfg)
        .map(|r| r.client())
        .transpose()?;
    let edge = crate::edge::Edge::new(&cfg.edge, redis, &cfg.redis.prefix)
        .context("run slots (WEIR_REDIS_URL)")?;
    Ok(Arc::new(edge))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 while taking runs with the store and Redis reachable; 503 naming
/// what is missing, or while draining.
async fn readyz(State(p): State<Probe>) -> impl IntoResponse {
    let unavailable = |msg: String| {
        let code = ErrorCode::Unavailable;
        let body = json!({"error": {"code": code, "message": msg}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    };
    if p.draining.is_cancelled() {
        return unavailable("draining: the worker is shutting down".into());
    }
    if let Err(e) = p.store.ping().await {
        return unavailable(format!("store unreachable: {e}"));
    }
    if let Err(e) = p.bus.ping().await {
        return unavailable(format!("bus unreachable: {e}"));
    }
    (
        StatusCode::OK,
        Json(json!({"status": "ready", "store": "ok", "bus": "ok"})),
    )
}
