//! The WebSocket protocol core, generic over any `Sink<Message>` and
//! `Stream<Item = Result<Message, _>>` so it runs (and is tested) without a
//! socket.
//!
//! One socket is one task: three futures joined under one [`Closer`]:
//! - the reader: parses client frames, answers them, subscribes, and notes
//!   when the client last sent anything (a pong included);
//! - the writer: the only owner of the sink; drains the bounded [`Outbox`]
//!   queue, pings the client, and writes the last frames when closing;
//! - the events: the feeds ([`Feeds::pump`]) copy every subscribed
//!   channel's shared event bytes into the outbox and never wait (a full
//!   queue closes the socket as `lagged`, so a slow client never holds back
//!   the bus or any other socket); one timer asks for the pings and closes
//!   a socket that went silent ([`keep_alive`]); and the socket's turn in
//!   the drain closes it.
//!
//! Why one task and one timer: an idle socket is mostly the memory its
//! task holds, and a second task per subscription, a timer for pings and
//! another for the idle timeout were a good part of it (issue 22;
//! BENCHMARKS.md, connections).

use std::{fmt::Display, future::Future, sync::Arc};

use axum::extract::ws::Message;
use futures::{Sink, Stream, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use super::{
    feeds::Feeds,
    outbox::{CloseReason, Closer, Outbox, Overflow},
    protocol::{self, ClientFrame, UserMessage},
    refusal::Refusal,
    writer, WsSettings,
};
use crate::{
    agent::StartRun, domain::Channel, domain::ErrorCode, state::AppState, store::KeyRecord,
    stream::feed,
};

/// Serves one socket until it closes: the client leaves, goes silent, falls
/// behind, or the gateway drains. Runs this socket started are cancelled
/// when the client leaves, unless they were started with `background`.
/// `key` is the socket's API key: its account and scopes.
///
/// A function returning a block, not an `async fn`: an `async fn` keeps
/// each argument twice in its future (as passed, and moved into its body),
/// and every idle socket's task is sized by this future. The parts below
/// borrow the sink, stream and settings from the block's one copy.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub fn serve<Tx, Rx, E>(
    state: AppState,
    key: Arc<KeyRecord>,
    settings: Arc<WsSettings>,
    mut sink: Tx,
    mut stream: Rx,
) -> impl Future<Output = ()> + Send
where
    Tx: Sink<Message> + Unpin + Send,
    Tx::Error: Display,
    Rx: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: Display + Send,
{
    async move {
        let outbox = Outbox::new(settings.queue);
        let closer = Closer::default();
        let feeds = Feeds::default();
        let seen = Mutex::new(Instant::now());
        // An idle stream: its turn in the drain closes it (stream/drain.rs).
        let ticket = state.drain.ticket();
        let mut conn = Conn {
            state,
            key,
            settings: &settings,
            outbox: &outbox,
            closer: &closer,
            feeds: &feeds,
            seen: &seen,
        };
        let events = async {
            tokio::select! {
                _ = ticket.token.cancelled() => closer.close(CloseReason::Shutdown { retry: ticket.retry }),
                _ = feeds.pump(&outbox, &closer) => {}
                _ = keep_alive(&outbox, &closer, &settings, &seen) => {}
            }
        };
        tokio::join!(
            conn.read(&mut stream),
            writer::write(&mut sink, &outbox, &closer, &settings),
            events
        );
        // Boxed for the same reason as `handle` in `Conn::read`.
        Box::pin(conn.finish()).await;
    }
}

/// The reader's side of one socket.
struct Conn<'s> {
    state: AppState,
    key: Arc<KeyRecord>,
    settings: &'s WsSettings,
    outbox: &'s Outbox,
    closer: &'s Closer,
    feeds: &'s Feeds,
    /// When the client last sent a frame (read by [`keep_alive`]).
    seen: &'s Mutex<Instant>,
}

