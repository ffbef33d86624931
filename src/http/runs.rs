//! Runs as resources: `GET /v1/agents/{id}/runs`, `GET /v1/runs/{id}`,
//! `GET /v1/runs/{id}/messages`, `POST /v1/runs/{id}/cancel`; and an
//! agent's log lines, `GET /v1/agents/{id}/logs`.

use axum::{
    extract::{Path, State},
    http::Uri,
    Json,
};
use utoipa::IntoParams;

use super::{
    auth::Auth,
    errors::ApiError,
    params::{parse_list, query_of, ListQuery, Paged},
};
use crate::{
    domain::{AgentEvent, MessageType, RunId, RunStatus, SessionId},
    state::AppState,
    store::{EventFilter, Page, Run, RunFilter},
};

/// The run's status (`running`, `completed`, `cancelled`, `failed`).
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "chat", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, description = "run_not_found")))]
pub(crate) async fn get_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(run_id): Path<RunId>,
) -> Result<Json<Run>, ApiError> {
    auth.require("chat")?;
    Ok(Json(state.runtime.get_run(auth.account(), &run_id).await?))
}

/// Cancel a running run; its stream ends with `done` (`stop_reason: cancelled`).
/// Answers the run as stored afterwards.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "chat", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, description = "run_not_found")))]
pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(run_id): Path<RunId>,
) -> Result<Json<Run>, ApiError> {
    auth.require("chat")?;
    Ok(Json(
        state.runtime.cancel_run(auth.account(), &run_id).await?,
    ))
}

/// Filters of `GET /v1/agents/{id}/runs` (documentation of the query).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct RunsQuery {
    /// Only the runs in this status.
    #[param(required = false)]
    status: Option<RunStatus>,
    /// Only the runs of this session of the agent.
    #[param(required = false)]
    session_id: String,
}

/// The agent's runs, newest first (`order=asc`: oldest first).
#[utoipa::path(get, path = "/v1/agents/{id}/runs", tag = "chat",
    params(("id" = String, Path), crate::http::openapi::schemas::PageParams, RunsQuery),
    responses((status = 200, body = Page<Run>), (status = 404, description = "agent_not_found")))]
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    auth: Auth,
    Path(agent_id): Path<String>,
    uri: Uri,
) -> Result<Paged<Run>, ApiError> {
    auth.require("chat")?;
    let q = query_of(&uri)?;
    let params = parse_list(&q, &["status", "session_id"])?;
    let status = q
        .get("status")
        .map(|s| s.parse::<RunStatus>())
        .transpose()
        .map_err(|_| {
            let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::validation(format!("status: must be one of {}", known.join(", ")))
        })?;
    let filter = RunFilter {
        status,
        session_id: q.get("session_id").map(|s| SessionId::from(s.as_str())),
    };
    let account = auth.account();
    super::agents::owned(&state, account, &agent_id).await?;
    let page = state
        .store
        .list_runs(account, &agent_id, filter, params)
        .await?;
    Ok(Paged(page))
}

/// Filters of `GET /v1/runs/{id}/messages` (documentation of the query).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct RunMessagesQuery {
    /// Only events of these types (comma-separated `message_type`s).
    #[param(schema_with = message_types, required = false)]
    message_type: String,
}

fn message_types() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let one = MessageType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join("|");
    crate::domain::schema::schema_json(serde_json::json!({
        "type": "string", "pattern": format!("^({one})(,({one}))*$")
    }))
}

/// The run's events, oldest first, as stored (the `events.md` shapes).
#[utoipa::path(get, path = "/v1/runs/{id}/messages", tag = "chat",
    params(("id" = String, Path), crate::http::openapi::schemas::PageParams, RunMessagesQuery),
    responses((status = 200, description = "list envelope of the run's events", body = Page<crate::domain::ChannelEvent>),
        (status = 404, description = "run_not_found")))]
pub(crate) async fn list_run_messages(
    State(state): State<AppState>,
    auth: Auth,
    Path(run_id): Path<RunId>,
    uri: Uri,
) -> Result<Paged<AgentEvent>, ApiError> {
    auth.require("chat")?;
    let q = query_of(&uri)?;
    let params = parse_list(&q, &["message_type"])?;
    let message_types = q
        .get("message_type")
        .map(|v| {
            v.split(',')
                .map(|t| {
                    t.parse::<MessageType>().map_err(|_| {
                        ApiError::validation(format!("message_type: unknown type `{t}`"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let account = auth.account();
    let run = state.runtime.get_run(account, &run_id).await?;
    let filter = EventFilter {
        session_id: None,
        run_id: Some(run.id),
        message_types,
    };
    let page = state
        .store
        .list_events(account, run.agent_id.as_str(), filter, params)
        .await?;
    Ok(Paged(page.map(|r| r.event)))
}

/// The agent's log lines, oldest first, paginated.
#[utoipa::path(get, path = "/v1/agents/{id}/logs", tag = "logs",
    params(("id" = String, Path), crate::http::openapi::schemas::PageParams),
    responses((status = 200, description = "list envelope of log events", body = Page<crate::domain::LogLine>)))]
pub(crate) async fn list_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(agent_id): Path<String>,
    ListQuery(params): ListQuery,
) -> Result<Paged<AgentEvent>, ApiError> {
    auth.require("logs")?;
    let account = auth.account();
    super::agents::owned(&state, account, &agent_id).await?;
    let page = state.store.list_logs(account, &agent_id, params).await?;
    Ok(Paged(page.map(|r| r.event)))
}
