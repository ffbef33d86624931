//! Publishing a run's events: each event is numbered by the bus (the one
//! authority for `seq`), delivered live, then persisted as history with the
//! same `seq`, in order.
//!
//! The first time this process touches a channel it raises the bus counter to
//! the highest `seq` the store holds ([`Seeds`]), so numbering continues after
//! a restart instead of starting again at 1; it seeds again whenever the bus
//! says it lost the counter ([`BusError::NeedsSeed`]: Redis restarted). Token deltas are persisted in
//! small batches (flushed by the next non-delta event) to keep one store
//! write per token off the hot path.

use std::{collections::HashSet, future::Future, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{Bus, BusError, BusEvent},
    domain::{AgentEvent, AgentId, Channel, EventBody, RunId, SessionId},
    store::{EventRecord, Store, StoreError},
};

/// Most token deltas held back before they are written anyway.
const MAX_PENDING: usize = 32;

/// Why an event could not be delivered or kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The highest seq the store holds for `channel`: where its numbering
/// continues after a restart.
pub async fn stored_floor(
    store: &dyn Store,
    account: &str,
    channel: &Channel,
) -> Result<u64, StoreError> {
    match channel {
        Channel::Agent(id) => store.last_event_seq(account, id.as_str()).await,
        Channel::Logs(id) => store.last_log_seq(account, id.as_str()).await,
        // A run's events are numbered on its agent's channel.
        Channel::Run(_) => Ok(0),
    }
}

/// The channels whose bus counter this process has already seeded.
#[derive(Debug, Default)]
pub struct Seeds {
    seeded: Mutex<HashSet<Channel>>,
}

impl Seeds {
    /// Seeds `channel` from the store on first use. Two runs racing here both
    /// seed; `seed_seq` only ever raises the counter, so that is harmless.
    pub async fn ensure(
        &self,
        bus: &dyn Bus,
        store: &dyn Store,
        account: &str,
        channel: &Channel,
    ) -> Result<(), EmitError> {
        if self.seeded.lock().contains(channel) {
            return Ok(());
        }
        let floor = stored_floor(store, account, channel).await?;
        bus.seed_seq(channel, floor).await?;
        self.seeded.lock().insert(channel.clone());
        Ok(())
    }

    /// Forgets a channel (its agent was deleted or the counter must be re-read).
    pub fn forget(&self, channel: &Channel) {
        self.seeded.lock().remove(channel);
    }
}

/// What every publisher of agent events needs.
#[derive(Clone)]
pub struct Sinks {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub seeds: Arc<Seeds>,
}

/// Publishes the events of one run, in order.
pub struct Emitter {
    sinks: Sinks,
    account: String,
    agent_id: AgentId,
    run_id: RunId,
    session_id: SessionId,
    channel: Channel,
    pending: Vec<EventRecord>,
    /// The write [`Self::flush_in_background`] started, until awaited.
    inflight: Option<tokio::task::JoinHandle<Result<(), EmitError>>>,
}

impl Emitter {
    pub fn new(
        sinks: Sinks,
        account: &str,
        agent_id: &AgentId,
        run_id: &RunId,
        session_id: &SessionId,
    ) -> Self {
        Self {
            sinks,
            account: account.to_owned(),
            agent_id: agent_id.clone(),
            run_id: run_id.clone(),
            session_id: session_id.clone(),
            channel: Channel::Agent(agent_id.clone()),
            pending: Vec::new(),
            inflight: None,
        }
    }

    /// Publishes one event saying `body`, with the run's common fields (a
    /// new `id`, `run_id`, `agent_id`, `session_id`, `date`).
    pub async fn emit(&mut self, body: EventBody) -> Result<Arc<BusEvent>, EmitError> {
        let delta = matches!(body, EventBody::AssistantDelta { .. });
        let published = self.publish(body).await?;
        if !delta || self.pending.len() >= MAX_PENDING {
            self.flush().await?;
        }
        Ok(published)
    }

