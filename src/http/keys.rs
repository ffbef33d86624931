//! `/v1/keys`: mint (the secret is shown once), list, revoke.
//!
//! A key can only mint keys with scopes it holds itself (unless it has `*`),
//! so a `keys`-only key cannot mint its way to `*`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    auth::Auth,
    errors::{ApiError, ApiJson},
    params::ListQuery,
};
use crate::{
    domain::ErrorCode,
    keys,
    state::AppState,
    store::{KeyRecord, Page, SCOPES},
};

/// Default requests per minute of a new key.
pub const DEFAULT_RPM: u32 = 120;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Scopes to grant (a subset of the caller's).
    pub scopes: Vec<String>,
    #[serde(default)]
    pub label: String,
    /// Requests per minute (default 120).
    pub rpm: Option<u32>,
}

/// A minted key: the record plus the secret, which is never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct MintedKey {
    #[serde(flatten)]
    pub key: KeyRecord,
    pub secret: String,
}

/// Checks requested scopes: known, non-empty, and held by the caller.
pub fn check_scopes(requested: &[String], caller: Option<&KeyRecord>) -> Result<(), ApiError> {
    if requested.is_empty() {
        return Err(ApiError::validation(
            "scopes: at least one scope is required",
        ));
    }
    for (i, s) in requested.iter().enumerate() {
        if !SCOPES.contains(&s.as_str()) {
            return Err(ApiError::validation(format!(
                "scopes[{i}]: unknown scope `{s}` (known: {})",
                SCOPES.join(", ")
            )));
        }
        if let Some(caller) = caller {
            let held = if s == "*" {
                caller.scopes.iter().any(|c| c == "*")
            } else {
                caller.has_scope(s)
            };
            if !held {
                return Err(ApiError::forbidden(s));
            }
        }
    }
    Ok(())
}

/// Mint a key in the caller's account.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = MintedKey)), security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<MintedKey>), ApiError> {
    check_scopes(&body.scopes, Some(&auth.key))?;
    let rpm = body.rpm.unwrap_or(DEFAULT_RPM);
    if rpm == 0 || rpm > 1_000_000 {
        return Err(ApiError::validation("rpm: must be from 1 to 1000000"));
    }
    if body.label.chars().count() > 200 {
        return Err(ApiError::validation("label: at most 200 characters"));
    }
    let minted = keys::mint(auth.account(), &body.label, body.scopes, rpm, None);
    let record = state.store.create_key(minted.new_key).await?;
    tracing::info!(key_id = %record.id, "key minted");
    Ok((
        StatusCode::CREATED,
        Json(MintedKey {
            key: record.public(),
            secret: minted.secret,
        }),
    ))
}

/// List the account's keys (no secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = Page<KeyRecord>)), security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    ListQuery(params): ListQuery,
) -> Result<Json<Page<KeyRecord>>, ApiError> {
    let page = state.store.list_keys(auth.account(), params).await?;
    Ok(Json(page.map(KeyRecord::public)))
}

/// Revoke a key; it is refused from the next request on.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "key_not_found")), security(("api_key" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = state.store.revoke_key(auth.account(), &id).await;
    revoked.map_err(|e| ApiError::from_store(e, ErrorCode::KeyNotFound))?;
    state.keys.evict(&id);
    // Every other gateway evicts it too (the store already refuses it; this
    // only shortens their key caches' TTL to the bus's latency).
    let revoked = crate::bus::Control::KeyRevoked {
        key_id: id.as_str().into(),
    };
    if let Err(e) = state.bus.publish_control(revoked).await {
        tracing::warn!(key_id = %id, error = %e, "revocation not broadcast: other gateways may accept the key until their key cache expires");
    }
    tracing::info!(key_id = %id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}
