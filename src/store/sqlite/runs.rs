//! Runs, agent events and agent log lines: what the runtime writes as it works.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{agents::check_agent, db_err, json_col, not_found, paging, to_json, unique_violation};
use crate::store::{
    EventFilter, EventRecord, ListParams, LogRecord, Order, Page, Run, RunFilter, StoreError,
    StoreResult,
};

fn run_row(r: &Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        session_id: r.get(2)?,
        status: r.get(3)?,
        stop_reason: r.get(4)?,
        error: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        error_code: crate::store::model::lenient_code(r.get(8)?),
    })
}

/// The runtime assigns the run id (it publishes it before the row exists);
/// timestamps it left empty are filled in here.
pub(super) fn create_run(conn: &mut Connection, account: &str, mut run: Run) -> StoreResult<Run> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, run.agent_id.as_str())?;
    if run.created_at.is_empty() {
        run.created_at = crate::util::now();
    }
    if run.updated_at.is_empty() {
        run.updated_at = run.created_at.clone();
    }
    tx.prepare_cached(
        "INSERT INTO runs (id, account_id, agent_id, session_id, status, stop_reason, error,
                           created_at, updated_at, error_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            run.id,
            account,
            run.agent_id,
            run.session_id,
            run.status,
            run.stop_reason,
            run.error,
            run.created_at,
            run.updated_at,
            run.error_code
        ])
    })
    .map_err(|e| match unique_violation(&e) {
        true => StoreError::Conflict(format!("run {} already exists", run.id)),
        false => db_err(e),
    })?;
    tx.commit().map_err(db_err)?;
    Ok(run)
}

pub(super) fn get_run(conn: &Connection, account: &str, id: &str) -> StoreResult<Run> {
    conn.prepare_cached(
        "SELECT id, agent_id, session_id, status, stop_reason, error, created_at, updated_at,
                error_code
         FROM runs WHERE id = ?1 AND account_id = ?2",
    )
    .and_then(|mut s| s.query_row(params![id, account], run_row).optional())
    .map_err(db_err)?
    .ok_or_else(|| not_found("run"))
}

/// An agent's runs with `?2` status and in `?3` session, when set.
macro_rules! runs_where {
    () => {
        " FROM runs WHERE agent_id = ?1 AND (?2 IS NULL OR status = ?2)
           AND (?3 IS NULL OR session_id = ?3)"
    };
}

pub(super) fn list_runs(
    conn: &mut Connection,
    account: &str,
    agent_id: &str,
    filter: &RunFilter,
    params: &ListParams,
) -> StoreResult<Page<Run>> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, agent_id)?;
    paging::page(
        &tx,
        [
            concat!("SELECT COUNT(*)", runs_where!()),
            concat!(
                "SELECT id, agent_id, session_id, status, stop_reason, error, created_at,
                        updated_at, error_code, pk",
                runs_where!()
            ),
        ],
        ("pk", Order::Desc),
        &[&agent_id, &filter.status, &filter.session_id],
        params,
        |r| Ok((r.get(9)?, run_row(r)?)),
    )
}

pub(super) fn finish_run(conn: &mut Connection, account: &str, run: &Run) -> StoreResult<Run> {
    let tx = conn.transaction().map_err(db_err)?;
    let n = tx
        .prepare_cached(
            "UPDATE runs SET status = ?3, stop_reason = ?4, error = ?5, updated_at = ?6,
                             error_code = ?7
             WHERE id = ?1 AND account_id = ?2",
        )
        .and_then(|mut s| {
            s.execute(params![
                run.id,
                account,
                run.status,
                run.stop_reason,
                run.error,
                crate::util::now(),
                run.error_code
            ])
        })
        .map_err(db_err)?;
    if n == 0 {
        return Err(not_found("run"));
    }
    let stored = get_run(&tx, account, run.id.as_str())?;
    tx.commit().map_err(db_err)?;
    Ok(stored)
}

fn seq_param(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid("seq: too large".into()))
}

/// Checks every agent named in a batch once, before writing any of it.
fn check_agents<'a>(
    conn: &Connection,
    account: &str,
    ids: impl Iterator<Item = &'a str>,
) -> StoreResult<()> {
    for id in ids.collect::<BTreeSet<_>>() {
        check_agent(conn, account, id)?;
    }
    Ok(())
}

