//! One run, from the user's message to `done`: the step loop (model call →
//! tool calls → tool results → … → reply, at most `max_steps` model calls),
//! then exactly one terminal `done`, the final status in the store and the
//! "run ended" log line, whatever happened (a panic included).

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};

use super::{
    events::{EmitError, Emitter},
    logs::RunLog,
    models::{Model, ModelEvent, ModelRequest, StepOutput, ToolCall, Turn, Usage},
    tools::ToolSet,
    ChatMessage, Engine, Job, RunHandle,
};
use crate::domain::{
    AgentId, ErrorCode, EventBody, FunctionCall, FunctionStatus, MessageType, RunStatus, SessionId,
    StopReason,
};
use crate::store::{Agent, EventFilter, ListParams, Run, Store, StoreError};

/// Most events read in one go: a session's messages to rebuild its
/// conversation, or a taken-over run's events to restore them.
const HISTORY_WINDOW: u32 = 1000;
/// How long a run's `error` and `done` are retried while the bus is down.
const END_PATIENCE: Duration = Duration::from_secs(20);

/// Why a run ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    EndTurn,
    MaxSteps,
    Cancelled,
    Failed(Failure),
}

/// A failure shown to the client as an `error` event.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl From<EmitError> for Failure {
    fn from(e: EmitError) -> Self {
        Failure {
            code: ErrorCode::Unavailable,
            message: format!("event delivery failed: {e}"),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure {
            code: ErrorCode::Unavailable,
            message: e.to_string(),
        }
    }
}

/// Everything one run needs; consumed by [`RunTask::execute`].
pub(crate) struct RunTask {
    pub engine: Arc<Engine>,
    pub account: String,
    pub agent: Agent,
    pub run: Run,
    pub model: Model,
    pub messages: Vec<ChatMessage>,
    pub stream_tokens: bool,
    pub background: bool,
    pub max_steps: u32,
    pub handle: RunHandle,
}

impl RunTask {
    /// The task of a run that is stored and registered (`handle`).
    pub fn new(engine: Arc<Engine>, job: Job, model: Model, handle: RunHandle) -> Self {
        let max_steps = super::runtime::max_steps_for(&job.agent, engine.config.max_steps);
        Self {
            engine,
            account: job.account,
            agent: job.agent,
            run: job.run,
            model,
            messages: job.messages,
            stream_tokens: job.stream_tokens,
            background: job.background,
            max_steps,
            handle,
        }
    }

