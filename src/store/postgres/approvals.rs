//! Approvals: SQLite's rules ([`crate::store::sqlite`]'s `approvals.rs`).

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::{col, db_err, execute, json_col, not_found, query_opt, to_json, write_err};
use crate::{
    domain::RunStatus,
    store::{Approval, ApprovalVerdict, StoreResult},
};

const COLS: &str = "id, account_id, run_id, agent_id, tool, arguments, state, status, expires_at, decided_by, reason, created_at, decided_at";

fn row(r: &Row) -> StoreResult<Approval> {
    Ok(Approval {
        id: col(r, 0)?,
        account_id: col(r, 1)?,
        run_id: col(r, 2)?,
        agent_id: col(r, 3)?,
        tool: col(r, 4)?,
        arguments: json_col(r, 5)?,
        state: json_col(r, 6)?,
        status: col(r, 7)?,
        expires_at: col(r, 8)?,
        decided_by: col(r, 9)?,
        reason: col(r, 10)?,
        created_at: col(r, 11)?,
        decided_at: col(r, 12)?,
    })
}

/// Stores `a` and marks its run `waiting_approval` in one transaction.
pub(super) async fn park(c: &mut Object, a: Approval) -> StoreResult<Approval> {
    let tx = c.transaction().await.map_err(db_err)?;
    let sql = "UPDATE runs SET status = $3, updated_at = $4 WHERE id = $1 AND account_id = $2";
    let status = RunStatus::WaitingApproval;
    let now = crate::util::now();
    let parked = execute(&tx, sql, &[&a.run_id, &a.account_id, &status, &now], db_err).await?;
    if parked == 0 {
        return Err(not_found("run"));
    }
    insert(&tx, &a).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(a)
}

async fn insert(c: &impl GenericClient, a: &Approval) -> StoreResult<()> {
    let (args, state) = (to_json(&a.arguments), to_json(&a.state));
    execute(
        c,
        "INSERT INTO approvals (id, account_id, run_id, agent_id, tool, arguments, state, status,
                                expires_at, decided_by, reason, created_at, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &a.id,
            &a.account_id,
            &a.run_id,
            &a.agent_id,
            &a.tool,
            &args,
            &state,
            &a.status,
            &a.expires_at,
            &a.decided_by,
            &a.reason,
            &a.created_at,
            &a.decided_at,
        ],
        |e| write_err(e, crate::store::StoreError::Conflict),
    )
    .await?;
    Ok(())
}

pub(super) async fn get(c: &impl GenericClient, account: &str, id: &str) -> StoreResult<Approval> {
    let sql = format!("SELECT {COLS} FROM approvals WHERE id = $1 AND account_id = $2");
    match query_opt(c, &sql, &[&id, &account]).await? {
        Some(r) => row(&r),
        None => Err(not_found("approval")),
    }
}

/// One conditional `UPDATE … RETURNING`: one decider wins.
pub(super) async fn decide(
    c: &impl GenericClient,
    account: &str,
    id: &str,
    v: &ApprovalVerdict,
) -> StoreResult<Option<Approval>> {
    let sql = format!(
        "UPDATE approvals SET status = $3, decided_by = $4, reason = $5, decided_at = $6
         WHERE id = $1 AND account_id = $2 AND status = 'pending' RETURNING {COLS}"
    );
    let now = crate::util::now();
    let r = query_opt(
        c,
        &sql,
        &[
            &id,
            &account,
            &v.decision.as_str(),
            &v.decided_by,
            &v.reason,
            &now,
        ],
    )
    .await?;
    match r {
        Some(r) => Ok(Some(row(&r)?)),
        // Decided already, or no such approval.
        None => get(c, account, id).await.map(|_| None),
    }
}

pub(super) async fn due(
    c: &impl GenericClient,
    before: &str,
    limit: u32,
) -> StoreResult<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status = 'pending' AND expires_at < $1
         ORDER BY expires_at LIMIT $2"
    );
    query(c, &sql, before, limit).await
}

/// SQLite's `stalled`, same query.
pub(super) async fn stalled(
    c: &impl GenericClient,
    before: &str,
    limit: u32,
) -> StoreResult<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status <> 'pending' AND decided_at < $1
           AND (account_id, run_id) IN
               (SELECT account_id, id FROM runs WHERE status = 'waiting_approval')
         ORDER BY decided_at LIMIT $2"
    );
    query(c, &sql, before, limit).await
}

async fn query(
    c: &impl GenericClient,
    sql: &str,
    before: &str,
    limit: u32,
) -> StoreResult<Vec<Approval>> {
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    let rows = c
        .query(&st, &[&before, &i64::from(limit)])
        .await
        .map_err(db_err)?;
    rows.iter().map(row).collect()
}
