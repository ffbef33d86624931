//! Runs as work on Redis: with `--redis`, a started run is queued on a Redis
//! Stream and executed by whichever worker takes it (`weir worker` processes,
//! and gateways unless `--workers 0`), so runs scale apart from connections.
//!
//! # Layout
//!
//! - [`queued`]: [`Queued`], the runtime's queued mode
//!   ([`crate::agent::RunMode`]): queueing runs, executing and settling the
//!   ones this process's worker takes, cancelling runs that execute elsewhere.
//! - [`queue`]: [`RunQueue`], the Redis side: the stream `<prefix>runs`, its
//!   consumer group `workers`, and the per-run `started`/`cancel` markers.
//! - [`worker`]: [`worker::Worker`], one process's consumer: takes at most
//!   `--workers` runs at once, renews its claims, reclaims dead workers' runs.
//! - [`process`]: `weir worker`, a process that only executes runs.
//! - [`build_runtime`]: the runtime in the mode the settings choose (the
//!   gateway and `weir worker` build theirs here).
//!
//! `work` depends on [`crate::agent`] (the [`crate::agent::RunMode`] it
//! implements, the [`crate::agent::Engine`] that executes runs), never the
//! other way round.
//!
//! # Delivery
//!
//! A run is stored (`running`) by the gateway that accepted it, then queued
//! (a [`crate::agent::Job`]). A worker that reads the job sets the run's
//! `started` marker, executes it (events go out on the bus, so every
//! gateway's streams see them), and acknowledges and deletes the entry when
//! the run has ended. While it runs, the worker renews its claim every third
//! of `--run-claim-secs`.
//!
//! A worker that dies leaves its entries pending in the group. Every worker
//! looks for entries idle longer than `--run-claim-secs` (XAUTOCLAIM):
//! - a run that had not started yet (no marker) is simply executed;
//! - a started run ends with an `error` event (`worker_lost`) and `done`
//!   (`error`). It is not re-run: its tool calls (webhooks) may have side
//!   effects, and its events so far are already in every stream.
//!
//! Cancelling (`POST /v1/runs/{id}/cancel`, a client that goes away) sets the
//! run's `cancel` marker, for a run still queued, and publishes
//! [`crate::bus::Control::CancelRun`], which the process running it acts on.

pub mod process;
pub mod queue;
pub mod queued;
pub mod worker;

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use queue::RunQueue;
pub use queued::Queued;

use crate::{
    agent::Runtime,
    bus::{redis::RedisBusConfig, Bus},
    config::ServeConfig,
    store::Store,
};

/// The runtime in the mode the settings choose: runs queued on Redis for
/// workers with `--redis` ([`Queued`]), else executed in this process. Not
/// started ([`Runtime::start`]).
pub fn build_runtime(
    cfg: &Arc<ServeConfig>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Runtime> {
    let engine =
        crate::agent::Engine::new(store, bus, cfg.clone(), tracker.clone(), shutdown.clone());
    let engine = Arc::new(engine);
    let Some(redis) = RedisBusConfig::from_serve(cfg) else {
        return Ok(Runtime::local(engine));
    };
    let queue = RunQueue::new(&redis)?;
    let claim = Duration::from_secs(cfg.run_claim_secs);
    let mode = Queued::new(engine.clone(), queue, cfg.workers, claim);
    Ok(Runtime::new(engine, Arc::new(mode)))
}
