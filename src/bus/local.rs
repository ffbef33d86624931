//! Pieces both buses share for delivery inside one process: the per-channel
//! broadcast ring (the bounded queue between a channel and its local
//! subscribers), the local control hub and poison-tolerant locks.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

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

/// Locks `m`. Nothing panics while holding the buses' locks; if something
/// ever did, the state is still consistent (every update is one assignment).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `m`, recovering from poison like [`lock`].
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}
