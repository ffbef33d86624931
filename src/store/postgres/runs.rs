//! Runs, agent events and agent log lines: what the runtime writes as it works.

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::{
    agents::check_agent, col, db_err, execute, json_col, not_found, paging, query_opt, snapshot,
    to_json, write_err,
};
use crate::store::{
    EventFilter, EventRecord, ListParams, LogRecord, Order, Page, Run, RunFilter, StoreError,
    StoreResult,
};

macro_rules! run_cols {
    () => {
        "id, agent_id, session_id, status, stop_reason, error, created_at, updated_at, error_code"
    };
}

fn run_row(r: &Row) -> StoreResult<Run> {
    Ok(Run {
        id: col(r, 0)?,
        agent_id: col(r, 1)?,
        session_id: col(r, 2)?,
        status: col(r, 3)?,
        stop_reason: col(r, 4)?,
        error: col(r, 5)?,
        created_at: col(r, 6)?,
        updated_at: col(r, 7)?,
        error_code: crate::store::model::lenient_code(col(r, 8)?),
    })
}

/// The runtime assigns the run id (it publishes it before the row exists);
/// timestamps it left empty are filled in here. The insert happens only if
/// the agent is the account's, so no row written means NotFound("agent").
pub(super) async fn create_run(
    c: &impl GenericClient,
    account: &str,
    mut run: Run,
) -> StoreResult<Run> {
    if run.created_at.is_empty() {
        run.created_at = crate::util::now();
    }
    if run.updated_at.is_empty() {
        run.updated_at = run.created_at.clone();
    }
    let written = execute(
        c,
        "INSERT INTO runs (id, account_id, agent_id, session_id, status, stop_reason, error,
                           created_at, updated_at, error_code)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
         WHERE EXISTS (SELECT 1 FROM agents WHERE id = $3 AND account_id = $2)",
        &[
            &run.id,
            &account,
            &run.agent_id,
            &run.session_id,
            &run.status,
            &run.stop_reason,
            &run.error,
            &run.created_at,
            &run.updated_at,
            &run.error_code,
        ],
        |e| {
            write_err(e, |_| {
                StoreError::Conflict(format!("run {} already exists", run.id))
            })
        },
    )
    .await?;
    match written {
        0 => Err(not_found("agent")),
        _ => Ok(run),
    }
}

pub(super) async fn get_run(c: &impl GenericClient, account: &str, id: &str) -> StoreResult<Run> {
    let sql = concat!(
        "SELECT ",
        run_cols!(),
        " FROM runs WHERE id = $1 AND account_id = $2"
    );
    match query_opt(c, sql, &[&id, &account]).await? {
        Some(r) => run_row(&r),
        None => Err(not_found("run")),
    }
}

/// An agent's runs with `$2` status and in `$3` session, when set.
macro_rules! runs_where {
    () => {
        " FROM runs WHERE agent_id = $1 AND ($2::TEXT IS NULL OR status = $2)
           AND ($3::TEXT IS NULL OR session_id = $3)"
    };
}

pub(super) async fn list_runs(
    c: &mut Object,
    account: &str,
    agent_id: &str,
    filter: &RunFilter,
    params: &ListParams,
) -> StoreResult<Page<Run>> {
    let tx = snapshot(c).await?;
    check_agent(&tx, account, agent_id).await?;
    let page = paging::page(
        &tx,
        [
            concat!("SELECT COUNT(*)", runs_where!()),
            concat!("SELECT ", run_cols!(), ", pk", runs_where!()),
        ],
        ("pk", Order::Desc),
        &[&agent_id, &filter.status, &filter.session_id],
        params,
        |r| Ok((col(r, 9)?, run_row(r)?)),
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

pub(super) async fn finish_run(
    c: &impl GenericClient,
    account: &str,
    run: &Run,
) -> StoreResult<Run> {
    let sql = concat!(
        "UPDATE runs SET status = $3, stop_reason = $4, error = $5, updated_at = $6,
                         error_code = $7
         WHERE id = $1 AND account_id = $2 RETURNING ",
        run_cols!()
    );
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &run.id,
        &account,
        &run.status,
        &run.stop_reason,
        &run.error,
        &crate::util::now(),
        &run.error_code,
    ];
    match query_opt(c, sql, &args).await? {
        Some(r) => run_row(&r),
        None => Err(not_found("run")),
    }
}

fn seq_param(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid("seq: too large".into()))
}

