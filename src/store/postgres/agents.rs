//! Agents and tools: the per-account configuration records.

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::{
    col, db_err, execute, json_col, not_found, paging, query_opt, snapshot, to_json, write_err,
};
use crate::store::{
    records, Agent, AgentFilter, AgentPatch, ListParams, NewAgent, NewTool, Order, Page,
    StoreError, StoreResult, Tool,
};

macro_rules! agent_cols {
    () => {
        "pk, id, account_id, name, model, system, tools, tags, metadata, status, created_at, updated_at,
         approval_required"
    };
}

fn agent_row(r: &Row) -> StoreResult<(i64, Agent)> {
    Ok((
        col(r, 0)?,
        Agent {
            id: col(r, 1)?,
            account_id: col(r, 2)?,
            name: col(r, 3)?,
            model: col(r, 4)?,
            system: col(r, 5)?,
            tools: json_col(r, 6)?,
            tags: json_col(r, 7)?,
            metadata: json_col(r, 8)?,
            status: col(r, 9)?,
            created_at: col(r, 10)?,
            updated_at: col(r, 11)?,
            approval_required: json_col(r, 12)?,
        },
    ))
}

/// NotFound("agent") unless the agent exists and is `account`'s.
pub(super) async fn check_agent(
    c: &impl GenericClient,
    account: &str,
    id: &str,
) -> StoreResult<()> {
    let sql = "SELECT 1 FROM agents WHERE id = $1 AND account_id = $2";
    match query_opt(c, sql, &[&id, &account]).await? {
        Some(_) => Ok(()),
        None => Err(not_found("agent")),
    }
}

/// Account (if missing) and agent in one atomic statement.
pub(super) async fn create_agent(
    c: &impl GenericClient,
    account: &str,
    new: NewAgent,
) -> StoreResult<Agent> {
    let agent = records::new_agent(account, new);
    execute(
        c,
        "WITH account AS (
             INSERT INTO accounts (id, created_at) VALUES ($2, $10) ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO agents (id, account_id, name, model, system, tools, tags, metadata, status,
                             created_at, updated_at, approval_required)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &agent.id,
            &agent.account_id,
            &agent.name,
            &agent.model,
            &agent.system,
            &to_json(&agent.tools),
            &to_json(&agent.tags),
            &to_json(&agent.metadata),
            &agent.status,
            &agent.created_at,
            &agent.updated_at,
            &to_json(&agent.approval_required),
        ],
        |e| write_err(e, |d| StoreError::Conflict(format!("agent exists: {d}"))),
    )
    .await?;
    Ok(agent)
}

pub(super) async fn get_agent(
    c: &impl GenericClient,
    account: &str,
    id: &str,
) -> StoreResult<Agent> {
    let sql = concat!(
        "SELECT ",
        agent_cols!(),
        " FROM agents WHERE id = $1 AND account_id = $2"
    );
    match query_opt(c, sql, &[&id, &account]).await? {
        Some(r) => agent_row(&r).map(|(_, a)| a),
        None => Err(not_found("agent")),
    }
}

/// The agents of `$1` named `$2` (if set) with at least `$4` of the tags
/// `$3` (if set): SQLite's `agents_where`.
macro_rules! agents_where {
    () => {
        " FROM agents WHERE account_id = $1 AND ($2::TEXT IS NULL OR name = $2)
           AND ($3::TEXT[] IS NULL OR (SELECT COUNT(DISTINCT t)
                 FROM jsonb_array_elements_text(agents.tags::jsonb) t WHERE t = ANY($3)) >= $4)"
    };
}

