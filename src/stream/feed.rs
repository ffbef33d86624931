//! Feeds: the events one stream delivers, whatever transport carries them.
//!
//! A client names what it wants as a [`Channel`] (`agent:<id>`, `logs:<id>`,
//! `run:<id>`); [`open`] checks that it belongs to the caller's account and
//! returns a [`Feed`]: a stream of shared, pre-encoded [`BusEvent`]s that
//! ends after at most one error. SSE routes and the WebSocket both deliver
//! feeds, so resume, run replay and lag behave the same on either.

use std::{sync::Arc, time::Duration};

use futures::{stream::BoxStream, StreamExt};

use crate::{
    agent::events::stored_floor,
    agent::RunError,
    bus::{BusError, BusEvent, Subscription},
    domain::ErrorCode,
    domain::{Channel, MessageType, RunStatus},
    state::AppState,
    store::{EventFilter, EventRecord, ListParams, Run, StoreError},
};

/// Events of one stream, in seq order; an `Err` is always the last item.
pub type Feed = BoxStream<'static, Result<Arc<BusEvent>, FeedError>>;

/// Why a feed ended early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FeedError {
    /// The `code` clients see in the final `error` frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Bus(e) => e.code(),
            // Whatever the store said, the stream could not go on.
            Self::Store(_) => ErrorCode::Unavailable,
        }
    }

    /// The message clients see: backend details stay in the logs.
    pub fn message(&self) -> String {
        match self {
            Self::Bus(BusError::Lagged { last_seq }) => format!(
                "the client fell too far behind; reconnect with Last-Event-ID (or `after`) {last_seq} to resume"
            ),
            Self::Bus(e @ BusError::HistoryExpired { .. }) => e.to_string(),
            Self::Bus(BusError::Unavailable(_) | BusError::NeedsSeed(_)) => {
                "bus unavailable".into()
            }
            Self::Store(_) => "store unavailable".into(),
        }
    }

    /// The last seq delivered, when the client should resume from it.
    pub fn last_seq(&self) -> Option<u64> {
        match self {
            Self::Bus(BusError::Lagged { last_seq }) => Some(*last_seq),
            _ => None,
        }
    }
}

/// Why a feed could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The agent does not exist, or is another account's (the store's
    /// description of what was missing).
    #[error("{0} not found")]
    AgentNotFound(String),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpenError {
    /// The code a client is shown, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AgentNotFound(_) => ErrorCode::AgentNotFound,
            Self::Run(e) => e.code(),
            Self::Bus(e) => e.code(),
            Self::Store(e) => e.code(),
        }
    }

    /// What a client is told: backend details stay in the logs.
    pub fn client_message(&self) -> String {
        match self {
            Self::AgentNotFound(_) => self.to_string(),
            Self::Run(e) => e.client_message(),
            Self::Bus(e) => e.client_message(),
            Self::Store(e) => e.client_message(),
        }
    }
}

/// The key scope needed to read `channel`.
pub fn scope(channel: &Channel) -> &'static str {
    match channel {
        Channel::Logs(_) => "logs",
        Channel::Agent(_) | Channel::Run(_) => "chat",
    }
}

/// Opens `channel` for `account`, resuming after `after`. A channel of another
/// account is `agent_not_found` like a missing one. A cursor older than the
/// history is an error with code `history_expired` (the SSE routes turn that
/// one into an `error` frame; EventSource cannot read error bodies).
pub async fn open(
    state: &AppState,
    account: &str,
    channel: &Channel,
    after: Option<u64>,
) -> Result<Feed, OpenError> {
    match channel {
        Channel::Agent(id) | Channel::Logs(id) => {
            let check = check_channel(state, account, id.as_str(), channel, after.is_some());
            state
                .checks
                .ensure(account, channel, after.is_some(), check)
                .await?;
            Ok(channel_feed(state.bus.subscribe(channel, after).await?))
        }
        Channel::Run(id) => {
            // Through the runtime: it settles a run a crashed gateway left
            // `running`, which would otherwise be waited on forever.
            let run = state.runtime.get_run(account, id).await?;
            Ok(run_feed(state.clone(), account.to_owned(), run, after))
        }
    }
}

