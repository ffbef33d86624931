//! Human approval mid-run: a tool call that needs a person's approval parks
//! its run, and a decision (or expiry) resumes it.
//!
//! Parking gives the run's `max_runs` slot back and forgets it here (no
//! task, no worker, no slot while it waits), then stores, in one
//! transaction, an approval row holding [`Parked`] (the conversation so far
//! and the step's calls still to make) and the run as `waiting_approval`
//! ([`crate::store::Store::park_run`]: no crash leaves a waiting run
//! without its approval), then publishes `approval_request`. Resuming
//! is a [`Job`] whose `resume` names the approval: whichever process executes
//! it reads the row back, publishes `approval_response`, makes the decided
//! call (the tool runs only on `approve`; otherwise a `function_message`
//! with status `denied`) and goes on with the step loop where it stopped.
//!
//! Which tools need approval: those registered with `requires_approval`
//! (the agent's [`super::tools::ToolSet`] knows), and the built-ins the
//! agent's `approval_required` names. The older spelling, a metadata key
//! `approval_required`, is still read (deprecated; protocol/CHANGELOG.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    events::Emitter,
    models::{ToolCall, Turn, Usage},
    run::{Failure, RunTask},
    Job,
};
use crate::{
    domain::{ApprovalDecision, EventBody, FunctionCall, FunctionStatus, RunStatus},
    store::{Agent, Approval, Run},
};

/// The status of an approval nobody has decided yet.
pub const PENDING: &str = "pending";

/// What a parked run needs to go on (an approval's `state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parked {
    /// The conversation given to the model so far.
    pub turns: Vec<Turn>,
    /// The model calls made so far.
    pub step: u32,
    /// The step's tool calls not made yet; the first is the one waiting.
    pub pending: Vec<ToolCall>,
    pub usage: Option<Usage>,
    pub stream_tokens: bool,
    pub background: bool,
    /// The starting key's `models` ([`Job::models`]): the resumed run is
    /// held to them too (absent in approvals parked before they were kept:
    /// any model, as then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Where a resumed run goes on from.
pub(super) struct Resumed {
    pub turns: Vec<Turn>,
    pub next_step: u32,
    /// The rest of the step's calls, after the decided one.
    pub pending: Vec<ToolCall>,
}

/// Whether `agent` needs approval before it calls `tool`.
pub fn requires_approval(agent: &Agent, tool: &str) -> bool {
    agent.approval_required.iter().any(|n| n == tool)
        || agent
            .metadata
            .get("approval_required")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(tool)))
}

/// The call's arguments as JSON, or as the raw text when they are not.
fn arguments(call: &ToolCall) -> serde_json::Value {
    serde_json::from_str(&call.arguments)
        .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()))
}

/// `now + timeout`, as stored timestamps are written.
fn expiry(timeout: Duration) -> String {
    crate::util::format_millis(time::OffsetDateTime::now_utc() + timeout)
}

impl RunTask {
    /// Parks the run on `state.pending[0]`: its slot given back, forgotten
    /// here, the approval and the `waiting_approval` status stored together,
    /// then `approval_request` published. The run's task ends after this.
    pub(super) async fn park(&self, em: &mut Emitter, state: Parked) -> Result<(), Failure> {
        // The park updates the run's row, written beside its start
        // (`super::row`).
        self.row_stored().await?;
        let store = self.engine.sinks.store.as_ref();
        let call = state.pending[0].clone();
        // Let go before the approval exists: a decision may resume the run
        // (here or on another process) as soon as it does.
        self.engine.give_back(&self.run.id).await;
        self.engine.forget(&self.run.id);
        let timeout = Duration::from_secs(self.engine.config.approval_timeout_secs);
        let approval = Approval {
            id: crate::util::new_id("appr"),
            account_id: self.account.clone(),
            run_id: self.run.id.clone(),
            agent_id: self.agent.id.clone(),
            tool: call.name.clone(),
            arguments: arguments(&call),
            state: serde_json::to_value(&state).unwrap_or_default(),
            status: PENDING.into(),
            expires_at: expiry(timeout),
            decided_by: None,
            reason: None,
            created_at: crate::util::now(),
            decided_at: None,
        };
        let approval = store.park_run(approval).await?;
        (self.engine).notify_approval(&approval, crate::webhooks::WebhookEvent::ApprovalRequested);
        em.emit(EventBody::ApprovalRequest {
            approval_id: approval.id,
            tool: approval.tool,
            arguments: approval.arguments,
            expires_at: approval.expires_at,
        })
        .await?;
        Ok(())
    }

