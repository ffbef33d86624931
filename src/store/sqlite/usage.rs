//! Usage sums: the adding upsert and an account's rows summed by one
//! dimension ([`crate::store::usage`]).

use rusqlite::{params, Connection};

use super::db_err;
use crate::store::{
    paging::{invalid_cursor, Plan},
    usage::{decode_cursor, encode_cursor, merge},
    ListParams, Order, Page, StoreResult, UsageQuery, UsageRecord, UsageRow,
};

/// One transaction for the batch; each row adds to its stored row.
pub(super) fn add(conn: &mut Connection, rows: Vec<UsageRow>) -> StoreResult<()> {
    let tx = conn.transaction().map_err(db_err)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO usage (account_id, day, key_id, model, agent_id, provider,
                                    requests, runs, prompt_tokens, completion_tokens)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (account_id, day, key_id, model, agent_id, provider) DO UPDATE SET
                   requests = usage.requests + excluded.requests,
                   runs = usage.runs + excluded.runs,
                   prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = usage.completion_tokens + excluded.completion_tokens",
            )
            .map_err(db_err)?;
        for r in merge(rows) {
            stmt.execute(params![
                r.account_id,
                r.day,
                r.key_id,
                r.model,
                r.agent_id,
                r.provider,
                r.requests,
                r.runs,
                r.prompt_tokens,
                r.completion_tokens
            ])
            .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

/// Summed by `query.group_by`, ordered by its value; the page after the
/// cursor's value. Count and rows are read in one transaction.
pub(super) fn list(
    conn: &mut Connection,
    account: &str,
    query: &UsageQuery,
    params: &ListParams,
) -> StoreResult<Page<UsageRecord>> {
    let plan = Plan::new(params, Order::Asc)?;
    let (lo, hi) = plan.bounds();
    let lo = decode_cursor(lo).map_err(|_| invalid_cursor(plan.bound_name(true)))?;
    let hi = decode_cursor(hi).map_err(|_| invalid_cursor(plan.bound_name(false)))?;
    let dir = plan.dir();
    let col = query.group_by.column();
    let tx = conn.transaction().map_err(db_err)?;
    let total: i64 = tx
        .prepare_cached(&format!(
            "SELECT COUNT(DISTINCT {col}) FROM usage
             WHERE account_id = ?1 AND day >= ?2 AND day <= ?3"
        ))
        .and_then(|mut s| s.query_row(params![account, query.from, query.to], |r| r.get(0)))
        .map_err(db_err)?;
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT {col}, SUM(requests), SUM(runs), SUM(prompt_tokens), SUM(completion_tokens)
             FROM usage
             WHERE account_id = ?1 AND day >= ?2 AND day <= ?3 AND (?4 IS NULL OR {col} > ?4)
               AND (?5 IS NULL OR {col} < ?5)
             GROUP BY {col} ORDER BY {col} {dir} LIMIT ?6 OFFSET ?7"
        ))
        .map_err(db_err)?;
    let mut rows = stmt
        .query(params![
            account,
            query.from,
            query.to,
            lo,
            hi,
            plan.fetch(),
            plan.offset
        ])
        .map_err(db_err)?;
    let mut data = Vec::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let sum = |i| r.get::<_, i64>(i).map_err(db_err);
        let sums = [sum(1)?, sum(2)?, sum(3)?, sum(4)?];
        let rec = UsageRecord::new(query.group_by, r.get(0).map_err(db_err)?, sums);
        data.push((encode_cursor(rec.value.as_deref().unwrap_or("")), rec));
    }
    drop(rows);
    drop(stmt);
    tx.commit().map_err(db_err)?;
    Ok(plan.finish(data, u64::try_from(total).unwrap_or(0), params))
}