/// The guard both appends share: the batch is written only if every agent
/// it names is the account's (evaluated once, before any row).
macro_rules! agents_guard {
    ($account:literal) => {
        concat!(
            " WHERE NOT EXISTS (SELECT 1 FROM UNNEST($1::TEXT[]) AS b(agent_id) WHERE NOT EXISTS
                 (SELECT 1 FROM agents a WHERE a.id = b.agent_id AND a.account_id = ",
            $account,
            "))"
        )
    };
}

/// All or nothing in one statement: a duplicate `seq` (stored already, or
/// twice in the batch) fails the whole insert; a batch naming another
/// account's agent writes nothing.
pub(super) async fn append_events(
    c: &impl GenericClient,
    account: &str,
    events: &[EventRecord],
) -> StoreResult<()> {
    // Column arrays for UNNEST: one array parameter per column.
    let agents: Vec<&str> = events.iter().map(|e| e.agent_id.as_str()).collect();
    let seqs = events
        .iter()
        .map(|e| seq_param(e.seq))
        .collect::<StoreResult<Vec<i64>>>()?;
    let runs: Vec<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
    let sessions: Vec<&str> = events.iter().map(|e| e.session_id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.message_type.as_str()).collect();
    let bodies: Vec<String> = events.iter().map(|e| to_json(&e.event)).collect();
    let written = execute(
        c,
        concat!(
            "INSERT INTO events (agent_id, seq, run_id, session_id, message_type, event)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                  $6::TEXT[])",
            agents_guard!("$7")
        ),
        &[&agents, &seqs, &runs, &sessions, &types, &bodies, &account],
        |e| {
            write_err(e, |d| {
                StoreError::Conflict(format!("event seq already stored: {d}"))
            })
        },
    )
    .await?;
    match written {
        0 => Err(not_found("agent")),
        _ => Ok(()),
    }
}

pub(super) async fn append_logs(
    c: &impl GenericClient,
    account: &str,
    logs: &[LogRecord],
) -> StoreResult<()> {
    let agents: Vec<&str> = logs.iter().map(|l| l.agent_id.as_str()).collect();
    let seqs = logs
        .iter()
        .map(|l| seq_param(l.seq))
        .collect::<StoreResult<Vec<i64>>>()?;
    let bodies: Vec<String> = logs.iter().map(|l| to_json(&l.event)).collect();
    let written = execute(
        c,
        concat!(
            "INSERT INTO logs (agent_id, seq, event)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[])",
            agents_guard!("$4")
        ),
        &[&agents, &seqs, &bodies, &account],
        |e| {
            write_err(e, |d| {
                StoreError::Conflict(format!("log seq already stored: {d}"))
            })
        },
    )
    .await?;
    match written {
        0 => Err(not_found("agent")),
        _ => Ok(()),
    }
}

/// The agent check and the highest seq in one statement: no row, no agent.
pub(super) async fn last_seq(
    c: &impl GenericClient,
    account: &str,
    agent_id: &str,
    logs: bool,
) -> StoreResult<u64> {
    let sql = match logs {
        true => {
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM logs WHERE agent_id = $1)
             FROM agents WHERE id = $1 AND account_id = $2"
        }
        false => {
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events WHERE agent_id = $1)
             FROM agents WHERE id = $1 AND account_id = $2"
        }
    };
    let row = query_opt(c, sql, &[&agent_id, &account])
        .await?
        .ok_or_else(|| not_found("agent"))?;
    let seq: i64 = col(&row, 0)?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

fn event_row(r: &Row) -> StoreResult<(i64, EventRecord)> {
    let seq: i64 = col(r, 1)?;
    Ok((
        seq,
        EventRecord {
            agent_id: col(r, 0)?,
            seq: u64::try_from(seq).unwrap_or(0),
            run_id: col(r, 2)?,
            session_id: col(r, 3)?,
            message_type: col(r, 4)?,
            event: json_col(r, 5)?,
        },
    ))
}

