//! The batch writer: one task takes the rows handlers queued and appends
//! them to the store, as many as are waiting in one call. It does not wait
//! to fill a batch: a lone row is written at once (a client reads its own
//! change back within a store round trip), and rows that queue while a
//! write is in flight go together in the next one.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{AuditRecord, Store};

/// The most rows one append carries.
pub const BATCH: usize = 256;

/// Tries of one batch before its rows are given up (and logged as lost).
const ATTEMPTS: u32 = 3;

/// Writes until `closed`, then writes what is still queued and ends.
pub async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<AuditRecord>,
    closed: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            biased;
            row = rx.recv() => row,
            _ = closed.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        fill(&mut rx, &mut batch);
        write(store.as_ref(), &mut batch).await;
    }
    // A request that finished during the drain still has its row queued.
    rx.close();
    loop {
        fill(&mut rx, &mut batch);
        if batch.is_empty() {
            return;
        }
        write(store.as_ref(), &mut batch).await;
    }
}

/// Takes what is waiting, up to [`BATCH`] rows in all.
fn fill(rx: &mut mpsc::Receiver<AuditRecord>, batch: &mut Vec<AuditRecord>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(row) => batch.push(row),
            Err(_) => return,
        }
    }
}

/// Appends `batch` (leaving it empty), retrying a failed append twice.
async fn write(store: &dyn Store, batch: &mut Vec<AuditRecord>) {
    let (n, mut pause) = (batch.len(), Duration::from_millis(200));
    for attempt in 1..=ATTEMPTS {
        let rows = if attempt == ATTEMPTS {
            std::mem::take(batch)
        } else {
            batch.clone()
        };
        match store.append_audit(rows).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) if attempt == ATTEMPTS => {
                tracing::error!(error = %e, rows = n, "audit rows lost: the store refused them three times");
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "writing audit rows failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 5;
            }
        }
    }
}
