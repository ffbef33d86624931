//! [`Runtime`]: starts runs, cancels them and answers their status, the same
//! way whichever [`RunMode`] executes them.
//!
//! A run is validated before it starts, stored (`running`) as it starts
//! (beside its first steps when it executes here, [`super::row`]), and
//! writes its final status to the store, so status survives a restart. A
//! run that executes in this process is cancelled through its handle on
//! the [`Engine`]; any other is the mode's to cancel or account for. Draining
//! the gateway refuses new runs but lets running ones finish until
//! [`Runtime::stop_runs`].

use std::{sync::Arc, time::Duration};

use tokio_util::task::TaskTracker;

use super::{
    sessions::{self, Sessions, DEFAULT_SESSION},
    ChatMessage, Engine, Job, Local, RunError, RunMode, SessionRef, StartRun,
};
use crate::domain::{AgentId, AgentStatus, RunId, RunStatus, SessionId};
use crate::store::{Agent, Run, StoreError};

/// How long `cancel_run` waits for the run to write its final status.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How long a read of a run by id waits for its row (`super::row`).
const ROW_WAIT: Duration = Duration::from_secs(5);
/// Upper bound on `max_steps` from agent metadata.
const MAX_STEPS_LIMIT: u64 = 100;

/// Runs agents: model calls, tool calls, events published with seq. A
/// cheap handle: clones share one runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(super) engine: Arc<Engine>,
    pub(super) mode: Arc<dyn RunMode>,
    sessions: Arc<Sessions>,
}

impl Runtime {
    /// A runtime whose runs execute as `mode` says. Nothing runs before
    /// [`Self::start`].
    pub fn new(engine: Arc<Engine>, mode: Arc<dyn RunMode>) -> Self {
        Self {
            engine,
            mode,
            sessions: Arc::new(Sessions::default()),
        }
    }

    /// A runtime whose runs execute in this process ([`Local`]).
    pub fn local(engine: Arc<Engine>) -> Self {
        let mode = Arc::new(Local::new(engine.clone()));
        Self::new(engine, mode)
    }

    /// Starts the mode's background work on `tracker` (once).
    pub fn start(&self, tracker: &TaskTracker) {
        self.mode.start(tracker);
        self.start_sweeper(tracker);
    }

    /// Where this process holds the run slots of runs it executes for
    /// other processes (the edge's; see [`Engine::set_run_slots`]).
    pub fn set_run_slots(&self, slots: Arc<crate::edge::runs::RunSlots>) {
        self.engine.set_run_slots(slots);
    }

    /// Sets where runs record the usage they meter (the process's meter).
    pub fn set_usage(&self, usage: Arc<crate::usage::UsageMeter>) {
        self.engine.set_usage(usage);
    }

    /// Sets where ended runs are announced to webhooks (the process's notifier).
    pub fn set_notifier(&self, notifier: crate::webhooks::Notifier) {
        self.engine.set_notifier(notifier);
    }

    /// The configured providers and routes (for the OpenAI relay).
    pub fn providers(&self) -> &Arc<crate::providers::Registry> {
        self.engine.providers()
    }

    /// This process's run-queue consumer name, once it takes runs.
    pub fn worker_name(&self) -> Option<&str> {
        self.engine.worker_name()
    }

