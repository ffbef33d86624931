//! `/v1/agents`: create, list, read, change, delete, start and stop agents.

use std::collections::HashMap;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    audit::AuditTarget,
    auth::Auth,
    errors::{ApiError, ApiJson},
    openapi::schemas,
    params::{parse_list, query_of, Paged},
    record,
};
use crate::{
    domain::{AgentId, AgentStatus, ErrorCode},
    state::AppState,
    store::{Agent, AgentFilter, AgentPatch, NewAgent, Page},
    webhooks::WebhookEvent,
};

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Trimmed; 1 to 200 characters after trimming.
    #[schema(schema_with = schemas::agent_name)]
    pub name: String,
    /// `echo` (built in) or `upstream/<model>`. Default `echo`.
    #[serde(default = "default_model")]
    #[schema(schema_with = schemas::agent_model)]
    pub model: String,
    #[serde(default)]
    pub system: String,
    /// Built-in tool names, or ids (`tool-…`) of this account's tools.
    #[serde(default)]
    #[schema(schema_with = schemas::agent_tools)]
    pub tools: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = schemas::agent_tags)]
    pub tags: Vec<String>,
    /// Free-form object (e.g. `{"echo_delay_ms": 20}`).
    #[serde(default = "empty_object")]
    #[schema(schema_with = schemas::agent_metadata)]
    pub metadata: Value,
    /// Built-in tools whose every call waits for a person's approval.
    #[serde(default)]
    #[schema(schema_with = schemas::agent_approval_required)]
    pub approval_required: Vec<String>,
}

/// Body of `PATCH /v1/agents/{id}`: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[schema(schema_with = schemas::agent_name_or_null)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::agent_model_or_null)]
    pub model: Option<String>,
    pub system: Option<String>,
    #[schema(schema_with = schemas::agent_tools_or_null)]
    pub tools: Option<Vec<String>>,
    #[schema(schema_with = schemas::agent_tags_or_null)]
    pub tags: Option<Vec<String>>,
    #[schema(schema_with = schemas::agent_metadata_or_null)]
    pub metadata: Option<Value>,
    #[schema(schema_with = schemas::agent_approval_required_or_null)]
    pub approval_required: Option<Vec<String>>,
}

fn default_model() -> String {
    "echo".into()
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name: must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

fn check_model(model: &str) -> Result<(), ApiError> {
    let upstream = model
        .strip_prefix("upstream/")
        .is_some_and(|m| !m.is_empty());
    if model == "echo" || upstream {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "model: must be `echo` or `upstream/<model>`, got `{model}`"
        )))
    }
}

/// 404 `model_not_found` unless the key may use `model` (its `models`):
/// the answer OpenAI gives, which does not say whether the model exists.
fn may_use(auth: &Auth, model: &str) -> Result<(), ApiError> {
    match auth.key.allows_model(model) {
        true => Ok(()),
        false => Err(ApiError::new(
            ErrorCode::ModelNotFound,
            crate::agent::model_refused(model),
        )),
    }
}

fn check_metadata(v: &Value) -> Result<(), ApiError> {
    if v.is_object() {
        Ok(())
    } else {
        Err(ApiError::validation("metadata: must be a JSON object"))
    }
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > 32 {
        return Err(ApiError::validation("tags: at most 32 tags"));
    }
    // Characters, not bytes: what a JSON Schema `maxLength` can say.
    match tags
        .iter()
        .position(|t| t.is_empty() || t.chars().count() > 64)
    {
        Some(i) => Err(ApiError::validation(format!(
            "tags[{i}]: must be 1 to 64 characters"
        ))),
        None => Ok(()),
    }
}

/// `approval_required` names built-in tools only; every unknown name is
/// listed in the 400 (a typo would otherwise let the tool run unasked).
/// Duplicates are dropped, first occurrence kept.
fn check_approval_required(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !crate::domain::BUILTIN_TOOLS.contains(&n.as_str()))
        .map(|n| format!("`{n}`"))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::validation(format!(
            "approval_required: unknown tool names {} (built-in tools: {})",
            unknown.join(", "),
            crate::domain::BUILTIN_TOOLS.join(", ")
        )));
    }
    let mut kept: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if !kept.contains(&n) {
            kept.push(n);
        }
    }
    Ok(kept)
}