/// What opening an agent's channel asks the store (remembered by
/// [`super::checks`]): the agent is the caller's, and with a cursor
/// (`seed`) the bus counter is raised to what the store holds.
async fn check_channel(
    state: &AppState,
    account: &str,
    agent: &str,
    channel: &Channel,
    seed: bool,
) -> Result<(), OpenError> {
    state
        .store
        .get_agent(account, agent)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(what) => OpenError::AgentNotFound(what),
            other => other.into(),
        })?;
    if seed {
        // After a restart the bus starts from zero; raising it to what
        // the store holds makes an old cursor expire instead of
        // silently skipping the events the bus never saw.
        let floor = stored_floor(state.store.as_ref(), account, channel).await?;
        state.bus.seed_seq(channel, floor).await?;
    }
    Ok(())
}

/// A bus subscription as a feed.
///
/// The step borrows the subscription where the closure received it rather
/// than moving it into a local: moved, it would be held twice by the step's
/// future, and this box is held by every idle stream (BENCHMARKS.md,
/// connections).
pub fn channel_feed(sub: Subscription) -> Feed {
    futures::stream::unfold(Some(sub), |mut state| async move {
        let next = state.as_mut()?.next().await;
        match next {
            Ok(Some(ev)) => Some((Ok(ev), state)),
            Ok(None) => None,
            Err(e) => Some((Err(e.into()), None)),
        }
    })
    .boxed()
}

/// A feed that yields a single error and ends.
pub fn failed(err: FeedError) -> Feed {
    futures::stream::once(async move { Err(err) }).boxed()
}

/// Rows per store page while replaying a run.
const PAGE: u32 = 1000;
/// How often a live run stream checks that its run is still running.
const STATUS_CHECK: Duration = Duration::from_secs(10);
/// How long a stream waits for `done` once the store says the run is over.
const DONE_GRACE: Duration = Duration::from_secs(2);
/// Attempts to join the bus when its history keeps moving past the cursor.
const JOIN_ATTEMPTS: u32 = 3;

/// One run's events: what the store holds after the cursor, then what the
/// agent's channel carries for this run (history, then live), ending right
/// after `done`.
///
/// The store is read *before* joining the bus, and the bus is joined from the
/// last seq the store gave: events already published but not yet persisted
/// are still in the bus history, so nothing falls between the two, and
/// [`Subscription`] drops what the store already gave.
pub fn run_feed(state: AppState, account: String, run: Run, after: Option<u64>) -> Feed {
    async_stream::stream! {
        let channel = Channel::Agent(run.agent_id.as_str().into());
        let mut last = after.unwrap_or(0);
        let mut floor = 0;
        let mut attempts = 0;
        let sub = loop {
            let mut cursor = last;
            loop {
                let page = match stored_page(&state, &account, &run, cursor).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                let more = page.1;
                for ev in page.0 {
                    cursor = cursor.max(ev.seq);
                    if ev.seq <= last || !shown(&ev) {
                        continue;
                    }
                    last = ev.seq;
                    let done = is_done(&ev);
                    yield Ok(ev);
                    if done {
                        return;
                    }
                }
                if !more {
                    break;
                }
            }
            last = last.max(floor);
            match state.bus.subscribe(&channel, Some(last)).await {
                Ok(sub) => break sub,
                // A finished run's events are all in the store.
                Err(BusError::HistoryExpired { .. }) if run.status != RunStatus::Running => return,
                // Events below `oldest` left the bus long ago and are in the
                // store by now: read it again, then join from there.
                Err(BusError::HistoryExpired { oldest, .. }) if attempts < JOIN_ATTEMPTS => {
                    attempts += 1;
                    floor = oldest.saturating_sub(1);
                }
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            }
        };
        let mut live = live_run(state, account, run, sub);
        while let Some(item) = live.next().await {
            yield item;
        }
    }
    .boxed()
}