impl Conn<'_> {
    fn account(&self) -> &str {
        &self.key.account_id
    }

    async fn read<Rx, E>(&mut self, stream: &mut Rx)
    where
        Rx: Stream<Item = Result<Message, E>> + Unpin,
        E: Display,
    {
        let closer = self.closer;
        loop {
            let msg = tokio::select! {
                biased;
                _ = closer.closed() => return,
                msg = stream.next() => msg,
            };
            *self.seen.lock() = Instant::now();
            let handled = match msg {
                // Boxed: `handle` holds the run and store calls' futures,
                // and inline they would size every idle socket's task
                // (BENCHMARKS.md, connections); a client frame is rare
                // enough to pay one allocation.
                Some(Ok(Message::Text(text))) => tokio::select! {
                    biased;
                    _ = closer.closed() => return,
                    r = Box::pin(self.handle(text.as_str())) => r,
                },
                Some(Ok(Message::Binary(_))) => self.outbox.reply(protocol::error(
                    ErrorCode::ValidationError,
                    "binary frames are not supported: send JSON text frames",
                    None,
                    None,
                )),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                Some(Ok(Message::Close(_))) => return closer.close(CloseReason::ClientClosed),
                Some(Err(e)) => {
                    let too_big = is_too_big(&e.to_string());
                    tracing::debug!(error = %e, "websocket read failed");
                    return closer.close(if too_big {
                        CloseReason::TooBig
                    } else {
                        CloseReason::Gone
                    });
                }
                None => return closer.close(CloseReason::Gone),
            };
            if handled.is_err() {
                return closer.close(CloseReason::Lagged { channel: None });
            }
        }
    }

    async fn handle(&mut self, text: &str) -> Result<(), Overflow> {
        let req = match protocol::parse(text) {
            Ok(req) => req,
            Err(e) => return self.outbox.reply(e.frame()),
        };
        let rid = req.request_id.as_ref();
        match req.frame {
            ClientFrame::Ping => self.outbox.reply(protocol::pong(rid)),
            ClientFrame::Subscribe { channel, after } => self.subscribe(&channel, after, rid).await,
            ClientFrame::Unsubscribe { channel } => {
                self.feeds.remove(&channel);
                self.outbox
                    .deactivate(&channel, None, Some(protocol::unsubscribed(&channel, rid)))
            }
            ClientFrame::Cancel { run_id } => {
                match self.state.runtime.cancel_run(self.account(), &run_id).await {
                    // The run's `done` (stop_reason `cancelled`) is the answer.
                    Ok(_) => Ok(()),
                    Err(e) => self.reply_error(&e.into(), rid, None),
                }
            }
            ClientFrame::UserMessage(m) => self.user_message(m, rid).await,
            ClientFrame::ApprovalResponse(a) => self.approval_response(a, rid).await,
        }
    }

    fn reply_error(
        &self,
        e: &Refusal,
        rid: Option<&Value>,
        channel: Option<&str>,
    ) -> Result<(), Overflow> {
        self.outbox
            .reply(protocol::error(e.code, &e.message, rid, channel))
    }

    async fn subscribe(
        &mut self,
        name: &str,
        after: Option<u64>,
        rid: Option<&Value>,
    ) -> Result<(), Overflow> {
        let target = match Channel::parse(name) {
            Ok(t) => t,
            Err(e) => {
                let e = Refusal::validation(e.to_string());
                return self.reply_error(&e, rid, Some(name));
            }
        };
        if let Err(e) = crate::keys::require(&self.key, feed::scope(&target)) {
            return self.reply_error(&e.into(), rid, Some(name));
        }
        let channel: Arc<str> = target.to_string().into();
        let active = self.outbox.is_active(&channel);
        if active && after.is_none() {
            // Already live on it: subscribing again is a no-op.
            return self.outbox.reply(protocol::subscribed(&channel, rid));
        }
        if let Err(e) = self.check_room(active) {
            return self.reply_error(&e, rid, Some(&channel));
        }
        match feed::open(&self.state, self.account(), &target, after).await {
            Ok(feed) => {
                // `subscribed` first, then the replay and live events.
                let gen = self.outbox.activate(&channel);
                self.outbox.reply(protocol::subscribed(&channel, rid))?;
                self.feeds.add(channel, gen, feed);
                Ok(())
            }
            Err(e) => self.reply_error(&e.into(), rid, Some(&channel)),
        }
    }

    fn check_room(&self, replacing: bool) -> Result<(), Refusal> {
        if !replacing && self.outbox.active_count() >= self.settings.max_channels {
            return Err(Refusal::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} channels per socket; unsubscribe from one first",
                    self.settings.max_channels
                ),
            ));
        }
        Ok(())
    }

    async fn user_message(&mut self, m: UserMessage, rid: Option<&Value>) -> Result<(), Overflow> {
        let messages = match m.chat_messages() {
            Ok(list) => list,
            Err(msg) => return self.reply_error(&Refusal::validation(msg), rid, None),
        };
        // A run start, as on REST: one request against the key's rpm and one
        // of its `max_runs` slots; refused, nothing starts and the socket
        // stays open.
        let account = (self.state.keys)
            .account_limits(self.state.store.as_ref(), self.account())
            .await;
        let slot = match self.state.edge.start_run(&self.key, account).await {
            Ok((slot, _)) => slot,
            Err(e) => {
                let e = Refusal::from(e);
                let frame = protocol::error_retry(e.code, &e.message, rid, e.retry_after);
                return self.outbox.reply(frame);
            }
        };
        // Listen before the run starts, so its first event cannot be missed.
        let target = Channel::Agent(m.agent_id.as_str().into());
        let channel: Arc<str> = target.to_string().into();
        let mut added = false;
        if !self.outbox.is_active(&channel) {
            let opened = match self.check_room(false) {
                Ok(()) => feed::open(&self.state, self.account(), &target, None)
                    .await
                    .map_err(Refusal::from),
                Err(e) => Err(e),
            };
            match opened {
                Ok(feed) => {
                    let gen = self.outbox.activate(&channel);
                    self.feeds.add(channel.clone(), gen, feed);
                    added = true;
                }
                Err(e) => return self.reply_error(&e, rid, None),
            }
        }
        self.outbox.begin_start();
        let req = StartRun {
            run_id: None,
            agent_id: m.agent_id,
            agent: None,
            session: m.session_id.into(),
            messages,
            stream_tokens: m.stream_tokens,
            background: m.background,
            slot: Some(slot),
            models: self.key.models.clone(),
        };
        match self.state.runtime.start_run(self.account(), req).await {
            Ok(run) => self.outbox.end_start(
                Some((&run.id, m.background)),
                protocol::run_started(run.id.as_str(), rid),
            ),
            Err(e) => {
                if added {
                    self.feeds.remove(&channel);
                    self.outbox.deactivate(&channel, None, None)?;
                }
                let e = Refusal::from(e);
                self.outbox
                    .end_start(None, protocol::error(e.code, &e.message, rid, None))
            }
        }
    }

    /// After the socket closed: drop the feeds, cancel the runs the client
    /// left behind (unless they run in the background or the gateway drains).
    async fn finish(&mut self) {
        self.feeds.clear();
        if !self.closer.reason().is_some_and(|r| r.client_left()) {
            return;
        }
        for run_id in self.outbox.open_runs() {
            if let Err(e) = self.state.runtime.cancel_run(self.account(), &run_id).await {
                tracing::debug!(error = %e, %run_id, "cancel on websocket close");
            }
        }
    }
}

/// Asks the writer for a ping every `ping_every` and closes the socket once
/// the client has sent nothing for `idle_timeout`, on one timer: it wakes
/// at the earlier of the two and works out which came.
async fn keep_alive(
    outbox: &Outbox,
    closer: &Closer,
    settings: &WsSettings,
    seen: &Mutex<Instant>,
) {
    let mut next_ping = Instant::now() + settings.ping_every;
    let idle_at = || *seen.lock() + settings.idle_timeout;
    let timer = tokio::time::sleep_until(next_ping.min(idle_at()));
    tokio::pin!(timer);
    loop {
        timer.as_mut().await;
        let now = Instant::now();
        if now >= idle_at() {
            return closer.close(CloseReason::Idle);
        }
        if now >= next_ping {
            outbox.ping();
            // A late tick delays the next one (no burst of pings).
            next_ping = now + settings.ping_every;
        }
        timer.as_mut().reset(next_ping.min(idle_at()));
    }
}

/// tungstenite's "message/frame too long" capacity errors.
fn is_too_big(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("space limit exceeded") || e.contains("too long") || e.contains("too big")
}

#[path = "approve.rs"]
mod approve;
