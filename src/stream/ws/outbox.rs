//! One socket's outbound side: the bounded queue every frame goes through,
//! and the [`Closer`] that records why the socket is closing.
//!
//! Every producer (the reader's replies, the feeds of every channel) enqueues
//! with `try_send` through the [`Outbox`]: nothing ever waits for a slow
//! client, and a full queue is the socket's "lagged" signal. The outbox's
//! short lock also keeps the client-visible order right:
//! - after `unsubscribed`, no event of that channel follows (channels carry a
//!   generation, so an event of an older subscription is dropped);
//! - `run_started` comes before the run's first event: while this socket is
//!   starting a run, `agent:` events of runs it does not know yet are held
//!   back (in order, bounded) and released right after `run_started`.

use std::{collections::VecDeque, sync::Arc};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::queue::{Queue, Recv};
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
    queue: Queue<Out>,
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Subscribed channels and their current generation: a few at most
    /// (64), where a vector is smaller than a map.
    active: Vec<(Arc<str>, u64)>,
    next_gen: u64,
    /// The runs this socket started: boxed, and only once it starts one
    /// (most sockets never do, and this is held by every idle socket).
    runs: Option<Box<Runs>>,
}

#[derive(Default)]
struct Runs {
    /// A `user_message` is between "start the run" and "run_started sent".
    starting: bool,
    /// Runs this socket started (newest last).
    started: VecDeque<RunId>,
    /// Runs this socket started without `background` whose `done` it has not seen.
    open_runs: VecDeque<RunId>,
    /// Events held back while a run starts, in arrival order.
    held: VecDeque<Out>,
}

impl Inner {
    fn gen(&self, channel: &str) -> Option<u64> {
        self.active
            .iter()
            .find(|(c, _)| &**c == channel)
            .map(|(_, g)| *g)
    }
}