/// Tool ids must name a tool of this account; other entries are built-in
/// names, resolved by the runtime.
async fn check_tools(state: &AppState, account: &str, tools: &[String]) -> Result<(), ApiError> {
    if tools.len() > 64 {
        return Err(ApiError::validation("tools: at most 64 tools"));
    }
    for (i, t) in tools.iter().enumerate() {
        let builtin_name = !t.is_empty()
            && t.len() <= 64
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if t.starts_with("tool-") {
            if let Err(e) = state.store.get_tool(account, t).await {
                return Err(match e {
                    crate::store::StoreError::NotFound(_) => {
                        ApiError::validation(format!("tools[{i}]: no tool `{t}`"))
                    }
                    other => other.into(),
                });
            }
        } else if !builtin_name {
            return Err(ApiError::validation(format!(
                "tools[{i}]: `{t}` is neither a tool id nor a built-in tool name"
            )));
        }
    }
    Ok(())
}

/// Create an agent.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = Agent), (status = 400, description = "validation_error"),
        (status = 404, description = "model_not_found: a model the key may not use (its `models`)")))]
pub async fn create_agent(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, AuditTarget, Json<Agent>), ApiError> {
    let name = check_name(&body.name)?;
    check_model(&body.model)?;
    may_use(&auth, &body.model)?;
    check_metadata(&body.metadata)?;
    check_tags(&body.tags)?;
    check_tools(&state, auth.account(), &body.tools).await?;
    let approval_required = check_approval_required(body.approval_required)?;
    let agent = NewAgent {
        name,
        model: body.model,
        system: body.system,
        tools: body.tools,
        tags: body.tags,
        metadata: body.metadata,
        approval_required,
    };
    let created = state.store.create_agent(auth.account(), agent).await?;
    announce(&state, auth.account(), WebhookEvent::AgentCreated, &created);
    let target = AuditTarget(created.id.to_string());
    Ok((StatusCode::CREATED, target, Json(public(created))))
}

/// Filters of `GET /v1/agents` (documentation of the query).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct AgentQuery {
    /// Only the agents of exactly this name.
    #[param(schema_with = schemas::agent_name, required = false)]
    name: String,
    /// Only the agents with one of these tags (comma-separated, 1 to 32
    /// tags of 1 to 64 characters).
    #[param(schema_with = schemas::tag_list, required = false)]
    tags: String,
    /// Only the agents with every one of `tags`. Default `false`.
    #[param(required = false)]
    match_all_tags: bool,
}

/// List the account's agents, oldest first; `name` and `tags` filter.
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    params(schemas::PageParams, AgentQuery),
    responses((status = 200, body = Page<Agent>)))]
pub async fn list_agents(
    State(state): State<AppState>,
    auth: Auth,
    uri: axum::http::Uri,
) -> Result<Paged<Agent>, ApiError> {
    let q = query_of(&uri)?;
    let params = parse_list(&q, &["name", "tags", "match_all_tags"])?;
    let filter = agent_filter(&q)?;
    let page = state
        .store
        .list_agents(auth.account(), filter, params)
        .await?;
    Ok(Paged(page.map(public)))
}

/// `name` (exact, after trimming), `tags` (comma-separated, each 1 to 64
/// characters) and `match_all_tags` (`true` or `false`).
fn agent_filter(q: &HashMap<String, String>) -> Result<AgentFilter, ApiError> {
    let name = q.get("name").map(|n| check_name(n)).transpose()?;
    let tags: Vec<String> = match q.get("tags") {
        Some(t) => t.split(',').map(str::to_owned).collect(),
        None => Vec::new(),
    };
    check_tags(&tags)?;
    let match_all_tags = match q.get("match_all_tags").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::validation(format!(
                "match_all_tags: must be `true` or `false`, got `{v}`"
            )))
        }
    };
    Ok(AgentFilter {
        name,
        tags,
        match_all_tags,
    })
}

/// Read one agent.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, description = "agent_not_found")))]
pub async fn get_agent(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    let agent = state.store.get_agent(auth.account(), &id).await;
    record::found(agent.map(public), NOT_FOUND)
}

