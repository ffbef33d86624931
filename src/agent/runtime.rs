//! [`Runtime`]: starts runs, keeps one cancellation handle per live run, and
//! answers run status (settling runs a crashed gateway left behind).
//!
//! A run is stored (`running`) before it starts, executes as a task on the
//! gateway's [`TaskTracker`] ([`super::run`]), and writes its final status to
//! the store, so status survives a restart. Draining the gateway refuses new
//! runs but lets running ones finish; each run's cancellation token is a
//! child of [`Runtime::stop_runs`]'s token, which the gateway cancels when the
//! grace period is over, ending the runs still going with `done` (`cancelled`).
//!
//! Without Redis, crash recovery is lazy and best effort: the store cannot
//! list running runs, so a run still `running` in the store that was created
//! before this process started and is not live here is settled (`failed`,
//! with `error` and `done` events so streams of it end) the first time it is
//! read or cancelled. With Redis, runs are queued and executed by workers
//! (`super::queued`, [`crate::work`]), and a dead worker's runs are reclaimed
//! by the others instead.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{
    events::{fields, Emitter, Seeds, Sinks},
    models::{Model, Provider},
    run::RunTask,
    sessions::{self, Sessions, DEFAULT_SESSION},
    ChatMessage, RunError, StartRun,
};
use crate::work::{Job, RunQueue};
use crate::{
    bus::Bus,
    config::ServeConfig,
    store::{Agent, Run, Store, StoreError, AGENT_STOPPED, RUN_CANCELLED, RUN_FAILED, RUN_RUNNING},
};

/// How long `cancel_run` waits for the run to write its final status.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// Upper bound on `max_steps` from agent metadata.
const MAX_STEPS_LIMIT: u64 = 100;

/// The handle of a live run.
#[derive(Clone)]
pub(crate) struct RunHandle {
    pub cancel: CancellationToken,
    /// Cancelled once the run has written its final status.
    pub finished: CancellationToken,
    /// Cancelled when another worker took the run over: it ends quietly,
    /// publishing and storing nothing more (the other worker ends it).
    pub lost: CancellationToken,
}

impl RunHandle {
    fn new(stop_runs: &CancellationToken) -> Self {
        Self {
            cancel: stop_runs.child_token(),
            finished: CancellationToken::new(),
            lost: CancellationToken::new(),
        }
    }
}

/// State shared by the runtime and its run tasks.
pub(crate) struct Inner {
    pub sinks: Sinks,
    pub config: Arc<ServeConfig>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Cancelled at the end of the drain's grace period: every live run stops.
    pub stop_runs: CancellationToken,
    /// How webhook tools are called (its own pool; per-request 10 s
    /// timeout; public addresses only unless `--webhook-allow-private`).
    pub http: super::tools::egress::Webhooks,
    pub provider: Option<Arc<Provider>>,
    /// The Redis run queue (with `--redis`): runs are executed by workers.
    pub queue: Option<Arc<RunQueue>>,
    pub(crate) runs: Mutex<HashMap<String, RunHandle>>,
    /// Runs being settled after a crash, so two readers do not both settle one.
    settling: Mutex<HashSet<String>>,
    sessions: Sessions,
    /// When this runtime started (RFC 3339, comparable as text with `created_at`).
    started_at: String,
    /// This process's consumer name in the run queue, once it takes runs.
    pub worker_name: std::sync::OnceLock<String>,
}

impl Inner {
    /// Starts a run's task on the tracker.
    pub(crate) fn spawn(&self, task: RunTask) {
        let span = tracing::info_span!("run", run_id = %task.run.id, agent_id = %task.run.agent_id);
        self.tracker.spawn(task.execute().instrument(span));
    }

    /// Registers a run executing in this process.
    pub(crate) fn register(&self, run_id: &str) -> RunHandle {
        let handle = RunHandle::new(&self.stop_runs);
        lock(&self.runs).insert(run_id.to_owned(), handle.clone());
        handle
    }

