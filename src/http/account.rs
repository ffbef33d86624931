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
    /// The limits in force for this key: its own, or the gateway's
    /// defaults where it sets none.
    pub limits: Limits,
    /// The account-wide token budgets the operator set (`weir accounts
    /// set`), shared by all the account's keys.
    pub account_limits: AccountLimitsView,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountLimitsView {
    /// Tokens per minute for the whole account; null: no account limit.
    #[schema(minimum = 1, required = true)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day for the whole account; null: no account limit.
    #[schema(minimum = 1, required = true)]
    pub daily_tokens: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyView {
    #[schema(value_type = KeyId)]
    pub id: String,
    pub label: String,
    #[schema(value_type = Scopes)]
    pub scopes: Vec<String>,
    /// When this key stops working; null: never.
    #[schema(value_type = Option<Timestamp>, required = true)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// This key's `rpm`.
    #[schema(minimum = 1)]
    pub requests_per_minute: u32,
    /// Tokens per minute; null: unlimited.
    #[schema(minimum = 1, required = true)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day; null: unlimited.
    #[schema(minimum = 1, required = true)]
    pub daily_tokens: Option<u64>,
    /// Concurrent runs.
    #[schema(minimum = 1)]
    pub max_runs: u32,
    /// Concurrent WebSockets of this key (see limits.md for what is enforced).
    #[schema(minimum = 1)]
    pub max_websockets: u32,
    /// Concurrent SSE streams of this key (see limits.md for what is enforced).
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
        state
            .store
            .list_agents(acct, Default::default(), one.clone()),
        state.store.list_tools(acct, one.clone()),
        state.store.list_keys(acct, one.clone()),
    )?;
    let limits = state.edge.limits(&auth.key);
    Ok(Json(AccountView {
        id: account.id,
        created_at: account.created_at,
        key: KeyView {
            id: auth.key.id.to_string(),
            label: auth.key.label.clone(),
            scopes: auth.key.scopes.clone(),
            expires_at: auth.key.expires_at.clone(),
        },
        limits: Limits {
            requests_per_minute: limits.rpm,
            tpm: limits.tpm,
            daily_tokens: limits.daily_tokens,
            max_runs: limits.max_runs,
            max_websockets: limits.max_websockets,
            max_sse_streams: limits.max_sse_streams,
            max_body_bytes: state.config.max_body_bytes,
        },
        account_limits: AccountLimitsView {
            tpm: account.tpm,
            daily_tokens: account.daily_tokens,
        },
        usage: Usage {
            agents: agents.pagination.total,
            tools: tools.pagination.total,
            keys: keys.pagination.total,
        },
    }))
}
