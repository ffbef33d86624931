//! [`Runtime`]: starts runs, keeps one cancellation handle per live run, and
//! answers run status (settling runs a crashed gateway left behind).
//!
//! A run is stored (`running`) before it starts, executes as a task on the
//! gateway's [`TaskTracker`] ([`super::run`]), and writes its final status to
//! the store, so status survives a restart. Each run's cancellation token is a
//! child of the gateway's shutdown token: draining the gateway ends every run
//! with `done` (`cancelled`).
//!
//! Crash recovery is lazy and best effort: the store cannot list running runs,
//! so a run still `running` in the store that was created before this process
//! started and is not live here is settled (`failed`, with `error` and `done`
//! events so streams of it end) the first time it is read or cancelled. This
//! assumes one gateway runs an account's agents; the Redis worker work must
//! replace it with leases.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::OnceCell;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    events::{fields, Emitter, Seeds, Sinks},
    models::{Model, Provider},
    run::RunTask,
    ChatMessage, RunError, StartRun,
};
use crate::{
    bus::Bus,
    config::ServeConfig,
    store::{
        ListParams, Run, Store, StoreError, AGENT_STOPPED, RUN_CANCELLED, RUN_FAILED, RUN_RUNNING,
    },
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
}

type SessionKey = (String, String, String);

/// State shared by the runtime and its run tasks.
pub(crate) struct Inner {
    pub sinks: Sinks,
    pub config: Arc<ServeConfig>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Client for webhook tools (its own pool; per-request 10 s timeout).
    pub http: reqwest::Client,
    pub provider: Option<Arc<Provider>>,
    runs: Mutex<HashMap<String, RunHandle>>,
    /// Runs being settled after a crash, so two readers do not both settle one.
    settling: Mutex<HashSet<String>>,
    sessions: Mutex<HashMap<SessionKey, Arc<OnceCell<String>>>>,
    /// When this runtime started (RFC 3339, comparable as text with `created_at`).
    started_at: String,
}

impl Inner {
    pub(crate) fn forget_run(&self, run_id: &str) {
        let handle = lock(&self.runs).remove(run_id);
        if let Some(h) = handle {
            h.finished.cancel();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent under a panic elsewhere: recover them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs agents: model calls, tool calls, events published with seq.
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        config: Arc<ServeConfig>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let http = build_client(None);
        let provider = Provider::from_config(&config, build_client(Some(Duration::from_secs(10))));
        Self {
            inner: Arc::new(Inner {
                sinks: Sinks {
                    bus,
                    store,
                    seeds: Arc::new(Seeds::default()),
                },
                config,
                tracker,
                shutdown,
                http,
                provider,
                runs: Mutex::new(HashMap::new()),
                settling: Mutex::new(HashSet::new()),
                sessions: Mutex::new(HashMap::new()),
                started_at: crate::util::now(),
            }),
        }
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
        let model = Model::resolve(&agent.model, &agent.metadata, inner.provider.as_ref())
            .map_err(|e| RunError::Invalid(format!("agent {}: {e}", agent.id)))?;
        let session_id = match req.session_id {
            Some(sid) => {
                store
                    .get_session(account, &agent.id, &sid)
                    .await
                    .map_err(|e| not_found(e, RunError::SessionNotFound(sid.clone())))?
                    .id
            }
            None => self.session_by_name(account, &agent.id, "default").await?,
        };
        let now = crate::util::now();
        let run = Run {
            id: crate::util::new_id("run"),
            agent_id: agent.id.clone(),
            session_id,
            status: RUN_RUNNING.into(),
            stop_reason: None,
            error: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let handle = RunHandle {
            cancel: inner.shutdown.child_token(),
            finished: CancellationToken::new(),
        };
        let run_id = run.id.clone();
        lock(&inner.runs).insert(run_id.clone(), handle.clone());
        let run = match store.create_run(account, run).await {
            Ok(run) => run,
            Err(e) => {
                lock(&inner.runs).remove(&run_id);
                return Err(e.into());
            }
        };
        let max_steps = agent
            .metadata
            .get("max_steps")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n.clamp(1, MAX_STEPS_LIMIT) as u32)
            .unwrap_or(inner.config.max_steps.max(1));
        let task = RunTask {
            inner: inner.clone(),
            account: account.to_owned(),
            agent,
            run: run.clone(),
            model,
            messages: req.messages,
            stream_tokens: req.stream_tokens,
            background: req.background,
            max_steps,
            handle,
        };
        inner.tracker.spawn(task.execute());
        Ok(run)
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
            None => {
                self.settle_orphan(
                    account,
                    run,
                    RUN_CANCELLED,
                    "cancelled after the gateway running it stopped",
                )
                .await
            }
        }
    }

