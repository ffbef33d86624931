//! The bounded queue between one socket's producers (through the
//! [`super::outbox::Outbox`]) and its writer: a `VecDeque` under a lock plus
//! a `Notify`. `try_send` fails when `cap` items are queued; `recv` waits.
//! Producers and the writer run in the socket's one task, so the queue is a
//! plain field of the outbox there, not a shared allocation.
//!
//! Why not `mpsc`: it allocates its slots in blocks of 32 up front, ~2.3 KiB
//! per socket with the frame type here, for a queue that is empty nearly
//! all the time. This one holds its oldest item inline, so a socket whose
//! writer keeps up (one frame at a time: a reply, a trickle of events)
//! never allocates; a burst allocates the rest, and gives its growth back
//! once drained (BENCHMARKS.md, connections). What a drained queue kept is
//! freed by [`Queue::release`] (the writer calls it at each ping).
//!
//! A ping is a flag beside the queue, not an item in it: it goes out
//! before any queued frame (a client that only receives a steady flow is
//! still pinged, and its pongs keep it alive) and costs no slot.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Capacity a drained queue may keep; more is freed (a burst's growth).
const KEEP: usize = 8;

/// [`Queue::try_send`] failed: `cap` items are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// What [`Queue::recv`] gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv<T> {
    /// A ping is due: it goes before the queued items.
    Ping,
    Item(T),
}

/// A queue holding at most `cap` (at least 1) items, with one receiver.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    /// Woken (one permit) on every push and ping.
    ready: Notify,
    cap: usize,
}

struct State<T> {
    /// The oldest item, when there is one: before everything in `items`.
    head: Option<T>,
    items: VecDeque<T>,
    /// A ping is due ([`Queue::ping`]).
    ping: bool,
}

impl<T> Queue<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State {
                head: None,
                items: VecDeque::new(),
                ping: false,
            }),
            ready: Notify::new(),
            cap: cap.max(1),
        }
    }

    /// Queues `item` without waiting.
    pub fn try_send(&self, item: T) -> Result<(), Full> {
        let mut s = self.state.lock();
        if s.len() >= self.cap {
            return Err(Full);
        }
        if s.head.is_none() {
            // Empty: `items` is too (`pop` refills `head` from it).
            s.head = Some(item);
        } else {
            s.items.push_back(item);
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Asks the receiver to ping, ahead of anything queued (never full).
    pub fn ping(&self) {
        self.state.lock().ping = true;
        self.ready.notify_one();
    }

    /// A due ping, else the next item. Cancel-safe: an item is only
    /// removed when it is returned. One receiver at a time.
    pub async fn recv(&self) -> Recv<T> {
        loop {
            {
                let mut s = self.state.lock();
                if std::mem::take(&mut s.ping) {
                    return Recv::Ping;
                }
                if let Some(item) = pop(&mut s) {
                    return Recv::Item(item);
                }
            }
            // A push between the check and here leaves a permit: no lost wakeup.
            self.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        pop(&mut self.state.lock())
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().head.is_none()
    }

    /// Frees what a drained queue kept (up to [`KEEP`] slots).
    pub fn release(&self) {
        let mut s = self.state.lock();
        if s.items.is_empty() {
            s.items = VecDeque::new();
        }
    }
}

impl<T> State<T> {
    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.items.len()
    }
}

fn pop<T>(s: &mut State<T>) -> Option<T> {
    let item = s.head.take();
    s.head = s.items.pop_front();
    if s.items.is_empty() && s.items.capacity() > KEEP {
        s.items = VecDeque::new();
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_cap() {
        let q = Queue::new(2);
        q.try_send(1).unwrap();
        q.try_send(2).unwrap();
        assert_eq!(q.try_send(3), Err(Full));
        assert_eq!(q.try_recv(), Some(1));
        q.try_send(3).unwrap();
    }

    #[tokio::test]
    async fn recv_waits_for_a_push() {
        let q = std::sync::Arc::new(Queue::new(4));
        let rx = q.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 3 {
                got.push(rx.recv().await);
            }
            got
        });
        tokio::task::yield_now().await;
        for v in 0..3 {
            q.try_send(v).unwrap();
            tokio::task::yield_now().await;
        }
        assert_eq!(reader.await.unwrap(), [0, 1, 2].map(Recv::Item));
    }

    #[tokio::test]
    async fn a_ping_goes_before_the_queue_and_takes_no_slot() {
        let q = Queue::new(1);
        q.try_send(1).unwrap();
        q.ping();
        q.ping();
        assert_eq!(q.recv().await, Recv::Ping);
        assert_eq!(q.recv().await, Recv::Item(1));
        q.release();
        assert_eq!(q.state.lock().items.capacity(), 0);
    }

    #[test]
    fn one_item_at_a_time_allocates_nothing_and_order_holds() {
        let q = Queue::new(3);
        for v in 0..5 {
            q.try_send(v).unwrap();
            assert_eq!(q.try_recv(), Some(v));
        }
        assert_eq!(q.state.lock().items.capacity(), 0);
        for v in 0..3 {
            q.try_send(v).unwrap();
        }
        assert_eq!(q.try_send(3), Err(Full));
        assert_eq!(q.try_recv(), Some(0));
        q.try_send(3).unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| q.try_recv()).collect();
        assert_eq!(rest, [1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_drained_queue_gives_back_a_burst() {
        let q = Queue::new(1024);
        for v in 0..100 {
            q.try_send(v).unwrap();
        }
        while q.try_recv().is_some() {}
        assert!(q.is_empty());
        assert!(q.state.lock().items.capacity() <= KEEP);
    }
}
