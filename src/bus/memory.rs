//! The in-process bus: one gateway, no Redis.
//!
//! Each channel keeps a seq counter, a bounded history (by count and by age)
//! and, only while someone listens, a `tokio::sync::broadcast` sender whose
//! ring buffer is the bounded queue between the publisher and every
//! subscriber: a subscriber that falls further behind than that buffer gets
//! [`BusError::Lagged`] instead of slowing the publisher.
//!
//! Publish and subscribe take the channel's short `parking_lot::Mutex` (never
//! held across an `.await`), so a subscriber's history read and its live
//! receiver are taken at the same instant: nothing falls between them and
//! [`Subscription`] drops the overlap by seq. A channel's entry (and so its
//! seq) is never removed; what is freed is what costs memory: history past
//! its length or age, and the broadcast ring of a channel nobody listens to.

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;

use crate::domain::{AgentEvent, Channel};

use super::{
    local::{fanout, ControlHub, RunTaps},
    Bus, BusError, BusEvent, Control, Subscription,
};

/// Number of independently locked parts of the channel map.
const SHARDS: usize = 16;
/// Publishes between two opportunistic sweeps of one shard.
const SWEEP_EVERY: u64 = 4096;
/// How long history is kept by default (protocol/sse.md: one hour by default).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Publish/subscribe within one process. Cheap to share behind an `Arc`.
pub struct MemoryBus {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    history_len: usize,
    buffer: usize,
    max_age: Duration,
    publishes: AtomicU64,
    /// Control messages stay in this process: there is no other gateway.
    control: ControlHub,
}

/// One independently locked part of the channel map.
type Shard = RwLock<HashMap<Channel, Arc<Slot>>>;

struct Slot {
    state: Mutex<ChannelState>,
    /// Followers of single runs (`Bus::subscribe_run`).
    taps: Arc<RunTaps>,
}

struct ChannelState {
    seq: u64,
    /// Events after `expired_upto`, oldest first, with the time they were kept.
    history: VecDeque<(Instant, Arc<BusEvent>)>,
    /// Every seq at or below this may have existed and can no longer be
    /// replayed (dropped from history, or numbered before a `seed_seq`).
    expired_upto: u64,
    /// Present only while the channel has (or just had) a subscriber.
    tx: Option<broadcast::Sender<Arc<BusEvent>>>,
}

impl ChannelState {
    /// Drops history past the length and age limits, remembering how far.
    fn trim(&mut self, history_len: usize, max_age: Duration, now: Instant) {
        while self.history.len() > history_len
            || self
                .history
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > max_age)
        {
            if let Some((_, ev)) = self.history.pop_front() {
                self.expired_upto = self.expired_upto.max(ev.seq);
            }
        }
    }

    /// Frees the broadcast ring once the last subscriber has gone.
    fn release_idle_sender(&mut self) {
        if self.tx.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
            self.tx = None;
        }
    }
}

