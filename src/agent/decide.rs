//! Deciding approvals: a client's decision ([`Runtime::decide_approval`])
//! and the sweeper that expires the undecided ones, both resuming the
//! parked run through the mode ([`super::RunMode::resume`]).
//!
//! A decision is stored before its run goes on, so a resume can be lost
//! (the process dies in between, or the re-queue fails: Redis down). A
//! failed re-queue puts the run back to `waiting_approval`; and the sweeper
//! also resumes any approval decided more than [`STALL_GRACE`] ago whose
//! run still waits ([`crate::store::Store::stalled_approvals`]), so neither
//! leaves the run parked or `running` for good.

use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::{approval, RunError, Runtime};
use crate::{
    domain::{ApprovalDecision, RunId},
    edge::RunSlot,
    store::{Approval, ApprovalVerdict, StoreError},
};

/// Most expired (and most stalled) approvals one sweep resumes.
const SWEEP_BATCH: u32 = 32;

/// How long after its decision a run that still waits counts as stalled:
/// far longer than the store write and re-queue of a live resume take.
pub const STALL_GRACE: Duration = Duration::from_secs(30);

impl Runtime {
    /// Records `verdict` on the run's pending approval and resumes the run
    /// (holding `slot`, the decider's run slot, while it runs). 404 when the
    /// approval is not the run's; 409 when it was decided (or expired) already.
    pub async fn decide_approval(
        &self,
        account: &str,
        run_id: &RunId,
        approval_id: &str,
        verdict: ApprovalVerdict,
        slot: Option<RunSlot>,
    ) -> Result<Approval, RunError> {
        let store = self.engine.store().as_ref();
        let missing = || RunError::ApprovalNotFound(approval_id.to_owned());
        let found = store
            .get_approval(account, approval_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => missing(),
                e => e.into(),
            })?;
        if &found.run_id != run_id {
            return Err(missing());
        }
        let Some(decided) = store.decide_approval(account, approval_id, verdict).await? else {
            return Err(RunError::Conflict(format!(
                "approval {approval_id} was decided already"
            )));
        };
        self.resume(&decided, slot).await?;
        Ok(decided)
    }

    /// Resumes the run of a decided approval, unless it no longer waits.
    async fn resume(&self, decided: &Approval, slot: Option<RunSlot>) -> Result<(), RunError> {
        let store = self.engine.store().as_ref();
        let Some(job) = approval::resume_job(store, decided).await? else {
            return Ok(());
        };
        let run = job.run.clone();
        if let Some(slot) = slot {
            self.engine.hold(&run.id, slot);
        }
        let resumed = self.mode.resume(job).await;
        if let Err(e) = &resumed {
            self.engine.release(&run.id);
            tracing::warn!(error = %e, run_id = %run.id, "could not resume a decided run; the sweeper will");
            let waiting = crate::store::Run {
                status: crate::domain::RunStatus::WaitingApproval,
                ..run
            };
            if let Err(e) = store.finish_run(&decided.account_id, waiting).await {
                tracing::warn!(error = %e, "could not park the run again");
            }
        }
        resumed
    }

    /// Sweeps expired approvals every few seconds (one process at a time,
    /// [`super::RunMode::sweep_turn`]) until the process drains.
    pub(super) fn start_sweeper(&self, tracker: &TaskTracker) {
        let timeout = Duration::from_secs(self.engine.config().approval_timeout_secs);
        let tick = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let me = self.clone();
        tracker.spawn(async move {
            let shutdown = me.engine.shutdown().clone();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                if me.mode.sweep_turn(tick * 2).await {
                    if let Err(e) = me.sweep().await {
                        tracing::warn!(error = %e, "approval sweep failed");
                    }
                }
            }
        });
    }

    /// Expires the approvals past their `expires_at` and resumes their runs
    /// (the call counts as denied). Runs resumed by expiry take no key's
    /// slot: no key decided.
    async fn sweep(&self) -> Result<(), RunError> {
        let store = self.engine.store().as_ref();
        let due = store
            .due_approvals(&crate::util::now(), SWEEP_BATCH)
            .await?;
        for a in due {
            let verdict = ApprovalVerdict {
                decision: ApprovalDecision::Expired,
                decided_by: None,
                reason: None,
            };
            if let Some(decided) = store.decide_approval(&a.account_id, &a.id, verdict).await? {
                tracing::info!(approval_id = %a.id, run_id = %a.run_id, "approval expired");
                self.resume(&decided, None).await?;
            }
        }
        let ago = time::OffsetDateTime::now_utc() - STALL_GRACE;
        let stalled = store
            .stalled_approvals(&crate::util::format_millis(ago), SWEEP_BATCH)
            .await?;
        for a in stalled {
            tracing::warn!(approval_id = %a.id, run_id = %a.run_id, "resuming a decided run that never went on");
            self.resume(&a, None).await?;
        }
        Ok(())
    }
}
