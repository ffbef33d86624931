//! `GET /v1/account`: who the key belongs to, its limits and the account's usage.

use axum::{extract::State, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::{auth::Auth, errors::ApiError};
use crate::{
    domain::{KeyId, Timestamp},
    state::AppState,
    store::{ListParams, Scopes},
};

/// Default per-key stream caps (protocol/limits.md); the caps in
/// force come from the configuration (`WEIR_MAX_WS_PER_KEY`, …).
pub const MAX_WEBSOCKETS: u32 = 10;
pub const MAX_SSE_STREAMS: u32 = 20;

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountView {
    /// Account id (e.g. `default`), chosen when the first key was made.
    #[schema(min_length = 1)]
    pub id: String,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    /// The key making this request.
    pub key: KeyView,
    pub limits: Limits,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyView {
    #[schema(value_type = KeyId)]
    pub id: String,
    pub label: String,
    #[schema(value_type = Scopes)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// This key's `rpm`.
    #[schema(minimum = 1)]
    pub requests_per_minute: u32,
    /// Concurrent WebSockets per key (see limits.md for what is enforced).
    #[schema(minimum = 1)]
    pub max_websockets: u32,
    /// Concurrent SSE streams per key (see limits.md for what is enforced).
    #[schema(minimum = 1)]
    pub max_sse_streams: u32,
    /// Largest request body (and WebSocket message) accepted.
    #[schema(minimum = 1)]
    pub max_body_bytes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub agents: u64,
    pub tools: u64,
    /// Keys of the account, revoked ones included.
    pub keys: u64,
}

/// The caller's account, key, limits and usage. Any valid key may ask.
#[utoipa::path(get, path = "/v1/account", tag = "account",
    responses((status = 200, body = AccountView), (status = 401, description = "unauthorized")))]
pub async fn get_account(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<AccountView>, ApiError> {
    let acct = auth.account();
    let one = ListParams {
        limit: 1,
        ..Default::default()
    };
    let (account, agents, tools, keys) = tokio::try_join!(
        state.store.get_account(acct),
        state.store.list_agents(acct, one.clone()),
        state.store.list_tools(acct, one.clone()),
        state.store.list_keys(acct, one.clone()),
    )?;
    Ok(Json(AccountView {
        id: account.id,
        created_at: account.created_at,
        key: KeyView {
            id: auth.key.id.to_string(),
            label: auth.key.label.clone(),
            scopes: auth.key.scopes.clone(),
        },
        limits: Limits {
            requests_per_minute: auth.key.rpm,
            max_websockets: state.edge.stream_limit(crate::edge::StreamKind::WebSocket),
            max_sse_streams: state.edge.stream_limit(crate::edge::StreamKind::Sse),
            max_body_bytes: state.config.max_body_bytes,
        },
        usage: Usage {
            agents: agents.pagination.total,
            tools: tools.pagination.total,
            keys: keys.pagination.total,
        },
    }))
}
