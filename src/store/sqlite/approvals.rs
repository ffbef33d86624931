//! Approvals: tool calls waiting for a person, with their parked run's
//! state ([`crate::store::Approval`]).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{db_err, json_col, not_found, to_json};
use crate::{
    domain::RunStatus,
    store::{Approval, ApprovalVerdict, StoreResult},
};

const COLS: &str = "id, account_id, run_id, agent_id, tool, arguments, state, status, expires_at, decided_by, reason, created_at, decided_at";

fn row(r: &Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: r.get(0)?,
        account_id: r.get(1)?,
        run_id: r.get(2)?,
        agent_id: r.get(3)?,
        tool: r.get(4)?,
        arguments: json_col(r, 5)?,
        state: json_col(r, 6)?,
        status: r.get(7)?,
        expires_at: r.get(8)?,
        decided_by: r.get(9)?,
        reason: r.get(10)?,
        created_at: r.get(11)?,
        decided_at: r.get(12)?,
    })
}

/// Stores `a` and marks its run `waiting_approval` in one transaction.
pub(super) fn park(conn: &mut Connection, a: Approval) -> StoreResult<Approval> {
    let tx = conn.transaction().map_err(db_err)?;
    let parked = tx
        .prepare_cached(
            "UPDATE runs SET status = ?3, updated_at = ?4 WHERE id = ?1 AND account_id = ?2",
        )
        .and_then(|mut s| {
            let status = RunStatus::WaitingApproval;
            s.execute(params![a.run_id, a.account_id, status, crate::util::now()])
        })
        .map_err(db_err)?;
    if parked == 0 {
        return Err(not_found("run"));
    }
    insert(&tx, &a)?;
    tx.commit().map_err(db_err)?;
    Ok(a)
}

fn insert(conn: &Connection, a: &Approval) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO approvals (id, account_id, run_id, agent_id, tool, arguments, state, status,
                                expires_at, decided_by, reason, created_at, decided_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.id,
            a.account_id,
            a.run_id,
            a.agent_id,
            a.tool,
            to_json(&a.arguments),
            to_json(&a.state),
            a.status,
            a.expires_at,
            a.decided_by,
            a.reason,
            a.created_at,
            a.decided_at
        ])
    })
    .map_err(db_err)?;
    Ok(())
}

pub(super) fn get(conn: &Connection, account: &str, id: &str) -> StoreResult<Approval> {
    let sql = format!("SELECT {COLS} FROM approvals WHERE id = ?1 AND account_id = ?2");
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params![id, account], row).optional())
        .map_err(db_err)?
        .ok_or_else(|| not_found("approval"))
}

/// The conditional update is what makes one decider win.
pub(super) fn decide(
    conn: &mut Connection,
    account: &str,
    id: &str,
    v: &ApprovalVerdict,
) -> StoreResult<Option<Approval>> {
    let tx = conn.transaction().map_err(db_err)?;
    let n = tx
        .prepare_cached(
            "UPDATE approvals SET status = ?3, decided_by = ?4, reason = ?5, decided_at = ?6
             WHERE id = ?1 AND account_id = ?2 AND status = 'pending'",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                account,
                v.decision.as_str(),
                v.decided_by,
                v.reason,
                crate::util::now()
            ])
        })
        .map_err(db_err)?;
    let stored = get(&tx, account, id)?;
    tx.commit().map_err(db_err)?;
    Ok((n == 1).then_some(stored))
}

pub(super) fn due(conn: &Connection, before: &str, limit: u32) -> StoreResult<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status = 'pending' AND expires_at < ?1
         ORDER BY expires_at LIMIT ?2"
    );
    query(conn, &sql, before, limit)
}

/// Decided before `before`, run still waiting: from the few waiting runs
/// (partial index `runs_waiting`) to their approvals (`approvals_run`).
pub(super) fn stalled(conn: &Connection, before: &str, limit: u32) -> StoreResult<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status <> 'pending' AND decided_at < ?1
           AND (account_id, run_id) IN
               (SELECT account_id, id FROM runs WHERE status = 'waiting_approval')
         ORDER BY decided_at LIMIT ?2"
    );
    query(conn, &sql, before, limit)
}

fn query(conn: &Connection, sql: &str, before: &str, limit: u32) -> StoreResult<Vec<Approval>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params![before, limit], row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows)
}
