//! [`Queued`]: the queued mode of the runtime ([`RunMode`]). A started run
//! is stored and queued on Redis ([`RunQueue`]); whichever worker takes it
//! executes it ([`super::worker`]) or, if a worker before it had begun it
//! and died, ends it. A run that executes in another process is cancelled
//! through its `cancel` marker (still queued) and a
//! [`Control::CancelRun`] on the bus (running).

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;

use super::{worker::Worker, RunQueue};
use crate::{
    agent::{Ending, Engine, Job, RunError, RunFollower, RunMode},
    bus::{BusEvent, Control},
    domain::{Channel, ErrorCode, RunId, RunStatus, StopReason},
    store::{EventFilter, EventRecord, ListParams, Run, StoreError},
};

/// Most stored events of a run compared with the bus history.
const HISTORY_WINDOW: u32 = 1000;
/// How long `cancel` waits for another process to end the run.
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

/// Runs are queued on Redis for workers. Cheap to clone.
#[derive(Clone)]
pub struct Queued {
    engine: Arc<Engine>,
    queue: Arc<RunQueue>,
    /// Runs this process executes at once (`--workers`; 0: none, it only queues).
    slots: usize,
    /// `--run-claim-secs`.
    claim: Duration,
}

impl Queued {
    /// The mode over `queue`, taking `slots` runs at once in this process.
    pub fn new(engine: Arc<Engine>, queue: RunQueue, slots: usize, claim: Duration) -> Self {
        Self {
            engine,
            queue: Arc::new(queue),
            slots,
            claim: claim.max(Duration::from_secs(1)),
        }
    }

    pub(super) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(super) fn queue(&self) -> &Arc<RunQueue> {
        &self.queue
    }

    /// Executes a run a worker took from the queue, until it has ended.
    pub(super) async fn execute(&self, job: Job) {
        let handle = self.engine.register(&job.run.id);
        if let Some(slot) = &job.slot {
            self.engine.adopt(&job.run.id, slot);
        }
        // Checked once registered: a cancel that came earlier left the
        // marker; one that comes later finds the handle.
        if self.queue.is_cancelled(&job.run.id).await.unwrap_or(false) {
            handle.cancel();
        }
        self.engine.execute(job, handle).await;
    }

