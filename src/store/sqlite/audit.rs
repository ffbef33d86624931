//! The audit log: batched appends, an account's rows newest first, and the
//! retention prune.

use rusqlite::{params, Connection, Row};

use super::{db_err, paging};
use crate::store::{
    audit::PRUNE_BATCH, AuditFilter, AuditRecord, ListParams, Order, Page, StoreResult,
};

/// One transaction for the whole batch (the gateway's writer sends what
/// queued while the previous batch was written).
pub(super) fn append(conn: &mut Connection, rows: &[AuditRecord]) -> StoreResult<()> {
    let tx = conn.transaction().map_err(db_err)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO audit (id, account_id, action, target, actor_key_id, request_id,
                                    client_addr, method, path, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(db_err)?;
        for r in rows {
            stmt.execute(params![
                r.id,
                r.account_id,
                r.action,
                r.target,
                r.actor_key_id,
                r.request_id,
                r.client_addr,
                r.method,
                r.path,
                r.created_at
            ])
            .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

fn row(r: &Row<'_>) -> rusqlite::Result<(i64, AuditRecord)> {
    Ok((
        r.get(0)?,
        AuditRecord {
            id: r.get(1)?,
            account_id: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            actor_key_id: r.get(5)?,
            request_id: r.get(6)?,
            client_addr: r.get(7)?,
            method: r.get(8)?,
            path: r.get(9)?,
            created_at: r.get(10)?,
        },
    ))
}

/// Newest first: the cursor is the last row's `pk`, and the next page is
/// the rows below it.
pub(super) fn list(
    conn: &Connection,
    account: &str,
    filter: &AuditFilter,
    params: &ListParams,
) -> StoreResult<Page<AuditRecord>> {
    paging::page(
        conn,
        [
            "SELECT COUNT(*) FROM audit WHERE account_id = ?1
               AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR target = ?3)",
            "SELECT pk, id, account_id, action, target, actor_key_id, request_id, client_addr,
                    method, path, created_at
             FROM audit WHERE account_id = ?1
               AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR target = ?3)
              ",
        ],
        ("pk", Order::Desc),
        &[&account, &filter.action, &filter.target],
        params,
        row,
    )
}

/// At most [`PRUNE_BATCH`] of the oldest rows created before `before`.
pub(super) fn prune(conn: &Connection, before: &str) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM audit WHERE pk IN
               (SELECT pk FROM audit WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![before, PRUNE_BATCH]))
        .map_err(db_err)?;
    Ok(deleted as u64)
}