impl MemoryBus {
    /// A bus keeping up to `history_len` events per channel for resume and
    /// letting a subscriber fall `buffer` events behind before it lags.
    pub fn new(history_len: usize, buffer: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: Default::default(),
            history_len,
            buffer: buffer.max(1),
            max_age: DEFAULT_MAX_AGE,
            publishes: AtomicU64::new(0),
            control: ControlHub::default(),
        }
    }

    /// Keeps history for at most `max_age` (default [`DEFAULT_MAX_AGE`]).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Trims every channel's history by age and frees the broadcast rings of
    /// channels without subscribers. Publishing does this a shard at a time
    /// on its own; call it to reclaim memory on a bus that has gone quiet.
    pub fn sweep(&self) {
        for shard in 0..SHARDS {
            self.sweep_shard(shard);
        }
    }

    fn sweep_shard(&self, shard: usize) {
        let channels: Vec<Arc<Slot>> = self.shards[shard].read().values().cloned().collect();
        let now = Instant::now();
        for ch in channels {
            let mut st = ch.state.lock();
            st.trim(self.history_len, self.max_age, now);
            st.release_idle_sender();
        }
    }

    fn shard_of(&self, name: &Channel) -> usize {
        (self.hasher.hash_one(name) as usize) % SHARDS
    }

    fn channel(&self, name: &Channel) -> Arc<Slot> {
        let shard = &self.shards[self.shard_of(name)];
        if let Some(ch) = shard.read().get(name) {
            return ch.clone();
        }
        let mut map = shard.write();
        map.entry(name.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(ChannelState {
                        seq: 0,
                        history: VecDeque::new(),
                        expired_upto: 0,
                        tx: None,
                    }),
                    taps: Arc::default(),
                })
            })
            .clone()
    }

    fn publish_now(&self, channel: &Channel, event: &AgentEvent) -> Arc<BusEvent> {
        let ch = self.channel(channel);
        let ev = {
            let mut st = ch.state.lock();
            st.seq += 1;
            // Encoded under the lock so seq order, history order and send
            // order are one and the same.
            let ev = Arc::new(BusEvent::encode(st.seq, event));
            if self.history_len > 0 {
                st.history.push_back((Instant::now(), ev.clone()));
            } else {
                st.expired_upto = st.seq;
            }
            st.trim(self.history_len, self.max_age, Instant::now());
            st.release_idle_sender();
            if let Some(tx) = &st.tx {
                // Err only means every receiver left since the check: fine.
                let _ = tx.send(ev.clone());
            }
            ch.taps.deliver(&ev);
            ev
        };
        let n = self.publishes.fetch_add(1, Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep_shard(((n / SWEEP_EVERY) as usize) % SHARDS);
        }
        ev
    }

    fn subscribe_now(
        &self,
        channel: &Channel,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        let ch = self.channel(channel);
        let mut st = ch.state.lock();
        st.trim(self.history_len, self.max_age, Instant::now());
        if let Some(after) = after {
            if after < st.expired_upto {
                return Err(BusError::HistoryExpired {
                    after,
                    oldest: st.expired_upto + 1,
                });
            }
        }
        let buffer = self.buffer;
        let live = st.tx.get_or_insert_with(|| fanout(buffer)).subscribe();
        let replay = match after {
            Some(after) => {
                let from = st.history.partition_point(|(_, ev)| ev.seq <= after);
                st.history.range(from..).map(|(_, ev)| ev.clone()).collect()
            }
            None => Vec::new(),
        };
        // Without a cursor the subscriber starts "now": its resume point is
        // the current seq, which is what a lagged close will report.
        Ok(Subscription::new(replay, live, after.unwrap_or(st.seq)))
    }

    fn seed_now(&self, channel: &Channel, floor: u64) {
        let ch = self.channel(channel);
        let mut st = ch.state.lock();
        if floor > st.seq {
            // Events up to `floor` exist elsewhere (the store) but not here:
            // a cursor below it must get history_expired, not a silent gap.
            st.seq = floor;
            st.expired_upto = st.expired_upto.max(floor);
        }
    }

    #[cfg(test)]
    fn taps_open(&self, channel: &Channel) -> usize {
        self.channel(channel).taps.open()
    }

    #[cfg(test)]
    fn has_sender(&self, channel: &Channel) -> bool {
        self.channel(channel).state.lock().tx.is_some()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        channel: &Channel,
        event: &AgentEvent,
    ) -> Result<Arc<BusEvent>, BusError> {
        Ok(self.publish_now(channel, event))
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        self.subscribe_now(channel, after)
    }

    async fn subscribe_run(
        &self,
        channel: &Channel,
        run_id: &str,
    ) -> Result<Subscription, BusError> {
        let ch = self.channel(channel);
        // Under the channel's lock, as publishing delivers to taps: the
        // tap's resume point is exactly the seq before its first event.
        let st = ch.state.lock();
        let (live, guard) = ch.taps.tap(run_id);
        Ok(Subscription::new(Vec::new(), live, st.seq).with_guard(guard))
    }

    async fn seed_seq(&self, channel: &Channel, floor: u64) -> Result<(), BusError> {
        self.seed_now(channel, floor);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn publish_control(&self, msg: Control) -> Result<(), BusError> {
        self.control.deliver(msg);
        Ok(())
    }

    fn control(&self) -> broadcast::Receiver<Control> {
        self.control.subscribe()
    }
}

#[cfg(test)]
mod tests;
