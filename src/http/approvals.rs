//! `POST /v1/runs/{id}/approvals/{approval_id}`: deciding a tool call that
//! waits for approval ([`crate::agent::approval`]).

use axum::{
    extract::{Path, State},
    Extension, Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    auth::Auth,
    errors::{ApiError, ApiJson},
    limits::Metered,
};
use crate::{
    domain::{ApprovalDecision, RunId},
    state::AppState,
    store::ApprovalVerdict,
};

/// A decision on an `approval_request`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    /// `approve` (the tool runs) or `deny` (it does not).
    #[schema(schema_with = decisions)]
    pub decision: String,
    /// Why; shown in `approval_response` and, on deny, to the model.
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

fn decisions() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::domain::schema::schema_json(
        serde_json::json!({"type": "string", "enum": ["approve", "deny"]}),
    )
}

/// The approval as decided.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalDecided {
    pub approval_id: String,
    pub run_id: String,
    #[schema(schema_with = decisions)]
    pub decision: String,
    /// The deciding key.
    pub key_id: String,
}

/// What a decision body means, checked.
pub fn verdict(
    decision: &str,
    reason: Option<String>,
    key_id: &str,
) -> Result<ApprovalVerdict, ApiError> {
    let decision = match decision {
        "approve" => ApprovalDecision::Approve,
        "deny" => ApprovalDecision::Deny,
        _ => {
            return Err(ApiError::validation(
                "`decision` must be `approve` or `deny`",
            ))
        }
    };
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::validation("`reason` is at most 1000 characters"));
    }
    Ok(ApprovalVerdict {
        decision,
        decided_by: Some(key_id.to_owned()),
        reason: reason.filter(|r| !r.trim().is_empty()),
    })
}

/// Decide a tool call waiting for approval: the run resumes (on whichever
/// process takes it) and needs one of the key's `max_runs` slots again: with
/// none free the answer is 429 and the run stays parked.
#[utoipa::path(post, path = "/v1/runs/{id}/approvals/{approval_id}", tag = "chat",
    params(("id" = String, Path), ("approval_id" = String, Path)),
    request_body = DecideApproval,
    responses((status = 200, body = ApprovalDecided),
        (status = 400, description = "validation_error"),
        (status = 404, description = "not_found: no such approval on this run"),
        (status = 409, description = "conflict: decided (or expired) already")))]
pub(crate) async fn decide_approval(
    State(state): State<AppState>,
    auth: Auth,
    Extension(metered): Extension<Metered>,
    Path((run_id, approval_id)): Path<(RunId, String)>,
    ApiJson(body): ApiJson<DecideApproval>,
) -> Result<Json<ApprovalDecided>, ApiError> {
    auth.require("chat")?;
    let key_id = auth.key.id.to_string();
    let verdict = verdict(&body.decision, body.reason, &key_id)?;
    let slot = super::limits::start_run(&state, &auth, &metered).await?;
    let decided = state
        .runtime
        .decide_approval(auth.account(), &run_id, &approval_id, verdict, Some(slot))
        .await?;
    Ok(Json(ApprovalDecided {
        approval_id: decided.id,
        run_id: decided.run_id.to_string(),
        decision: decided.status,
        key_id,
    }))
}
