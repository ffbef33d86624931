//! Keeping `seq` from going backwards or repeating when Redis changes under
//! the gateway (a Sentinel failover to a replica that was behind, a restart
//! from an old snapshot).
//!
//! Two guards, both cheap on the hot path:
//! - every publish carries a floor, the highest seq this process has
//!   published, delivered or seen on the channel; the publish script raises
//!   a counter that is below it before numbering ([`super::scripts`]);
//! - when the pub/sub link finds a different Redis server than before (its
//!   `run_id` changed), an epoch is bumped and each channel's next publish
//!   answers [`BusError::NeedsSeed`] until it is seeded again, so the
//!   publisher raises the counter to what the store holds (events another
//!   gateway published are there even if this one never saw them).
//!
//! [`BusError::NeedsSeed`]: crate::bus::BusError::NeedsSeed

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use parking_lot::Mutex;

/// Channels remembered before the map is cleared (each forgotten channel
/// costs one store read after the next failover, nothing else).
const MAX_CHANNELS: usize = 100_000;

/// What this process knows of a channel's numbering.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    /// Highest seq published, delivered or seeded here.
    high: u64,
    /// The server epoch in which the channel was last seeded.
    epoch: u64,
}

#[derive(Default)]
pub(super) struct Numbering {
    channels: Mutex<HashMap<String, Known>>,
    epoch: AtomicU64,
    server: Mutex<Option<String>>,
}

impl Numbering {
    /// The floor for the next publish on `channel`: `Ok`, or `Err` if the
    /// channel should be seeded first (the server changed since it last was).
    pub fn floor(&self, channel: &str) -> Result<u64, u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let known = self
            .channels
            .lock()
            .get(channel)
            .copied()
            .unwrap_or_default();
        if known.epoch >= epoch {
            Ok(known.high)
        } else {
            Err(known.high)
        }
    }

    /// Records that `seq` was handed out on `channel`.
    pub fn saw(&self, channel: &str, seq: u64) {
        self.update(channel, |k| k.high = k.high.max(seq));
    }

    /// Records that `channel`'s counter was raised to at least `floor` on
    /// the current server.
    pub fn seeded(&self, channel: &str, floor: u64) {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.update(channel, |k| {
            k.high = k.high.max(floor);
            k.epoch = epoch;
        });
    }

    /// Notes the server's `run_id`; true (and a new epoch) if it differs
    /// from the one seen before.
    pub fn server_is(&self, run_id: &str) -> bool {
        let mut server = self.server.lock();
        let changed = server.as_deref().is_some_and(|s| s != run_id);
        if changed {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        *server = Some(run_id.to_owned());
        changed
    }

    fn update(&self, channel: &str, f: impl FnOnce(&mut Known)) {
        let mut map = self.channels.lock();
        if map.len() >= MAX_CHANNELS && !map.contains_key(channel) {
            map.clear();
        }
        f(map.entry(channel.to_owned()).or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_server_asks_for_a_seed_once_per_channel() {
        let n = Numbering::default();
        assert_eq!(n.floor("a"), Ok(0));
        assert!(!n.server_is("one"), "the first server is no change");
        n.saw("a", 7);
        assert_eq!(n.floor("a"), Ok(7));
        assert!(!n.server_is("one"));
        assert!(n.server_is("two"), "a failover");
        assert_eq!(n.floor("a"), Err(7), "seed first");
        assert_eq!(n.floor("b"), Err(0));
        n.seeded("a", 5);
        assert_eq!(n.floor("a"), Ok(7), "never lowered");
        n.seeded("b", 9);
        assert_eq!(n.floor("b"), Ok(9));
    }
}
