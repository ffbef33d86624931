//! A run's end: the terminal events (`usage`, `error`, then `done`), the
//! final status stored before `done`, and the session history a new run
//! starts from.

use std::time::Duration;

use super::{Outcome, RunTask, END_PATIENCE, HISTORY_WINDOW};
use crate::agent::{
    events::{EmitError, Emitter},
    models::{Turn, Usage},
};
use crate::domain::{AgentId, ErrorCode, EventBody, RunId, RunStatus, SessionId, StopReason};
use crate::store::{Run, Store, StoreError};

impl RunTask {
    /// Publishes the terminal events, stores the final status (before `done`)
    /// and returns the run's final record.
    pub(super) async fn conclude(
        &self,
        em: &mut Emitter,
        outcome: Outcome,
        usage: Option<Usage>,
    ) -> Run {
        let (stop_reason, mut error) = match &outcome {
            Outcome::EndTurn => (StopReason::EndTurn, None),
            Outcome::MaxSteps => (StopReason::MaxSteps, None),
            Outcome::Cancelled if self.engine.stop_runs.is_cancelled() => (
                StopReason::Cancelled,
                Some("the gateway shut down".to_owned()),
            ),
            Outcome::Cancelled => (StopReason::Cancelled, None),
            Outcome::Failed(f) => (StopReason::Error, Some(f.message.clone())),
            // Never concluded (see `execute`).
            Outcome::Parked => (StopReason::EndTurn, None),
        };
        // The code of the run's `error` event, kept with the run.
        let mut error_code = match &outcome {
            Outcome::Failed(f) => Some(f.code),
            _ => None,
        };
        let published = publish_ending(em, &outcome, usage, &self.engine.stop_runs).await;
        // The final status is stored before `done` goes out, so a client
        // that saw `done` and asks GET /v1/runs/{id} sees it.
        let mut status = RunStatus::ended_by(stop_reason);
        if let Err(e) = &published {
            status = RunStatus::Failed;
            error.get_or_insert_with(|| format!("event delivery failed: {e}"));
            // As a run that fails on a publish mid-turn (`Failure::from`).
            error_code.get_or_insert(ErrorCode::Unavailable);
        }
        let mut run = Run {
            status,
            stop_reason: Some(stop_reason),
            error,
            error_code,
            updated_at: crate::util::now(),
            ..self.run.clone()
        };
        self.save(&run).await;
        // webhook: run.completed / run.failed / run.cancelled (only queued).
        self.engine.notify_run_end(&self.account, &run);
        // The key's run slot is back before `done` goes out: a client that
        // saw `done` may start its next run at once.
        self.engine.give_back(&self.run.id).await;
        // `done` is attempted even when an earlier publish failed: it is what
        // ends every stream of this run.
        let done = em
            .emit_patiently(
                EventBody::Done { stop_reason },
                END_PATIENCE,
                &self.engine.stop_runs,
            )
            .await
            .map(drop);
        if let Err(e) = done.and(em.flush().await) {
            tracing::warn!(error = %e, run_id = %self.run.id, "run end not fully delivered");
            if run.status != RunStatus::Failed {
                run.status = RunStatus::Failed;
                run.error = Some(format!("event delivery failed: {e}"));
                run.error_code = Some(ErrorCode::Unavailable);
                self.save(&run).await;
            }
        }
        run
    }

    /// Writes the final status, retrying briefly: a run left `running` in the
    /// store would only be settled after a restart.
    pub(super) async fn save(&self, run: &Run) {
        let store = self.engine.sinks.store.as_ref();
        if self.handle.row.failed() {
            // Not stored, as far as its write knows (`super::row`): if the
            // store may have committed it anyway, it is not left `running`.
            if self.handle.row.maybe_stored() {
                let _ = store.finish_run(&self.account, run.clone()).await;
            }
            return;
        }
        for delay_ms in [0u64, 100, 500, 2000] {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            match store.finish_run(&self.account, run.clone()).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, run_id = %run.id, "could not save the run's final status")
                }
            }
        }
    }
}

/// The events before `done`: `usage` after a turn that ended normally,
/// `error` after a failure.
async fn publish_ending(
    em: &mut Emitter,
    outcome: &Outcome,
    usage: Option<Usage>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), EmitError> {
    if let (Some(u), Outcome::EndTurn | Outcome::MaxSteps) = (usage, outcome) {
        em.emit(EventBody::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        })
        .await?;
    }
    if let Outcome::Failed(f) = outcome {
        let error = EventBody::Error {
            code: f.code,
            message: f.message.clone(),
        };
        // A run that failed because the bus is down (a Redis outage) says so
        // once the bus is back, if that is soon enough.
        em.emit_patiently(error, END_PATIENCE, stop).await?;
    }
    Ok(())
}

/// The session's earlier conversation: its last [`HISTORY_WINDOW`] user and
/// assistant messages, oldest first. Only those are read from the store,
/// from the session's end ([`Store::session_history`]): a streamed reply's
/// token deltas are most of a session's events, and reading and decoding
/// them was a quarter of a gateway's CPU per run (BENCHMARKS.md, runs);
/// counting them for a page was two fifths of it at 200 runs/s (issue 22).
/// `(run, n)`: the `n` user messages `run` may have stored already are left
/// out (the window is widened by them, so it still holds the same earlier
/// messages).
pub(super) async fn load_history(
    store: &dyn Store,
    account: &str,
    agent_id: &AgentId,
    session_id: &SessionId,
    (this_run, stored): (&RunId, usize),
) -> Result<Vec<Turn>, StoreError> {
    let window = HISTORY_WINDOW.saturating_add(u32::try_from(stored).unwrap_or(u32::MAX));
    let records = store
        .session_history(account, agent_id.as_str(), session_id.as_str(), window)
        .await?;
    let mut turns: Vec<Turn> = records
        .into_iter()
        .filter(|r| &r.run_id != this_run)
        .filter_map(|r| match r.event.body {
            EventBody::UserMessage { message } => Some(Turn::User(message)),
            EventBody::AssistantMessage { message } => Some(Turn::Assistant {
                content: message,
                tool_calls: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    // The run's own messages may not have been stored yet (they are written
    // while this reads): then the widened window holds more earlier ones.
    let extra = turns.len().saturating_sub(HISTORY_WINDOW as usize);
    turns.drain(..extra);
    Ok(turns)
}
