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
    metering,
    models::{Model, ModelEvent, ModelRequest, StepOutput, ToolCall, Turn, Usage},
    tools::ToolSet,
    ChatMessage, Engine, Job, RunHandle,
};
use crate::domain::{ErrorCode, EventBody, FunctionCall, FunctionStatus, StopReason};
use crate::store::{Agent, Run, StoreError};

/// Most events read in one go: a session's messages to rebuild its
/// conversation, or a taken-over run's events to restore them.
const HISTORY_WINDOW: u32 = 1000;
/// How long a run's `error` and `done` are retried while the bus is down.
const END_PATIENCE: Duration = Duration::from_secs(20);

/// Why a run ended (or stopped here).
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    EndTurn,
    MaxSteps,
    Cancelled,
    Failed(Failure),
    /// Parked waiting for an approval ([`super::approval`]): not ended.
    Parked,
}

/// What a step's tool calls led to.
enum Flow {
    Next,
    Cancelled,
    Parked,
}

/// A failure shown to the client as an `error` event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Failure {
    pub code: ErrorCode,
    pub message: String,
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
    /// The decided approval this run resumes from (a parked run), if any.
    pub resume: Option<String>,
    /// The models the starting key may use ([`Job::models`]).
    models: Option<Vec<String>>,
    /// Charges the key's token budgets and records usage as the run goes
    /// (locked only between awaits).
    meter: parking_lot::Mutex<crate::edge::TokenMeter>,
}

