//! [`Engine`]: what executes runs in this process, whichever [`RunMode`]
//! decided where they run: one cancellation handle per live run, the run
//! tasks (`run`), and settling runs nobody executes any more.
//!
//! Both modes execute runs here: the in-process mode every run this gateway
//! starts, the queued mode the runs this process's worker takes. Each run's
//! cancellation token is a child of [`Engine::stop_runs`]'s token, which the
//! gateway cancels when the drain's grace period is over, ending the runs
//! still going with `done` (`cancelled`).
//!
//! [`RunMode`]: super::RunMode

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, OnceLock},
    time::Duration,
};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{
    events::{Emitter, Seeds, Sinks},
    models::{Model, ModelError},
    row::{RowWatch, RowWrite},
    run::RunTask,
    tools::egress::Webhooks,
    Job, RunError,
};
use crate::{
    bus::Bus,
    config::ServeConfig,
    domain::{ErrorCode, EventBody, RunId, RunStatus, StopReason},
    edge::{runs::RunSlots, RunSlot, SlotRef},
    store::{Agent, Run, Store},
};

/// The handle of a live run.
#[derive(Clone)]
pub struct RunHandle {
    pub(super) cancel: CancellationToken,
    /// Cancelled once the run has written its final status.
    pub(super) finished: CancellationToken,
    /// Cancelled when another worker took the run over: it ends quietly,
    /// publishing and storing nothing more (the other worker ends it).
    pub(super) lost: CancellationToken,
    /// Whether the run's row is in the store yet ([`super::row`]).
    pub(super) row: RowWatch,
}

impl RunHandle {
    /// Asks the run to stop; it ends with `done` (`cancelled`).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Resolves once the run has written its final status.
    pub async fn finished(&self) {
        self.finished.cancelled().await;
    }
}

/// Executes runs in this process. Built once per process and shared
/// (`Arc`) by the runtime and its mode.
pub struct Engine {
    pub(super) sinks: Sinks,
    pub(super) config: Arc<ServeConfig>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Cancelled at the end of the drain's grace period: every live run stops.
    pub(super) stop_runs: CancellationToken,
    /// How webhook tools are called (its own pool; per-request 10 s
    /// timeout; public addresses only unless `--webhook-allow-private`).
    pub(super) http: Webhooks,
    providers: Arc<crate::providers::Registry>,
    runs: Mutex<HashMap<RunId, RunHandle>>,
    /// The key's run slot of each run this process holds one for: given
    /// back when the run is forgotten, whatever ended it.
    slots: Mutex<HashMap<RunId, RunSlot>>,
    /// Where slots of runs other processes accepted are adopted (the edge's).
    run_slots: OnceLock<Arc<RunSlots>>,
    /// Where runs record the usage they metered.
    pub(super) usage: OnceLock<Arc<crate::usage::UsageMeter>>,
    /// Where ended runs are announced to webhooks (set once, by the process).
    pub(super) notifier: OnceLock<crate::webhooks::Notifier>,
    /// How many runs are live, for whoever waits for none to be.
    live_count: watch::Sender<usize>,
    /// Runs being settled, so two readers do not both settle one.
    settling: Mutex<HashSet<RunId>>,
    /// When this process started (RFC 3339, comparable as text with `created_at`).
    started_at: String,
    /// This process's consumer name in the run queue, once it takes runs.
    worker_name: OnceLock<String>,
}

impl Engine {
    /// An engine with nothing running; it starts nothing by itself.
    /// `shutdown` is the drain: from then on the runtime refuses new runs.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        config: Arc<ServeConfig>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        // One pool per serving loop (`--runtime per-core`), else one.
        let loops = crate::cores::count(&config);
        let clients = crate::cores::PerCore::new(loops, |_| provider_client());
        let providers = Arc::new(crate::providers::Registry::build(&config, clients));
        Self {
            sinks: Sinks {
                bus,
                store,
                seeds: Arc::new(Seeds::default()),
            },
            http: Webhooks::new(config.webhook_allow_private, &config.webhooks.egress_allow),
            config,
            tracker,
            shutdown,
            stop_runs: CancellationToken::new(),
            providers,
            runs: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            run_slots: OnceLock::new(),
            usage: OnceLock::new(),
            notifier: OnceLock::new(),
            live_count: watch::Sender::new(0),
            settling: Mutex::new(HashSet::new()),
            started_at: crate::util::now(),
            worker_name: OnceLock::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.sinks.store
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.sinks.bus
    }