    /// Cancels a live run at once, without waiting (for transports whose
    /// client went away). Unknown or finished runs are ignored.
    pub fn abort(&self, run_id: &str) {
        if let Some(h) = lock(&self.inner.runs).get(run_id) {
            h.cancel.cancel();
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
            && !self.is_live(run_id)
            && run.created_at < self.inner.started_at
        {
            return self
                .settle_orphan(
                    account,
                    run,
                    RUN_FAILED,
                    "interrupted: the gateway stopped during the run",
                )
                .await;
        }
        Ok(run)
    }

    /// Ends a run nobody executes any more: `error` (if failed) and `done`
    /// events, then the final status.
    async fn settle_orphan(
        &self,
        account: &str,
        run: Run,
        status: &str,
        why: &str,
    ) -> Result<Run, RunError> {
        let run_id = run.id.clone();
        if !lock(&self.inner.settling).insert(run_id.clone()) {
            return Ok(run);
        }
        let mut em = Emitter::new(
            self.inner.sinks.clone(),
            account,
            &run.agent_id,
            &run.id,
            &run.session_id,
        );
        let stop_reason = if status == RUN_FAILED {
            "error"
        } else {
            "cancelled"
        };
        let mut published = Ok(());
        if status == RUN_FAILED {
            published = em
                .emit(
                    "error",
                    fields([("code", "interrupted".into()), ("message", why.into())]),
                )
                .await
                .map(drop);
        }
        if published.is_ok() {
            published = em
                .emit("done", fields([("stop_reason", stop_reason.into())]))
                .await
                .map(drop);
        }
        if let Err(e) = published {
            tracing::warn!(error = %e, run_id = %run.id, "could not publish the end of an orphaned run");
        }
        let settled = Run {
            status: status.into(),
            stop_reason: Some(stop_reason.into()),
            error: Some(why.into()),
            updated_at: crate::util::now(),
            ..run
        };
        let result = self.inner.sinks.store.finish_run(account, settled).await;
        lock(&self.inner.settling).remove(&run_id);
        Ok(result?)
    }

    /// The id of the agent's session called `name`, made on first use. The
    /// id is cached per process; a cached session that was deleted is made
    /// again.
    pub async fn session_by_name(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<String, RunError> {
        let key = (account.to_owned(), agent_id.to_owned(), name.to_owned());
        for _ in 0..2 {
            let cell = lock(&self.inner.sessions)
                .entry(key.clone())
                .or_default()
                .clone();
            let store = self.inner.sinks.store.as_ref();
            let id = cell
                .get_or_try_init(|| find_or_create_session(store, account, agent_id, name))
                .await
                .map_err(|e| not_found(e, RunError::AgentNotFound(agent_id.to_owned())))?
                .clone();
            match store.get_session(account, agent_id, &id).await {
                Ok(_) => return Ok(id),
                Err(StoreError::NotFound(_)) => {
                    let mut map = lock(&self.inner.sessions);
                    if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        map.remove(&key);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RunError::SessionNotFound(name.to_owned()))
    }

    /// Looks up the agent's session called `name` without creating it.
    pub async fn find_session(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<Option<String>, RunError> {
        Ok(find_session(self.inner.sinks.store.as_ref(), account, agent_id, name).await?)
    }
}

fn build_client(connect_timeout: Option<Duration>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout.unwrap_or(Duration::from_secs(5)));
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

async fn find_session(
    store: &dyn Store,
    account: &str,
    agent_id: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let mut params = ListParams {
        limit: 1000,
        offset: 0,
        after: None,
    };
    loop {
        let page = store
            .list_sessions(account, agent_id, params.clone())
            .await?;
        if let Some(s) = page.data.iter().find(|s| s.name == name) {
            return Ok(Some(s.id.clone()));
        }
        match page.pagination.next_cursor {
            Some(c) if !page.data.is_empty() => params.after = Some(c),
            _ => return Ok(None),
        }
    }
}

async fn find_or_create_session(
    store: &dyn Store,
    account: &str,
    agent_id: &str,
    name: &str,
) -> Result<String, StoreError> {
    match find_session(store, account, agent_id, name).await? {
        Some(id) => Ok(id),
        None => Ok(store.create_session(account, agent_id, name).await?.id),
    }
}