pub(super) async fn list_agents(
    c: &mut Object,
    account: &str,
    filter: &AgentFilter,
    params: &ListParams,
) -> StoreResult<Page<Agent>> {
    let (tags, need) = filter.wanted_tags();
    let tx = snapshot(c).await?;
    let page = paging::page(
        &tx,
        [
            concat!("SELECT COUNT(*)", agents_where!()),
            concat!("SELECT ", agent_cols!(), agents_where!()),
        ],
        ("pk", Order::Asc),
        &[&account, &filter.name, &tags, &need],
        params,
        agent_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

/// One `UPDATE … RETURNING`: each field is the patch's value or the row's
/// current one, decided under the row lock, so concurrent patches of
/// different fields (from any number of store processes) never undo each
/// other — what SQLite gets from its single writer.
pub(super) async fn update_agent(
    c: &impl GenericClient,
    account: &str,
    id: &str,
    patch: AgentPatch,
) -> StoreResult<Agent> {
    let sql = concat!(
        "UPDATE agents SET name = COALESCE($3, name), model = COALESCE($4, model),
                system = COALESCE($5, system), tools = COALESCE($6, tools),
                tags = COALESCE($7, tags), metadata = COALESCE($8, metadata),
                status = COALESCE($9, status), updated_at = $10,
                approval_required = COALESCE($11, approval_required)
         WHERE id = $1 AND account_id = $2 RETURNING ",
        agent_cols!()
    );
    let row = query_opt(
        c,
        sql,
        &[
            &id,
            &account,
            &patch.name,
            &patch.model,
            &patch.system,
            &patch.tools.as_ref().map(to_json),
            &patch.tags.as_ref().map(to_json),
            &patch.metadata.as_ref().map(to_json),
            &patch.status,
            &crate::util::now(),
            &patch.approval_required.as_ref().map(to_json),
        ],
    )
    .await?;
    match row {
        Some(r) => agent_row(&r).map(|(_, a)| a),
        None => Err(not_found("agent")),
    }
}

/// Sessions, runs, events and logs go with it through `ON DELETE CASCADE`.
pub(super) async fn delete_agent(
    c: &impl GenericClient,
    account: &str,
    id: &str,
) -> StoreResult<()> {
    let sql = "DELETE FROM agents WHERE id = $1 AND account_id = $2";
    match execute(c, sql, &[&id, &account], db_err).await? {
        0 => Err(not_found("agent")),
        _ => Ok(()),
    }
}

macro_rules! tool_cols {
    () => {
        "pk, id, account_id, name, description, json_schema, kind, url, created_at, requires_approval"
    };
}

fn tool_row(r: &Row) -> StoreResult<(i64, Tool)> {
    Ok((
        col(r, 0)?,
        Tool {
            id: col(r, 1)?,
            account_id: col(r, 2)?,
            name: col(r, 3)?,
            description: col(r, 4)?,
            json_schema: json_col(r, 5)?,
            kind: col(r, 6)?,
            url: col(r, 7)?,
            created_at: col(r, 8)?,
            requires_approval: col::<i64>(r, 9)? != 0,
        },
    ))
}

pub(super) async fn create_tool(
    c: &impl GenericClient,
    account: &str,
    new: NewTool,
) -> StoreResult<Tool> {
    let tool = records::new_tool(account, new);
    execute(
        c,
        "WITH account AS (
             INSERT INTO accounts (id, created_at) VALUES ($2, $8) ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO tools (id, account_id, name, description, json_schema, kind, url, created_at,
                            requires_approval)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &tool.id,
            &tool.account_id,
            &tool.name,
            &tool.description,
            &to_json(&tool.json_schema),
            &tool.kind,
            &tool.url,
            &tool.created_at,
            &i64::from(tool.requires_approval),
        ],
        |e| {
            write_err(e, |_| {
                StoreError::Conflict(format!("a tool named `{}` already exists", tool.name))
            })
        },
    )
    .await?;
    Ok(tool)
}

pub(super) async fn get_tool(c: &impl GenericClient, account: &str, id: &str) -> StoreResult<Tool> {
    let sql = concat!(
        "SELECT ",
        tool_cols!(),
        " FROM tools WHERE id = $1 AND account_id = $2"
    );
    match query_opt(c, sql, &[&id, &account]).await? {
        Some(r) => tool_row(&r).map(|(_, t)| t),
        None => Err(not_found("tool")),
    }
}

pub(super) async fn list_tools(
    c: &mut Object,
    account: &str,
    params: &ListParams,
) -> StoreResult<Page<Tool>> {
    let tx = snapshot(c).await?;
    let page = paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM tools WHERE account_id = $1",
            concat!("SELECT ", tool_cols!(), " FROM tools WHERE account_id = $1"),
        ],
        ("pk", Order::Asc),
        &[&account],
        params,
        tool_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

pub(super) async fn delete_tool(
    c: &impl GenericClient,
    account: &str,
    id: &str,
) -> StoreResult<()> {
    let sql = "DELETE FROM tools WHERE id = $1 AND account_id = $2";
    match execute(c, sql, &[&id, &account], db_err).await? {
        0 => Err(not_found("tool")),
        _ => Ok(()),
    }
}
