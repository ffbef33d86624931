//! Retention of finished deliveries: without it every event ever sent stays
//! in `webhook_deliveries` with its attempts. Each gateway deletes, once a
//! minute, the delivered and failed rows last written more than the
//! retention period ago (`--webhook-retention-secs`, 7 days by default; 0
//! keeps them). Pending rows are never touched; gateways sharing a store
//! may prune the same rows, which only deletes them once.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreResult};

/// How often the old rows are looked for.
const EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement: short write transactions.
const BATCH: u32 = 1_000;

/// Prunes at start and then every [`EVERY`], until `stop`.
pub async fn run(store: Arc<dyn Store>, keep: Duration, stop: CancellationToken) {
    loop {
        match prune(store.as_ref(), keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "old webhook deliveries pruned"),
            Err(e) => tracing::warn!(error = %e, "could not prune webhook deliveries"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Deletes every finished delivery last written more than `keep` ago, in
/// batches; how many.
pub async fn prune(store: &dyn Store, keep: Duration) -> StoreResult<u64> {
    let before = crate::util::format_millis(time::OffsetDateTime::now_utc() - keep);
    let mut total = 0;
    loop {
        let n = store.prune_webhook_deliveries(&before, BATCH).await?;
        total += n;
        if n < u64::from(BATCH) {
            return Ok(total);
        }
    }
}