    pub async fn execute(self) {
        let started = Instant::now();
        let sinks = self.engine.sinks.clone();
        let mut em = Emitter::new(
            sinks.clone(),
            &self.account,
            &self.agent.id,
            &self.run.id,
            &self.run.session_id,
        );
        let log = RunLog::new(sinks, &self.account, &self.agent.id, &self.run.id);
        let on = match self.engine.worker_name() {
            Some(name) => format!(" on {name}"),
            None => String::new(),
        };
        log.info(format!(
            "run started{on}: model {}, session {}, max_steps {}{}",
            self.agent.model,
            self.run.session_id,
            self.max_steps,
            if self.background { ", background" } else { "" }
        ))
        .await;
        let mut usage = None;
        let outcome = AssertUnwindSafe(self.drive(&mut em, &log, &mut usage))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(run_id = %self.run.id, "run panicked");
                Err(Failure {
                    code: ErrorCode::InternalError,
                    message: "the run crashed".into(),
                })
            });
        let outcome = outcome.unwrap_or_else(Outcome::Failed);
        if self.handle.lost.is_cancelled() {
            // Another worker took the run over and ends it: say nothing more.
            tracing::warn!(run_id = %self.run.id, "run taken over by another worker; stopped here");
            self.engine.forget(&self.run.id);
            return;
        }
        if let Outcome::Failed(f) = &outcome {
            log.error(format!("run failed: {} ({})", f.message, f.code))
                .await;
        }
        let run = self.conclude(&mut em, outcome, usage).await;
        crate::metrics::run_finished(run.status, started.elapsed());
        log.info(format!(
            "run ended: {} ({}) after {} ms",
            run.status,
            run.stop_reason.map_or("-", StopReason::as_str),
            started.elapsed().as_millis()
        ))
        .await;
        self.engine.forget(&self.run.id);
    }

    async fn drive(
        &self,
        em: &mut Emitter,
        log: &RunLog,
        usage: &mut Option<Usage>,
    ) -> Result<Outcome, Failure> {
        let store = self.engine.sinks.store.as_ref();
        let history =
            load_history(store, &self.account, &self.agent.id, &self.run.session_id).await?;
        for m in &self.messages {
            let message = m.content.clone();
            em.emit(EventBody::UserMessage { message }).await?;
        }
        let (tools, warnings) = ToolSet::resolve(store, &self.account, &self.agent.tools).await?;
        for w in warnings {
            log.warn(w).await;
        }
        let mut turns = Vec::with_capacity(history.len() + self.messages.len() + 1);
        if !self.agent.system.trim().is_empty() {
            turns.push(Turn::System(self.agent.system.clone()));
        }
        turns.extend(history);
        turns.extend(self.messages.iter().map(|m| Turn::User(m.content.clone())));
        for step in 1..=self.max_steps {
            let t0 = Instant::now();
            let out = self.step(em, &turns, &tools).await;
            let took = t0.elapsed().as_millis();
            let Some(out) = out? else {
                return Ok(Outcome::Cancelled);
            };
            let model = &self.agent.model;
            log.info(format!("model {model} called (step {step}): {took} ms"))
                .await;
            usage.get_or_insert_with(Usage::default).add(out.usage);
            if out.tool_calls.is_empty() {
                em.emit(EventBody::AssistantMessage {
                    message: out.content,
                })
                .await?;
                return Ok(Outcome::EndTurn);
            }
            if !out.content.trim().is_empty() {
                let message = out.content.clone();
                em.emit(EventBody::InternalMonologue { message }).await?;
            }
            turns.push(Turn::Assistant {
                content: out.content,
                tool_calls: out.tool_calls.clone(),
            });
            if !self
                .call_tools(em, log, &tools, out.tool_calls, &mut turns)
                .await?
            {
                return Ok(Outcome::Cancelled);
            }
        }
        Ok(Outcome::MaxSteps)
    }

    /// Runs a step's tool calls in order, each result becoming a
    /// `function_message` and a `tool` turn. `Ok(false)` when cancelled.
    async fn call_tools(
        &self,
        em: &mut Emitter,
        log: &RunLog,
        tools: &ToolSet,
        calls: Vec<ToolCall>,
        turns: &mut Vec<Turn>,
    ) -> Result<bool, Failure> {
        for call in calls {
            let t0 = Instant::now();
            let result = tokio::select! {
                biased;
                _ = self.handle.cancel.cancelled() => return Ok(false),
                r = tools.call(&self.engine.http, &call) => r,
            };
            let status = FunctionStatus::of(result.ok);
            let took = t0.elapsed().as_millis();
            let line = format!("tool {} called: {status} in {took} ms", call.name);
            if result.ok {
                log.info(line).await
            } else {
                log.warn(format!("{line}: {}", result.result_text())).await
            }
            let content = result.result_text();
            let message = FunctionCall {
                args: result.args,
                function: call.name,
                result: result.result,
                status,
            };
            em.emit(EventBody::FunctionMessage { message }).await?;
            turns.push(Turn::Tool {
                call_id: call.id,
                content,
            });
        }
        Ok(true)
    }

    /// One model call. `Ok(None)` when the run was cancelled meanwhile; the
    /// step's stream (and with it any upstream request) is dropped at once.
    async fn step(
        &self,
        em: &mut Emitter,
        turns: &[Turn],
        tools: &ToolSet,
    ) -> Result<Option<StepOutput>, Failure> {
        let mut stream = self.model.step(ModelRequest {
            turns: turns.to_vec(),
            tools: tools.specs(),
        });
        loop {
            let next = tokio::select! {
                biased;
                _ = self.handle.cancel.cancelled() => return Ok(None),
                next = stream.next() => next,
            };
            match next {
                None => {
                    return Err(Failure {
                        code: ErrorCode::ModelError,
                        message: "the model stopped without an answer".into(),
                    })
                }
                Some(Err(e)) => {
                    return Err(Failure {
                        code: e.code(),
                        message: e.to_string(),
                    })
                }
                Some(Ok(ModelEvent::Monologue(m))) => {
                    em.emit(EventBody::InternalMonologue { message: m }).await?;
                }
                Some(Ok(ModelEvent::Delta(d))) => {
                    if self.stream_tokens {
                        em.emit(EventBody::AssistantDelta { delta: d }).await?;
                    }
                }
                Some(Ok(ModelEvent::Done(out))) => return Ok(Some(out)),
            }
        }
    }

    /// Publishes the terminal events, stores the final status (before `done`)
    /// and returns the run's final record.
    async fn conclude(&self, em: &mut Emitter, outcome: Outcome, usage: Option<Usage>) -> Run {
        let (stop_reason, mut error) = match &outcome {
            Outcome::EndTurn => (StopReason::EndTurn, None),
            Outcome::MaxSteps => (StopReason::MaxSteps, None),
            Outcome::Cancelled if self.engine.stop_runs.is_cancelled() => (
                StopReason::Cancelled,
                Some("the gateway shut down".to_owned()),
            ),
            Outcome::Cancelled => (StopReason::Cancelled, None),
            Outcome::Failed(f) => (StopReason::Error, Some(f.message.clone())),
        };
        let published = publish_ending(em, &outcome, usage, &self.engine.stop_runs).await;
        // The final status is stored before `done` goes out, so a client
        // that saw `done` and asks GET /v1/runs/{id} sees it.
        let mut status = RunStatus::ended_by(stop_reason);
        if let Err(e) = &published {
            status = RunStatus::Failed;
            error.get_or_insert_with(|| format!("event delivery failed: {e}"));
        }
        let mut run = Run {
            status,
            stop_reason: Some(stop_reason),
            error,
            updated_at: crate::util::now(),
            ..self.run.clone()
        };
        self.save(&run).await;
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
                self.save(&run).await;
            }
        }
        run
    }

    /// Writes the final status, retrying briefly: a run left `running` in the
    /// store would only be settled after a restart.
    async fn save(&self, run: &Run) {
        let store = self.engine.sinks.store.as_ref();
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
/// assistant messages, oldest first. Only those are read from the store
/// (`message_types`): a streamed reply's token deltas are most of a
/// session's events, and reading and decoding them was a quarter of a
/// gateway's CPU per run (BENCHMARKS.md, runs).
async fn load_history(
    store: &dyn Store,
    account: &str,
    agent_id: &AgentId,
    session_id: &SessionId,
) -> Result<Vec<Turn>, StoreError> {
    let filter = EventFilter {
        session_id: Some(session_id.clone()),
        run_id: None,
        message_types: Some(vec![
            MessageType::UserMessage,
            MessageType::AssistantMessage,
        ]),
    };
    let mut params = ListParams {
        limit: HISTORY_WINDOW,
        offset: 0,
        after: None,
    };
    let mut page = store
        .list_events(account, agent_id.as_str(), filter.clone(), params.clone())
        .await?;
    if page.pagination.total > u64::from(HISTORY_WINDOW) {
        params.offset = page.pagination.total - u64::from(HISTORY_WINDOW);
        page = store
            .list_events(account, agent_id.as_str(), filter, params)
            .await?;
    }
    Ok(page
        .data
        .into_iter()
        .filter_map(|r| match r.event.body {
            EventBody::UserMessage { message } => Some(Turn::User(message)),
            EventBody::AssistantMessage { message } => Some(Turn::Assistant {
                content: message,
                tool_calls: Vec::new(),
            }),
            _ => None,
        })
        .collect())
}
