//! Following one run's events on its agent channel: what a transport does
//! after it started a run (SSE response, JSON response, OpenAI completion).
//!
//! Choose the run's id and subscribe *before* starting the run so no event
//! can be missed, then call [`RunFollower::next`] until it returns `None`
//! (after the run's `done`). The follower listens on the run's own tap
//! ([`Bus::subscribe_run`]), not the agent's whole channel: on a busy agent
//! every follower would otherwise wake for every other run's events too. A
//! follower that falls behind resumes on the channel from the bus history
//! at its last seq, so it sees no gap and no duplicate.

use std::sync::Arc;

use futures::Stream;

use crate::{
    bus::{Bus, BusError, BusEvent, Subscription},
    domain::{AgentId, Channel, MessageType, RunId},
};

/// Follows one run until its `done`.
pub struct RunFollower {
    bus: Arc<dyn Bus>,
    channel: Channel,
    sub: Subscription,
    run_id: RunId,
    finished: bool,
}

impl RunFollower {
    /// Subscribes to run `run_id` of agent `agent_id` (started or not yet).
    pub async fn subscribe(
        bus: Arc<dyn Bus>,
        agent_id: &AgentId,
        run_id: &RunId,
    ) -> Result<Self, BusError> {
        let channel = Channel::Agent(agent_id.clone());
        let sub = bus.subscribe_run(&channel, run_id.as_str()).await?;
        Ok(Self {
            bus,
            channel,
            sub,
            run_id: run_id.clone(),
            finished: false,
        })
    }

    /// The run's next event; `None` after its `done`, or when the channel
    /// closed or the history needed to catch up was gone (the caller then
    /// knows the stream is incomplete: [`Self::finished`] is false).
    pub async fn next(&mut self) -> Option<Arc<BusEvent>> {
        while !self.finished {
            match self.sub.next().await {
                // A gap in the channel may hide this run's events: shown too.
                Ok(Some(ev)) if ev.run_id == self.run_id || ev.is_gap() => {
                    self.finished = ev.message_type == Some(MessageType::Done);
                    return Some(ev);
                }
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(BusError::Lagged { last_seq }) => {
                    match self.bus.subscribe(&self.channel, Some(last_seq)).await {
                        Ok(sub) => self.sub = sub,
                        Err(e) => {
                            tracing::warn!(error = %e, run_id = %self.run_id, "run follower could not catch up");
                            return None;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, run_id = %self.run_id, "run follower lost its channel");
                    return None;
                }
            }
        }
        None
    }

    /// Whether the run's `done` was seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The follower as a stream of events.
    pub fn into_stream(self) -> impl Stream<Item = Arc<BusEvent>> + Send {
        futures::stream::unfold(
            self,
            |mut f| async move { f.next().await.map(|ev| (ev, f)) },
        )
    }
}

/// Cancels a run when dropped while armed: a transport holds one for as long
/// as its client is there, so a client that goes away cancels the run (unless
/// it asked for `background`, in which case the guard starts disarmed).
pub struct CancelOnDrop {
    runtime: Arc<super::Runtime>,
    run_id: RunId,
    armed: bool,
}

impl CancelOnDrop {
    pub fn new(runtime: Arc<super::Runtime>, run_id: &RunId, armed: bool) -> Self {
        Self {
            runtime,
            run_id: run_id.clone(),
            armed,
        }
    }

    /// The run ended (or the client asked to keep it): do nothing on drop.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(run_id = %self.run_id, "client went away; cancelling its run");
            self.runtime.abort(&self.run_id);
        }
    }
}
