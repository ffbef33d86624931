//! [`Local`]: the in-process mode. Every run executes as a task of the
//! gateway that started it.
//!
//! Crash recovery is lazy and best effort: the store cannot list running
//! runs, so a run still `running` in the store that was created before this
//! process started and is not live here is settled (`failed`, with `error`
//! and `done` events so streams of it end) the first time it is read or
//! cancelled.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::task::TaskTracker;

use super::{Ending, Engine, Job, RunError, RunMode};
use crate::{
    domain::{ErrorCode, RunId},
    store::Run,
};

/// Runs execute in this process.
pub struct Local {
    engine: Arc<Engine>,
}

impl Local {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl RunMode for Local {
    /// Nothing runs in the background: runs are tasks of their own.
    fn start(&self, _tracker: &TaskTracker) {}

    async fn submit(&self, job: Job) -> Result<Run, RunError> {
        let engine = &self.engine;
        // Registered before it is stored, so a cancel can never find it
        // stored but not live. Its row is written beside its start, not
        // before it (`super::row`): the run waits for the row where it
        // updates it, and a read of the run by id waits for it too.
        let (handle, row) = engine.register_unstored(&job.run.id, &job.account);
        let (store, account, run) = (engine.store().clone(), job.account.clone(), job.run.clone());
        let cancel = handle.clone();
        engine.tracker().spawn(async move {
            let run_id = run.id.clone();
            let written = store.create_run(&account, run).await;
            row.done(&written);
            if let Err(e) = &written {
                // Not stored, so not to be cancelled by id: stopped here,
                // before it calls anything more; it ends `unavailable`.
                tracing::warn!(error = %e, run_id = %run_id, "could not store a new run: it fails");
                cancel.cancel();
            }
        });
        let run = job.run.clone();
        engine.spawn(job, handle);
        Ok(run)
    }

    async fn cancel(&self, account: &str, run: Run) -> Result<Run, RunError> {
        let why = "cancelled after the gateway running it stopped";
        self.engine
            .settle(account, run, Ending::cancelled(why))
            .await
    }

    /// A run not live here is not running anywhere: nothing to stop.
    fn abort(&self, _run_id: &RunId) {}

    async fn resume(&self, job: Job) -> Result<(), RunError> {
        let handle = self.engine.register(&job.run.id);
        self.engine.spawn(job, handle);
        Ok(())
    }

    async fn status(&self, account: &str, run: Run) -> Result<Run, RunError> {
        // Touched since this process started (a run resumed after an
        // approval is stored `running` just before it registers): not left
        // behind by a crash.
        let started = self.engine.started_at();
        if run.created_at.as_str() >= started || run.updated_at.as_str() >= started {
            return Ok(run);
        }
        let why = "interrupted: the gateway stopped during the run";
        let end = Ending::failed(ErrorCode::Interrupted, why);
        self.engine.settle(account, run, end).await
    }
}
