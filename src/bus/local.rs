//! Pieces both buses share for delivery inside one process: the per-channel
//! broadcast ring (the bounded queue between a channel and its local
//! subscribers), the per-run taps beside it and the local control hub.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{BusEvent, Control};

/// Control messages a gateway may fall behind on before its listener lags
/// (and then drops every cache, see [`Control::Resync`]).
const CONTROL_BUFFER: usize = 256;

/// The local end of a channel: every subscriber's receiver shares one ring
/// of `buffer` events; one that falls further behind gets
/// [`super::BusError::Lagged`] instead of slowing the publisher.
pub(crate) fn fanout(buffer: usize) -> broadcast::Sender<Arc<BusEvent>> {
    broadcast::channel(buffer.max(1)).0
}

/// Events one run's tap may fall behind by before it lags (its follower then
/// resumes on the whole channel, from history). Small: a tap is allocated
/// per run in flight, and a run's follower reads as fast as it publishes.
const TAP_BUFFER: usize = 128;

/// The per-run taps of one channel: a transport that follows the run it
/// started (`Bus::subscribe_run`) gets that run's events alone. On the
/// channel's ring every follower would wake for, and skip, every other
/// run's events: with R runs in flight on one agent that is R x R work per
/// event round, which made a busy agent's followers lag and fail
/// (BENCHMARKS.md, runs). Delivery costs one atomic load while no tap is
/// open, else one map lookup per event.
#[derive(Default)]
pub(crate) struct RunTaps {
    open: AtomicUsize,
    map: Mutex<HashMap<Box<str>, Tap>>,
}

/// One run's tap: its sender and how many followers share it.
type Tap = (broadcast::Sender<Arc<BusEvent>>, usize);

impl RunTaps {
    /// Hands `ev` to its run's tap, if one is open.
    pub(crate) fn deliver(&self, ev: &Arc<BusEvent>) {
        if self.open.load(Ordering::Acquire) == 0 {
            return;
        }
        let map = self.map.lock();
        if ev.is_gap() {
            // Lost events may be any run's: every follower is told.
            for (tx, _) in map.values() {
                let _ = tx.send(ev.clone());
            }
        } else if let Some((tx, _)) = map.get(ev.run_id.as_str()) {
            // Err only means the follower left since the lookup: fine.
            let _ = tx.send(ev.clone());
        }
    }

    /// Opens (or joins) the tap of `run_id`; it stays open while the guard lives.
    pub(crate) fn tap(
        self: &Arc<Self>,
        run_id: &str,
    ) -> (broadcast::Receiver<Arc<BusEvent>>, TapGuard) {
        let mut map = self.map.lock();
        let entry = map.entry(run_id.into()).or_insert_with(|| {
            self.open.fetch_add(1, Ordering::AcqRel);
            (broadcast::channel(TAP_BUFFER).0, 0)
        });
        entry.1 += 1;
        let rx = entry.0.subscribe();
        let guard = TapGuard {
            taps: self.clone(),
            run_id: run_id.into(),
        };
        (rx, guard)
    }

    /// How many runs have a tap open.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// Keeps one follower's tap open; the last one to go closes it.
pub(crate) struct TapGuard {
    taps: Arc<RunTaps>,
    run_id: Box<str>,
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        let mut map = self.taps.map.lock();
        let Some(entry) = map.get_mut(&self.run_id) else {
            return; // closed meanwhile
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            map.remove(&self.run_id);
            self.taps.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Where a bus hands control messages to this gateway's listeners.
pub(crate) struct ControlHub {
    tx: broadcast::Sender<Control>,
}

impl Default for ControlHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CONTROL_BUFFER).0,
        }
    }
}

impl ControlHub {
    /// Hands `msg` to every local listener (none listening is fine).
    pub(crate) fn deliver(&self, msg: Control) {
        let _ = self.tx.send(msg);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Control> {
        self.tx.subscribe()
    }
}