    pub fn config(&self) -> &Arc<ServeConfig> {
        &self.config
    }

    /// Where run tasks (and short tasks of the modes) are spawned.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancelled when the process starts to drain.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// When this process started (RFC 3339).
    pub fn started_at(&self) -> &str {
        &self.started_at
    }

    /// The configured providers and routes.
    pub fn providers(&self) -> &Arc<crate::providers::Registry> {
        &self.providers
    }

    /// The model `agent` runs on here.
    pub(super) fn model_for(&self, agent: &Agent) -> Result<Model, ModelError> {
        Model::resolve(
            &agent.model,
            &agent.metadata,
            &self.providers,
            self.config.max_echo_delay(),
        )
    }

    /// Names this process's run-queue consumer (in each run's first log line).
    pub fn set_worker_name(&self, name: String) {
        let _ = self.worker_name.set(name);
    }

    pub fn worker_name(&self) -> Option<&str> {
        self.worker_name.get().map(String::as_str)
    }

    /// Sets where this process holds the slots of runs it executes for
    /// other processes (once; the edge's [`RunSlots`]).
    pub fn set_run_slots(&self, slots: Arc<RunSlots>) {
        let _ = self.run_slots.set(slots);
    }

    /// Sets where runs record their usage (once; the process's meter).
    pub fn set_usage(&self, usage: Arc<crate::usage::UsageMeter>) {
        let _ = self.usage.set(usage);
    }

