//! Agents, tools and sessions: the per-account configuration records.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{accounts, db_err, json_col, not_found, paging, to_json, unique_violation};
use crate::domain::SessionId;
use crate::store::{
    records, Agent, AgentFilter, AgentPatch, ListParams, NewAgent, NewTool, Order, Page, Session,
    StoreError, StoreResult, Tool,
};

macro_rules! agent_cols {
    () => {
        "pk, id, account_id, name, model, system, tools, tags, metadata, status, created_at, updated_at,
         approval_required"
    };
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<(i64, Agent)> {
    Ok((
        r.get(0)?,
        Agent {
            id: r.get(1)?,
            account_id: r.get(2)?,
            name: r.get(3)?,
            model: r.get(4)?,
            system: r.get(5)?,
            tools: json_col(r, 6)?,
            tags: json_col(r, 7)?,
            metadata: json_col(r, 8)?,
            status: r.get(9)?,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
            approval_required: json_col(r, 12)?,
        },
    ))
}

/// NotFound("agent") unless the agent exists and is `account`'s.
pub(super) fn check_agent(conn: &Connection, account: &str, id: &str) -> StoreResult<()> {
    conn.prepare_cached("SELECT 1 FROM agents WHERE id = ?1 AND account_id = ?2")
        .and_then(|mut s| s.exists(params![id, account]))
        .map_err(db_err)?
        .then_some(())
        .ok_or_else(|| not_found("agent"))
}

pub(super) fn create_agent(
    conn: &mut Connection,
    account: &str,
    new: NewAgent,
) -> StoreResult<Agent> {
    let tx = conn.transaction().map_err(db_err)?;
    accounts::ensure_account(&tx, account)?;
    let agent = records::new_agent(account, new);
    write_agent(&tx, &agent, true)?;
    tx.commit().map_err(db_err)?;
    Ok(agent)
}

/// Inserts a new agent or rewrites an existing one's mutable fields (the
/// UPDATE leaves `?10`, `created_at`, unused: SQLite allows gaps).
fn write_agent(conn: &Connection, a: &Agent, insert: bool) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO agents (id, account_id, name, model, system, tools, tags, metadata, status,
                             created_at, updated_at, approval_required)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    } else {
        "UPDATE agents SET name = ?3, model = ?4, system = ?5, tools = ?6, tags = ?7,
                metadata = ?8, status = ?9, updated_at = ?11, approval_required = ?12
         WHERE id = ?1 AND account_id = ?2"
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                a.id,
                a.account_id,
                a.name,
                a.model,
                a.system,
                to_json(&a.tools),
                to_json(&a.tags),
                to_json(&a.metadata),
                a.status,
                a.created_at,
                a.updated_at,
                to_json(&a.approval_required)
            ])
        })
        .map_err(db_err)?;
    Ok(())
}

pub(super) fn get_agent(conn: &Connection, account: &str, id: &str) -> StoreResult<Agent> {
    conn.prepare_cached(concat!(
        "SELECT ",
        agent_cols!(),
        " FROM agents WHERE id = ?1 AND account_id = ?2"
    ))
    .and_then(|mut s| s.query_row(params![id, account], agent_row).optional())
    .map_err(db_err)?
    .map(|(_, a)| a)
    .ok_or_else(|| not_found("agent"))
}

/// The agents of `?1` named `?2` (if set) with at least `?4` of the tags
/// in the JSON array `?3` (if set): 1 for any tag, all of them for
/// `match_all_tags`.
macro_rules! agents_where {
    () => {
        " FROM agents WHERE account_id = ?1 AND (?2 IS NULL OR name = ?2)
           AND (?3 IS NULL OR (SELECT COUNT(DISTINCT t.value) FROM json_each(agents.tags) t
                               WHERE t.value IN (SELECT value FROM json_each(?3))) >= ?4)"
    };
}

pub(super) fn list_agents(
    conn: &Connection,
    account: &str,
    filter: &AgentFilter,
    params: &ListParams,
) -> StoreResult<Page<Agent>> {
    let (tags, need) = filter.wanted_tags();
    let tags = tags.map(|t| serde_json::Value::from(t).to_string());
    paging::page(
        conn,
        [
            concat!("SELECT COUNT(*)", agents_where!()),
            concat!("SELECT ", agent_cols!(), agents_where!()),
        ],
        ("pk", Order::Asc),
        &[&account, &filter.name, &tags, &need],
        params,
        agent_row,
    )
}

/// Read, patch and write in one transaction so concurrent patches of
/// different fields do not undo each other.
pub(super) fn update_agent(
    conn: &mut Connection,
    account: &str,
    id: &str,
    patch: AgentPatch,
) -> StoreResult<Agent> {
    let tx = conn.transaction().map_err(db_err)?;
    let mut a = get_agent(&tx, account, id)?;
    let AgentPatch {
        name,
        model,
        system,
        tools,
        tags,
        metadata,
        status,
        approval_required,
    } = patch;
    a.name = name.unwrap_or(a.name);
    a.model = model.unwrap_or(a.model);
    a.system = system.unwrap_or(a.system);
    a.tools = tools.unwrap_or(a.tools);
    a.tags = tags.unwrap_or(a.tags);
    a.metadata = metadata.unwrap_or(a.metadata);
    a.status = status.unwrap_or(a.status);
    a.approval_required = approval_required.unwrap_or(a.approval_required);
    a.updated_at = crate::util::now();
    write_agent(&tx, &a, false)?;
    tx.commit().map_err(db_err)?;
    Ok(a)
}

