//! [`Gateway`]: builds the shared state from a [`ServeConfig`], binds, serves
//! and drains. `main` and the tests start weir the same way:
//! `Gateway::bind(cfg).await?.run(shutdown_future).await`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{redis::RedisBusConfig, Bus},
    config::{RuntimeMode, ServeConfig},
    http::serve::Transport,
    keys::{self, KeyCache},
    state::AppState,
    store::{Store, StoreError, SCOPES},
    tls::Tls,
};

/// How often batched `last_used_at` updates are written to the store.
const USAGE_FLUSH: Duration = Duration::from_secs(5);

/// A bound, not yet serving, gateway.
pub struct Gateway {
    /// One per serving loop (`--runtime per-core`: one per core, sharing
    /// the port), the first served by the caller's runtime.
    listeners: Vec<TcpListener>,
    state: AppState,
    /// TLS on the listener (`--tls-cert`), loaded at bind so that a bad
    /// file stops start-up.
    tls: Option<Tls>,
}

impl Gateway {
    /// Opens the store, seeds the bootstrap key, builds the bus, runtime and
    /// edge, and binds the listener (port 0 picks a free port). Nothing runs
    /// in the background before [`Self::run`]. A Redis setting that cannot
    /// work is an error naming it; Redis being down is not (`/readyz` says so).
    pub async fn bind(cfg: ServeConfig) -> anyhow::Result<Self> {
        crate::providers::check(&cfg).context("[[providers]] / [[routes]]")?;
        let tls = cfg.transport.tls_files().map(Tls::load).transpose()?;
        let cfg = Arc::new(cfg);
        let store = crate::store::open(&cfg.data).await?;
        if let Some(secret) = &cfg.bootstrap_key {
            bootstrap_key(store.as_ref(), secret)
                .await
                .context("seeding WEIR_BOOTSTRAP_KEY")?;
        }
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let bus = crate::bus::build(&cfg)?;
        // Counts publishes whatever the backend (/metrics).
        let bus: Arc<dyn Bus> = Arc::new(crate::metrics::MeteredBus::new(bus));
        let runtime =
            crate::work::build_runtime(&cfg, store.clone(), bus.clone(), &tracker, &shutdown)?;
        if cfg.cores > 0 && cfg.runtime == RuntimeMode::Shared {
            tracing::warn!("--cores is read only with --runtime per-core; ignored");
        }
        let loops = crate::cores::count(&cfg);
        let listeners = crate::cores::bind(cfg.listen, loops)
            .with_context(|| format!("cannot listen on {} (WEIR_LISTEN)", cfg.listen))?;
        let redis = RedisBusConfig::from_serve(&cfg)
            .map(|r| r.client())
            .transpose()?;
        let edge = crate::edge::Edge::new(&cfg.edge, redis, &cfg.redis.prefix)
            .context("edge limits (WEIR_REDIS_URL)")?;
        runtime.set_run_slots(edge.runs.clone());
        let usage = Arc::new(crate::usage::UsageMeter::default());
        runtime.set_usage(usage.clone());
        let webhooks = crate::webhooks::Hub::open(&cfg, &store).context("webhooks")?;
        runtime.set_notifier(webhooks.notifier.clone());
        let audit = crate::audit::AuditLog::new(&cfg.audit);
        let state = AppState::new(crate::state::Shared {
            checks: Default::default(),
            drain: crate::stream::drain::Drain::new(drain_spread(&cfg)),
            config: cfg,
            store,
            bus,
            keys: Arc::new(KeyCache::default()),
            runtime: Arc::new(runtime),
            shutdown,
            tracker,
            edge: Arc::new(edge),
            audit: Arc::new(audit),
            usage,
            webhooks,
        });
        Ok(Self {
            listeners,
            state,
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0]
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state (tests use it to reach the real store directly).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The listener's TLS (to reload it by hand: SIGHUP does the same).
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` 503 at once
    /// while the listener still accepts for `--drain-delay-secs`; then no
    /// new connections, and idle streams (WebSockets close with 1001, SSE
    /// tails end after a `retry:`) are closed in random batches over
    /// `--drain-spread-secs`; running runs (and the streams following them)
    /// get the grace period to finish with `done`, then are cancelled;
    /// pending key usage and usage sums are written and this gateway's
    /// stream leases are given back.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            mut listeners,
            state,
            tls,
        } = self;
        let listener = listeners.remove(0);
        tracing::info!(
            addr = %listener.local_addr()?,
            loops = listeners.len() + 1,
            tls = tls.is_some(),
            http2 = state.config.transport.http2,
            "weir listening"
        );
        if let Some(tls) = &tls {
            state
                .tracker
                .spawn(tls.clone().watch(state.shutdown.clone()));
        }
        let transport = Transport {
            tls: tls.map(|t| t.acceptor),
            http2: state.config.transport.http2,
            max_streams: state.config.transport.http2_max_streams,
            max_header_bytes: state.config.edge.max_header_bytes,
            max_body_bytes: state.config.max_body_bytes,
        };
        state.bus.start();
        state.runtime.start(&state.tracker);
        state.tracker.spawn(flush_key_usage(state.clone()));
        let usage = crate::usage::writer::start(state.usage.clone(), state.store.clone());
        state
            .audit
            .start(state.store.clone(), &state.tracker, &state.shutdown);
        state.tracker.spawn(crate::keys::control::apply(
            state.bus.control(),
            state.keys.clone(),
            state.shutdown.clone(),
        ));
        state
            .tracker
            .spawn(crate::metrics::health::run(state.clone()));
        let app = crate::http::build_router(state.clone());
        let token = state.shutdown.clone();
        state.edge.start(&state.tracker);
        state.webhooks.start_delivery(
            &state.config,
            state.store.clone(),
            &state.tracker,
            state.shutdown.clone(),
        );
        // Our own accept loop (not `axum::serve`) so hyper's per-connection
        // buffers and timeouts can be set; TCP_NODELAY is set there. The
        // router goes in once and each connection clones an `Arc` of it.
        let delay = Duration::from_secs(state.config.drain_delay_secs);
        let drain = state.drain.clone();
        let mut loops = start_loops(listeners, &app, &transport, &token)?;
        let serve = crate::http::serve::serve(listener, app, transport, async move {
            shutdown.await;
            drain.begin();
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutdown requested: /readyz 503, still accepting"
            );
            tokio::time::sleep(delay).await;
            tracing::info!("draining: the listener closes");
            token.cancel();
        });
        state.tracker.spawn(close_idle_streams(state.clone()));
        // Running runs keep their streams (and so their connections) open
        // through the grace period; `drain_timer` ends them after it.
        let timer = tokio::spawn(drain_timer(state.clone()));
        let serve = async {
            let (main, others) = tokio::join!(serve, loops.served());
            main.and(others)
        };
        let served = tokio::select! {
            r = serve => r.context("serving"),
            _ = after_hard_stop(&state) => {
                tracing::warn!("closing the connections still open");
                Ok(())
            }
        };
        state.shutdown.cancel();
        // Every request that could record a change has answered.
        state.audit.close();
        state.edge.close().await;
        state.tracker.close();
        tokio::select! {
            _ = state.tracker.wait() => {}
            _ = after_hard_stop(&state) => tracing::warn!("grace period over; terminating now"),
        }
        // Nothing meters any more (or is abandoned): the last usage sums,
        // and the webhook events of the runs that ended.
        usage.close().await;
        state.webhooks.notifier.flush(LAST_WAIT).await;
        timer.abort();
        loops.stop().await;
        served
    }
}

/// `--runtime per-core`: the other cores' loops, each serving its own
/// listener on its own thread until the listener closes (with loop 0's, at
/// `token`).
fn start_loops(
    listeners: Vec<TcpListener>,
    app: &axum::Router,
    transport: &Transport,
    token: &CancellationToken,
) -> anyhow::Result<crate::cores::Loops> {
    let (app, transport, token) = (app.clone(), transport.clone(), token.clone());
    crate::cores::Loops::start(listeners, move |l| {
        let stop = token.clone();
        crate::http::serve::serve(l, app.clone(), transport.clone(), async move {
            stop.cancelled().await
        })
    })
    .context("starting the per-core loops")
}

/// Time runs cancelled at the end of the grace period get to publish their
/// `done`, and streams to deliver it, before those streams are cut.
const RUN_END_WAIT: Duration = Duration::from_secs(3);
/// Time after the hard stop before whatever is left is abandoned.
const LAST_WAIT: Duration = Duration::from_secs(2);

/// The spread of idle-stream closes: `--drain-spread-secs`, within the
/// grace period.
fn drain_spread(cfg: &ServeConfig) -> Duration {
    Duration::from_secs(cfg.drain_spread_secs.min(cfg.grace_secs))
}

/// Once the listener closes: the idle streams, spread over the window.
async fn close_idle_streams(state: AppState) {
    state.shutdown.cancelled().await;
    state.drain.close_spread(&state.edge.hard_stop).await;
}

/// From the start of the drain: the grace period, then cancel the runs still
/// going, then (after [`RUN_END_WAIT`]) end every stream still open.
async fn drain_timer(state: AppState) {
    state.shutdown.cancelled().await;
    tokio::time::sleep(Duration::from_secs(state.config.grace_secs)).await;
    tracing::warn!(
        grace_secs = state.config.grace_secs,
        "grace period over: cancelling the runs still going"
    );
    state.runtime.stop_runs();
    tokio::time::sleep(RUN_END_WAIT).await;
    state.edge.hard_stop.cancel();
}

async fn after_hard_stop(state: &AppState) {
    state.edge.hard_stop.cancelled().await;
    tokio::time::sleep(LAST_WAIT).await;
}

/// Creates the bootstrap key (every scope, account `default`) unless it exists.
async fn bootstrap_key(store: &dyn Store, secret: &str) -> Result<(), StoreError> {
    let minted = keys::mint(
        "default",
        "bootstrap",
        vec![SCOPES[SCOPES.len() - 1].to_owned()],
        120,
        Some(secret),
    );
    match store.get_key(minted.new_key.id.as_str()).await {
        Ok(_) => return Ok(()),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    store.ensure_account("default").await?;
    store.create_key(minted.new_key).await?;
    tracing::info!("bootstrap key created");
    Ok(())
}

/// Writes `last_used_at` in batches, so auth on a warm key costs no store
/// round trip; a final flush runs on shutdown.
async fn flush_key_usage(state: AppState) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(USAGE_FLUSH) => false,
            _ = state.shutdown.cancelled() => true,
        };
        let used = state.keys.take_usage();
        if !used.is_empty() {
            if let Err(e) = state.store.touch_keys(used).await {
                tracing::warn!(error = %e, "could not record key usage");
            }
        }
        if stop {
            return;
        }
    }
}