    /// Ends a run a worker took but must not execute (see [`Settle`]),
    /// unless it has ended already. An error leaves it for a later attempt.
    pub(super) async fn settle(&self, job: Job, how: Settle) -> Result<(), RunError> {
        let store = self.engine.store().as_ref();
        let run = match store.get_run(&job.account, job.run.id.as_str()).await {
            Ok(run) => run,
            // Its agent (and so the run) was deleted meanwhile.
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if run.status != RunStatus::Running {
            return Ok(());
        }
        // What the dead worker published but had not stored yet (token
        // deltas are stored in batches) is still in the bus history.
        self.restore_history(&job).await?;
        let end = match how {
            Settle::Run => return Err(RunError::Invalid("not a settlement".into())),
            Settle::WorkerLost => Ending::failed(
                ErrorCode::WorkerLost,
                "the worker running this run stopped; it was ended, not run again",
            ),
        };
        self.engine.settle(&job.account, run, end).await?;
        crate::metrics::queue_run("worker_lost");
        Ok(())
    }

    /// Stores the run's events that the bus history keeps and the store
    /// lacks (at most the run's latest [`HISTORY_WINDOW`] are compared).
    async fn restore_history(&self, job: &Job) -> Result<(), RunError> {
        let (bus, store) = (self.engine.bus(), self.engine.store());
        let run_id = job.run.id.as_str();
        let kept = bus
            .kept(&Channel::Agent(job.agent.id.as_str().into()))
            .await?;
        let published: Vec<_> = kept.iter().filter(|e| e.run_id == run_id).collect();
        if published.is_empty() {
            return Ok(());
        }
        let filter = EventFilter {
            session_id: None,
            run_id: Some(job.run.id.clone()),
            message_types: None,
        };
        let mut params = ListParams {
            limit: HISTORY_WINDOW,
            offset: 0,
            after: None,
            ..Default::default()
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
            .filter_map(|e| record_of(e))
            .collect();
        if !missing.is_empty() {
            tracing::info!(%run_id, count = missing.len(), "storing events a dead worker published but had not stored");
            store.append_events(account, missing).await?;
        }
        Ok(())
    }

    /// Cancels the runs executing here that another process asked to
    /// cancel, until the process has drained and none is live.
    async fn listen_for_cancels(self) {
        let mut rx = self.engine.bus().control();
        let drained = self.engine.drained();
        tokio::pin!(drained);
        loop {
            let msg = tokio::select! {
                _ = &mut drained => return,
                msg = rx.recv() => msg,
            };
            match msg {
                Ok(Control::CancelRun { run_id }) => {
                    if self.engine.cancel_live(&run_id) {
                        tracing::info!(%run_id, "cancel from another process");
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[async_trait]
impl RunMode for Queued {
    /// Listens for cancels of runs executing here, and takes runs from the
    /// queue unless `--workers 0`.
    fn start(&self, tracker: &TaskTracker) {
        tracker.spawn(self.clone().listen_for_cancels());
        if self.slots == 0 {
            return;
        }
        let name = Worker::start(self.clone(), self.slots, self.claim, tracker);
        self.engine.set_worker_name(name);
    }

    /// Stores the run and queues it for a worker.
    async fn submit(&self, mut job: Job) -> Result<Run, RunError> {
        let store = self.engine.store().as_ref();
        job.run = store.create_run(&job.account, job.run).await?;
        // Handed off before it is queued, so a worker of this very process
        // that takes it adopts it after this.
        job.slot = self.engine.hand_off(&job.run.id);
        if let Err(e) = self.queue.enqueue(&job).await {
            // Nobody will hold the slot: give it back at once.
            if let Some(slot) = &job.slot {
                self.engine.adopt(&job.run.id, slot);
                self.engine.release(&job.run.id);
            }
            // Nobody will ever run it: do not leave it `running`. (No events:
            // none were published, and the caller gets this error.)
            let failed = Run {
                status: RunStatus::Failed,
                stop_reason: Some(StopReason::Error),
                error: Some(format!("the run could not be queued: {e}")),
                error_code: Some(e.code()),
                updated_at: crate::util::now(),
                ..job.run
            };
            match store.finish_run(&job.account, failed).await {
                Ok(failed) => self.engine.notify_run_end(&job.account, &failed),
                Err(se) => tracing::warn!(error = %se, "could not mark an unqueued run failed"),
            }
            return Err(e.into());
        }
        crate::metrics::queue_run("queued");
        Ok(job.run)
    }

    /// Marks the run cancelled (for a worker yet to take it), tells the
    /// process running it, and waits, bounded, for its `done`.
    async fn cancel(&self, account: &str, run: Run) -> Result<Run, RunError> {
        let bus = self.engine.bus();
        // Subscribed before the cancel goes out, so its `done` cannot be missed.
        let mut follower = RunFollower::subscribe(bus.clone(), &run.agent_id, &run.id).await?;
        self.queue.mark_cancelled(&run.id).await?;
        let msg = Control::CancelRun {
            run_id: run.id.clone(),
        };
        bus.publish_control(msg).await?;
        let _ = tokio::time::timeout(REMOTE_CANCEL_WAIT, async {
            while follower.next().await.is_some() {}
        })
        .await;
        let store = self.engine.store();
        Ok(store.get_run(account, run.id.as_str()).await?)
    }

    fn abort(&self, run_id: &RunId) {
        let (queue, bus) = (self.queue.clone(), self.engine.bus().clone());
        let run_id = run_id.clone();
        // Bounded by the Redis command timeout; tracked so a drain sees it out.
        self.engine.tracker().spawn(async move {
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

    /// Queued again for any worker, the slot handed off like a new run's.
    async fn resume(&self, mut job: Job) -> Result<(), RunError> {
        job.slot = self.engine.hand_off(&job.run.id);
        if let Err(e) = self.queue.enqueue(&job).await {
            if let Some(slot) = &job.slot {
                self.engine.adopt(&job.run.id, slot);
                self.engine.release(&job.run.id);
            }
            return Err(e.into());
        }
        crate::metrics::queue_run("resumed");
        Ok(())
    }

    /// The Redis lock `approvals:sweeper` (SET NX PX).
    async fn sweep_turn(&self, hold: Duration) -> bool {
        let owner = self.engine.worker_name().unwrap_or("gateway");
        self.queue
            .take_lock("approvals:sweeper", owner, hold)
            .await
            .unwrap_or(false)
    }

    /// Running on a worker, or reclaimed and ended by one if its worker
    /// died: never settled here.
    async fn status(&self, _account: &str, run: Run) -> Result<Run, RunError> {
        Ok(run)
    }
}

/// The store's record of a published event.
fn record_of(e: &BusEvent) -> Option<EventRecord> {
    match e.event() {
        Ok(event) => EventRecord::new(e.seq, event),
        Err(err) => {
            tracing::warn!(seq = e.seq, error = %err, "undecodable event in the bus history; not stored");
            None
        }
    }
}
