//! One socket's subscribed feeds, polled in the socket's own task.
//!
//! The reader adds a feed when a subscription starts and removes it on
//! `unsubscribe`; [`Feeds::pump`], joined with the reader and the writer,
//! copies every ready event into the [`Outbox`] and never waits for the
//! client: a full queue closes the socket as `lagged`, so a slow client
//! still never holds back the bus or any other socket.
//!
//! Why not a task per channel: an idle socket's forwarder task, its
//! cancellation token and the map of those tokens were a tenth of what an
//! idle WebSocket held (issue 22; BENCHMARKS.md, connections). Here a
//! subscription is one entry of a small vector.

use std::{
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use futures::StreamExt;
use parking_lot::Mutex;

use super::{
    outbox::{CloseReason, Closer, Outbox, Overflow},
    protocol,
};
use crate::{
    bus::BusError,
    stream::feed::{Feed, FeedError},
};

/// Events one feed may queue per poll before the others (and the writer,
/// which runs in the same task) get their turn: a long replay must not
/// fill the queue in one go while the writer could be draining it.
const BURST: usize = 64;

/// The subscribed feeds of one socket.
#[derive(Default)]
pub struct Feeds {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    subs: Vec<Sub>,
    /// The pump's waker: a feed added after it went to sleep wakes it.
    waker: Option<Waker>,
}

/// One subscription: its channel, generation (see [`Outbox::activate`]) and
/// events.
struct Sub {
    channel: Arc<str>,
    gen: u64,
    feed: Feed,
}

/// What one feed's turn ended with.
enum Turn {
    /// Nothing more ready now (or its burst is used up).
    Pending,
    /// The feed ended (run channel after `done`, or after its error frame).
    Ended,
    /// The socket is closing (lagged).
    Closed,
}

impl Feeds {
    /// Delivers `feed` for `channel` at `gen`; a feed of the same channel
    /// already there is dropped (resubscribing with `after`).
    pub fn add(&self, channel: Arc<str>, gen: u64, feed: Feed) {
        let mut g = self.inner.lock();
        g.subs.retain(|s| s.channel != channel);
        // Most sockets hold one channel: room for one, not Vec's first four.
        g.subs.reserve_exact(1);
        g.subs.push(Sub { channel, gen, feed });
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    /// Stops delivering `channel` (dropping its feed).
    pub fn remove(&self, channel: &str) {
        self.inner.lock().subs.retain(|s| &*s.channel != channel);
    }

    /// Drops every feed (the socket closed).
    pub fn clear(&self) {
        let subs = std::mem::take(&mut self.inner.lock().subs);
        drop(subs);
    }

    /// Copies events into `outbox` until the socket closes: a full queue
    /// or a bus that dropped events for this socket closes it as lagged.
    ///
    /// It holds no waiter on the closer: it is joined with the reader and
    /// the writer, which both wait on it until the socket has closed, and
    /// `join!` polls every branch each time the task wakes.
    pub async fn pump(&self, outbox: &Outbox, closer: &Closer) {
        poll_fn(|cx| self.poll_pump(cx, outbox, closer)).await
    }

    fn poll_pump(&self, cx: &mut Context<'_>, outbox: &Outbox, closer: &Closer) -> Poll<()> {
        if closer.is_closed() {
            return Poll::Ready(());
        }
        let mut g = self.inner.lock();
        let mut again = false;
        let mut i = 0;
        while i < g.subs.len() {
            match turn(cx, &mut g.subs[i], outbox, closer, &mut again) {
                Turn::Pending => i += 1,
                Turn::Ended => {
                    g.subs.swap_remove(i);
                }
                Turn::Closed => return Poll::Ready(()),
            }
        }
        if again {
            // A burst was cut short: come back after the writer's turn.
            cx.waker().wake_by_ref();
        }
        match &g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => g.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Moves up to [`BURST`] ready events of one feed into the outbox.
fn turn(
    cx: &mut Context<'_>,
    sub: &mut Sub,
    outbox: &Outbox,
    closer: &Closer,
    again: &mut bool,
) -> Turn {
    let lagged = |channel: &Arc<str>| {
        closer.close(CloseReason::Lagged {
            channel: Some(channel.clone()),
        });
        Turn::Closed
    };
    for _ in 0..BURST {
        let item = match sub.feed.poll_next_unpin(cx) {
            Poll::Ready(item) => item,
            Poll::Pending => return Turn::Pending,
        };
        match item {
            Some(Ok(ev)) => {
                if outbox.event(&sub.channel, sub.gen, &ev) == Err(Overflow) {
                    return lagged(&sub.channel);
                }
            }
            Some(Err(FeedError::Bus(BusError::Lagged { .. }))) => return lagged(&sub.channel),
            Some(Err(e)) => {
                let frame = protocol::error(e.code(), &e.message(), None, Some(&sub.channel));
                if outbox
                    .deactivate(&sub.channel, Some(sub.gen), Some(frame))
                    .is_err()
                {
                    closer.close(CloseReason::Lagged { channel: None });
                    return Turn::Closed;
                }
                return Turn::Ended;
            }
            // A run channel ends after `done`; the client may subscribe again.
            None => {
                let _ = outbox.deactivate(&sub.channel, Some(sub.gen), None);
                return Turn::Ended;
            }
        }
    }
    *again = true;
    Turn::Pending
}