    /// [`Self::emit`] without the store write: the event is delivered and
    /// held for the next [`Self::flush`], which the caller runs next to
    /// other work (a run's start stores its user messages while it reads
    /// the session's history, issue 22).
    pub async fn publish(&mut self, body: EventBody) -> Result<Arc<BusEvent>, EmitError> {
        self.ensure_seeded().await?;
        let event = AgentEvent::new(
            self.agent_id.clone(),
            self.run_id.clone(),
            self.session_id.clone(),
            body,
        );
        let published = match self.sinks.bus.publish(&self.channel, &event).await {
            Err(BusError::NeedsSeed(_)) => {
                // The bus lost the channel's counter (Redis restarted, or the
                // channel sat idle past its TTL). Persist what is pending so
                // the store's floor covers every seq handed out, seed again,
                // publish once more.
                self.flush().await?;
                self.sinks.seeds.forget(&self.channel);
                self.ensure_seeded().await?;
                self.sinks.bus.publish(&self.channel, &event).await?
            }
            other => other?,
        };
        self.pending.extend(EventRecord::new(published.seq, event));
        Ok(published)
    }

    /// [`Self::emit`], retried while the bus is unavailable (a Redis outage)
    /// for at most `patience` or until `stop`: the events that end a run are
    /// what tell the streams following it that it is over.
    pub async fn emit_patiently(
        &mut self,
        body: EventBody,
        patience: Duration,
        stop: &CancellationToken,
    ) -> Result<Arc<BusEvent>, EmitError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.emit(body.clone()).await {
                Err(EmitError::Bus(BusError::Unavailable(e)))
                    if tokio::time::Instant::now() + pause < deadline && !stop.is_cancelled() =>
                {
                    let message_type = body.message_type().as_str();
                    tracing::debug!(error = %e, message_type, "bus unavailable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn ensure_seeded(&self) -> Result<(), EmitError> {
        let s = &self.sinks;
        s.seeds
            .ensure(
                s.bus.as_ref(),
                s.store.as_ref(),
                &self.account,
                &self.channel,
            )
            .await
    }

    /// Writes what is pending, after the write [`Self::flush_in_background`]
    /// started, if any: the store never holds an event without the ones
    /// before it (a stream joins the bus at the store's last seq). On
    /// failure the batch is dropped (the run is about to fail anyway) so
    /// memory stays bounded.
    pub async fn flush(&mut self) -> Result<(), EmitError> {
        if let Err(e) = self.settle().await {
            self.pending.clear();
            return Err(e);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.sinks.store.append_events(&self.account, batch).await?;
        Ok(())
    }

    /// Starts writing what is pending on a task of its own, with `also`
    /// (more of the run's writes: its opening log line), and returns at
    /// once: a run's start stores its user messages while its model is
    /// called (issue 22). The next [`Self::flush`] or [`Self::settle`]
    /// waits for it; on its own task, the write is not lost if the caller
    /// panics or is dropped meanwhile.
    pub fn flush_in_background(&mut self, also: impl Future<Output = ()> + Send + 'static) {
        let batch = std::mem::take(&mut self.pending);
        let (store, account) = (self.sinks.store.clone(), self.account.clone());
        self.inflight = Some(tokio::spawn(async move {
            let events = async {
                if !batch.is_empty() {
                    store.append_events(&account, batch).await?;
                }
                Ok(())
            };
            tokio::join!(events, also).0
        }));
    }

    /// Waits for the write [`Self::flush_in_background`] started, if any;
    /// its failure is the caller's.
    pub async fn settle(&mut self) -> Result<(), EmitError> {
        let Some(write) = self.inflight.take() else {
            return Ok(());
        };
        write.await.unwrap_or_else(|e| {
            let why = format!("store write failed: {e}");
            Err(EmitError::Store(StoreError::Unavailable(why)))
        })
    }
}