impl Outbox {
    /// An outbox holding at most `cap` frames.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let inner = Mutex::new(Inner::default());
        let queue = Queue::new(cap);
        Self { queue, cap, inner }
    }

    fn send(&self, out: Out) -> Result<(), Overflow> {
        self.queue.try_send(out).map_err(|_| Overflow)
    }

    /// Asks the writer to ping the client, before anything queued.
    pub fn ping(&self) {
        self.queue.ping();
    }

    /// The writer's end: a due ping, else the next frame.
    pub async fn recv(&self) -> Recv<Out> {
        self.queue.recv().await
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Frees the queue's slots while it is empty (an idle socket's).
    pub fn release(&self) {
        self.queue.release();
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
        g.active.retain(|(c, _)| c != channel);
        // Most sockets hold one channel: room for one, not Vec's first four.
        g.active.reserve_exact(1);
        g.active.push((channel.clone(), gen));
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
        if gen.is_none_or(|gen| g.gen(channel) == Some(gen)) {
            g.active.retain(|(c, _)| &**c != channel);
            if let Some(runs) = g.runs.as_deref_mut() {
                runs.held.retain(|o| o.channel() != Some(channel));
            }
        }
        match reply {
            Some(frame) => self.send(Out::Reply(frame)),
            None => Ok(()),
        }
    }

    pub fn is_active(&self, channel: &str) -> bool {
        self.inner.lock().gen(channel).is_some()
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
        if g.gen(channel) != Some(gen) {
            return Ok(());
        }
        let Some(runs) = g.runs.as_deref_mut() else {
            return self.send(out);
        };
        let run = &ev.run_id;
        if ev.message_type == Some(MessageType::Done) {
            runs.open_runs.retain(|r| r != run);
        }
        let unknown_run = || !runs.started.contains(run);
        if !runs.held.is_empty()
            || (runs.starting && channel.starts_with("agent:") && unknown_run())
        {
            if runs.held.len() >= self.cap {
                return Err(Overflow);
            }
            runs.held.push_back(out);
            return Ok(());
        }
        self.send(out)
    }

    /// A run is about to be started from this socket: hold back events of
    /// runs not yet announced until [`Outbox::end_start`].
    pub fn begin_start(&self) {
        let mut g = self.inner.lock();
        g.runs.get_or_insert_with(Box::default).starting = true;
    }

    /// Queues `reply` (`run_started` or the error), then what was held back.
    pub fn end_start(
        &self,
        started: Option<(&RunId, bool)>,
        reply: Utf8Bytes,
    ) -> Result<(), Overflow> {
        let mut g = self.inner.lock();
        let runs = g.runs.get_or_insert_with(Box::default);
        runs.starting = false;
        if let Some((run_id, background)) = started {
            remember(&mut runs.started, run_id);
            if !background {
                remember(&mut runs.open_runs, run_id);
            }
        }
        self.send(Out::Reply(reply))?;
        while let Some(out) = runs.held.pop_front() {
            self.send(out)?;
        }
        Ok(())
    }

    /// Runs this socket started (not in the background) and has not seen end.
    pub fn open_runs(&self) -> Vec<RunId> {
        let g = self.inner.lock();
        let runs = g.runs.as_deref();
        runs.map_or_else(Vec::new, |r| r.open_runs.iter().cloned().collect())
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

/// The first reason given wins; [`Closer::closed`] wakes every part of
/// the socket. A `Notify` beside the reason rather than a cancellation
/// token: it lives in the socket's task, where a token would be one more
/// allocation per socket.
#[derive(Default)]
pub struct Closer {
    reason: Mutex<Option<CloseReason>>,
    wake: Notify,
}

impl Closer {
    pub fn close(&self, reason: CloseReason) {
        let mut r = self.reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.wake.notify_waiters();
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.lock().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.reason.lock().is_some()
    }

    /// Resolves once [`Closer::close`] was called (at once if it was).
    pub async fn closed(&self) {
        let notified = self.wake.notified();
        tokio::pin!(notified);
        // Registered before the check: a close in between still wakes it.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
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

    fn drain(ob: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = ob.queue.try_recv() {
            out.push(match o {
                Out::Event { seq, .. } => format!("ev{seq}"),
                Out::Reply(t) => t.to_string(),
            });
        }
        out
    }

    #[test]
    fn run_started_goes_before_the_runs_events() {
        let ob = Outbox::new(16);
        let ch: Arc<str> = "agent:a".into();
        let gen = ob.activate(&ch);
        ob.begin_start();
        ob.event(&ch, gen, &ev(1, "run-1", "internal_monologue"))
            .unwrap();
        ob.event(&ch, gen, &ev(2, "run-1", "assistant_message"))
            .unwrap();
        assert!(drain(&ob).is_empty(), "held while the run starts");
        ob.end_start(Some((&"run-1".into(), false)), "started".into())
            .unwrap();
        assert_eq!(drain(&ob), ["started", "ev1", "ev2"]);
        // Known runs flow while another start is in flight.
        ob.begin_start();
        ob.event(&ch, gen, &ev(3, "run-1", "done")).unwrap();
        assert_eq!(drain(&ob), ["ev3"]);
        ob.end_start(None, "err".into()).unwrap();
        assert!(ob.open_runs().is_empty(), "done seen");
    }

    #[test]
    fn nothing_of_a_channel_follows_its_unsubscribe() {
        let ob = Outbox::new(16);
        let ch: Arc<str> = "logs:a".into();
        let old = ob.activate(&ch);
        ob.event(&ch, old, &ev(1, "r", "log")).unwrap();
        ob.deactivate(&ch, None, Some("bye".into())).unwrap();
        ob.event(&ch, old, &ev(2, "r", "log")).unwrap();
        let new = ob.activate(&ch);
        ob.event(&ch, old, &ev(3, "r", "log")).unwrap();
        ob.event(&ch, new, &ev(4, "r", "log")).unwrap();
        assert_eq!(drain(&ob), ["ev1", "bye", "ev4"]);
    }

    #[test]
    fn a_full_queue_is_an_overflow_not_a_wait() {
        let ob = Outbox::new(2);
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
        assert!(c.is_closed());
        assert_eq!(c.reason(), Some(CloseReason::Idle));
    }

    #[tokio::test]
    async fn closing_wakes_every_waiter_and_later_ones_return_at_once() {
        let c = Arc::new(Closer::default());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.closed().await })
            })
            .collect();
        tokio::task::yield_now().await;
        c.close(CloseReason::Gone);
        for w in waiters {
            w.await.unwrap();
        }
        c.closed().await;
    }
}
