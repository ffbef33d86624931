//! `ListParams` → SQL paging for PostgreSQL, with SQLite's rules.
//!
//! The cursor parsing and the limit clamp are SQLite's own
//! ([`crate::store::sqlite::paging`]), so both stores refuse the same
//! cursors with the same message. Each list query takes its own parameters
//! as `$1..$n`, then the cursor, the row limit and the offset as `$n+1`,
//! `$n+2`, `$n+3`; one extra row is fetched to learn whether another page
//! follows. The count and the rows are pipelined on the connection (one
//! round trip) and, called inside [`super::snapshot`], see one snapshot.

use deadpool_postgres::GenericClient;
use tokio_postgres::{types::ToSql, Row};

use super::db_err;
use crate::store::{
    sqlite::paging::{parse_cursor, MAX_LIMIT},
    ListParams, Page, Pagination, StoreResult,
};

/// Runs a counted, paged list. `map` returns each row's cursor value with it.
pub(super) async fn page<T>(
    c: &impl GenericClient,
    count_sql: &str,
    rows_sql: &str,
    base: &[&(dyn ToSql + Sync)],
    params: &ListParams,
    map: impl Fn(&Row) -> StoreResult<(i64, T)>,
) -> StoreResult<Page<T>> {
    let after = parse_cursor(params.after.as_deref())?;
    page_from(c, [count_sql, rows_sql], base, params, after, map).await
}

/// [`page`] with the cursor already parsed (a list read newest first passes
/// SQLite's `parse_cursor_desc`).
pub(super) async fn page_from<T>(
    c: &impl GenericClient,
    [count_sql, rows_sql]: [&str; 2],
    base: &[&(dyn ToSql + Sync)],
    params: &ListParams,
    after: i64,
    map: impl Fn(&Row) -> StoreResult<(i64, T)>,
) -> StoreResult<Page<T>> {
    let limit = params.limit.clamp(1, MAX_LIMIT);
    let offset = i64::try_from(params.offset).unwrap_or(i64::MAX);
    let fetch = i64::from(limit) + 1;

    let (count_st, rows_st) =
        tokio::try_join!(c.prepare_cached(count_sql), c.prepare_cached(rows_sql))
            .map_err(db_err)?;
    let mut args: Vec<&(dyn ToSql + Sync)> = base.to_vec();
    args.extend([&after as &(dyn ToSql + Sync), &fetch, &offset]);
    let (count, rows) =
        tokio::try_join!(c.query_one(&count_st, base), c.query(&rows_st, &args)).map_err(db_err)?;
    let total: i64 = count.try_get(0).map_err(db_err)?;

    let mut data = Vec::with_capacity(rows.len().min(limit as usize));
    let mut last = None;
    for row in rows.iter().take(limit as usize) {
        let (cursor, item) = map(row)?;
        last = Some(cursor);
        data.push(item);
    }
    let more = rows.len() > limit as usize;
    Ok(Page {
        data,
        pagination: Pagination {
            total: u64::try_from(total).unwrap_or(0),
            limit,
            offset: params.offset,
            next_cursor: if more {
                last.map(|c| c.to_string())
            } else {
                None
            },
        },
    })
}
