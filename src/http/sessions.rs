//! `/v1/agents/{id}/sessions`: chat sessions; an agent's messages belong to one.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    audit::AuditTarget,
    auth::Auth,
    errors::{parse_json, ApiError},
    params::{ListQuery, Paged},
};
use crate::{
    domain::ErrorCode,
    state::AppState,
    store::{Page, Session, StoreError},
};

/// Body of `POST /v1/agents/{id}/sessions` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: String,
}

/// A missing agent says so; a missing session says so.
fn not_found(e: StoreError) -> ApiError {
    match &e {
        StoreError::NotFound(what) if what == "agent" => {
            ApiError::from_store(e, ErrorCode::AgentNotFound)
        }
        _ => ApiError::from_store(e, ErrorCode::SessionNotFound),
    }
}

/// Open a chat session on an agent.
#[utoipa::path(post, path = "/v1/agents/{id}/sessions", tag = "sessions", params(("id" = String, Path)),
    request_body(content = Option<CreateSession>, description = "optional: an empty body is `{}`"),
    responses((status = 201, body = Session), (status = 404, description = "agent_not_found")))]
pub async fn create_session(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<Session>), ApiError> {
    let body: CreateSession = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSession::default()
    } else {
        parse_json(&body)?
    };
    if body.name.chars().count() > 200 {
        return Err(ApiError::validation("name: at most 200 characters"));
    }
    let session = state
        .store
        .create_session(auth.account(), &id, body.name.trim())
        .await
        .map_err(not_found)?;
    let target = AuditTarget(session.id.to_string());
    Ok((StatusCode::CREATED, target, Json(session)))
}

/// List an agent's sessions, oldest first.
#[utoipa::path(get, path = "/v1/agents/{id}/sessions", tag = "sessions",
    params(("id" = String, Path), super::openapi::schemas::PageParams),
    responses((status = 200, body = Page<Session>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ListQuery(params): ListQuery,
) -> Result<Paged<Session>, ApiError> {
    Ok(Paged(
        state
            .store
            .list_sessions(auth.account(), &id, params)
            .await
            .map_err(not_found)?,
    ))
}

/// Delete a session and its messages.
#[utoipa::path(delete, path = "/v1/agents/{id}/sessions/{sid}", tag = "sessions",
    params(("id" = String, Path), ("sid" = String, Path)),
    responses((status = 204), (status = 404, description = "session_not_found")))]
pub async fn delete_session(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, sid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_session(auth.account(), &id, &sid)
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}
