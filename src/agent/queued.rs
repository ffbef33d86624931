//! The runtime's side of the Redis run queue ([`crate::work`]): queueing a
//! started run, executing or settling a run a worker took, and cancelling a
//! run that executes in another process.

use std::{
    collections::HashSet,
    sync::{Arc, Weak},
    time::Duration,
};

use serde_json::Value;

use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

use super::{
    events::agent_channel,
    models::Model,
    run::RunTask,
    runtime::{lock, Ending, Inner},
    RunError, RunFollower, Runtime,
};
use crate::{
    bus::{redis::RedisBusConfig, BusEvent, Control},
    config::ServeConfig,
    store::{EventFilter, EventRecord, ListParams, Run, StoreError, RUN_FAILED, RUN_RUNNING},
    work::{worker::Worker, Job, RunQueue},
};

/// Most stored events of a run compared with the bus history.
const HISTORY_WINDOW: u32 = 1000;
/// How long `cancel_run` waits for another process to end the run.
const REMOTE_CANCEL_WAIT: Duration = Duration::from_secs(5);

/// What a worker does with a run it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Settle {
    /// Execute it (a run cancelled while queued ends at once, `cancelled`).
    Run,
    /// A worker before this one began it and died: end it (`error`
    /// `worker_lost`, then `done`).
    WorkerLost,
}

/// The run queue, with `--redis`.
pub(super) fn build_queue(config: &ServeConfig) -> Option<Arc<RunQueue>> {
    let redis = RedisBusConfig::from_serve(config)?;
    match RunQueue::new(&redis) {
        Ok(q) => Some(Arc::new(q)),
        Err(e) => {
            // The bus, built from the same settings, already failed on them.
            tracing::error!(error = %e, "run queue unavailable: runs execute in this process");
            None
        }
    }
}

impl Runtime {
    /// With the queue: listens for cancels of runs executing here, and
    /// takes runs from the queue unless `--workers 0`.
    pub(super) fn start_queue(&self) {
        let inner = &self.inner;
        let Some(queue) = &inner.queue else { return };
        listen_for_cancels(inner);
        let slots = inner.config.workers;
        if slots == 0 {
            return;
        }
        let claim = Duration::from_secs(inner.config.run_claim_secs.max(1));
        let name = Worker::start(
            self.clone(),
            queue.clone(),
            slots,
            claim,
            inner.shutdown.clone(),
            inner.tracker.clone(),
        );
        let _ = inner.worker_name.set(name);
    }

    /// Stores the run and queues it for a worker.
    pub(super) async fn enqueue(&self, queue: &RunQueue, mut job: Job) -> Result<Run, RunError> {
        let store = self.inner.sinks.store.as_ref();
        job.run = store.create_run(&job.account, job.run).await?;
        if let Err(e) = queue.enqueue(&job).await {
            // Nobody will ever run it: do not leave it `running`. (No events:
            // none were published, and the caller gets this error.)
            let failed = Run {
                status: RUN_FAILED.into(),
                stop_reason: Some("error".into()),
                error: Some(format!("the run could not be queued: {e}")),
                updated_at: crate::util::now(),
                ..job.run
            };
            if let Err(se) = store.finish_run(&job.account, failed).await {
                tracing::warn!(error = %se, "could not mark an unqueued run failed");
            }
            return Err(e.into());
        }
        crate::metrics::queue_run("queued");
        Ok(job.run)
    }

    /// Executes a run a worker took from the queue, until it has ended.
    pub async fn execute_job(&self, job: Job) {
        let inner = &self.inner;
        let agent = &job.agent;
        let model = match Model::resolve(
            &agent.model,
            &agent.metadata,
            inner.provider.as_ref(),
            inner.config.max_echo_delay(),
        ) {
            Ok(model) => model,
            Err(e) => {
                let why = format!("agent {}: {e}", agent.id);
                let end = Ending::failed("model_unavailable", why);
                if let Err(e) = self.settle_orphan(&job.account, job.run, end).await {
                    tracing::warn!(error = %e, "could not end a run whose model is unavailable");
                }
                return;
            }
        };
        let handle = inner.register(&job.run.id);
        // Checked once registered: a cancel that came earlier left the
        // marker; one that comes later finds the handle.
        if let Some(queue) = &inner.queue {
            if queue.is_cancelled(&job.run.id).await.unwrap_or(false) {
                handle.cancel.cancel();
            }
        }
        let span = tracing::info_span!("run", run_id = %job.run.id, agent_id = %job.run.agent_id);
        RunTask::new(inner.clone(), job, model, handle)
            .execute()
            .instrument(span)
            .await;
    }

