//! One socket's outbound side: the bounded queue every frame goes through,
//! and the [`Closer`] that records why the socket is closing.
//!
//! Every producer (the reader's replies, one forwarder per channel) enqueues
//! with `try_send` through the [`Outbox`]: nothing ever waits for a slow
//! client, and a full queue is the socket's "lagged" signal. The outbox's
//! short lock also keeps the client-visible order right:
//! - after `unsubscribed`, no event of that channel follows (channels carry a
//!   generation, so a forwarder that lost the race drops its event);
//! - `run_started` comes before the run's first event: while this socket is
//!   starting a run, `agent:` events of runs it does not know yet are held
//!   back (in order, bounded) and released right after `run_started`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::queue::{self, Receiver, Sender, TrySendError};
use crate::{
    bus::BusEvent,
    domain::{MessageType, RunId},
};

/// Runs remembered per socket (for ordering and cancel-on-close).
const RUNS_KEPT: usize = 256;

/// A frame waiting for the writer.
#[derive(Debug)]
pub enum Out {
    /// An agent event of `channel`; the writer records `seq` once sent.
    Event {
        channel: Arc<str>,
        seq: u64,
        text: Utf8Bytes,
    },
    /// A reply (`run_started`, `subscribed`, `pong`, `error`, …).
    Reply(Utf8Bytes),
}

impl Out {
    fn channel(&self) -> Option<&str> {
        match self {
            Self::Event { channel, .. } => Some(channel),
            Self::Reply(_) => None,
        }
    }
}

/// The outbound queue is full: the client is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The ordered, bounded way into one socket's writer.
pub struct Outbox {
    tx: Sender<Out>,
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Subscribed channels and their current generation.
    active: HashMap<Arc<str>, u64>,
    next_gen: u64,
    /// A `user_message` is between "start the run" and "run_started sent".
    starting: bool,
    /// Runs this socket started (newest last).
    started: VecDeque<RunId>,
    /// Runs this socket started without `background` whose `done` it has not seen.
    open_runs: VecDeque<RunId>,
    /// Events held back while a run starts, in arrival order.
    held: VecDeque<Out>,
}

impl Outbox {
    /// An outbox holding at most `cap` frames, and the writer's end of it.
    pub fn new(cap: usize) -> (Self, Receiver<Out>) {
        let cap = cap.max(1);
        let (tx, rx) = queue::queue(cap);
        let inner = Mutex::new(Inner::default());
        (Self { tx, cap, inner }, rx)
    }

    fn send(&self, out: Out) -> Result<(), Overflow> {
        match self.tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full) => Err(Overflow),
            // The writer is gone: the socket is closing, nothing to do.
            Err(TrySendError::Closed) => Ok(()),
        }
    }

    /// Queues a reply.
    pub fn reply(&self, frame: Utf8Bytes) -> Result<(), Overflow> {
        let _order = self.inner.lock();
        self.send(Out::Reply(frame))
    }

    /// Marks `channel` subscribed and returns its new generation (a previous
    /// subscription of the same channel stops delivering at once).
    pub fn activate(&self, channel: &Arc<str>) -> u64 {
        let mut g = self.inner.lock();
        g.next_gen += 1;
        let gen = g.next_gen;
        g.active.insert(channel.clone(), gen);
        gen
    }

    /// Marks `channel` unsubscribed (only if still at `gen`, when given) and
    /// queues `reply` under the same lock, so no event of it follows.
    pub fn deactivate(
        &self,
        channel: &str,
        gen: Option<u64>,
        reply: Option<Utf8Bytes>,
    ) -> Result<(), Overflow> {
        let mut g = self.inner.lock();
        if gen.is_none_or(|gen| g.active.get(channel) == Some(&gen)) {
            g.active.remove(channel);
            g.held.retain(|o| o.channel() != Some(channel));
        }
        match reply {
            Some(frame) => self.send(Out::Reply(frame)),
            None => Ok(()),
        }
    }

    pub fn is_active(&self, channel: &str) -> bool {
        self.inner.lock().active.contains_key(channel)
    }

    pub fn active_count(&self) -> usize {
        self.inner.lock().active.len()
    }

    /// Queues an event of `channel` (subscription generation `gen`).
    pub fn event(&self, channel: &Arc<str>, gen: u64, ev: &BusEvent) -> Result<(), Overflow> {
        // JSON is UTF-8: this check never fails, and it is a scan, not a copy.
        let Ok(text) = Utf8Bytes::try_from(ev.ws.clone()) else {
            return Ok(());
        };
        let out = Out::Event {
            channel: channel.clone(),
            seq: ev.seq,
            text,
        };
        let mut g = self.inner.lock();
        if g.active.get(channel) != Some(&gen) {
            return Ok(());
        }
        let run = &ev.run_id;
        if ev.message_type == Some(MessageType::Done) {
            g.open_runs.retain(|r| r != run);
        }
        let unknown_run = || !g.started.contains(run);
        if !g.held.is_empty() || (g.starting && channel.starts_with("agent:") && unknown_run()) {
            if g.held.len() >= self.cap {
                return Err(Overflow);
            }
            g.held.push_back(out);
            return Ok(());
        }
        self.send(out)
    }

    /// A run is about to be started from this socket: hold back events of
    /// runs not yet announced until [`Outbox::end_start`].
    pub fn begin_start(&self) {
        self.inner.lock().starting = true;
    }

    /// Queues `reply` (`run_started` or the error), then what was held back.
    pub fn end_start(
        &self,
        started: Option<(&RunId, bool)>,
        reply: Utf8Bytes,
    ) -> Result<(), Overflow> {
        let mut g = self.inner.lock();
        g.starting = false;
        if let Some((run_id, background)) = started {
            remember(&mut g.started, run_id);
            if !background {
                remember(&mut g.open_runs, run_id);
            }
        }
        self.send(Out::Reply(reply))?;
        while let Some(out) = g.held.pop_front() {
            self.send(out)?;
        }
        Ok(())
    }

    /// Runs this socket started (not in the background) and has not seen end.
    pub fn open_runs(&self) -> Vec<RunId> {
        self.inner.lock().open_runs.iter().cloned().collect()
    }
}

