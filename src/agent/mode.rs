//! [`RunMode`]: where runs execute, chosen once at start-up. The runtime
//! ([`super::Runtime`]) validates and answers for runs the same way in
//! every mode; what differs is behind this trait (storing a new run
//! included):
//!
//! - [`super::Local`]: runs execute in the process that started them.
//! - [`crate::work::Queued`]: runs are queued on Redis and executed by
//!   whichever worker takes them; cancels travel over the bus.
//!
//! A run that executes in this process is the runtime's to cancel through
//! the [`super::Engine`]; a mode only answers for the others.

use async_trait::async_trait;
use tokio_util::task::TaskTracker;

use super::{Job, RunError};
use crate::{domain::RunId, store::Run};

/// Where runs execute (see the module docs).
#[async_trait]
pub trait RunMode: Send + Sync + 'static {
    /// Starts the mode's background work on `tracker` (call once): it ends
    /// once the process has drained and no run is live here.
    fn start(&self, tracker: &TaskTracker);

    /// Stores the job's run (`running`) and has it executed; returns the
    /// run. [`super::Local`] stores it beside its start ([`super::row`]).
    async fn submit(&self, job: Job) -> Result<Run, RunError>;

    /// Cancels `run`, stored `running` but not executing in this process,
    /// and returns it as stored afterwards.
    async fn cancel(&self, account: &str, run: Run) -> Result<Run, RunError>;

    /// [`Self::cancel`] without waiting, for a client that went away.
    fn abort(&self, run_id: &RunId);

    /// What `run`, stored `running` but not executing in this process, is:
    /// still running elsewhere, or left behind and settled now.
    async fn status(&self, account: &str, run: Run) -> Result<Run, RunError>;

    /// Has a parked run whose approval was decided executed again
    /// ([`super::approval::resume_job`]), here or by any worker.
    async fn resume(&self, job: Job) -> Result<(), RunError>;

    /// Whether this process sweeps expired approvals now, for `hold`: one
    /// process at a time does (without Redis there is only this one).
    async fn sweep_turn(&self, _hold: std::time::Duration) -> bool {
        true
    }
}