/// The live part of [`run_feed`]: this run's events from the subscription
/// until `done`. If the run is over (at open, or found so by a periodic
/// check) and `done` does not come within [`DONE_GRACE`], the stream ends
/// anyway rather than hang on a run that will never say more.
fn live_run(state: AppState, account: String, run: Run, mut sub: Subscription) -> Feed {
    enum Step {
        Event(Result<Option<Arc<BusEvent>>, BusError>),
        Check,
        GiveUp,
    }
    async_stream::stream! {
        let mut over_since = (run.status != RunStatus::Running).then(tokio::time::Instant::now);
        let start = tokio::time::Instant::now() + STATUS_CHECK;
        let mut check = tokio::time::interval_at(start, STATUS_CHECK);
        loop {
            let grace = over_since.map(|t| t + DONE_GRACE);
            let step = tokio::select! {
                next = sub.next() => Step::Event(next),
                _ = check.tick(), if over_since.is_none() => Step::Check,
                _ = sleep_until_opt(grace), if grace.is_some() => Step::GiveUp,
            };
            match step {
                Step::Event(Ok(Some(ev))) => {
                    if (ev.run_id == run.id.as_str() && shown(&ev)) || ev.is_gap() {
                        let done = is_done(&ev);
                        yield Ok(ev);
                        if done {
                            return;
                        }
                    }
                }
                Step::Event(Ok(None)) | Step::GiveUp => return,
                Step::Event(Err(e)) => {
                    yield Err(e.into());
                    return;
                }
                Step::Check => match state.runtime.get_run(&account, &run.id).await {
                    Ok(r) if r.status != RunStatus::Running => over_since = Some(tokio::time::Instant::now()),
                    Ok(_) => {}
                    // The run was deleted with its agent: nothing more will come.
                    Err(RunError::RunNotFound(_) | RunError::Store(StoreError::NotFound(_))) => return,
                    Err(e) => tracing::debug!(error = %e, run_id = %run.id, "run status check failed"),
                },
            }
        }
    }
    .boxed()
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One page of the run's stored events after `cursor`, and whether more follow.
async fn stored_page(
    state: &AppState,
    account: &str,
    run: &Run,
    cursor: u64,
) -> Result<(Vec<Arc<BusEvent>>, bool), FeedError> {
    let filter = EventFilter {
        session_id: None,
        run_id: Some(run.id.clone()),
        message_types: None,
    };
    let params = ListParams {
        limit: PAGE,
        offset: 0,
        // The store's cursors are signed 64-bit; no seq gets near that.
        after: Some(cursor.min(i64::MAX as u64).to_string()),
        ..Default::default()
    };
    let page = state
        .store
        .list_events(account, run.agent_id.as_str(), filter, params)
        .await?;
    let more = page.pagination.next_cursor.is_some() && !page.data.is_empty();
    Ok((page.data.into_iter().map(from_record).collect(), more))
}

/// A stored event encoded exactly as it was published (the same event,
/// the same `seq`), so a replayed frame equals the live one.
pub fn from_record(rec: EventRecord) -> Arc<BusEvent> {
    Arc::new(BusEvent::encode(rec.seq, &rec.event))
}

/// Whether a run stream shows `ev`: the run's input (`user_message`) is
/// history, not part of the answer, exactly as on the run's own response.
fn shown(ev: &BusEvent) -> bool {
    ev.message_type != Some(MessageType::UserMessage)
}

/// Whether `ev` ends its run.
pub fn is_done(ev: &BusEvent) -> bool {
    ev.message_type == Some(MessageType::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_need_their_own_scope() {
        let scopes: Vec<_> = ["agent:a", "logs:a", "run:r"]
            .into_iter()
            .map(|name| scope(&Channel::parse(name).unwrap()))
            .collect();
        assert_eq!(scopes, ["chat", "logs", "chat"]);
    }

    #[test]
    fn errors_carry_code_and_resume_point() {
        let lag = FeedError::Bus(BusError::Lagged { last_seq: 41 });
        assert_eq!((lag.code(), lag.last_seq()), (ErrorCode::Lagged, Some(41)));
        assert!(lag.message().contains("41"));
        let gone = FeedError::Bus(BusError::HistoryExpired {
            after: 1,
            oldest: 5,
        });
        assert_eq!(
            (gone.code(), gone.last_seq()),
            (ErrorCode::HistoryExpired, None)
        );
        let down = FeedError::Store(StoreError::Unavailable("disk on fire".into()));
        assert_eq!(down.code(), ErrorCode::Unavailable);
        assert!(
            !down.message().contains("disk"),
            "backend details stay in the logs"
        );
    }
}
