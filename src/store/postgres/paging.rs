//! [`Plan`] → PostgreSQL, with SQLite's rules.
//!
//! The plan (cursor parsing, limit clamp, direction) is the one both stores
//! share ([`crate::store::paging`]), so both refuse the same cursors with
//! the same message. Each list query takes its own parameters as `$1..$n`;
//! the plan's tail adds the two cursor bounds, the row limit and the
//! offset as `$n+1` to `$n+4`. The count and the rows are pipelined on the
//! connection (one round trip) and, called inside [`super::snapshot`], see
//! one snapshot.

use deadpool_postgres::GenericClient;
use tokio_postgres::{types::ToSql, Row};

use super::db_err;
use crate::store::{paging::Plan, ListParams, Order, Page, StoreResult};

/// Runs a counted, paged list: `rows_head` is the query up to its `WHERE`
/// conditions, `col` the cursor column and `default` the list's own
/// order. `map` returns each row's cursor value with it.
pub(super) async fn page<T>(
    c: &impl GenericClient,
    [count_sql, rows_head]: [&str; 2],
    (col, default): (&str, Order),
    base: &[&(dyn ToSql + Sync)],
    params: &ListParams,
    map: impl Fn(&Row) -> StoreResult<(i64, T)>,
) -> StoreResult<Page<T>> {
    let plan = Plan::new(params, default)?;
    let (lo, hi) = plan.int_bounds()?;
    let (fetch, offset) = (plan.fetch(), plan.offset);
    let rows_sql = format!("{rows_head}{}", plan.tail(col, '$', base.len() + 1));

    let (count_st, rows_st) =
        tokio::try_join!(c.prepare_cached(count_sql), c.prepare_cached(&rows_sql))
            .map_err(db_err)?;
    let mut args: Vec<&(dyn ToSql + Sync)> = base.to_vec();
    args.extend([&lo as &(dyn ToSql + Sync), &hi, &fetch, &offset]);
    let (count, rows) =
        tokio::try_join!(c.query_one(&count_st, base), c.query(&rows_st, &args)).map_err(db_err)?;
    let total: i64 = count.try_get(0).map_err(db_err)?;

    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        let (cursor, item) = map(row)?;
        data.push((cursor.to_string(), item));
    }
    Ok(plan.finish(data, u64::try_from(total).unwrap_or(0), params))
}
