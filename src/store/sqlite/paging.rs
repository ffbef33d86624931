//! `ListParams` → SQL paging, shared by every list.
//!
//! Each list query takes its own parameters as `?1..?n`, then the cursor,
//! the row limit and the offset as `?n+1`, `?n+2`, `?n+3`. One extra row is
//! fetched to learn whether another page follows without a second query.

use rusqlite::{Connection, Row, ToSql};

use super::db_err;
use crate::store::{ListParams, Page, Pagination, StoreError, StoreResult};

/// Largest page a caller may ask for.
pub(in crate::store) const MAX_LIMIT: u32 = 1000;

/// The cursor as a number: a row's `pk`, or an event's or log line's `seq`.
/// `-1` when absent, below every real value.
pub(in crate::store) fn parse_cursor(after: Option<&str>) -> StoreResult<i64> {
    match after {
        None => Ok(-1),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .and_then(|v| i64::try_from(v).ok())
            .ok_or_else(|| StoreError::Invalid("after: not a valid cursor".into())),
    }
}

/// The cursor of a list read newest first (the audit log): the rows
/// *below* it come next, so no cursor is `i64::MAX`, above every row.
pub(in crate::store) fn parse_cursor_desc(after: Option<&str>) -> StoreResult<i64> {
    match after {
        None => Ok(i64::MAX),
        Some(_) => parse_cursor(after),
    }
}

/// Runs a counted, paged list. `map` returns each row's cursor value with it.
pub(super) fn page<T>(
    conn: &Connection,
    count_sql: &str,
    rows_sql: &str,
    base: &[&dyn ToSql],
    params: &ListParams,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<(i64, T)>,
) -> StoreResult<Page<T>> {
    let after = parse_cursor(params.after.as_deref())?;
    page_from(conn, [count_sql, rows_sql], base, params, after, map)
}

/// [`page`] with the cursor already parsed: `after` for a list read oldest
/// first, [`parse_cursor_desc`] for one read newest first.
pub(super) fn page_from<T>(
    conn: &Connection,
    [count_sql, rows_sql]: [&str; 2],
    base: &[&dyn ToSql],
    params: &ListParams,
    after: i64,
    mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<(i64, T)>,
) -> StoreResult<Page<T>> {
    let limit = params.limit.clamp(1, MAX_LIMIT);
    let offset = i64::try_from(params.offset).unwrap_or(i64::MAX);
    let fetch = i64::from(limit) + 1;

    let total: i64 = conn
        .prepare_cached(count_sql)
        .and_then(|mut s| s.query_row(base, |r| r.get(0)))
        .map_err(db_err)?;

    let mut args: Vec<&dyn ToSql> = base.to_vec();
    args.extend([&after as &dyn ToSql, &fetch, &offset]);
    let mut stmt = conn.prepare_cached(rows_sql).map_err(db_err)?;
    let mut rows = stmt.query(&*args).map_err(db_err)?;
    let mut data = Vec::with_capacity(limit.min(64) as usize);
    let mut last = None;
    let mut more = false;
    while let Some(row) = rows.next().map_err(db_err)? {
        if data.len() == limit as usize {
            more = true;
            break;
        }
        let (cursor, item) = map(row).map_err(db_err)?;
        last = Some(cursor);
        data.push(item);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_or_are_invalid() {
        assert_eq!(parse_cursor(None), Ok(-1));
        assert_eq!(parse_cursor(Some("42")), Ok(42));
        for bad in ["", "x", "-1", "1.5", "99999999999999999999", " 1"] {
            assert_eq!(
                parse_cursor(Some(bad)),
                Err(StoreError::Invalid("after: not a valid cursor".into())),
                "{bad:?}"
            );
        }
        assert_eq!(parse_cursor_desc(None), Ok(i64::MAX));
        assert_eq!(parse_cursor_desc(Some("7")), Ok(7));
        assert!(parse_cursor_desc(Some("x")).is_err());
    }
}