/// Sessions, runs, events and logs go with it through `ON DELETE CASCADE`.
pub(super) fn delete_agent(conn: &Connection, account: &str, id: &str) -> StoreResult<()> {
    let n = conn
        .prepare_cached("DELETE FROM agents WHERE id = ?1 AND account_id = ?2")
        .and_then(|mut s| s.execute(params![id, account]))
        .map_err(db_err)?;
    if n == 0 {
        return Err(not_found("agent"));
    }
    Ok(())
}

macro_rules! tool_cols {
    () => {
        "pk, id, account_id, name, description, json_schema, kind, url, created_at, requires_approval"
    };
}

fn tool_row(r: &Row<'_>) -> rusqlite::Result<(i64, Tool)> {
    Ok((
        r.get(0)?,
        Tool {
            id: r.get(1)?,
            account_id: r.get(2)?,
            name: r.get(3)?,
            description: r.get(4)?,
            json_schema: json_col(r, 5)?,
            kind: r.get(6)?,
            url: r.get(7)?,
            created_at: r.get(8)?,
            requires_approval: r.get::<_, i64>(9)? != 0,
        },
    ))
}

pub(super) fn create_tool(conn: &mut Connection, account: &str, new: NewTool) -> StoreResult<Tool> {
    let tx = conn.transaction().map_err(db_err)?;
    accounts::ensure_account(&tx, account)?;
    let tool = records::new_tool(account, new);
    tx.prepare_cached(
        "INSERT INTO tools (id, account_id, name, description, json_schema, kind, url, created_at,
                            requires_approval)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tool.id,
            tool.account_id,
            tool.name,
            tool.description,
            to_json(&tool.json_schema),
            tool.kind,
            tool.url,
            tool.created_at,
            i64::from(tool.requires_approval)
        ])
    })
    .map_err(|e| match unique_violation(&e) {
        true => StoreError::Conflict(format!("a tool named `{}` already exists", tool.name)),
        false => db_err(e),
    })?;
    tx.commit().map_err(db_err)?;
    Ok(tool)
}

pub(super) fn get_tool(conn: &Connection, account: &str, id: &str) -> StoreResult<Tool> {
    conn.prepare_cached(concat!(
        "SELECT ",
        tool_cols!(),
        " FROM tools WHERE id = ?1 AND account_id = ?2"
    ))
    .and_then(|mut s| s.query_row(params![id, account], tool_row).optional())
    .map_err(db_err)?
    .map(|(_, t)| t)
    .ok_or_else(|| not_found("tool"))
}

pub(super) fn list_tools(
    conn: &Connection,
    account: &str,
    params: &ListParams,
) -> StoreResult<Page<Tool>> {
    paging::page(
        conn,
        [
            "SELECT COUNT(*) FROM tools WHERE account_id = ?1",
            concat!("SELECT ", tool_cols!(), " FROM tools WHERE account_id = ?1"),
        ],
        ("pk", Order::Asc),
        &[&account],
        params,
        tool_row,
    )
}

pub(super) fn delete_tool(conn: &Connection, account: &str, id: &str) -> StoreResult<()> {
    let n = conn
        .prepare_cached("DELETE FROM tools WHERE id = ?1 AND account_id = ?2")
        .and_then(|mut s| s.execute(params![id, account]))
        .map_err(db_err)?;
    if n == 0 {
        return Err(not_found("tool"));
    }
    Ok(())
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<(i64, Session)> {
    Ok((
        r.get(0)?,
        Session {
            id: r.get(1)?,
            agent_id: r.get(2)?,
            name: r.get(3)?,
            created_at: r.get(4)?,
        },
    ))
}

pub(super) fn create_session(
    conn: &mut Connection,
    account: &str,
    agent_id: &str,
    name: &str,
) -> StoreResult<Session> {
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, agent_id)?;
    let s = Session {
        id: SessionId::generate(),
        agent_id: agent_id.into(),
        name: name.to_owned(),
        created_at: crate::util::now(),
    };
    tx.prepare_cached(
        "INSERT INTO sessions (id, account_id, agent_id, name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![s.id, account, s.agent_id, s.name, s.created_at]))
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(s)
}

pub(super) fn get_session(
    conn: &Connection,
    account: &str,
    agent_id: &str,
    id: &str,
) -> StoreResult<Session> {
    check_agent(conn, account, agent_id)?;
    conn.prepare_cached(
        "SELECT pk, id, agent_id, name, created_at FROM sessions
         WHERE id = ?1 AND agent_id = ?2 AND account_id = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![id, agent_id, account], session_row)
            .optional()
    })
    .map_err(db_err)?
    .map(|(_, s)| s)
    .ok_or_else(|| not_found("session"))
}

pub(super) fn list_sessions(
    conn: &mut Connection,
    account: &str,
    agent_id: &str,
    params: &ListParams,
) -> StoreResult<Page<Session>> {
    // One read transaction: the agent check, the count and the rows see the
    // same snapshot.
    let tx = conn.transaction().map_err(db_err)?;
    check_agent(&tx, account, agent_id)?;
    paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM sessions WHERE agent_id = ?1",
            "SELECT pk, id, agent_id, name, created_at FROM sessions
         WHERE agent_id = ?1",
        ],
        ("pk", Order::Asc),
        &[&agent_id],
        params,
        session_row,
    )
}

pub(super) fn delete_session(
    conn: &Connection,
    account: &str,
    agent_id: &str,
    id: &str,
) -> StoreResult<()> {
    check_agent(conn, account, agent_id)?;
    let n = conn
        .prepare_cached("DELETE FROM sessions WHERE id = ?1 AND agent_id = ?2 AND account_id = ?3")
        .and_then(|mut s| s.execute(params![id, agent_id, account]))
        .map_err(db_err)?;
    if n == 0 {
        return Err(not_found("session"));
    }
    Ok(())
}
