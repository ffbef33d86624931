//! The key cache acting on the bus's [`Control`] messages: what makes a key
//! revoked on one gateway refused on every gateway within a moment, not
//! after the key cache's TTL. The bus only carries the messages; the cache
//! they invalidate applies them here.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::KeyCache;
use crate::bus::Control;

/// Applies control messages from `rx` to this gateway's caches until
/// `shutdown`. A listener that lagged has missed messages: it drops every
/// cached key, as for [`Control::Resync`] (the next request reloads them).
pub async fn apply(
    mut rx: broadcast::Receiver<Control>,
    keys: Arc<KeyCache>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = rx.recv() => msg,
        };
        match msg {
            Ok(Control::KeyRevoked { key_id }) => {
                keys.evict(key_id.as_str());
                tracing::debug!(%key_id, "key revoked elsewhere: evicted");
            }
            Ok(Control::KeyChanged { key_id }) => {
                keys.evict(key_id.as_str());
                tracing::debug!(%key_id, "key changed elsewhere: evicted");
            }
            // The queued runtime acts on these (src/work/queued.rs).
            Ok(Control::CancelRun { .. }) => {}
            Ok(Control::Resync) | Err(RecvError::Lagged(_)) => {
                keys.clear();
                tracing::info!("control messages may have been missed: key cache cleared");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{memory::MemoryBus, Bus};

    // Paused time: the polls in `wait_until` pass only when every task is
    // idle, so the budget is the applier's chances, not wall-clock luck.
    #[tokio::test(start_paused = true)]
    async fn revocations_and_resyncs_reach_the_key_cache() {
        let bus = MemoryBus::new(10, 10);
        let keys = Arc::new(KeyCache::default());
        keys.insert_for_test("key-a");
        keys.insert_for_test("key-b");
        let stop = CancellationToken::new();
        let task = tokio::spawn(apply(bus.control(), keys.clone(), stop.clone()));
        let revoke = Control::KeyRevoked {
            key_id: "key-a".into(),
        };
        bus.publish_control(revoke).await.unwrap();
        wait_until(|| !keys.contains("key-a")).await;
        assert!(keys.contains("key-b"), "only the revoked key goes");
        keys.insert_for_test("key-c");
        let changed = Control::KeyChanged {
            key_id: "key-c".into(),
        };
        bus.publish_control(changed).await.unwrap();
        wait_until(|| !keys.contains("key-c")).await;
        assert!(keys.contains("key-b"), "only the changed key goes");
        bus.publish_control(Control::Resync).await.unwrap();
        wait_until(|| !keys.contains("key-b")).await;
        stop.cancel();
        task.await.unwrap();
    }

    async fn wait_until(f: impl Fn() -> bool) {
        for _ in 0..100 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("condition not met within 1 s");
    }
}
