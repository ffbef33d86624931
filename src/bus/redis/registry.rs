//! The local side of the Redis bus: which channels this process has
//! subscribers for, and delivery to them.
//!
//! A channel is in the [`Registry`] while at least one local [`Subscription`]
//! holds its [`Membership`]; the pub/sub connection (see `link`) SUBSCRIBEs
//! exactly the channels in here and UNSUBSCRIBEs the rest. Each [`Local`]
//! channel owns the broadcast ring its subscribers share, remembers the last
//! seq it delivered (to drop what arrives twice after a reconnect and to know
//! where to catch up from) and the connection generation that confirmed its
//! SUBSCRIBE (a subscriber reads history only after that).
//!
//! [`Subscription`]: crate::bus::Subscription

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch, Notify};

use super::{recent::Recent, scripts::decode};
use crate::bus::{
    local::{fanout, ControlHub, RunTaps},
    BusError, BusEvent,
};

/// Longest a new subscriber waits for a link that is down.
const DOWN_WAIT: Duration = Duration::from_millis(500);

/// The state of the pub/sub connection: its generation (1 for the first
/// connection, +1 per reconnect) and whether it is serving.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Link {
    pub generation: u64,
    pub up: bool,
}

/// The channels with local subscribers, and the control hub.
pub(super) struct Registry {
    channels: Mutex<HashMap<String, Slot>>,
    /// Signalled when a channel is added or removed: the connection reconciles.
    pub changed: Notify,
    pub link: watch::Sender<Link>,
    pub control: ControlHub,
    buffer: usize,
    /// Events each channel keeps for resumes, and for how long (the
    /// stream's length and age limits).
    recent: (usize, Duration),
}

struct Slot {
    local: Arc<Local>,
    refs: usize,
}

/// One channel with local subscribers.
pub(super) struct Local {
    pub name: String,
    /// The ring its local subscribers share.
    tx: Mutex<Option<broadcast::Sender<Arc<BusEvent>>>>,
    /// The last seq handed to the ring (0: none yet). Written by the link task only.
    delivered: AtomicU64,
    /// The lowest counter a subscriber saw when it joined (`u64::MAX`: none):
    /// where to catch up from after a reconnect if nothing was delivered yet.
    joined_at: AtomicU64,
    /// The highest seq this process published on the channel.
    published: AtomicU64,
    /// The link generation that confirmed this channel's SUBSCRIBE (0: none).
    pub confirmed: watch::Sender<u64>,
    /// Followers of single runs (`Bus::subscribe_run`); closed with the ring.
    pub taps: Arc<RunTaps>,
    /// The latest events delivered here, for resumes ([`Recent`]).
    recent: Mutex<Recent>,
}

impl Local {
    fn new(name: &str, buffer: usize, (len, ttl): (usize, Duration)) -> Self {
        Self {
            name: name.to_owned(),
            tx: Mutex::new(Some(fanout(buffer))),
            delivered: AtomicU64::new(0),
            joined_at: AtomicU64::new(u64::MAX),
            published: AtomicU64::new(0),
            confirmed: watch::Sender::new(0),
            taps: Arc::default(),
            recent: Mutex::new(Recent::new(len, ttl)),
        }
    }

    /// Hands event `seq` to the subscribers unless it was already delivered.
    /// Events of one channel arrive in seq order, so "already" is `<=`; and
    /// numbering has no holes, so a jump past the next seq means Redis lost
    /// the events between (a failover): the subscribers are told so.
    pub fn push(&self, seq: u64, json: &[u8]) {
        let last = self.delivered.load(Ordering::Acquire);
        if seq <= last {
            return;
        }
        let Some(ev) = decode(seq, json) else { return };
        if last > 0 && seq > last + 1 {
            self.lost(last + 1, seq - 1);
        }
        self.delivered.store(seq, Ordering::Release);
        // Kept before it is sent: a subscriber that joined the ring and
        // then read `recent` sees each event in one of the two (or both:
        // the subscription drops the repeat by seq).
        self.recent.lock().push(&ev);
        self.send(&ev);
    }

    /// Tells the subscribers that events `from..=to` will never come (Redis
    /// lost them) with a gap signal, and moves delivery past them.
    pub fn lost(&self, from: u64, to: u64) {
        if to < from || to <= self.delivered.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(channel = %self.name, from, to, "events lost by redis; sending a gap");
        self.delivered.store(to, Ordering::Release);
        self.recent.lock().clear();
        self.send(&Arc::new(BusEvent::gap(&self.name, from, to)));
    }

    fn send(&self, ev: &Arc<BusEvent>) {
        if let Some(tx) = self.tx.lock().as_ref() {
            // Err only means nobody is receiving right now: fine.
            let _ = tx.send(ev.clone());
        }
        self.taps.deliver(ev);
    }

    /// The events after `after` from memory, if this process holds all of
    /// them ([`Recent::after`]); read only after joining the ring.
    pub fn recent_after(&self, after: u64) -> Option<Vec<Arc<BusEvent>>> {
        self.recent.lock().after(after)
    }

