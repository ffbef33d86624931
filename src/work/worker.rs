//! [`Worker`]: one process's consumer of the run queue. It reads new entries
//! only while it has a free slot (`--workers`), executes each through the
//! [`Queued`] mode (on the process's [`crate::agent::Engine`]), renews its claims while they run, and takes over entries
//! other workers left idle for `--run-claim-secs` (see [`super`] for what
//! happens to those). On shutdown it stops taking runs; the runs it holds
//! finish (or are cancelled by the drain) and are acknowledged.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    queue::{Entry, RunQueue},
    queued::{Queued, Settle},
};
use crate::{agent::RunError, domain::RunId};

/// Longest pause between two attempts after Redis failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most entries reclaimed in one pass.
const RECLAIM_BATCH: usize = 16;

/// An entry this worker holds.
struct Held {
    run_id: RunId,
    /// Another worker reclaimed it: do not acknowledge it.
    lost: bool,
}

/// One process's run-queue consumer.
pub struct Worker {
    mode: Queued,
    queue: Arc<RunQueue>,
    consumer: String,
    slots: Arc<Semaphore>,
    held: Mutex<HashMap<String, Held>>,
    claim: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Worker {
    /// Starts the consumer on `tracker`: it takes runs until the process
    /// drains, then lets the ones it holds end. Returns its consumer name.
    pub fn start(mode: Queued, slots: usize, claim: Duration, tracker: &TaskTracker) -> String {
        let consumer = consumer_name();
        let (queue, shutdown) = (mode.queue().clone(), mode.engine().shutdown().clone());
        let worker = Arc::new(Self {
            mode,
            queue,
            consumer: consumer.clone(),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            held: Mutex::new(HashMap::new()),
            claim,
            shutdown,
            tracker: tracker.clone(),
        });
        tracing::info!(%consumer, slots, "taking runs from the Redis run queue");
        tracker.spawn(worker.clone().read_loop());
        tracker.spawn(worker.upkeep_loop());
        consumer
    }

    /// Stops holding an entry; returns whether its claim was lost.
    fn release(&self, id: &str) -> bool {
        let mut held = self.held.lock();
        let lost = held.remove(id).is_some_and(|h| h.lost);
        crate::metrics::queue_held(held.len());
        lost
    }

    /// Reads new entries while there is a free slot.
    async fn read_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while !self.shutdown.is_cancelled() {
            // A slot first: a worker never reads more than it can run now.
            let slot = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                slot = self.slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let count = self.slots.available_permits() + 1;
            let read = async {
                self.queue.ensure_group().await?;
                self.queue.read(&self.consumer, count).await
            };
            let entries = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = read => r,
            };
            drop(slot);
            match entries {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    for e in entries {
                        crate::metrics::queue_run("taken");
                        self.take(e);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "run queue: read failed; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Renews this worker's claims and reclaims idle entries, every third
    /// of the claim timeout, until shutdown and every held run has ended.
    async fn upkeep_loop(self: Arc<Self>) {
        let every = (self.claim / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                // Draining: look again soon, to end as soon as nothing is held.
                _ = self.shutdown.cancelled() => {
                    tokio::time::sleep(every.min(Duration::from_millis(200))).await;
                }
            }
            let stopping = self.shutdown.is_cancelled();
            if stopping && self.held.lock().is_empty() {
                return;
            }
            self.renew().await;
            if stopping {
                continue;
            }
            let free = self.slots.available_permits().clamp(1, RECLAIM_BATCH);
            match self.queue.reclaim(&self.consumer, self.claim, free).await {
                Ok(entries) => {
                    for e in entries {
                        tracing::warn!(entry = %e.id, "run queue: reclaimed an entry a worker left idle");
                        crate::metrics::queue_run("reclaimed");
                        self.take(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "run queue: reclaim failed"),
            }
        }
    }

    /// Renews the claims held; cancels (quietly) the runs another worker
    /// took over meanwhile, so no run gets two endings.
    async fn renew(&self) {
        let ids: Vec<String> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| !h.lost)
            .map(|(id, _)| id.clone())
            .collect();
        match self.queue.renew(&self.consumer, &ids).await {
            Ok(lost) => {
                for id in lost {
                    let run_id = self.held.lock().get_mut(&id).map(|h| {
                        h.lost = true;
                        h.run_id.clone()
                    });
                    if let Some(run_id) = run_id {
                        tracing::warn!(%run_id, "run queue: another worker took this run over");
                        crate::metrics::queue_run("claim_lost");
                        self.mode.engine().lose(&run_id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "run queue: renewing claims failed"),
        }
    }

    /// Holds the entry and executes (or settles) its run on a task.
    fn take(self: &Arc<Self>, entry: Entry) {
        let Some(job) = entry.job else {
            tracing::error!(entry = %entry.id, "run queue: an entry that is not a job; dropping it");
            let me = self.clone();
            self.tracker
                .spawn(async move { me.finish(&entry.id).await });
            return;
        };
        let held = Held {
            run_id: job.run.id.clone(),
            lost: false,
        };
        {
            let mut all = self.held.lock();
            all.insert(entry.id.clone(), held);
            crate::metrics::queue_held(all.len());
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            let slot = me.slots.clone().acquire_owned().await;
            let run_id = job.run.id.clone();
            let decided = me
                .decide(&run_id, job.resume.as_deref())
                .await
                .map_err(RunError::from);
            let done = match decided {
                Ok(Settle::Run) => {
                    me.mode.execute(job).await;
                    Ok(())
                }
                Ok(how) => me.mode.settle(job, how).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                // Redis or the store is away: leave the entry pending; whoever
                // holds it after the claim timeout (this worker too) decides.
                tracing::warn!(error = %e, %run_id, "run queue: cannot start the run now");
                me.release(&entry.id);
                return;
            }
            drop(slot);
            let lost = me.release(&entry.id);
            if !lost {
                me.finish(&entry.id).await;
            }
        });
    }

    /// What to do with a run just taken: run it, or end it because a worker
    /// before this one had begun it.
    async fn decide(
        &self,
        run_id: &RunId,
        resume: Option<&str>,
    ) -> Result<Settle, crate::bus::BusError> {
        if self
            .queue
            .mark_started(run_id, resume, &self.consumer)
            .await?
        {
            Ok(Settle::Run)
        } else {
            Ok(Settle::WorkerLost)
        }
    }

    /// Acknowledges an entry, retrying while Redis is briefly away.
    async fn finish(&self, id: &str) {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..8 {
            match self.queue.finish(id).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, entry = %id, "run queue: ack failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// `<host>-<pid>-<random>`: unique per process, readable in XINFO and logs.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".into());
    let tag = crate::util::new_id("w");
    let tail = &tag[tag.len().saturating_sub(6)..];
    format!("{host}-{}-{tail}", std::process::id())
}
