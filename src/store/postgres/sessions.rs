//! Chat sessions of an agent: each statement checks the agent's account in
//! the same statement that reads or writes the session.

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::{
    agents::check_agent, col, db_err, execute, not_found, paging, query_opt, snapshot, write_err,
};
use crate::{
    domain::SessionId,
    store::{ListParams, Order, Page, Session, StoreError, StoreResult},
};

fn session_row(r: &Row) -> StoreResult<(i64, Session)> {
    Ok((
        col(r, 0)?,
        Session {
            id: col(r, 1)?,
            agent_id: col(r, 2)?,
            name: col(r, 3)?,
            created_at: col(r, 4)?,
        },
    ))
}

/// Inserts only if the agent is the account's: no row written means the
/// agent is missing (or another account's).
pub(super) async fn create_session(
    c: &impl GenericClient,
    account: &str,
    agent_id: &str,
    name: &str,
) -> StoreResult<Session> {
    let s = Session {
        id: SessionId::generate(),
        agent_id: agent_id.into(),
        name: name.to_owned(),
        created_at: crate::util::now(),
    };
    let written = execute(
        c,
        "INSERT INTO sessions (id, account_id, agent_id, name, created_at)
         SELECT $1, $2, $3, $4, $5
         WHERE EXISTS (SELECT 1 FROM agents WHERE id = $3 AND account_id = $2)",
        &[&s.id, &account, &s.agent_id, &s.name, &s.created_at],
        |e| write_err(e, |d| StoreError::Conflict(format!("session exists: {d}"))),
    )
    .await?;
    match written {
        0 => Err(not_found("agent")),
        _ => Ok(s),
    }
}

/// The agent row joined with the session: no row means no agent; a row
/// with a NULL session means no such session under that agent.
pub(super) async fn get_session(
    c: &impl GenericClient,
    account: &str,
    agent_id: &str,
    id: &str,
) -> StoreResult<Session> {
    let row = query_opt(
        c,
        "SELECT s.pk, s.id, s.agent_id, s.name, s.created_at
         FROM agents a LEFT JOIN sessions s
           ON s.agent_id = a.id AND s.id = $3 AND s.account_id = $2
         WHERE a.id = $1 AND a.account_id = $2",
        &[&agent_id, &account, &id],
    )
    .await?
    .ok_or_else(|| not_found("agent"))?;
    match col::<Option<i64>>(&row, 0)? {
        Some(_) => session_row(&row).map(|(_, s)| s),
        None => Err(not_found("session")),
    }
}

pub(super) async fn list_sessions(
    c: &mut Object,
    account: &str,
    agent_id: &str,
    params: &ListParams,
) -> StoreResult<Page<Session>> {
    let tx = snapshot(c).await?;
    check_agent(&tx, account, agent_id).await?;
    let page = paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM sessions WHERE agent_id = $1",
            "SELECT pk, id, agent_id, name, created_at FROM sessions
         WHERE agent_id = $1",
        ],
        ("pk", Order::Asc),
        &[&agent_id],
        params,
        session_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

/// Agent check and delete in one statement; the two counts say which of
/// them was missing.
pub(super) async fn delete_session(
    c: &impl GenericClient,
    account: &str,
    agent_id: &str,
    id: &str,
) -> StoreResult<()> {
    let row = query_opt(
        c,
        "WITH agent AS (SELECT id FROM agents WHERE id = $1 AND account_id = $2),
              gone AS (DELETE FROM sessions s USING agent
                       WHERE s.id = $3 AND s.agent_id = agent.id AND s.account_id = $2
                       RETURNING 1)
         SELECT (SELECT COUNT(*) FROM agent), (SELECT COUNT(*) FROM gone)",
        &[&agent_id, &account, &id],
    )
    .await?
    .ok_or_else(|| StoreError::Unavailable("postgres: delete_session returned no row".into()))?;
    let (agents, deleted): (i64, i64) = (col(&row, 0)?, col(&row, 1)?);
    match (agents, deleted) {
        (0, _) => Err(not_found("agent")),
        (_, 0) => Err(not_found("session")),
        _ => Ok(()),
    }
}
