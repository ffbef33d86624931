//! [`Plan`] → SQLite: the count and one page of rows, for every list.
//!
//! Each list query takes its own parameters as `?1..?n`; the plan's tail
//! adds the two cursor bounds, the row limit and the offset as `?n+1` to
//! `?n+4`.

use rusqlite::{Connection, Row, ToSql};

use super::db_err;
use crate::store::{paging::Plan, ListParams, Order, Page, StoreResult};

/// Runs a counted, paged list: `rows_head` is the query up to its `WHERE`
/// conditions, `col` the cursor column and `default` the list's own
/// order. `map` returns each row's cursor value with it.
pub(super) fn page<T>(
    conn: &Connection,
    [count_sql, rows_head]: [&str; 2],
    (col, default): (&str, Order),
    base: &[&dyn ToSql],
    params: &ListParams,
    mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<(i64, T)>,
) -> StoreResult<Page<T>> {
    let plan = Plan::new(params, default)?;
    let (lo, hi) = plan.int_bounds()?;
    let (fetch, offset) = (plan.fetch(), plan.offset);

    let total: i64 = conn
        .prepare_cached(count_sql)
        .and_then(|mut s| s.query_row(base, |r| r.get(0)))
        .map_err(db_err)?;

    let mut args: Vec<&dyn ToSql> = base.to_vec();
    args.extend([&lo as &dyn ToSql, &hi, &fetch, &offset]);
    let sql = format!("{rows_head}{}", plan.tail(col, '?', base.len() + 1));
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let mut rows = stmt.query(&*args).map_err(db_err)?;
    let mut data = Vec::with_capacity(plan.limit.min(64) as usize + 1);
    while let Some(row) = rows.next().map_err(db_err)? {
        let (c, item) = map(row).map_err(db_err)?;
        data.push((c.to_string(), item));
        if data.len() as i64 == fetch {
            break;
        }
    }
    Ok(plan.finish(data, u64::try_from(total).unwrap_or(0), params))
}