impl RunTask {
    /// The task of a run that is registered (`handle`), stored or being
    /// stored (`super::row`).
    pub fn new(engine: Arc<Engine>, job: Job, model: Model, handle: RunHandle) -> Self {
        let max_steps = super::runtime::max_steps_for(&job.agent, engine.config.max_steps);
        let meter = metering::meter_for(&engine, &job.run.id, &job.account, &job.agent);
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
            resume: job.resume,
            models: job.models,
            meter: parking_lot::Mutex::new(meter),
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
        // A new run's opening line is stored beside its first model call:
        // its write would queue ahead of the run's first events (issue 22).
        match &self.resume {
            Some(id) => {
                log.info(format!("run resumed{on} after approval {id}"))
                    .await
            }
            None => {
                log.info_unstored(format!(
                    "run started{on}: model {}, session {}, max_steps {}{}",
                    self.agent.model,
                    self.run.session_id,
                    self.max_steps,
                    if self.background { ", background" } else { "" }
                ))
                .await;
                self.meter.lock().run_started();
            }
        }
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
        // Its end updates the row, written beside its start (`super::row`).
        let outcome = match self.row_stored().await {
            Ok(()) => outcome,
            Err(f) => Outcome::Failed(f),
        };
        if outcome == Outcome::Parked {
            // Forgotten already (it may be resumed, and registered again,
            // any moment): nothing more to do here.
            log.info("run waiting for approval").await;
            return;
        }
        if self.handle.lost.is_cancelled() {
            // Another worker took the run over and ends it: say nothing more.
            tracing::warn!(run_id = %self.run.id, "run taken over by another worker; stopped here");
            log.store_unstored().await;
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
        // Checked at the start too, but a queued or parked run executes
        // later, on the agent as it is then: a model the key may not use
        // (changed meanwhile) ends the run before any tool or model call.
        if !crate::store::model_allowed(self.models.as_deref(), &self.agent.model) {
            return Err(Failure {
                code: ErrorCode::ModelNotFound,
                message: super::model_refused(&self.agent.model),
            });
        }
        let store = self.engine.sinks.store.as_ref();
        let (tools, warnings) = ToolSet::resolve(store, &self.account, &self.agent.tools).await?;
        let (mut turns, first) = match &self.resume {
            None => {
                for w in warnings {
                    log.warn(w).await;
                }
                let turns = self.begin(em).await?;
                // The user messages and the opening line are stored beside
                // the first model call, not before it: the first delta waits
                // neither for the store's one writer nor for the writes
                // queued at it. Awaited after the step (a failed write fails
                // the run) and by any flush before then.
                em.flush_in_background(log.store_unstored());
                (turns, 1)
            }
            Some(id) => {
                let r = self.resume_from(em, &tools, id, usage).await?;
                let mut turns = r.turns;
                let carry_on = Carry {
                    step: r.next_step - 1,
                    usage: *usage,
                };
                match self
                    .call_tools(em, log, &tools, r.pending, &mut turns, carry_on)
                    .await?
                {
                    Flow::Next => {}
                    Flow::Cancelled => return Ok(Outcome::Cancelled),
                    Flow::Parked => return Ok(Outcome::Parked),
                }
                (turns, r.next_step)
            }
        };
        for step in first..=self.max_steps {
            let t0 = Instant::now();
            let out = self.step(em, &turns, &tools).await;
            em.settle().await?;
            let took = t0.elapsed().as_millis();
            let Some((out, served)) = out? else {
                return Ok(Outcome::Cancelled);
            };
            let model = &self.agent.model;
            let by = served
                .map(|p| format!(", provider {p}"))
                .unwrap_or_default();
            log.info(format!("model {model} called (step {step}{by}): {took} ms"))
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
            let carry_on = Carry {
                step,
                usage: *usage,
            };
            match self
                .call_tools(em, log, &tools, out.tool_calls, &mut turns, carry_on)
                .await?
            {
                Flow::Next => {}
                Flow::Cancelled => return Ok(Outcome::Cancelled),
                Flow::Parked => return Ok(Outcome::Parked),
            }
        }
        Ok(Outcome::MaxSteps)
    }

    /// A new run's start: its user messages published (their store write
    /// left pending, for the caller to start), its conversation (system
    /// prompt, the session's history, the new messages).
    ///
    /// The user messages go out before the history is read: the first
    /// event a subscriber sees does not wait for the session's history
    /// (issue 22: two store reads, the slower the longer the session), and
    /// the read leaves this run's own messages out.
    async fn begin(&self, em: &mut Emitter) -> Result<Vec<Turn>, Failure> {
        for m in &self.messages {
            let message = m.content.clone();
            em.publish(EventBody::UserMessage { message }).await?;
        }
        // The read skips this run's messages whether or not they are in yet.
        let store = self.engine.sinks.store.as_ref();
        let this_run = (&self.run.id, self.messages.len());
        let history = load_history(
            store,
            &self.account,
            &self.agent.id,
            &self.run.session_id,
            this_run,
        )
        .await?;
        let mut turns = Vec::with_capacity(history.len() + self.messages.len() + 1);
        if !self.agent.system.trim().is_empty() {
            turns.push(Turn::System(self.agent.system.clone()));
        }
        turns.extend(history);
        turns.extend(self.messages.iter().map(|m| Turn::User(m.content.clone())));
        Ok(turns)
    }

    /// Runs a step's tool calls in order, each result becoming a
    /// `function_message` and a `tool` turn. A call that needs approval
    /// parks the run with the calls left ([`Flow::Parked`]).
    async fn call_tools(
        &self,
        em: &mut Emitter,
        log: &RunLog,
        tools: &ToolSet,
        calls: Vec<ToolCall>,
        turns: &mut Vec<Turn>,
        carry: Carry,
    ) -> Result<Flow, Failure> {
        for (i, call) in calls.iter().enumerate() {
            if super::approval::requires_approval(&self.agent, &call.name)
                || tools.requires_approval(&call.name)
            {
                log.info(format!("tool {} needs approval: run parked", call.name))
                    .await;
                let state = super::approval::Parked {
                    turns: turns.clone(),
                    step: carry.step,
                    pending: calls[i..].to_vec(),
                    usage: carry.usage,
                    stream_tokens: self.stream_tokens,
                    background: self.background,
                    models: self.models.clone(),
                };
                self.park(em, state).await?;
                return Ok(Flow::Parked);
            }
            let t0 = Instant::now();
            let result = tokio::select! {
                biased;
                _ = self.handle.cancel.cancelled() => return Ok(Flow::Cancelled),
                r = tools.call(&self.engine.http, call) => r,
            };
            let status = FunctionStatus::of(result.ok);
            let took = t0.elapsed().as_millis();
            let line = format!("tool {} called: {status} in {took} ms", call.name);
            if result.ok {
                log.info(line).await
            } else {
                log.warn(format!("{line}: {}", result.result_text())).await
            }
            self.tool_done(em, call.clone(), result, turns).await?;
        }
        Ok(Flow::Next)
    }

    /// A call's result as a `function_message` and a `tool` turn.
    pub(super) async fn tool_done(
        &self,
        em: &mut Emitter,
        call: ToolCall,
        result: super::tools::ToolOutcome,
        turns: &mut Vec<Turn>,
    ) -> Result<(), Failure> {
        let content = result.result_text();
        let message = FunctionCall {
            args: result.args,
            function: call.name,
            result: result.result,
            status: FunctionStatus::of(result.ok),
        };
        em.emit(EventBody::FunctionMessage { message }).await?;
        turns.push(Turn::Tool {
            call_id: call.id,
            content,
        });
        Ok(())
    }

    /// One model call, and the provider that served it (a route's target).
    /// `Ok(None)` when the run was cancelled meanwhile; the step's stream
    /// (and with it any upstream request) is dropped at once.
    async fn step(
        &self,
        em: &mut Emitter,
        turns: &[Turn],
        tools: &ToolSet,
    ) -> Result<Option<(StepOutput, Option<String>)>, Failure> {
        let mut served = None;
        // Whether this step has streamed nothing yet (see `streamed`).
        let mut first = true;
        let spent = self.meter.lock().prompt(metering::prompt_chars(turns));
        over_budget(spent)?;
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
                Some(Ok(ModelEvent::Served(provider))) => {
                    tracing::info!(run_id = %self.run.id, model = %self.agent.model, provider = %provider, "model call served");
                    self.meter.lock().served_by(&provider);
                    served = Some(provider);
                }
                Some(Ok(ModelEvent::Monologue(m))) => {
                    let spent = self.meter.lock().completion(m.chars().count() as u64);
                    em.emit(EventBody::InternalMonologue { message: m }).await?;
                    streamed(&mut first).await;
                    over_budget(spent)?;
                }
                Some(Ok(ModelEvent::Delta(d))) => {
                    // The piece that crosses the budget is delivered (it
                    // is charged), then the run stops.
                    let spent = self.meter.lock().completion(d.chars().count() as u64);
                    if self.stream_tokens {
                        em.emit(EventBody::AssistantDelta { delta: d }).await?;
                        streamed(&mut first).await;
                    }
                    over_budget(spent)?;
                }
                Some(Ok(ModelEvent::Done(out))) => {
                    let mut meter = self.meter.lock();
                    if metering::counted(out.usage).is_none() {
                        let args = out
                            .tool_calls
                            .iter()
                            .map(|c| c.arguments.chars().count() as u64);
                        meter.completion(args.sum());
                    }
                    // A finished answer is kept; a spent budget stops the
                    // run at its next model call.
                    meter.step_done(metering::counted(out.usage));
                    return Ok(Some((out, served)));
                }
            }
        }
    }
}

/// After a step's first streamed event: lets the streams that follow the
/// run write it before the run reads on. Their tasks were woken by the
/// publish, but a provider's answer that arrived in one read (every chunk
/// at once) would otherwise be parsed and published to its end, with the
/// store write that follows, before a worker got to them: about a sixth of
/// a millisecond of the agent path's TTFT at 200 runs/s (issue 22). Later
/// events need no such turn: the first is the one a user waits for.
async fn streamed(first: &mut bool) {
    if std::mem::take(first) {
        tokio::task::yield_now().await;
    }
}

/// Where the step loop is, for a run that parks.
#[derive(Clone, Copy)]
struct Carry {
    step: u32,
    usage: Option<Usage>,
}

/// A spent token budget as the run's failure (`token_budget_exceeded`).
fn over_budget(spent: Option<crate::edge::Spent>) -> Result<(), Failure> {
    match spent {
        None => Ok(()),
        Some(s) => Err(Failure {
            code: ErrorCode::TokenBudgetExceeded,
            message: crate::edge::runs::budget_message(&s),
        }),
    }
}

#[path = "conclude.rs"]
mod conclude;
use conclude::load_history;