    pub(crate) fn forget_run(&self, run_id: &str) {
        let handle = lock(&self.runs).remove(run_id);
        if let Some(h) = handle {
            h.finished.cancel();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent under a panic elsewhere: recover them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs agents: model calls, tool calls, events published with seq. A
/// cheap handle: clones share one runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl Runtime {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        config: Arc<ServeConfig>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let http = super::tools::egress::Webhooks::new(config.webhook_allow_private);
        let provider = Provider::from_config(&config, build_client(Duration::from_secs(10)));
        let queue = super::queued::build_queue(&config);
        let runtime = Self {
            inner: Arc::new(Inner {
                sinks: Sinks {
                    bus,
                    store,
                    seeds: Arc::new(Seeds::default()),
                },
                config,
                tracker,
                shutdown,
                stop_runs: CancellationToken::new(),
                http,
                provider,
                queue,
                runs: Mutex::new(HashMap::new()),
                settling: Mutex::new(HashSet::new()),
                sessions: Sessions::default(),
                started_at: crate::util::now(),
                worker_name: std::sync::OnceLock::new(),
            }),
        };
        runtime.start_queue();
        runtime
    }

    /// The configured upstream provider, if any (for the OpenAI relay).
    pub fn provider(&self) -> Option<&Arc<Provider>> {
        self.inner.provider.as_ref()
    }

    /// Starts a run in the background and returns it (status `running`).
    /// Subscribe to `agent:<id>` *before* calling this to see every event.
    pub async fn start_run(&self, account: &str, req: StartRun) -> Result<Run, RunError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(RunError::ShuttingDown);
        }
        validate_messages(&req.messages)?;
        let store = inner.sinks.store.as_ref();
        let agent = store
            .get_agent(account, &req.agent_id)
            .await
            .map_err(|e| not_found(e, RunError::AgentNotFound(req.agent_id.clone())))?;
        if agent.status == AGENT_STOPPED {
            return Err(RunError::AgentStopped(agent.id));
        }
        let model = Model::resolve(
            &agent.model,
            &agent.metadata,
            inner.provider.as_ref(),
            inner.config.max_echo_delay(),
        )
        .map_err(|e| RunError::ModelUnavailable(format!("agent {}: {e}", agent.id)))?;
        let session_id = self
            .resolve_session(account, &agent.id, req.session_id)
            .await?;
        let now = crate::util::now();
        let run = Run {
            id: req.run_id.unwrap_or_else(|| crate::util::new_id("run")),
            agent_id: agent.id.clone(),
            session_id,
            status: RUN_RUNNING.into(),
            stop_reason: None,
            error: None,
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
        };
        if let Some(queue) = &inner.queue {
            return self.enqueue(queue, job).await;
        }
        // Registered before it is stored, so a cancel can never find it
        // stored but not live.
        let handle = inner.register(&job.run.id);
        let run = match store.create_run(account, job.run.clone()).await {
            Ok(run) => run,
            Err(e) => {
                lock(&inner.runs).remove(&job.run.id);
                return Err(e.into());
            }
        };
        inner.spawn(RunTask::new(inner.clone(), job, model, handle));
        Ok(run)
    }

    /// The named session (it must exist), else the agent's default one.
    async fn resolve_session(
        &self,
        account: &str,
        agent_id: &str,
        session_id: Option<String>,
    ) -> Result<String, RunError> {
        match session_id {
            Some(sid) => Ok(self
                .inner
                .sinks
                .store
                .get_session(account, agent_id, &sid)
                .await
                .map_err(|e| not_found(e, RunError::SessionNotFound(sid.clone())))?
                .id),
            None => {
                self.session_by_name(account, agent_id, DEFAULT_SESSION)
                    .await
            }
        }
    }

    /// Cancels a running run; its stream ends with `done` (`cancelled`).
    /// Returns the run as stored afterwards. A run already over is returned
    /// unchanged (cancelling is idempotent).
    pub async fn cancel_run(&self, account: &str, run_id: &str) -> Result<Run, RunError> {
        let store = self.inner.sinks.store.as_ref();
        let run = store
            .get_run(account, run_id)
            .await
            .map_err(|e| not_found(e, RunError::RunNotFound(run_id.to_owned())))?;
        if run.status != RUN_RUNNING {
            return Ok(run);
        }
        let handle = lock(&self.inner.runs).get(run_id).cloned();
        match handle {
            Some(h) => {
                h.cancel.cancel();
                // The run writes its own final status; wait for it, bounded.
                let _ = tokio::time::timeout(CANCEL_WAIT, h.finished.cancelled()).await;
                Ok(store.get_run(account, run_id).await?)
            }
            // A worker elsewhere runs it: tell it, and wait for the end.
            None if self.inner.queue.is_some() => self.cancel_remote(account, run).await,
            None => {
                self.settle_orphan(
                    account,
                    run,
                    Ending::cancelled("cancelled after the gateway running it stopped"),
                )
                .await
            }
        }
    }

    /// Cancels every live run (the end of the drain's grace period); each
    /// ends with `done` (`cancelled`) and the error "the gateway shut down".
    pub fn stop_runs(&self) {
        self.inner.stop_runs.cancel();
    }

    /// Cancels a live run at once, without waiting (for transports whose
    /// client went away). Unknown or finished runs are ignored.
    pub fn abort(&self, run_id: &str) {
        if let Some(h) = lock(&self.inner.runs).get(run_id) {
            h.cancel.cancel();
            return;
        }
        if self.inner.queue.is_some() {
            self.abort_remote(run_id);
        }
    }

    /// True while the run executes in this process.
    pub fn is_live(&self, run_id: &str) -> bool {
        lock(&self.inner.runs).contains_key(run_id)
    }

    /// The run as stored, settling it first if a crashed gateway left it
    /// `running` (see the module docs).
    pub async fn get_run(&self, account: &str, run_id: &str) -> Result<Run, RunError> {
        let run = self
            .inner
            .sinks
            .store
            .get_run(account, run_id)
            .await
            .map_err(|e| not_found(e, RunError::RunNotFound(run_id.to_owned())))?;
        if run.status == RUN_RUNNING
            && self.inner.queue.is_none()
            && !self.is_live(run_id)
            && run.created_at < self.inner.started_at
        {
            return self
                .settle_orphan(
                    account,
                    run,
                    Ending::failed(
                        "interrupted",
                        "interrupted: the gateway stopped during the run",
                    ),
                )
                .await;
        }
        Ok(run)
    }

    /// Ends a run nobody executes any more: `error` (if failed) and `done`
    /// events, then the final status.
    pub(crate) async fn settle_orphan(
        &self,
        account: &str,
        run: Run,
        end: Ending,
    ) -> Result<Run, RunError> {
        let run_id = run.id.clone();
        if !lock(&self.inner.settling).insert(run_id.clone()) {
            return Ok(run);
        }
        let result = self.settle_now(account, run, end).await;
        lock(&self.inner.settling).remove(&run_id);
        result
    }

    /// `error`, then the final status, then `done`: as a run that ends by
    /// itself, the status is stored before `done` goes out, so a client that
    /// saw `done` reads the final status.
    async fn settle_now(&self, account: &str, run: Run, end: Ending) -> Result<Run, RunError> {
        let mut em = Emitter::new(
            self.inner.sinks.clone(),
            account,
            &run.agent_id,
            &run.id,
            &run.session_id,
        );
        let mut published = Ok(());
        if let Some(code) = end.code {
            let error = fields([("code", code.into()), ("message", end.why.clone().into())]);
            published = em.emit("error", error).await.map(drop);
        }
        let stop_reason = end.stop_reason();
        let settled = Run {
            status: end.status.into(),
            stop_reason: Some(stop_reason.into()),
            error: Some(end.why),
            updated_at: crate::util::now(),
            ..run
        };
        let stored = self.inner.sinks.store.finish_run(account, settled).await?;
        if published.is_ok() {
            published = em
                .emit("done", fields([("stop_reason", stop_reason.into())]))
                .await
                .map(drop);
        }
        if let Err(e) = published {
            tracing::warn!(error = %e, run_id = %stored.id, "could not publish the end of an orphaned run");
        }
        Ok(stored)
    }

    /// The id of the agent's session called `name`, made on first use
    /// (cached per process; made again if it was deleted).
    pub async fn session_by_name(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<String, RunError> {
        let store = self.inner.sinks.store.as_ref();
        self.inner
            .sessions
            .by_name(store, account, agent_id, name)
            .await
            .map_err(|e| not_found(e, RunError::AgentNotFound(agent_id.to_owned())))
    }

    /// Looks up the agent's session called `name` without creating it.
    pub async fn find_session(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<Option<String>, RunError> {
        Ok(sessions::find(self.inner.sinks.store.as_ref(), account, agent_id, name).await?)
    }
}

/// How a run nobody executes is ended.
pub(crate) struct Ending {
    pub status: &'static str,
    /// The `error` event's code; `None` publishes no `error` (a cancel).
    pub code: Option<&'static str>,
    pub why: String,
}

impl Ending {
    pub fn failed(code: &'static str, why: impl Into<String>) -> Self {
        Self {
            status: RUN_FAILED,
            code: Some(code),
            why: why.into(),
        }
    }

    pub fn cancelled(why: impl Into<String>) -> Self {
        Self {
            status: RUN_CANCELLED,
            code: None,
            why: why.into(),
        }
    }

    fn stop_reason(&self) -> &'static str {
        if self.status == RUN_FAILED {
            "error"
        } else {
            "cancelled"
        }
    }
}

fn build_client(connect_timeout: Duration) -> reqwest::Client {
    let mut b = reqwest::Client::builder().connect_timeout(connect_timeout);
    // Keep connections to a provider warm: the relay's first-byte latency matters.
    b = b
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true);
    b.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "HTTP client with custom settings failed; using defaults");
        reqwest::Client::new()
    })
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
