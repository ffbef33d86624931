//! Retention: rows older than `--audit-retention-days` are deleted, at
//! start and then every [`EVERY`], in batches of
//! [`crate::store::audit::PRUNE_BATCH`] so no delete holds the store for
//! long. Every gateway prunes; on a shared store they delete the same old
//! rows, which costs nothing extra once they are gone.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::store::{audit::PRUNE_BATCH, Store, StoreResult};

/// Time between two prunes.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Deletes every row created more than `retention` before `now`; how many.
pub async fn prune_once(
    store: &dyn Store,
    retention: Duration,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let cut = crate::util::format_millis(now - retention);
    let mut total = 0;
    loop {
        let deleted = store.prune_audit(&cut).await?;
        total += deleted;
        if deleted < u64::from(PRUNE_BATCH) {
            return Ok(total);
        }
    }
}

/// Prunes at start and every `every` until `shutdown`; `clock` tells the
/// time the cut is measured from (the wall clock outside tests).
pub async fn run(
    store: Arc<dyn Store>,
    retention: Duration,
    every: Duration,
    clock: impl Fn() -> OffsetDateTime + Send,
    shutdown: CancellationToken,
) {
    loop {
        match prune_once(store.as_ref(), retention, clock()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "audit rows past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "audit prune failed; retrying later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::{sqlite::SqliteStore, AuditFilter, AuditRecord, ListParams};

    fn row(account: &str, at: OffsetDateTime) -> AuditRecord {
        AuditRecord {
            id: crate::util::new_id("audit"),
            account_id: account.to_owned(),
            action: "agents.delete".into(),
            target: Some(crate::util::format_millis(at)),
            actor_key_id: "key-x".into(),
            request_id: "req-x".into(),
            client_addr: None,
            method: "DELETE".into(),
            path: "/v1/agents/agent-x".into(),
            created_at: crate::util::format_millis(at),
        }
    }

    async fn targets(store: &dyn Store) -> Vec<String> {
        let page = store
            .list_audit("a", AuditFilter::default(), ListParams::default())
            .await
            .expect("list");
        page.data.into_iter().filter_map(|r| r.target).collect()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// The cut is `now - retention`, to the millisecond, whatever the wall
    /// clock says.
    #[tokio::test]
    async fn rows_past_retention_go_and_the_rest_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("store");
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time");
        let ms = Duration::from_millis(1);
        let (old, edge, young) = (now - 91 * DAY, now - 90 * DAY + ms, now - 89 * DAY);
        let rows = vec![row("a", old), row("a", edge), row("a", young)];
        store.append_audit(rows).await.expect("append");
        let n = prune_once(&store, 90 * DAY, now).await.expect("prune");
        assert_eq!(n, 1);
        let kept = targets(&store).await;
        let want = [young, edge].map(crate::util::format_millis).to_vec();
        assert_eq!(kept, want);
        // A day later the edge row is past retention too.
        assert_eq!(prune_once(&store, 90 * DAY, now + DAY).await, Ok(1));
    }

    /// The task prunes at start, then again each period, on the clock it is
    /// given; it ends on shutdown.
    #[tokio::test(start_paused = true)]
    async fn the_task_prunes_every_period_until_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let start = OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time");
        let clock = Arc::new(Mutex::new(start));
        let rows = vec![row("a", start - 2 * DAY), row("a", start - DAY / 2)];
        store.append_audit(rows).await.expect("append");
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            store.clone(),
            DAY,
            EVERY,
            {
                let clock = clock.clone();
                move || *clock.lock().expect("clock")
            },
            stop.clone(),
        ));
        let settle = || async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        settle().await;
        assert_eq!(targets(store.as_ref()).await.len(), 1, "pruned at start");
        *clock.lock().expect("clock") = start + DAY;
        settle().await;
        assert_eq!(
            targets(store.as_ref()).await.len(),
            1,
            "not before the period"
        );
        tokio::time::sleep(EVERY).await;
        settle().await;
        assert!(targets(store.as_ref()).await.is_empty(), "pruned after it");
        stop.cancel();
        task.await.expect("ends on shutdown");
    }
}
