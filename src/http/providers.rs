//! `GET /v1/providers`: each configured provider's circuit, cool-down and
//! recent error rate and latency (protocol/providers.md). The operator
//! scope `providers` guards it: only `weir keys create` grants that scope,
//! and `*` does not include it, so a tenant's key never sees the
//! deployment's upstreams.

use std::time::Instant;

use axum::{extract::State, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::ApiError;
use crate::{providers::breaker::Circuit, state::AppState};

/// One provider's state (protocol/schemas/providers.json `$defs/provider`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderStatus {
    /// The provider's name in the config file (`default` for `--provider-url`).
    #[schema(min_length = 1)]
    pub name: String,
    /// The API it speaks.
    #[schema(pattern = "^(openai|anthropic)$")]
    pub kind: String,
    /// Scheme, host and path only (never credentials or a query).
    pub base_url: String,
    pub circuit: CircuitState,
    /// Failures in a row (reset by a success).
    #[schema(minimum = 0)]
    pub consecutive_failures: u32,
    /// Seconds until an open circuit lets one probe through.
    #[schema(minimum = 0)]
    pub open_for_secs: Option<u64>,
    /// Seconds left of the cool-down a 429's `Retry-After` asked for.
    #[schema(minimum = 0)]
    pub retry_after_secs: Option<u64>,
    /// Attempts counted in the two figures below (the last 100 at most).
    #[schema(minimum = 0, maximum = 100)]
    pub recent_attempts: usize,
    /// Share of those attempts that failed, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub recent_error_rate: f64,
    /// Mean milliseconds to the answer's head (or the failure).
    #[schema(minimum = 0)]
    pub recent_latency_ms_avg: Option<u64>,
}

/// A provider's circuit: `closed` (in use), `open` (skipped until
/// `open_for_secs` is over) or `half_open` (one probe let through).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// `{"object":"list","data":[…]}` (protocol/schemas/providers.json).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderList {
    /// Always `list`.
    #[schema(pattern = "^list$")]
    pub object: String,
    /// Every provider, the `default` one first.
    pub data: Vec<ProviderStatus>,
}

/// The providers and their health.
#[utoipa::path(get, path = "/v1/providers", tag = "ops",
    responses((status = 200, body = ProviderList)))]
pub async fn list_providers(State(state): State<AppState>) -> Result<Json<ProviderList>, ApiError> {
    let now = Instant::now();
    let data = state
        .runtime
        .providers()
        .providers()
        .iter()
        .map(|p| {
            let v = p.health.view(now);
            ProviderStatus {
                name: p.name.clone(),
                kind: p.kind.as_str().into(),
                base_url: public_url(p.base_url()),
                circuit: match v.circuit {
                    Circuit::Closed => CircuitState::Closed,
                    Circuit::Open => CircuitState::Open,
                    Circuit::HalfOpen => CircuitState::HalfOpen,
                },
                consecutive_failures: v.consecutive_failures,
                open_for_secs: v.open_for_secs,
                retry_after_secs: v.retry_after_secs,
                recent_attempts: v.recent_attempts,
                recent_error_rate: v.recent_error_rate,
                recent_latency_ms_avg: v.recent_latency_ms_avg,
            }
        })
        .collect();
    Ok(Json(ProviderList {
        object: "list".into(),
        data,
    }))
}

/// `url` without user info, query or fragment.
fn public_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            super::public_url("https://u:secret@api.example.com/v1?key=k"),
            "https://api.example.com/v1"
        );
    }
}