    /// Records the counter a joining subscriber saw.
    pub fn note_join(&self, counter: u64) {
        self.joined_at.fetch_min(counter, Ordering::AcqRel);
    }

    /// Records a seq this process published on the channel.
    pub fn note_published(&self, seq: u64) {
        self.published.fetch_max(seq, Ordering::AcqRel);
    }

    /// The highest seq this process knows was handed out on the channel
    /// (delivered, published, or the counter a subscriber saw): numbering
    /// must continue above it if Redis loses the counter.
    pub fn high_water(&self) -> u64 {
        let joined = self.joined_at.load(Ordering::Acquire);
        self.delivered
            .load(Ordering::Acquire)
            .max(self.published.load(Ordering::Acquire))
            .max(if joined == u64::MAX { 0 } else { joined })
    }

    /// Where this channel's delivery stands: the last seq delivered, else the
    /// counter when the first subscriber joined; `None` if neither is known.
    pub fn position(&self) -> Option<u64> {
        match self.delivered.load(Ordering::Acquire) {
            0 => Some(self.joined_at.load(Ordering::Acquire)).filter(|&j| j != u64::MAX),
            d => Some(d),
        }
    }
}

/// A subscriber's share of a channel; dropping it may unsubscribe.
pub(super) struct Membership {
    registry: Arc<Registry>,
    pub local: Arc<Local>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.registry.leave(&self.local);
    }
}

impl Registry {
    /// Rings of `buffer` events; `recent`: the events (and their age)
    /// each channel keeps for resumes.
    pub fn new(buffer: usize, recent: (usize, Duration)) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            link: watch::Sender::new(Link::default()),
            control: ControlHub::default(),
            buffer,
            recent,
        }
    }

    /// Joins `channel`: a receiver of its live events and the membership
    /// that keeps it subscribed. The first member asks for a SUBSCRIBE.
    pub fn join(
        self: &Arc<Self>,
        channel: &str,
    ) -> (Membership, broadcast::Receiver<Arc<BusEvent>>) {
        let (buffer, recent) = (self.buffer, self.recent);
        let (local, rx, first) = {
            let mut map = self.channels.lock();
            let slot = map.entry(channel.to_owned()).or_insert_with(|| Slot {
                local: Arc::new(Local::new(channel, buffer, recent)),
                refs: 0,
            });
            slot.refs += 1;
            // A channel in the map is never closed (closing removes it first).
            let rx = slot
                .local
                .tx
                .lock()
                .as_ref()
                .map(broadcast::Sender::subscribe);
            let rx = rx.unwrap_or_else(|| fanout(1).subscribe());
            (slot.local.clone(), rx, slot.refs == 1)
        };
        if first {
            self.changed.notify_one();
        }
        let member = Membership {
            registry: self.clone(),
            local,
        };
        (member, rx)
    }

    fn leave(&self, local: &Arc<Local>) {
        let mut map = self.channels.lock();
        let Some(slot) = map.get_mut(&local.name) else {
            return;
        };
        if !Arc::ptr_eq(&slot.local, local) {
            return;
        }
        slot.refs -= 1;
        if slot.refs == 0 {
            map.remove(&local.name);
            drop(map);
            self.changed.notify_one();
        }
    }

    /// The channels that should be subscribed, right now.
    pub fn wanted(&self) -> Vec<Arc<Local>> {
        self.channels
            .lock()
            .values()
            .map(|s| s.local.clone())
            .collect()
    }

    /// The local channel called `name`, if it has subscribers.
    pub fn get(&self, name: &str) -> Option<Arc<Local>> {
        self.channels.lock().get(name).map(|s| s.local.clone())
    }

    pub fn set_link(&self, generation: u64, up: bool) {
        self.link.send_replace(Link { generation, up });
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// Waits until the connection is up and has confirmed `local`'s
    /// SUBSCRIBE, at most `wait`.
    pub async fn ready(&self, local: &Local, wait: Duration) -> Result<(), BusError> {
        // During an outage, fail fast rather than hold every request for the
        // whole timeout; a link that is just (re)connecting gets a moment.
        let wait = if self.link().up {
            wait
        } else {
            wait.min(DOWN_WAIT)
        };
        let mut link = self.link.subscribe();
        let mut confirmed = local.confirmed.subscribe();
        let waiting = async {
            loop {
                let l = *link.borrow_and_update();
                if l.up && *confirmed.borrow_and_update() == l.generation {
                    return true;
                }
                tokio::select! {
                    r = link.changed() => if r.is_err() { return false },
                    r = confirmed.changed() => if r.is_err() { return false },
                }
            }
        };
        match tokio::time::timeout(wait, waiting).await {
            Ok(true) => Ok(()),
            _ => Err(BusError::Unavailable(
                "redis: the pub/sub connection is down (reconnecting)".into(),
            )),
        }
    }

    /// How many channels have local subscribers (for tests and metrics).
    pub fn len(&self) -> usize {
        self.channels.lock().len()
    }
}