    /// Reads the decided approval `id`, publishes `approval_response`, makes
    /// (or denies) the waiting call and says where the run goes on.
    pub(super) async fn resume_from(
        &self,
        em: &mut Emitter,
        tools: &super::tools::ToolSet,
        id: &str,
        usage: &mut Option<Usage>,
    ) -> Result<Resumed, Failure> {
        let store = self.engine.sinks.store.as_ref();
        let approval = store.get_approval(&self.account, id).await?;
        let state: Parked =
            serde_json::from_value(approval.state.clone()).map_err(|e| Failure {
                code: crate::domain::ErrorCode::InternalError,
                message: format!("approval {id}: unreadable run state: {e}"),
            })?;
        let decision: ApprovalDecision =
            approval.status.parse().unwrap_or(ApprovalDecision::Expired);
        (self.engine).notify_approval(&approval, crate::webhooks::WebhookEvent::ApprovalResolved);
        em.emit(EventBody::ApprovalResponse {
            approval_id: approval.id.clone(),
            decision,
            key_id: approval.decided_by.clone(),
            reason: approval.reason.clone(),
        })
        .await?;
        *usage = state.usage;
        let mut turns = state.turns;
        let mut pending = state.pending.into_iter();
        if let Some(call) = pending.next() {
            match decision {
                ApprovalDecision::Approve => {
                    let result = tools.call(&self.engine.http, &call).await;
                    self.tool_done(em, call, result, &mut turns).await?;
                }
                _ => deny(em, call, &approval, &mut turns).await?,
            }
        }
        Ok(Resumed {
            turns,
            next_step: state.step + 1,
            pending: pending.collect(),
        })
    }
}

/// A `function_message` with status `denied` and a `tool` turn saying so:
/// the tool did not run.
async fn deny(
    em: &mut Emitter,
    call: ToolCall,
    approval: &Approval,
    turns: &mut Vec<Turn>,
) -> Result<(), Failure> {
    let why = match (&approval.reason, approval.status.as_str()) {
        (Some(r), _) => format!("denied: {r}"),
        (None, "expired") => "denied: the approval request expired".to_owned(),
        (None, _) => "denied by the user".to_owned(),
    };
    let message = FunctionCall {
        args: arguments(&call),
        function: call.name,
        result: why.clone().into(),
        status: FunctionStatus::Denied,
    };
    em.emit(EventBody::FunctionMessage { message }).await?;
    turns.push(Turn::Tool {
        call_id: call.id,
        content: why,
    });
    Ok(())
}

/// The job that resumes the run of `approval` (decided already), for an
/// executor in any process; `None` when the run is not waiting any more
/// (cancelled meanwhile) or its agent is gone.
pub async fn resume_job(
    store: &dyn crate::store::Store,
    approval: &Approval,
) -> Result<Option<Job>, crate::store::StoreError> {
    let account = approval.account_id.as_str();
    let run = match store.get_run(account, approval.run_id.as_str()).await {
        Ok(run) => run,
        Err(crate::store::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if run.status != RunStatus::WaitingApproval {
        return Ok(None);
    }
    let agent = match store.get_agent(account, run.agent_id.as_str()).await {
        Ok(agent) => agent,
        Err(crate::store::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let state: Option<Parked> = serde_json::from_value(approval.state.clone()).ok();
    let run = Run {
        status: RunStatus::Running,
        updated_at: crate::util::now(),
        ..run
    };
    let run = store.finish_run(account, run).await?;
    Ok(Some(Job {
        account: account.to_owned(),
        agent,
        run,
        messages: Vec::new(),
        stream_tokens: state.as_ref().is_some_and(|s| s.stream_tokens),
        background: state.as_ref().is_some_and(|s| s.background),
        slot: None,
        resume: Some(approval.id.clone()),
        models: state.and_then(|s| s.models),
    }))
}
