//! The audit log: batched appends (one `UNNEST` insert), an account's rows
//! newest first, and the retention prune; SQLite's rules
//! ([`crate::store::sqlite`]'s `audit.rs`).

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::{col, db_err, execute, paging, snapshot};
use crate::store::{
    audit::PRUNE_BATCH, AuditFilter, AuditRecord, ListParams, Order, Page, StoreResult,
};

/// One statement for the whole batch: one array parameter per column.
pub(super) async fn append(c: &impl GenericClient, rows: &[AuditRecord]) -> StoreResult<()> {
    fn column<'a>(rows: &'a [AuditRecord], f: impl Fn(&'a AuditRecord) -> &'a str) -> Vec<&'a str> {
        rows.iter().map(f).collect()
    }
    let ids = column(rows, |r| &r.id);
    let accounts = column(rows, |r| &r.account_id);
    let actions = column(rows, |r| &r.action);
    let targets: Vec<Option<&str>> = rows.iter().map(|r| r.target.as_deref()).collect();
    let actors = column(rows, |r| r.actor_key_id.as_str());
    let requests = column(rows, |r| &r.request_id);
    let clients: Vec<Option<&str>> = rows.iter().map(|r| r.client_addr.as_deref()).collect();
    let methods = column(rows, |r| &r.method);
    let paths = column(rows, |r| &r.path);
    let times = column(rows, |r| &r.created_at);
    execute(
        c,
        "INSERT INTO audit (id, account_id, action, target, actor_key_id, request_id,
                            client_addr, method, path, created_at)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                              $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[])",
        &[
            &ids, &accounts, &actions, &targets, &actors, &requests, &clients, &methods, &paths,
            &times,
        ],
        db_err,
    )
    .await
    .map(drop)
}

fn row(r: &Row) -> StoreResult<(i64, AuditRecord)> {
    Ok((
        col(r, 0)?,
        AuditRecord {
            id: col(r, 1)?,
            account_id: col(r, 2)?,
            action: col(r, 3)?,
            target: col(r, 4)?,
            actor_key_id: col(r, 5)?,
            request_id: col(r, 6)?,
            client_addr: col(r, 7)?,
            method: col(r, 8)?,
            path: col(r, 9)?,
            created_at: col(r, 10)?,
        },
    ))
}

/// Newest first: the cursor is the last row's `pk`, and the next page is
/// the rows below it. Count and rows see one snapshot.
pub(super) async fn list(
    c: &mut Object,
    account: &str,
    filter: &AuditFilter,
    params: &ListParams,
) -> StoreResult<Page<AuditRecord>> {
    let tx = snapshot(c).await?;
    let page = paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM audit WHERE account_id = $1
               AND ($2::TEXT IS NULL OR action = $2) AND ($3::TEXT IS NULL OR target = $3)",
            "SELECT pk, id, account_id, action, target, actor_key_id, request_id, client_addr,
                    method, path, created_at
             FROM audit WHERE account_id = $1
               AND ($2::TEXT IS NULL OR action = $2) AND ($3::TEXT IS NULL OR target = $3)
              ",
        ],
        ("pk", Order::Desc),
        &[&account, &filter.action, &filter.target],
        params,
        row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

/// At most [`PRUNE_BATCH`] of the oldest rows created before `before`.
pub(super) async fn prune(c: &impl GenericClient, before: &str) -> StoreResult<u64> {
    let batch = i64::from(PRUNE_BATCH);
    execute(
        c,
        "DELETE FROM audit WHERE pk IN
           (SELECT pk FROM audit WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
        &[&before, &batch],
        db_err,
    )
    .await
}