/// All or nothing: a duplicate `seq` rolls the whole batch back.
pub(super) fn append_events(
    conn: &mut Connection,
    account: &str,
    events: &[EventRecord],
) -> StoreResult<()> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agents(&tx, account, events.iter().map(|e| e.agent_id.as_str()))?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO events (agent_id, seq, run_id, session_id, message_type, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err)?;
        for e in events {
            stmt.execute(params![
                e.agent_id,
                seq_param(e.seq)?,
                e.run_id,
                e.session_id,
                e.message_type,
                to_json(&e.event)
            ])
            .map_err(|err| match unique_violation(&err) {
                true => StoreError::Conflict(format!(
                    "event seq {} already stored for agent {}",
                    e.seq, e.agent_id
                )),
                false => db_err(err),
            })?;
        }
    }
    tx.commit().map_err(db_err)
}

pub(super) fn last_seq(
    conn: &Connection,
    account: &str,
    agent_id: &str,
    logs: bool,
) -> StoreResult<u64> {
    check_agent(conn, account, agent_id)?;
    let sql = match logs {
        true => "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE agent_id = ?1",
        false => "SELECT COALESCE(MAX(seq), 0) FROM events WHERE agent_id = ?1",
    };
    let seq: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row([agent_id], |r| r.get(0)))
        .map_err(db_err)?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<(i64, EventRecord)> {
    let seq: i64 = r.get(1)?;
    Ok((
        seq,
        EventRecord {
            agent_id: r.get(0)?,
            seq: u64::try_from(seq).unwrap_or(0),
            run_id: r.get(2)?,
            session_id: r.get(3)?,
            message_type: r.get(4)?,
            event: json_col(r, 5)?,
        },
    ))
}

pub(super) fn list_events(
    conn: &mut Connection,
    account: &str,
    agent_id: &str,
    filter: &EventFilter,
    params: &ListParams,
) -> StoreResult<Page<EventRecord>> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, agent_id)?;
    let (count, rows) = events_sql(filter);
    // `?4`: the wanted types as a JSON array, read back with `json_each`.
    let types = filter.message_types.as_ref().map(to_json);
    paging::page(
        &tx,
        [count, rows],
        ("seq", Order::Asc),
        &[&agent_id, &filter.session_id, &filter.run_id, &types],
        params,
        event_row,
    )
}

/// The last `limit` user and assistant messages of a session, oldest first:
/// read backwards along the partial index `events_history`, which holds
/// only those messages, so the token deltas in between cost nothing and
/// nothing is counted.
pub(super) fn session_history(
    conn: &mut Connection,
    account: &str,
    agent_id: &str,
    session_id: &str,
    limit: u32,
) -> StoreResult<Vec<EventRecord>> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, agent_id)?;
    let mut stmt = tx.prepare_cached(HISTORY_SQL).map_err(db_err)?;
    let rows = stmt
        .query_map(params![agent_id, session_id, limit], event_row)
        .map_err(db_err)?;
    let mut out = rows
        .map(|r| r.map(|(_, e)| e))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    out.reverse();
    Ok(out)
}

const HISTORY_SQL: &str = "SELECT agent_id, seq, run_id, session_id, message_type, event \
     FROM events INDEXED BY events_history \
     WHERE agent_id = ?1 AND session_id = ?2 \
     AND message_type IN ('user_message', 'assistant_message') \
     ORDER BY seq DESC LIMIT ?3";

