//! The bounded queue between one socket's producers (through the
//! [`super::outbox::Outbox`]) and its writer: a `VecDeque` under a lock plus
//! a `Notify`, with `tokio::sync::mpsc`'s semantics for one sender and one
//! receiver (`try_send` fails `Full` or `Closed`; `recv` gives `None` once
//! the sender is gone and the queue is empty).
//!
//! Why not `mpsc`: it allocates its slots in blocks of 32 up front, ~2.3 KiB
//! per socket with the frame type here, for a queue that is empty nearly
//! all the time. This one allocates on the first frame and gives a burst's
//! growth back once drained (BENCHMARKS.md, connections).

use std::{collections::VecDeque, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Capacity a drained queue may keep; more is freed (a burst's growth).
const KEEP: usize = 8;

/// Why [`Sender::try_send`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// `cap` items are queued.
    Full,
    /// The receiver is gone.
    Closed,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken (one permit) on every push and when the sender goes.
    ready: Notify,
    cap: usize,
}

struct State<T> {
    items: VecDeque<T>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// The producers' end (not `Clone`: the outbox is the one sender).
pub struct Sender<T>(Arc<Shared<T>>);

/// The writer's end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue holding at most `cap` (at least 1) items.
pub fn queue<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        ready: Notify::new(),
        cap: cap.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError> {
        let mut s = self.0.state.lock();
        if s.receiver_gone {
            return Err(TrySendError::Closed);
        }
        if s.items.len() >= self.0.cap {
            return Err(TrySendError::Full);
        }
        s.items.push_back(item);
        drop(s);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.state.lock().sender_gone = true;
        self.0.ready.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and all is taken.
    /// Cancel-safe: an item is only removed when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut s = self.0.state.lock();
                if let Some(item) = pop(&mut s) {
                    return Some(item);
                }
                if s.sender_gone {
                    return None;
                }
            }
            // A push between the check and here leaves a permit: no lost wakeup.
            self.0.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        pop(&mut self.0.state.lock())
    }

    pub fn is_empty(&self) -> bool {
        self.0.state.lock().items.is_empty()
    }
}

fn pop<T>(s: &mut State<T>) -> Option<T> {
    let item = s.items.pop_front();
    if s.items.is_empty() && s.items.capacity() > KEEP {
        s.items = VecDeque::new();
    }
    item
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.receiver_gone = true;
        s.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_then_closed() {
        let (tx, rx) = queue(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full));
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn recv_waits_for_a_push_and_ends_after_the_sender() {
        let (tx, mut rx) = queue(4);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        tokio::task::yield_now().await;
        for v in 0..3 {
            tx.try_send(v).unwrap();
            tokio::task::yield_now().await;
        }
        drop(tx);
        assert_eq!(reader.await.unwrap(), [0, 1, 2]);
    }

    #[test]
    fn a_drained_queue_gives_back_a_burst() {
        let (tx, mut rx) = queue(1024);
        for v in 0..100 {
            tx.try_send(v).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.is_empty());
        assert!(rx.0.state.lock().items.capacity() <= KEEP);
    }
}