pub(super) async fn list_events(
    c: &mut Object,
    account: &str,
    agent_id: &str,
    filter: &EventFilter,
    params: &ListParams,
) -> StoreResult<Page<EventRecord>> {
    let tx = snapshot(c).await?;
    check_agent(&tx, account, agent_id).await?;
    let (count, rows) = events_sql(filter);
    let page = paging::page(
        &tx,
        [count, rows],
        ("seq", Order::Asc),
        &[
            &agent_id,
            &filter.session_id,
            &filter.run_id,
            &filter.message_types,
        ],
        params,
        event_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

/// The last `limit` user and assistant messages of a session, oldest first
/// (SQLite's `session_history`, the same query).
pub(super) async fn session_history(
    c: &mut Object,
    account: &str,
    agent_id: &str,
    session_id: &str,
    limit: u32,
) -> StoreResult<Vec<EventRecord>> {
    let tx = snapshot(c).await?;
    check_agent(&tx, account, agent_id).await?;
    let rows = tx
        .query(
            "SELECT agent_id, seq, run_id, session_id, message_type, event \
             FROM events WHERE agent_id = $1 AND session_id = $2 \
             AND message_type IN ('user_message', 'assistant_message') \
             ORDER BY seq DESC LIMIT $3",
            &[&agent_id, &session_id, &i64::from(limit)],
        )
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    let mut out = rows
        .iter()
        .map(|r| event_row(r).map(|(_, e)| e))
        .collect::<StoreResult<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}

/// `list_events`'s (count, rows) SQL for the filters that are set: one
/// statement per combination, as for SQLite (`sqlite::runs::events_sql`):
/// a prepared `($2 IS NULL OR session_id = $2)` gets a generic plan that
/// cannot use `events_session` / `events_run`. An unused filter stays as a
/// constant `$n::TEXT IS NULL`, so every variant binds the same parameters;
/// `message_types` (`$4`) is checked on the rows the index finds.
fn events_sql(filter: &EventFilter) -> (&'static str, &'static str) {
    macro_rules! sql {
        ($w:literal) => {
            (
                concat!(
                    "SELECT COUNT(*) FROM events WHERE agent_id = $1 AND ",
                    $w,
                    " AND ($4::TEXT[] IS NULL OR message_type = ANY($4))"
                ),
                concat!(
                    "SELECT agent_id, seq, run_id, session_id, message_type, event FROM events ",
                    "WHERE agent_id = $1 AND ",
                    $w,
                    " AND ($4::TEXT[] IS NULL OR message_type = ANY($4))",
                ),
            )
        };
    }
    match (filter.session_id.is_some(), filter.run_id.is_some()) {
        (false, false) => sql!("$2::TEXT IS NULL AND $3::TEXT IS NULL"),
        (true, false) => sql!("session_id = $2 AND $3::TEXT IS NULL"),
        (false, true) => sql!("$2::TEXT IS NULL AND run_id = $3"),
        (true, true) => sql!("session_id = $2 AND run_id = $3"),
    }
}

fn log_row(r: &Row) -> StoreResult<(i64, LogRecord)> {
    let seq: i64 = col(r, 1)?;
    Ok((
        seq,
        LogRecord {
            agent_id: col(r, 0)?,
            seq: u64::try_from(seq).unwrap_or(0),
            event: json_col(r, 2)?,
        },
    ))
}

pub(super) async fn list_logs(
    c: &mut Object,
    account: &str,
    agent_id: &str,
    params: &ListParams,
) -> StoreResult<Page<LogRecord>> {
    let tx = snapshot(c).await?;
    check_agent(&tx, account, agent_id).await?;
    let page = paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM logs WHERE agent_id = $1",
            "SELECT agent_id, seq, event FROM logs
         WHERE agent_id = $1",
        ],
        ("seq", Order::Asc),
        &[&agent_id],
        params,
        log_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}