    /// Starts a run in the background and returns it (status `running`).
    /// Subscribe to `agent:<id>` *before* calling this to see every event.
    pub async fn start_run(&self, account: &str, req: StartRun) -> Result<Run, RunError> {
        if self.engine.shutdown().is_cancelled() {
            return Err(RunError::ShuttingDown);
        }
        validate_messages(&req.messages)?;
        let agent = match req.agent {
            // Only the caller's own read of this agent for this account.
            Some(agent) if agent.id == req.agent_id && agent.account_id == account => agent,
            _ => self
                .engine
                .store()
                .get_agent(account, req.agent_id.as_str())
                .await
                .map_err(|e| not_found(e, RunError::AgentNotFound(req.agent_id.to_string())))?,
        };
        if agent.status == AgentStatus::Stopped {
            return Err(RunError::AgentStopped(agent.id.into_string()));
        }
        if !crate::store::model_allowed(req.models.as_deref(), &agent.model) {
            return Err(RunError::ModelNotAllowed(agent.model));
        }
        self.engine
            .model_for(&agent)
            .map_err(|e| RunError::ModelUnavailable(format!("agent {}: {e}", agent.id)))?;
        let session_id = self
            .resolve_session(account, &agent.id, req.session)
            .await?;
        let now = crate::util::now();
        let run = Run {
            id: req.run_id.unwrap_or_else(RunId::generate),
            agent_id: agent.id.clone(),
            session_id,
            status: RunStatus::Running,
            stop_reason: None,
            error: None,
            error_code: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let job = Job {
            account: account.to_owned(),
            agent,
            run,
            messages: req.messages,
            stream_tokens: req.stream_tokens,
            background: req.background,
            slot: None,
            resume: None,
            models: req.models,
        };
        // Held by the engine until the run ends, unless the mode hands it
        // off to the process that executes the run.
        if let Some(slot) = req.slot {
            self.engine.hold(&job.run.id, slot);
        }
        let run_id = job.run.id.clone();
        let submitted = self.mode.submit(job).await;
        if submitted.is_err() {
            self.engine.release(&run_id);
        }
        submitted
    }

    /// The session a run talks in: by id (it must exist), or by name
    /// (made on first use; the default session is the one so named).
    async fn resolve_session(
        &self,
        account: &str,
        agent_id: &AgentId,
        session: SessionRef,
    ) -> Result<SessionId, RunError> {
        match session {
            SessionRef::Id(sid) => Ok(self
                .engine
                .store()
                .get_session(account, agent_id.as_str(), sid.as_str())
                .await
                .map_err(|e| not_found(e, RunError::SessionNotFound(sid.to_string())))?
                .id),
            SessionRef::Default => {
                self.session_by_name(account, agent_id, DEFAULT_SESSION)
                    .await
            }
            SessionRef::Named(name) => self.session_by_name(account, agent_id, &name).await,
        }
    }

    /// Cancels a running run; its stream ends with `done` (`cancelled`).
    /// Returns the run as stored afterwards. A run already over is returned
    /// unchanged (cancelling is idempotent).
    pub async fn cancel_run(&self, account: &str, run_id: &RunId) -> Result<Run, RunError> {
        let run = match self.stored_run(account, run_id).await {
            Err(RunError::RunNotFound(id)) => {
                // Its row later than ROW_WAIT: it is still stopped.
                if let Some(h) = self.engine.live(run_id).filter(|h| h.row.awaits(account)) {
                    h.cancel();
                }
                return Err(RunError::RunNotFound(id));
            }
            other => other?,
        };
        if run.status == RunStatus::WaitingApproval {
            // Parked: nothing executes it; end it here (a later decision
            // finds it no longer waiting and resumes nothing).
            let why = "cancelled while waiting for approval";
            return self
                .engine
                .settle(account, run, super::Ending::cancelled(why))
                .await;
        }
        if run.status != RunStatus::Running {
            return Ok(run);
        }
        let Some(handle) = self.engine.live(run_id) else {
            return self.mode.cancel(account, run).await;
        };
        handle.cancel();
        // The run writes its own final status; wait for it, bounded.
        let _ = tokio::time::timeout(CANCEL_WAIT, handle.finished()).await;
        Ok(self
            .engine
            .store()
            .get_run(account, run_id.as_str())
            .await?)
    }

    /// Cancels every live run (the end of the drain's grace period); each
    /// ends with `done` (`cancelled`) and the error "the gateway shut down".
    pub fn stop_runs(&self) {
        self.engine.stop_runs();
    }

    /// Cancels a run at once, without waiting (for transports whose client
    /// went away). Unknown or finished runs are ignored.
    pub fn abort(&self, run_id: &RunId) {
        if !self.engine.cancel_live(run_id) {
            self.mode.abort(run_id);
        }
    }

    /// Resolves once a run executing in this process has written all it
    /// writes (its `done` reaches the bus a moment before the store), so a
    /// caller answering after `done` answers read-your-writes. Runs executing
    /// elsewhere resolve at once; waits at most `CANCEL_WAIT`.
    pub async fn settled(&self, run_id: &RunId) {
        if let Some(handle) = self.engine.live(run_id) {
            let _ = tokio::time::timeout(CANCEL_WAIT, handle.finished()).await;
        }
    }

    /// The run as stored; one stored `running` that does not execute here
    /// is the mode's to account for (it may settle it first).
    pub async fn get_run(&self, account: &str, run_id: &RunId) -> Result<Run, RunError> {
        let run = self.stored_run(account, run_id).await?;
        if run.status == RunStatus::Running && self.engine.live(run_id).is_none() {
            return self.mode.status(account, run).await;
        }
        Ok(run)
    }

    /// The run as stored. A run started here a moment ago may not be yet
    /// (its row is written beside its start, `super::row`): then its row
    /// is waited for, so whoever read its id from its stream finds it.
    async fn stored_run(&self, account: &str, run_id: &RunId) -> Result<Run, RunError> {
        let store = self.engine.store();
        // Looked up first: a run is forgotten only after its row's write
        // ended, so a run not live before the read that finds nothing is
        // not about to be stored either.
        let live = self.engine.live(run_id);
        let mut run = store.get_run(account, run_id.as_str()).await;
        if let (Err(StoreError::NotFound(_)), Some(h)) = (&run, live) {
            if h.row.awaits(account) {
                // Bounded: a write that fails, fails the run by itself.
                let _ = tokio::time::timeout(ROW_WAIT, h.row.stored_or_failed()).await;
                run = store.get_run(account, run_id.as_str()).await;
            }
        }
        run.map_err(|e| not_found(e, RunError::RunNotFound(run_id.to_string())))
    }

    /// The id of the agent's session called `name`, made on first use
    /// (cached per process; made again if it was deleted).
    async fn session_by_name(
        &self,
        account: &str,
        agent_id: &AgentId,
        name: &str,
    ) -> Result<SessionId, RunError> {
        let store = self.engine.store().as_ref();
        self.sessions
            .by_name(store, account, agent_id.as_str(), name)
            .await
            .map_err(|e| not_found(e, RunError::AgentNotFound(agent_id.to_string())))
    }

    /// Looks up the agent's session called `name` without creating it.
    pub async fn find_session(
        &self,
        account: &str,
        agent_id: &AgentId,
        name: &str,
    ) -> Result<Option<SessionId>, RunError> {
        let store = self.engine.store().as_ref();
        Ok(sessions::find(store, account, agent_id.as_str(), name).await?)
    }
}

/// Maps a store NotFound to `nf`, other store errors through.
fn not_found(e: StoreError, nf: RunError) -> RunError {
    match e {
        StoreError::NotFound(_) => nf,
        other => other.into(),
    }
}

/// Agent metadata `max_steps` (1 to [`MAX_STEPS_LIMIT`]), else the configured default.
pub(super) fn max_steps_for(agent: &Agent, default: u32) -> u32 {
    agent
        .metadata
        .get("max_steps")
        .and_then(serde_json::Value::as_u64)
        .map(|n| n.clamp(1, MAX_STEPS_LIMIT) as u32)
        .unwrap_or(default.max(1))
}

fn validate_messages(messages: &[ChatMessage]) -> Result<(), RunError> {
    if messages.is_empty() {
        return Err(RunError::Invalid(
            "`message` (or `messages`) is required".into(),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role != "user" {
            return Err(RunError::Invalid(format!(
                "`messages[{i}].role` must be `user` (an agent keeps its own replies)"
            )));
        }
        if m.content.trim().is_empty() {
            return Err(RunError::Invalid(format!(
                "`messages[{i}].content` must not be empty"
            )));
        }
    }
    Ok(())
}
