//! The WebSocket protocol core, generic over any `Sink<Message>` and
//! `Stream<Item = Result<Message, _>>` so it runs (and is tested) without a
//! socket.
//!
//! One socket is three parts under one [`Closer`]:
//! - the reader: parses client frames, answers them, subscribes; it also
//!   enforces the idle timeout (nothing received, not even a pong);
//! - the writer: the only owner of the sink; drains the bounded [`Outbox`]
//!   queue, pings the client, and writes the last frames when closing;
//! - one forwarder task per subscribed channel: copies the channel's shared
//!   event bytes into the outbox and never waits (a full queue closes the
//!   socket as `lagged`, so a slow client never holds back the bus or any
//!   other socket).

use std::{collections::HashMap, fmt::Display, sync::Arc};

use axum::extract::ws::Message;
use futures::{Sink, Stream, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    outbox::{CloseReason, Closer, Outbox, Overflow},
    protocol::{self, ClientFrame, UserMessage},
    refusal::Refusal,
    writer, WsSettings,
};
use crate::{
    agent::StartRun,
    bus::BusError,
    domain::Channel,
    domain::ErrorCode,
    state::AppState,
    store::KeyRecord,
    stream::feed::{self, Feed, FeedError},
};

/// Serves one socket until it closes: the client leaves, goes silent, falls
/// behind, or the gateway drains. Runs this socket started are cancelled
/// when the client leaves, unless they were started with `background`.
/// `key` is the socket's API key: its account and scopes.
pub async fn serve<Tx, Rx, E>(
    state: AppState,
    key: Arc<KeyRecord>,
    settings: WsSettings,
    sink: Tx,
    stream: Rx,
) where
    Tx: Sink<Message> + Unpin + Send,
    Tx::Error: Display,
    Rx: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: Display,
{
    let (outbox, out_rx) = Outbox::new(settings.queue);
    let closer = Arc::new(Closer::default());
    // An idle stream: its turn in the drain closes it (stream/drain.rs).
    let ticket = state.drain.ticket();
    // `state` moves into the reader: a second copy held across the awaits
    // below would size every idle socket's task (issue 22).
    let mut conn = Conn {
        state,
        key,
        settings: settings.clone(),
        outbox: Arc::new(outbox),
        closer: closer.clone(),
        forwarders: HashMap::new(),
    };
    let drain = async {
        tokio::select! {
            _ = ticket.token.cancelled() => closer.close(CloseReason::Shutdown { retry: ticket.retry }),
            _ = closer.token.cancelled() => {}
        }
    };
    tokio::join!(
        conn.read(stream),
        writer::write(sink, out_rx, &closer, &settings),
        drain
    );
    // Boxed for the same reason as `handle` in `Conn::read`.
    Box::pin(conn.finish()).await;
}

/// The reader's side of one socket.
struct Conn {
    state: AppState,
    key: Arc<KeyRecord>,
    settings: WsSettings,
    outbox: Arc<Outbox>,
    closer: Arc<Closer>,
    /// Stop tokens of the forwarders, by channel name.
    forwarders: HashMap<Arc<str>, CancellationToken>,
}

impl Conn {
    fn account(&self) -> &str {
        &self.key.account_id
    }

    async fn read<Rx, E>(&mut self, mut stream: Rx)
    where
        Rx: Stream<Item = Result<Message, E>> + Unpin,
        E: Display,
    {
        let closer = self.closer.clone();
        let idle = tokio::time::sleep(self.settings.idle_timeout);
        tokio::pin!(idle);
        loop {
            let msg = tokio::select! {
                biased;
                _ = closer.token.cancelled() => return,
                _ = &mut idle => return closer.close(CloseReason::Idle),
                msg = stream.next() => msg,
            };
            idle.as_mut()
                .reset(Instant::now() + self.settings.idle_timeout);
            let handled = match msg {
                // Boxed: `handle` holds the run and store calls' futures,
                // and inline they would size every idle socket's task
                // (BENCHMARKS.md, connections); a client frame is rare
                // enough to pay one allocation.
                Some(Ok(Message::Text(text))) => tokio::select! {
                    biased;
                    _ = closer.token.cancelled() => return,
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
                self.stop(&channel);
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
                self.spawn_forwarder(channel, gen, feed);
                Ok(())
            }
            Err(e) => self.reply_error(&e.into(), rid, Some(&channel)),
        }
    }

    fn check_room(&mut self, replacing: bool) -> Result<(), Refusal> {
        let outbox = self.outbox.clone();
        self.forwarders.retain(|name, _| outbox.is_active(name));
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

    fn spawn_forwarder(&mut self, channel: Arc<str>, gen: u64, feed: Feed) {
        let stop = self.closer.token.child_token();
        if let Some(old) = self.forwarders.insert(channel.clone(), stop.clone()) {
            old.cancel();
        }
        let (outbox, closer) = (self.outbox.clone(), self.closer.clone());
        self.state
            .tracker
            .spawn(forward(feed, channel, gen, outbox, closer, stop));
    }

    fn stop(&mut self, channel: &str) {
        if let Some(stop) = self.forwarders.remove(channel) {
            stop.cancel();
        }
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
                    self.spawn_forwarder(channel.clone(), gen, feed);
                    added = true;
                }
                Err(e) => return self.reply_error(&e, rid, None),
            }
        }
        self.outbox.begin_start();
        let req = StartRun {
            run_id: None,
            agent_id: m.agent_id,
            session_id: m.session_id,
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
                    self.stop(&channel);
                    self.outbox.deactivate(&channel, None, None)?;
                }
                let e = Refusal::from(e);
                self.outbox
                    .end_start(None, protocol::error(e.code, &e.message, rid, None))
            }
        }
    }

    /// After the socket closed: stop forwarders, cancel the runs the client
    /// left behind (unless they run in the background or the gateway drains).
    async fn finish(&mut self) {
        for (_, stop) in self.forwarders.drain() {
            stop.cancel();
        }
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

/// Copies one channel's events into the outbox until unsubscribed, the feed
/// ends, or the client falls behind.
async fn forward(
    mut feed: Feed,
    channel: Arc<str>,
    gen: u64,
    outbox: Arc<Outbox>,
    closer: Arc<Closer>,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            item = feed.next() => item,
        };
        match item {
            Some(Ok(ev)) => {
                if outbox.event(&channel, gen, &ev) == Err(Overflow) {
                    return closer.close(CloseReason::Lagged {
                        channel: Some(channel),
                    });
                }
            }
            Some(Err(FeedError::Bus(BusError::Lagged { .. }))) => {
                return closer.close(CloseReason::Lagged {
                    channel: Some(channel),
                });
            }
            Some(Err(e)) => {
                let frame = protocol::error(e.code(), &e.message(), None, Some(&channel));
                if outbox.deactivate(&channel, Some(gen), Some(frame)).is_err() {
                    closer.close(CloseReason::Lagged { channel: None });
                }
                return;
            }
            // A run channel ends after `done`; the client may subscribe again.
            None => {
                let _ = outbox.deactivate(&channel, Some(gen), None);
                return;
            }
        }
    }
}

/// tungstenite's "message/frame too long" capacity errors.
fn is_too_big(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("space limit exceeded") || e.contains("too long") || e.contains("too big")
}

#[path = "approve.rs"]
mod approve;
