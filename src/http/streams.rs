//! The SSE routes: an agent's events, an agent's log lines, one run
//! (the feeds and the SSE framing are [`crate::stream`]'s).
//!
//! Each route checks its scope and that the target belongs to the caller,
//! then delivers a [`Feed`] as pre-framed SSE bytes through
//! [`sse_response`]. A feed that ends with an error adds one final
//! `event: error` frame; a cursor older than the history is answered the same
//! way, with status 200, because EventSource cannot read error bodies.

use std::time::Duration;

use axum::{
    extract::{Path, State},
    response::Response,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{
    auth::Auth,
    cursor::Resume,
    errors::ApiError,
    openapi::schemas::{ResumeHeader, ResumeQuery, SseEvent},
};
use crate::{
    domain::{Channel, ErrorCode},
    edge::StreamKind,
    state::AppState,
    stream::{
        feed::{self, Feed},
        sse::{error_frame, sse_response, Stop},
    },
};

/// `GET /v1/agents/{id}/events`: every event of the agent, live, resumable.
#[utoipa::path(get, path = "/v1/agents/{id}/events", tag = "streams",
    params(("id" = String, Path), ResumeQuery, ResumeHeader),
    responses((status = 200, description = "An SSE stream (protocol/sse.md)", body = SseEvent, content_type = "text/event-stream")))]
pub async fn stream_agent_events(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Resume(after): Resume,
) -> Result<Response, ApiError> {
    let stop = state.drain.ticket().into();
    stream_target(
        &state,
        &auth,
        "chat",
        Channel::Agent(id.into()),
        after,
        stop,
    )
    .await
}

/// `GET /v1/agents/{id}/logs/stream`: the agent's log lines, live, resumable.
#[utoipa::path(get, path = "/v1/agents/{id}/logs/stream", tag = "logs",
    params(("id" = String, Path), ResumeQuery, ResumeHeader),
    responses((status = 200, description = "An SSE stream (protocol/sse.md)", body = SseEvent, content_type = "text/event-stream")))]
pub async fn stream_agent_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Resume(after): Resume,
) -> Result<Response, ApiError> {
    let stop = state.drain.ticket().into();
    stream_target(&state, &auth, "logs", Channel::Logs(id.into()), after, stop).await
}

/// `GET /v1/runs/{id}/stream`: one run from its first event (or the cursor)
/// to its `done`. A draining gateway keeps it open until that `done` (the
/// run has the grace period to finish), unlike the endless tails above.
#[utoipa::path(get, path = "/v1/runs/{id}/stream", tag = "streams",
    params(("id" = String, Path), ResumeQuery, ResumeHeader),
    responses((status = 200, description = "An SSE stream (protocol/sse.md)", body = SseEvent, content_type = "text/event-stream")))]
pub async fn stream_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Resume(after): Resume,
) -> Result<Response, ApiError> {
    let stop = state.edge.hard_stop.clone().into();
    stream_target(&state, &auth, "chat", Channel::Run(id.into()), after, stop).await
}

/// What every SSE route does once it knows its channel: checks `scope`,
/// takes one of the key's stream slots and answers with the target's feed.
/// The slot is held until the stream ends, which is at the latest when
/// `stop` fires (an idle tail's drain ticket, or the hard stop).
async fn stream_target(
    state: &AppState,
    auth: &Auth,
    scope: &str,
    channel: Channel,
    after: Option<u64>,
    stop: Stop,
) -> Result<Response, ApiError> {
    auth.require(scope)?;
    let slot = state.edge.open_stream(&auth.key, StreamKind::Sse).await?;
    let opened = feed::open(state, auth.account(), &channel, after).await;
    let ping = Duration::from_secs(state.config.sse_ping_secs.max(1));
    let frames = match opened {
        Ok(feed) => sse_frames(feed).boxed(),
        Err(e) if e.code() == ErrorCode::HistoryExpired => {
            let message = e.client_message();
            futures::stream::once(async move { error_frame(e.code(), &message, None) }).boxed()
        }
        Err(e) => return Err(e.into()),
    };
    Ok(sse_response(slot.hold(frames), ping, stop))
}

/// The feed as SSE bytes: each event's shared frame, then at most one
/// `event: error` frame (a feed's error is always its last item).
pub fn sse_frames(feed: Feed) -> impl Stream<Item = Bytes> + Send + 'static {
    feed.map(|item| match item {
        Ok(ev) => ev.sse.clone(),
        Err(e) => error_frame(e.code(), &e.message(), e.last_seq()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{
        bus::{memory::MemoryBus, Bus},
        domain::{AgentEvent, Channel},
    };

    fn ev() -> AgentEvent {
        AgentEvent::test_line("run-1", 0)
    }

    #[tokio::test]
    async fn a_lagged_feed_ends_with_one_error_frame_without_an_id() {
        let bus = MemoryBus::new(100, 4);
        let sub = bus
            .subscribe(&Channel::Agent("c".into()), None)
            .await
            .unwrap();
        let mut frames = Box::pin(sse_frames(feed::channel_feed(sub)));
        for _ in 0..2 {
            bus.publish(&Channel::Agent("c".into()), &ev())
                .await
                .unwrap();
        }
        let first = frames.next().await.unwrap();
        assert!(
            first.starts_with(b"id: 1\nevent: log\ndata: {"),
            "{first:?}"
        );
        assert_eq!(frames.next().await.unwrap(), bus_frame(2));
        // The client stops reading while more than the buffer is published.
        for _ in 0..10 {
            bus.publish(&Channel::Agent("c".into()), &ev())
                .await
                .unwrap();
        }
        let last = frames.next().await.unwrap();
        let text = std::str::from_utf8(&last).unwrap();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("an error frame with no id line");
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            (v["code"].as_str(), v["last_seq"].as_u64()),
            (Some("lagged"), Some(2))
        );
        assert!(frames.next().await.is_none(), "the stream ends after it");
    }

    /// The frame the bus encodes for the test event with `seq`.
    fn bus_frame(seq: u64) -> Bytes {
        crate::bus::BusEvent::encode(seq, &ev()).sse
    }
}