    /// Sets where ended runs are announced (once; the process's notifier).
    pub fn set_notifier(&self, notifier: crate::webhooks::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// Queues the webhook event of a run that ended (never waits).
    pub fn notify_run_end(&self, account: &str, run: &crate::store::Run) {
        let (Some(notifier), Some(event)) = (
            self.notifier.get(),
            crate::webhooks::WebhookEvent::run_ended(run.status),
        ) else {
            return;
        };
        let data = crate::webhooks::events::run_data(run);
        notifier.notify(account, event, Some(&run.agent_id), data);
    }

    /// Queues the webhook event of an approval requested or decided (never
    /// waits): `approval.requested` / `approval.resolved`.
    pub(super) fn notify_approval(
        &self,
        approval: &crate::store::Approval,
        event: crate::webhooks::WebhookEvent,
    ) {
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        let data = serde_json::json!({
            "approval_id": approval.id,
            "run_id": approval.run_id,
            "agent_id": approval.agent_id,
            "tool": approval.tool,
            "arguments": approval.arguments,
            "status": approval.status,
            "expires_at": approval.expires_at,
            "decided_by": approval.decided_by,
            "reason": approval.reason,
        });
        notifier.notify(&approval.account_id, event, Some(&approval.agent_id), data);
    }

    /// The token counters and payer of the slot `run_id` holds here.
    pub(super) fn slot_payer(
        &self,
        run_id: &RunId,
    ) -> (
        Option<Arc<crate::edge::Budgets>>,
        Option<crate::edge::Payer>,
    ) {
        let slots = self.slots.lock();
        let slot = slots.get(run_id);
        (
            slot.and_then(RunSlot::budgets),
            slot.and_then(|s| s.payer().cloned()),
        )
    }

    /// Holds `slot` for `run_id` until the run is forgotten (or released).
    pub fn hold(&self, run_id: &RunId, slot: RunSlot) {
        let old = self.slots.lock().insert(run_id.clone(), slot);
        drop(old);
    }

    /// Gives the slot of `run_id` back now (a run that did not start).
    pub fn release(&self, run_id: &RunId) {
        let slot = self.slots.lock().remove(run_id);
        drop(slot);
    }

    /// Gives the slot of `run_id` back now and waits until Redis has it
    /// (the run is about to publish `done`).
    pub async fn give_back(&self, run_id: &RunId) {
        let slot = self.slots.lock().remove(run_id);
        if let Some(slot) = slot {
            slot.give_back().await;
        }
    }

    /// Lets go of the slot of `run_id` without giving it back, for the
    /// process that will execute the run to adopt ([`RunSlot::hand_off`]).
    pub fn hand_off(&self, run_id: &RunId) -> Option<SlotRef> {
        let slot = self.slots.lock().remove(run_id);
        slot.map(RunSlot::hand_off)
    }

    /// Holds the slot another process handed off for `run_id`, which
    /// executes here, until the run is forgotten.
    pub fn adopt(&self, run_id: &RunId, r: &SlotRef) {
        if let Some(slots) = self.run_slots.get() {
            self.hold(run_id, slots.adopt(r));
        }
    }

    /// Registers a run about to execute in this process, its row stored.
    pub fn register(&self, run_id: &RunId) -> RunHandle {
        self.register_with(run_id, RowWatch::stored())
    }

    /// Registers a new run whose row is written as it starts
    /// ([`super::row`]): the returned [`RowWrite`] says when it is.
    pub(crate) fn register_unstored(&self, run_id: &RunId, account: &str) -> (RunHandle, RowWrite) {
        let (row, write) = RowWatch::pending(account);
        (self.register_with(run_id, row), write)
    }

    fn register_with(&self, run_id: &RunId, row: RowWatch) -> RunHandle {
        let handle = RunHandle {
            cancel: self.stop_runs.child_token(),
            finished: CancellationToken::new(),
            lost: CancellationToken::new(),
            row,
        };
        let mut runs = self.runs.lock();
        runs.insert(run_id.clone(), handle.clone());
        self.live_count.send_replace(runs.len());
        handle
    }

    /// The run has ended (or never started): it is no longer live here.
    pub(super) fn forget(&self, run_id: &RunId) {
        let handle = {
            let mut runs = self.runs.lock();
            let h = runs.remove(run_id);
            self.live_count.send_replace(runs.len());
            h
        };
        self.release(run_id);
        if let Some(h) = handle {
            h.finished.cancel();
        }
    }

    /// The handle of a run executing in this process.
    pub fn live(&self, run_id: &RunId) -> Option<RunHandle> {
        self.runs.lock().get(run_id).cloned()
    }

    /// Cancels the run if it executes here; false if it does not.
    pub fn cancel_live(&self, run_id: &RunId) -> bool {
        match self.runs.lock().get(run_id) {
            Some(h) => {
                h.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Another worker took the run over: stop it here without ending it.
    pub fn lose(&self, run_id: &RunId) {
        if let Some(h) = self.runs.lock().get(run_id) {
            h.lost.cancel();
            h.cancel.cancel();
        }
    }

    /// Cancels every live run (the end of the drain's grace period).
    pub fn stop_runs(&self) {
        self.stop_runs.cancel();
    }

    /// Resolves once the process drains and no run is live any more: what
    /// listeners that serve live runs wait for before they end.
    pub async fn drained(&self) {
        self.shutdown.cancelled().await;
        let mut live = self.live_count.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
    }

    /// Executes a registered run on the tracker (see [`Self::execute`]).
    pub fn spawn(self: &Arc<Self>, job: Job, handle: RunHandle) {
        let engine = self.clone();
        self.tracker
            .spawn(async move { engine.execute(job, handle).await });
    }

    /// Executes a registered run until it has ended. A run whose model is
    /// unavailable here ends at once (`error` `model_unavailable`, `done`).
    pub async fn execute(self: &Arc<Self>, job: Job, handle: RunHandle) {
        let model = match self.model_for(&job.agent) {
            Ok(model) => model,
            Err(e) => {
                let run_id = job.run.id.clone();
                let why = format!("agent {}: {e}", job.agent.id);
                let end = Ending::failed(ErrorCode::ModelUnavailable, why);
                // Its end updates the row: written first (`super::row`).
                // A new run of this process whose row failed cannot get
                // here (its start checked the model just before).
                if let Err(e) = handle.row.stored_or_failed().await {
                    tracing::warn!(error = %e, "a run whose model is unavailable was not stored");
                } else if let Err(e) = self.settle(&job.account, job.run, end).await {
                    tracing::warn!(error = %e, "could not end a run whose model is unavailable");
                }
                self.forget(&run_id);
                return;
            }
        };
        let span = tracing::info_span!("run", run_id = %job.run.id, agent_id = %job.run.agent_id);
        RunTask::new(self.clone(), job, model, handle)
            .execute()
            .instrument(span)
            .await;
    }

    /// Ends a run nobody executes any more: `error` (if failed) and `done`
    /// events, then the final status and its `run.*` webhook. A run another
    /// caller is settling already is returned as given.
    pub async fn settle(&self, account: &str, run: Run, end: Ending) -> Result<Run, RunError> {
        let run_id = run.id.clone();
        if !self.settling.lock().insert(run_id.clone()) {
            return Ok(run);
        }
        let result = self.settle_now(account, run, end).await;
        self.settling.lock().remove(&run_id);
        result
    }

    /// `error`, then the final status, then `done`: as a run that ends by
    /// itself, the status is stored before `done` goes out, so a client that
    /// saw `done` reads the final status.
    async fn settle_now(&self, account: &str, run: Run, end: Ending) -> Result<Run, RunError> {
        let mut em = Emitter::new(
            self.sinks.clone(),
            account,
            &run.agent_id,
            &run.id,
            &run.session_id,
        );
        let mut published = Ok(());
        if let Some(code) = end.code {
            let message = end.why.clone();
            published = em.emit(EventBody::Error { code, message }).await.map(drop);
        }
        let stop_reason = end.stop_reason();
        let settled = Run {
            status: RunStatus::ended_by(stop_reason),
            stop_reason: Some(stop_reason),
            error: Some(end.why),
            error_code: end.code,
            updated_at: crate::util::now(),
            ..run
        };
        let stored = self.sinks.store.finish_run(account, settled).await?;
        // Settled here, not by `conclude`: its `run.*` webhook goes from here.
        self.notify_run_end(account, &stored);
        if published.is_ok() {
            published = em.emit(EventBody::Done { stop_reason }).await.map(drop);
        }
        if let Err(e) = published {
            tracing::warn!(error = %e, run_id = %stored.id, "could not publish the end of an orphaned run");
        }
        Ok(stored)
    }
}

/// How a run nobody executes is ended: failed (`error`, then `done`) or
/// cancelled (`done` alone).
pub struct Ending {
    /// The `error` event's code; `None` publishes no `error` (a cancel).
    code: Option<ErrorCode>,
    why: String,
}

impl Ending {
    pub fn failed(code: ErrorCode, why: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            why: why.into(),
        }
    }

    pub fn cancelled(why: impl Into<String>) -> Self {
        Self {
            code: None,
            why: why.into(),
        }
    }

    fn stop_reason(&self) -> StopReason {
        match self.code {
            Some(_) => StopReason::Error,
            None => StopReason::Cancelled,
        }
    }
}

/// The provider's HTTP client. Connections are kept warm: the relay's
/// first-byte latency matters.
fn provider_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "HTTP client with custom settings failed; using defaults");
            reqwest::Client::new()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus::memory::MemoryBus, store::sqlite::SqliteStore};

    #[tokio::test]
    async fn drained_waits_for_the_drain_and_then_the_last_live_run() {
        let tmp = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let engine = Engine::new(
            Arc::new(SqliteStore::open(tmp.path()).unwrap()),
            Arc::new(MemoryBus::new(10, 10)),
            Arc::new(ServeConfig::for_data_dir(tmp.path())),
            TaskTracker::new(),
            shutdown.clone(),
        );
        let (a, b): (RunId, RunId) = ("run-a".into(), "run-b".into());
        let handle = engine.register(&a);
        engine.register(&b);
        let mut drained = Box::pin(engine.drained());
        assert!(futures::poll!(&mut drained).is_pending(), "not draining");
        shutdown.cancel();
        engine.forget(&a);
        assert!(futures::poll!(&mut drained).is_pending(), "run-b is live");
        assert!(engine.cancel_live(&b) && !engine.cancel_live(&a));
        engine.forget(&b);
        assert!(futures::poll!(&mut drained).is_ready());
        // Forgetting a run tells whoever waits for its end.
        handle.finished().await;
    }
}