/// `list_events`'s (count, rows) SQL for the filters that are set: one
/// statement per combination. With `(?2 IS NULL OR session_id = ?2)` SQLite
/// plans for both cases at once, cannot use `events_session` / `events_run`
/// and reads every event of the agent on each call, so loading one
/// session's history got slower with every event the agent had stored. An
/// unused filter stays as a constant `?n IS NULL`, so every variant binds
/// the same parameters. `message_types` (`?4`) is checked on the rows the
/// index finds, so it needs no variant of its own.
pub(super) fn events_sql(filter: &EventFilter) -> (&'static str, &'static str) {
    // `INDEXED BY`: for the rows query SQLite otherwise prefers the primary
    // key (agent_id, seq), which is covering and gives `ORDER BY seq` for
    // free, and then filters every event of the agent (EXPLAIN QUERY PLAN).
    macro_rules! sql {
        ($index:literal, $w:literal) => {
            (
                concat!(
                    "SELECT COUNT(*) FROM events ",
                    $index,
                    " WHERE agent_id = ?1 AND ",
                    $w,
                    " AND (?4 IS NULL OR message_type IN (SELECT value FROM json_each(?4)))"
                ),
                concat!(
                    "SELECT agent_id, seq, run_id, session_id, message_type, event FROM events ",
                    $index,
                    " WHERE agent_id = ?1 AND ",
                    $w,
                    " AND (?4 IS NULL OR message_type IN (SELECT value FROM json_each(?4)))",
                ),
            )
        };
    }
    match (filter.session_id.is_some(), filter.run_id.is_some()) {
        (false, false) => sql!("", "?2 IS NULL AND ?3 IS NULL"),
        (true, false) => sql!(
            "INDEXED BY events_session",
            "session_id = ?2 AND ?3 IS NULL"
        ),
        (false, true) => sql!("INDEXED BY events_run", "?2 IS NULL AND run_id = ?3"),
        (true, true) => sql!("INDEXED BY events_run", "session_id = ?2 AND run_id = ?3"),
    }
}

pub(super) fn append_logs(
    conn: &mut Connection,
    account: &str,
    logs: &[LogRecord],
) -> StoreResult<()> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agents(&tx, account, logs.iter().map(|l| l.agent_id.as_str()))?;
    {
        let mut stmt = tx
            .prepare_cached("INSERT INTO logs (agent_id, seq, event) VALUES (?1, ?2, ?3)")
            .map_err(db_err)?;
        for l in logs {
            stmt.execute(params![l.agent_id, seq_param(l.seq)?, to_json(&l.event)])
                .map_err(|err| match unique_violation(&err) {
                    true => StoreError::Conflict(format!(
                        "log seq {} already stored for agent {}",
                        l.seq, l.agent_id
                    )),
                    false => db_err(err),
                })?;
        }
    }
    tx.commit().map_err(db_err)
}

fn log_row(r: &Row<'_>) -> rusqlite::Result<(i64, LogRecord)> {
    let seq: i64 = r.get(1)?;
    Ok((
        seq,
        LogRecord {
            agent_id: r.get(0)?,
            seq: u64::try_from(seq).unwrap_or(0),
            event: json_col(r, 2)?,
        },
    ))
}

pub(super) fn list_logs(
    conn: &mut Connection,
    account: &str,
    agent_id: &str,
    params: &ListParams,
) -> StoreResult<Page<LogRecord>> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, agent_id)?;
    paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM logs WHERE agent_id = ?1",
            "SELECT agent_id, seq, event FROM logs
         WHERE agent_id = ?1",
        ],
        ("seq", Order::Asc),
        &[&agent_id],
        params,
        log_row,
    )
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// What SQLite plans for `sql` (the `detail` column of EXPLAIN QUERY PLAN).
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let args = rusqlite::params_from_iter(vec!["x"; stmt.parameter_count()]);
        let rows = stmt.query_map(args, |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    /// Every filter combination of `list_events` seeks through an index on
    /// the filtered column: none of them reads all of an agent's events.
    #[test]
    fn every_event_filter_uses_its_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::migrate(&mut conn).unwrap();
        fn some<T: From<&'static str>>() -> Option<T> {
            Some(T::from("x"))
        }
        let cases = [
            (None, None, "(agent_id=?"),
            (
                some(),
                None,
                "INDEX events_session (agent_id=? AND session_id=?",
            ),
            (None, some(), "INDEX events_run (agent_id=? AND run_id=?"),
            (some(), some(), "INDEX events_run (agent_id=? AND run_id=?"),
        ];
        for (session_id, run_id, wanted) in cases {
            let filter = EventFilter {
                session_id,
                run_id,
                message_types: None,
            };
            let (count, rows) = events_sql(&filter);
            for sql in [count, rows] {
                let p = plan(&conn, sql);
                assert!(p.contains(wanted), "{filter:?}: {sql}\nplan: {p}");
                assert!(!p.contains("SCAN events"), "{filter:?} scans: {p}");
            }
        }
    }
}