/// `id` if `account` owns it, else 404 `agent_not_found`: the check a
/// route under `/v1/agents/{id}/…` makes before it touches the bus or the
/// agent's runs and logs.
pub(super) async fn owned(state: &AppState, account: &str, id: &str) -> Result<Agent, ApiError> {
    state
        .store
        .get_agent(account, id)
        .await
        .map_err(|e| ApiError::from_store(e, ErrorCode::AgentNotFound))
}

/// Change some fields of an agent.
#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)), request_body = UpdateAgent,
    responses((status = 200, body = Agent), (status = 404, description = "agent_not_found; model_not_found: a model the key may not use (its `models`)")))]
pub async fn update_agent(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<Agent>, ApiError> {
    let name = body.name.as_deref().map(check_name).transpose()?;
    if let Some(m) = &body.model {
        check_model(m)?;
        may_use(&auth, m)?;
    }
    if let Some(m) = &body.metadata {
        check_metadata(m)?;
    }
    if let Some(t) = &body.tags {
        check_tags(t)?;
    }
    if let Some(t) = &body.tools {
        check_tools(&state, auth.account(), t).await?;
    }
    let approval_required = body
        .approval_required
        .map(check_approval_required)
        .transpose()?;
    let patch = AgentPatch {
        name,
        model: body.model,
        system: body.system,
        tools: body.tools,
        tags: body.tags,
        metadata: body.metadata,
        status: None,
        approval_required,
    };
    let agent = state.store.update_agent(auth.account(), &id, patch).await;
    if let Ok(a) = &agent {
        announce(&state, auth.account(), WebhookEvent::AgentUpdated, a);
    }
    record::found(agent.map(public), NOT_FOUND)
}

/// Delete an agent with its sessions, runs, messages and logs.
#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "agent_not_found")))]
pub async fn delete_agent(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let gone = state.store.delete_agent(auth.account(), &id).await;
    if gone.is_ok() {
        state.checks.forget_agent(auth.account(), &id);
        let agent_id = AgentId::from(id);
        let data = serde_json::json!({"agent_id": agent_id});
        let hooks = &state.webhooks.notifier;
        hooks.notify(
            auth.account(),
            WebhookEvent::AgentDeleted,
            Some(&agent_id),
            data,
        );
    }
    record::deleted(gone, NOT_FOUND)
}

/// Let the agent accept messages again.
#[utoipa::path(post, path = "/v1/agents/{id}/start", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Agent)))]
pub async fn start_agent(
    state: State<AppState>,
    auth: Auth,
    id: Path<String>,
) -> Result<Json<Agent>, ApiError> {
    set_status(state, auth, id, AgentStatus::Running).await
}

/// Refuse new messages (409 `agent_stopped`) until started again.
#[utoipa::path(post, path = "/v1/agents/{id}/stop", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Agent)))]
pub async fn stop_agent(
    state: State<AppState>,
    auth: Auth,
    id: Path<String>,
) -> Result<Json<Agent>, ApiError> {
    set_status(state, auth, id, AgentStatus::Stopped).await
}

async fn set_status(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    status: AgentStatus,
) -> Result<Json<Agent>, ApiError> {
    let patch = AgentPatch {
        status: Some(status),
        ..Default::default()
    };
    let agent = state.store.update_agent(auth.account(), &id, patch).await;
    if let Ok(a) = &agent {
        announce(&state, auth.account(), WebhookEvent::AgentUpdated, a);
    }
    record::found(agent.map(public), NOT_FOUND)
}

/// Queues the webhook event of a change to `agent` (never waits).
fn announce(state: &AppState, account: &str, event: WebhookEvent, agent: &Agent) {
    let data = serde_json::json!({"agent_id": agent.id, "agent": public(agent.clone())});
    let hooks = &state.webhooks.notifier;
    hooks.notify(account, event, Some(&agent.id), data);
}

/// The code of a missing (or another account's) agent.
const NOT_FOUND: ErrorCode = ErrorCode::AgentNotFound;

/// The client's view: the account is implied by the key.
fn public(mut agent: Agent) -> Agent {
    agent.account_id.clear();
    agent
}