    /// Ends a run a worker took but must not execute (see [`Settle`]),
    /// unless it has ended already. An error leaves it for a later attempt.
    pub async fn settle_job(&self, job: Job, how: Settle) -> Result<(), RunError> {
        let store = self.inner.sinks.store.as_ref();
        let run = match store.get_run(&job.account, &job.run.id).await {
            Ok(run) => run,
            // Its agent (and so the run) was deleted meanwhile.
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if run.status != RUN_RUNNING {
            return Ok(());
        }
        // What the dead worker published but had not stored yet (token
        // deltas are stored in batches) is still in the bus history.
        self.restore_history(&job).await?;
        let end = match how {
            Settle::Run => return Err(RunError::Invalid("not a settlement".into())),
            Settle::WorkerLost => Ending::failed(
                "worker_lost",
                "the worker running this run stopped; it was ended, not run again",
            ),
        };
        self.settle_orphan(&job.account, run, end).await?;
        crate::metrics::queue_run("worker_lost");
        Ok(())
    }

    /// Stores the run's events that the bus history keeps and the store
    /// lacks (at most the run's latest [`HISTORY_WINDOW`] are compared).
    async fn restore_history(&self, job: &Job) -> Result<(), RunError> {
        let (bus, store) = (&self.inner.sinks.bus, &self.inner.sinks.store);
        let run_id = job.run.id.as_str();
        let kept = bus.kept(&agent_channel(&job.agent.id)).await?;
        let published: Vec<_> = kept
            .iter()
            .filter(|e| e.run_id.as_deref() == Some(run_id))
            .collect();
        if published.is_empty() {
            return Ok(());
        }
        let filter = EventFilter {
            session_id: None,
            run_id: Some(run_id.to_owned()),
            message_types: None,
        };
        let mut params = ListParams {
            limit: HISTORY_WINDOW,
            offset: 0,
            after: None,
        };
        let (account, agent) = (job.account.as_str(), job.agent.id.as_str());
        let mut page = store
            .list_events(account, agent, filter.clone(), params.clone())
            .await?;
        let total = page.pagination.total;
        if total > u64::from(HISTORY_WINDOW) {
            params.offset = total - u64::from(HISTORY_WINDOW);
            page = store.list_events(account, agent, filter, params).await?;
        }
        let have: HashSet<u64> = page.data.iter().map(|r| r.seq).collect();
        // Below the window compared, assume stored.
        let floor = match total > u64::from(HISTORY_WINDOW) {
            true => have.iter().copied().min().unwrap_or(0),
            false => 0,
        };
        let missing: Vec<EventRecord> = published
            .into_iter()
            .filter(|e| e.seq > floor && !have.contains(&e.seq))
            .filter_map(|e| record_of(e, job))
            .collect();
        if !missing.is_empty() {
            tracing::info!(%run_id, count = missing.len(), "storing events a dead worker published but had not stored");
            store.append_events(account, missing).await?;
        }
        Ok(())
    }

    /// Another worker took the run over: stop it here without ending it.
    pub fn lose(&self, run_id: &str) {
        if let Some(h) = lock(&self.inner.runs).get(run_id) {
            h.lost.cancel();
            h.cancel.cancel();
        }
    }

    /// Cancels a run executing in another process (or still queued) and
    /// waits, bounded, for its `done`; returns the run as stored then.
    pub(super) async fn cancel_remote(&self, account: &str, run: Run) -> Result<Run, RunError> {
        let inner = &self.inner;
        let queue = inner.queue.as_ref().expect("called with a queue");
        // Subscribed before the cancel goes out, so its `done` cannot be missed.
        let mut follower =
            RunFollower::subscribe(inner.sinks.bus.clone(), &run.agent_id, &run.id).await?;
        queue.mark_cancelled(&run.id).await?;
        let msg = Control::CancelRun {
            run_id: run.id.clone(),
        };
        inner.sinks.bus.publish_control(msg).await?;
        let _ = tokio::time::timeout(REMOTE_CANCEL_WAIT, async {
            while follower.next().await.is_some() {}
        })
        .await;
        Ok(inner.sinks.store.get_run(account, &run.id).await?)
    }

    /// Fire-and-forget [`Self::cancel_remote`], for a client that went away.
    pub(super) fn abort_remote(&self, run_id: &str) {
        let Some(queue) = self.inner.queue.clone() else {
            return;
        };
        let bus = self.inner.sinks.bus.clone();
        let run_id = run_id.to_owned();
        tokio::spawn(async move {
            let sent = async {
                queue.mark_cancelled(&run_id).await?;
                bus.publish_control(Control::CancelRun {
                    run_id: run_id.clone(),
                })
                .await
            };
            if let Err(e) = sent.await {
                tracing::warn!(error = %e, %run_id, "could not cancel a run in another process");
            }
        });
    }
}

/// The store's record of a published event of `job`'s run.
fn record_of(e: &BusEvent, job: &Job) -> Option<EventRecord> {
    let event: Value = serde_json::from_slice(&e.json).ok()?;
    Some(EventRecord {
        agent_id: job.agent.id.clone(),
        seq: e.seq,
        run_id: job.run.id.clone(),
        session_id: job.run.session_id.clone(),
        message_type: e.message_type.clone(),
        event,
    })
}

/// Cancels the runs executing here that another process asked to cancel.
/// Holds the runtime weakly: it ends when the runtime or the bus goes.
fn listen_for_cancels(inner: &Arc<Inner>) {
    let mut rx = inner.sinks.bus.control();
    let weak: Weak<Inner> = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Control::CancelRun { run_id }) => {
                    let Some(inner) = weak.upgrade() else { return };
                    let handle = lock(&inner.runs).get(&run_id).cloned();
                    if let Some(h) = handle {
                        tracing::info!(%run_id, "cancel from another process");
                        h.cancel.cancel();
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}
