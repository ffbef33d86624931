//! The drain of idle streams (protocol/limits.md, "Drain"): closes spread
//! over a window instead of all at once, so a rolling restart does not turn
//! into a reconnect storm on the other gateways.
//!
//! Every idle stream (an SSE tail, a WebSocket) holds a [`Ticket`] while it
//! is open. When the listener closes, [`Drain::close_spread`] takes the
//! open tickets, shuffles them and cancels them in small batches evenly over
//! `--drain-spread-secs`. Each ticket also carries a short random reconnect
//! hint (SSE `retry:`, the WebSocket close reason) that spreads the
//! reconnects of one batch. Streams of running runs do not take a ticket:
//! they stay until their `done` (or the hard stop).
//!
//! The hint is at most [`HINT_MAX`], not the whole spread: the closes are
//! spread already, and every millisecond a client waits is a millisecond
//! of events it does not see and then has to catch up on. A hint over the
//! whole window doubled the drain and made each follower replay half a
//! spread's worth of events (BENCHMARKS.md, "Drain").

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use rand::{seq::SliceRandom, Rng};
use tokio_util::sync::CancellationToken;

/// The spacing of batches: a batch every 50 ms at most, so 1,000 streams
/// over 10 s are closed five at a time.
const BATCH_EVERY: Duration = Duration::from_millis(50);

/// The longest reconnect hint: twenty batches' worth of jitter.
pub const HINT_MAX: Duration = Duration::from_secs(1);

/// The drain state of one gateway: whether it began (`/readyz` 503), and the
/// idle streams still open.
pub struct Drain {
    began: CancellationToken,
    spread: Duration,
    streams: Mutex<Streams>,
}

#[derive(Default)]
struct Streams {
    next: u64,
    open: HashMap<u64, CancellationToken>,
    /// Set once the closes are scheduled: later streams get a ticket that
    /// is already cancelled.
    closing: bool,
}

/// One idle stream's place in the drain; dropping it leaves the drain.
pub struct Ticket {
    id: u64,
    drain: Weak<Drain>,
    /// Cancelled when this stream's batch comes up.
    pub token: CancellationToken,
    /// How long the client should wait before it reconnects (`None`
    /// without a spread: today's immediate reconnect).
    pub retry: Option<Duration>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(drain) = self.drain.upgrade() {
            drain.streams.lock().open.remove(&self.id);
        }
    }
}

impl Drain {
    /// A drain whose closes (and reconnect hints) spread over `spread`.
    pub fn new(spread: Duration) -> Arc<Self> {
        Arc::new(Self {
            began: CancellationToken::new(),
            spread,
            streams: Mutex::default(),
        })
    }

    /// The signal came: `/readyz` answers 503 from now on.
    pub fn begin(&self) {
        self.began.cancel();
    }

    /// Whether the drain began.
    pub fn began(&self) -> bool {
        self.began.is_cancelled()
    }

    /// Idle streams open now (holding a ticket).
    pub fn open(&self) -> usize {
        self.streams.lock().open.len()
    }

    /// A ticket for a new idle stream, with its random reconnect hint.
    pub fn ticket(self: &Arc<Self>) -> Ticket {
        let token = CancellationToken::new();
        let mut s = self.streams.lock();
        let id = s.next;
        s.next += 1;
        if s.closing {
            token.cancel();
        } else {
            s.open.insert(id, token.clone());
        }
        drop(s);
        Ticket {
            id,
            drain: Arc::downgrade(self),
            token,
            retry: retry_hint(self.spread),
        }
    }

    /// Closes every idle stream: in random order, in batches evenly over
    /// the spread (all at once without one). Returns when the last batch
    /// is cancelled, or at once when `hard_stop` fires.
    pub async fn close_spread(&self, hard_stop: &CancellationToken) {
        let mut tokens: Vec<CancellationToken> = {
            let mut s = self.streams.lock();
            s.closing = true;
            s.open.values().cloned().collect()
        };
        tokens.shuffle(&mut rand::rng());
        tracing::info!(
            streams = tokens.len(),
            spread_ms = self.spread.as_millis() as u64,
            "closing idle streams"
        );
        let start = tokio::time::Instant::now();
        let mut rest = tokens.as_slice();
        for (at, n) in plan(rest.len(), self.spread) {
            tokio::select! {
                _ = tokio::time::sleep_until(start + at) => {}
                _ = hard_stop.cancelled() => break,
            }
            let (batch, later) = rest.split_at(n);
            batch.iter().for_each(CancellationToken::cancel);
            rest = later;
        }
        rest.iter().for_each(CancellationToken::cancel);
    }
}

/// When each batch is closed (offset from the start) and how many streams
/// it closes: evenly over `spread`, at most one batch per [`BATCH_EVERY`],
/// batch sizes differing by at most one. The last batch starts before
/// `spread` ends.
pub fn plan(n: usize, spread: Duration) -> Vec<(Duration, usize)> {
    if n == 0 {
        return Vec::new();
    }
    let slots = (spread.as_millis() / BATCH_EVERY.as_millis()).max(1) as usize;
    let batches = slots.min(n);
    let step = spread / batches as u32;
    (0..batches)
        .map(|i| {
            let size = n / batches + usize::from(i < n % batches);
            (step * i as u32, size)
        })
        .collect()
}

/// A random reconnect delay in `[0, min(spread, HINT_MAX))`, none without
/// a spread.
fn retry_hint(spread: Duration) -> Option<Duration> {
    let ms = spread.min(HINT_MAX).as_millis() as u64;
    (ms > 0).then(|| Duration::from_millis(rand::rng().random_range(0..ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_spreads_batches_evenly_and_closes_every_stream() {
        let p = plan(1000, Duration::from_secs(10));
        assert_eq!(p.len(), 200);
        assert!(p.iter().all(|&(_, n)| n == 5));
        assert_eq!(p[1].0, Duration::from_millis(50));
        assert!(p.last().unwrap().0 < Duration::from_secs(10));
        let few = plan(3, Duration::from_secs(3));
        assert_eq!(
            few.iter().map(|p| p.0.as_secs()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let odd = plan(7, Duration::from_millis(100));
        assert_eq!(odd.iter().map(|p| p.1).collect::<Vec<_>>(), [4, 3]);
        assert_eq!(plan(9, Duration::ZERO), [(Duration::ZERO, 9)]);
        assert!(plan(0, Duration::from_secs(1)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn streams_close_over_the_window_and_later_ones_at_once() {
        let drain = Drain::new(Duration::from_secs(2));
        let tickets: Vec<Ticket> = (0..100).map(|_| drain.ticket()).collect();
        assert!(tickets.iter().all(|t| t.retry.unwrap() < HINT_MAX));
        let gone = drain.ticket();
        drop(gone);
        assert_eq!(drain.open(), 100);
        let hard = CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        let closing = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.close_spread(&hard).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let closed = tickets.iter().filter(|t| t.token.is_cancelled()).count();
        assert!((40..=60).contains(&closed), "half way: {closed} closed");
        closing.await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(tickets.iter().all(|t| t.token.is_cancelled()));
        assert!(
            drain.ticket().token.is_cancelled(),
            "a late stream ends at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_hard_stop_closes_the_rest_at_once() {
        let drain = Drain::new(Duration::from_secs(60));
        let tickets: Vec<Ticket> = (0..10).map(|_| drain.ticket()).collect();
        let hard = CancellationToken::new();
        hard.cancel();
        drain.close_spread(&hard).await;
        assert!(tickets.iter().all(|t| t.token.is_cancelled()));
        assert_eq!(Drain::new(Duration::ZERO).ticket().retry, None);
    }
}