fn remember(list: &mut VecDeque<RunId>, run_id: &RunId) {
    if list.len() >= RUNS_KEPT {
        list.pop_front();
    }
    list.push_back(run_id.clone());
}

/// Why a socket is closing; decides its last frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The gateway is draining (this socket's turn came): close 1001 with
    /// a reason that says so and carries the reconnect hint, if any.
    Shutdown { retry: Option<std::time::Duration> },
    /// Nothing received for the idle timeout: close 1000.
    Idle,
    /// The outbound queue overflowed (or the bus dropped events for it):
    /// an `error` frame `lagged`, then close 1013.
    Lagged { channel: Option<Arc<str>> },
    /// A message over the size limit: close 1009.
    TooBig,
    /// The client sent a close frame.
    ClientClosed,
    /// The connection broke.
    Gone,
}

impl CloseReason {
    /// Whether runs this socket started should be cancelled: the client went
    /// away. A draining gateway lets them finish; a lagged client resumes.
    pub fn client_left(&self) -> bool {
        matches!(
            self,
            Self::Idle | Self::TooBig | Self::ClientClosed | Self::Gone
        )
    }
}

/// The first reason given wins; the token wakes every part of the socket.
#[derive(Default)]
pub struct Closer {
    pub token: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl Closer {
    pub fn close(&self, reason: CloseReason) {
        let mut r = self.reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgentEvent;

    fn ev(seq: u64, run: &str, kind: &str) -> BusEvent {
        let kind: MessageType = kind.parse().unwrap();
        BusEvent::encode(seq, &AgentEvent::test_of(kind, run))
    }

    fn drain(rx: &mut Receiver<Out>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = rx.try_recv() {
            out.push(match o {
                Out::Event { seq, .. } => format!("ev{seq}"),
                Out::Reply(t) => t.to_string(),
            });
        }
        out
    }

    #[test]
    fn run_started_goes_before_the_runs_events() {
        let (ob, mut rx) = Outbox::new(16);
        let ch: Arc<str> = "agent:a".into();
        let gen = ob.activate(&ch);
        ob.begin_start();
        ob.event(&ch, gen, &ev(1, "run-1", "internal_monologue"))
            .unwrap();
        ob.event(&ch, gen, &ev(2, "run-1", "assistant_message"))
            .unwrap();
        assert!(drain(&mut rx).is_empty(), "held while the run starts");
        ob.end_start(Some((&"run-1".into(), false)), "started".into())
            .unwrap();
        assert_eq!(drain(&mut rx), ["started", "ev1", "ev2"]);
        // Known runs flow while another start is in flight.
        ob.begin_start();
        ob.event(&ch, gen, &ev(3, "run-1", "done")).unwrap();
        assert_eq!(drain(&mut rx), ["ev3"]);
        ob.end_start(None, "err".into()).unwrap();
        assert!(ob.open_runs().is_empty(), "done seen");
    }

    #[test]
    fn nothing_of_a_channel_follows_its_unsubscribe() {
        let (ob, mut rx) = Outbox::new(16);
        let ch: Arc<str> = "logs:a".into();
        let old = ob.activate(&ch);
        ob.event(&ch, old, &ev(1, "r", "log")).unwrap();
        ob.deactivate(&ch, None, Some("bye".into())).unwrap();
        ob.event(&ch, old, &ev(2, "r", "log")).unwrap();
        let new = ob.activate(&ch);
        ob.event(&ch, old, &ev(3, "r", "log")).unwrap();
        ob.event(&ch, new, &ev(4, "r", "log")).unwrap();
        assert_eq!(drain(&mut rx), ["ev1", "bye", "ev4"]);
    }

    #[test]
    fn a_full_queue_is_an_overflow_not_a_wait() {
        let (ob, _rx) = Outbox::new(2);
        let ch: Arc<str> = "agent:a".into();
        let gen = ob.activate(&ch);
        ob.event(&ch, gen, &ev(1, "r", "log")).unwrap();
        ob.reply("x".into()).unwrap();
        assert_eq!(ob.event(&ch, gen, &ev(2, "r", "log")), Err(Overflow));
        assert_eq!(ob.reply("y".into()), Err(Overflow));
    }

    #[test]
    fn the_first_close_reason_wins() {
        let c = Closer::default();
        c.close(CloseReason::Idle);
        c.close(CloseReason::Shutdown { retry: None });
        assert!(c.token.is_cancelled());
        assert_eq!(c.reason(), Some(CloseReason::Idle));
    }
}
