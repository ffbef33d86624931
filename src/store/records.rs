//! New records as both SQL stores create them: a fresh prefixed id, the
//! account, the creation time and the initial status are filled in here, so
//! an agent or tool made by SQLite is shaped exactly like one made by
//! PostgreSQL.

use super::{Agent, NewAgent, NewTool, Tool};
use crate::domain::{AgentId, AgentStatus, ToolId};

/// A new agent of `account`: running, created and updated now.
pub(super) fn new_agent(account: &str, new: NewAgent) -> Agent {
    let now = crate::util::now();
    Agent {
        id: AgentId::generate(),
        account_id: account.to_owned(),
        name: new.name,
        model: new.model,
        system: new.system,
        tools: new.tools,
        tags: new.tags,
        metadata: new.metadata,
        approval_required: new.approval_required,
        status: AgentStatus::Running,
        created_at: now.clone(),
        updated_at: now,
    }
}

/// A new tool of `account`, created now.
pub(super) fn new_tool(account: &str, new: NewTool) -> Tool {
    Tool {
        id: ToolId::generate(),
        account_id: account.to_owned(),
        name: new.name,
        description: new.description,
        json_schema: new.json_schema,
        kind: new.kind,
        url: new.url,
        requires_approval: new.requires_approval,
        created_at: crate::util::now(),
    }
}
