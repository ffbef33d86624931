//! Usage sums: the adding upsert (one `UNNEST` statement) and an account's
//! rows summed by one dimension; SQLite's rules
//! ([`crate::store::sqlite`]'s `usage.rs`).

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::types::ToSql;

use super::{col, db_err, execute, snapshot};
use crate::store::{
    paging::{invalid_cursor, Plan},
    usage::{decode_cursor, encode_cursor, merge},
    ListParams, Order, Page, StoreResult, UsageQuery, UsageRecord, UsageRow,
};

/// One statement for the batch, rows merged and sorted first
/// ([`merge`]: one statement may not touch a row twice, and two gateways
/// lock rows in the same order).
pub(super) async fn add(c: &impl GenericClient, rows: Vec<UsageRow>) -> StoreResult<()> {
    let rows = merge(rows);
    fn text(rows: &[UsageRow], f: impl Fn(&UsageRow) -> &str) -> Vec<&str> {
        rows.iter().map(f).collect()
    }
    fn int(rows: &[UsageRow], f: impl Fn(&UsageRow) -> i64) -> Vec<i64> {
        rows.iter().map(f).collect()
    }
    let accounts = text(&rows, |r| &r.account_id);
    let days = text(&rows, |r| &r.day);
    let keys = text(&rows, |r| &r.key_id);
    let models = text(&rows, |r| &r.model);
    let agents = text(&rows, |r| &r.agent_id);
    let providers = text(&rows, |r| &r.provider);
    let requests = int(&rows, |r| r.requests);
    let runs = int(&rows, |r| r.runs);
    let prompt = int(&rows, |r| r.prompt_tokens);
    let completion = int(&rows, |r| r.completion_tokens);
    execute(
        c,
        "INSERT INTO usage AS u (account_id, day, key_id, model, agent_id, provider,
                                 requests, runs, prompt_tokens, completion_tokens)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                              $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[],
                              $10::BIGINT[])
         ON CONFLICT (account_id, day, key_id, model, agent_id, provider) DO UPDATE SET
           requests = u.requests + excluded.requests,
           runs = u.runs + excluded.runs,
           prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
           completion_tokens = u.completion_tokens + excluded.completion_tokens",
        &[
            &accounts,
            &days,
            &keys,
            &models,
            &agents,
            &providers,
            &requests,
            &runs,
            &prompt,
            &completion,
        ],
        db_err,
    )
    .await
    .map(drop)
}

/// Summed by `query.group_by`, ordered by its value; the page after the
/// cursor's value. Count and rows see one snapshot.
pub(super) async fn list(
    c: &mut Object,
    account: &str,
    query: &UsageQuery,
    params: &ListParams,
) -> StoreResult<Page<UsageRecord>> {
    let plan = Plan::new(params, Order::Asc)?;
    let (lo, hi) = plan.bounds();
    let lo = decode_cursor(lo).map_err(|_| invalid_cursor(plan.bound_name(true)))?;
    let hi = decode_cursor(hi).map_err(|_| invalid_cursor(plan.bound_name(false)))?;
    let dir = plan.dir();
    let (fetch, offset) = (plan.fetch(), plan.offset);
    let col_name = query.group_by.column();
    let count_sql = format!(
        "SELECT COUNT(DISTINCT {col_name})::BIGINT FROM usage
         WHERE account_id = $1 AND day >= $2 AND day <= $3"
    );
    let rows_sql = format!(
        "SELECT {col_name}, SUM(requests)::BIGINT, SUM(runs)::BIGINT,
                SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT
         FROM usage
         WHERE account_id = $1 AND day >= $2 AND day <= $3
           AND ($4::TEXT IS NULL OR {col_name} > $4)
           AND ($5::TEXT IS NULL OR {col_name} < $5)
         GROUP BY {col_name} ORDER BY {col_name} {dir} LIMIT $6 OFFSET $7"
    );
    let tx = snapshot(c).await?;
    let (count_st, rows_st) =
        tokio::try_join!(tx.prepare_cached(&count_sql), tx.prepare_cached(&rows_sql))
            .map_err(db_err)?;
    let base: [&(dyn ToSql + Sync); 3] = [&account, &query.from, &query.to];
    let args: [&(dyn ToSql + Sync); 7] =
        [&account, &query.from, &query.to, &lo, &hi, &fetch, &offset];
    let (count, rows) = tokio::try_join!(tx.query_one(&count_st, &base), tx.query(&rows_st, &args))
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    let total: i64 = col(&count, 0)?;
    let mut data = Vec::with_capacity(rows.len());
    for r in &rows {
        let sums = [col(r, 1)?, col(r, 2)?, col(r, 3)?, col(r, 4)?];
        let rec = UsageRecord::new(query.group_by, col(r, 0)?, sums);
        data.push((encode_cursor(rec.value.as_deref().unwrap_or("")), rec));
    }
    Ok(plan.finish(data, u64::try_from(total).unwrap_or(0), params))
}
