//! `GET /v1/runs/{id}`, `POST /v1/runs/{id}/cancel`, `GET /v1/agents/{id}/logs`.

use axum::{
    extract::{Path, State},
    Json,
};

use super::{auth::Auth, errors::ApiError, params::ListQuery};
use crate::{
    domain::{AgentEvent, RunId},
    state::AppState,
    store::{Page, Run},
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

/// The agent's log lines, oldest first, paginated.
#[utoipa::path(get, path = "/v1/agents/{id}/logs", tag = "logs",
    params(("id" = String, Path), crate::http::openapi::schemas::PageParams),
    responses((status = 200, description = "list envelope of log events", body = Page<crate::domain::LogLine>)))]
pub(crate) async fn list_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(agent_id): Path<String>,
    ListQuery(params): ListQuery,
) -> Result<Json<Page<AgentEvent>>, ApiError> {
    auth.require("logs")?;
    let account = auth.account();
    super::agents::owned(&state, account, &agent_id).await?;
    let page = state.store.list_logs(account, &agent_id, params).await?;
    Ok(Json(page.map(|r| r.event)))
}
