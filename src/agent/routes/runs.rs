//! `GET /v1/runs/{id}`, `POST /v1/runs/{id}/cancel`, `GET /v1/agents/{id}/logs`.

use crate::{
    domain::{AgentEvent, ErrorCode, RunId},
    http::{auth::Auth, errors::ApiError, params::ListQuery},
    state::AppState,
    store::{Page, Run},
};
use axum::{
    extract::{Path, State},
    Json,
};

/// The run's status (`running`, `completed`, `cancelled`, `failed`).
pub(super) async fn get_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(run_id): Path<RunId>,
) -> Result<Json<Run>, ApiError> {
    auth.require("chat")?;
    Ok(Json(state.runtime.get_run(auth.account(), &run_id).await?))
}

/// Cancels the run and answers it as stored afterwards.
pub(super) async fn cancel_run(
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
pub(super) async fn list_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(agent_id): Path<String>,
    ListQuery(params): ListQuery,
) -> Result<Json<Page<AgentEvent>>, ApiError> {
    auth.require("logs")?;
    let account = auth.account();
    state
        .store
        .get_agent(account, &agent_id)
        .await
        .map_err(|e| ApiError::from_store(e, ErrorCode::AgentNotFound))?;
    let page = state.store.list_logs(account, &agent_id, params).await?;
    Ok(Json(page.map(|r| r.event)))
}
