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

/// One provider's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderStatus {
    pub name: String,
    /// `openai` or `anthropic`.
    pub kind: String,
    /// Scheme, host and path only (never credentials or a query).
    pub base_url: String,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    pub consecutive_failures: u32,
    /// Seconds until an open circuit lets one probe through.
    pub open_for_secs: Option<u64>,
    /// Seconds left of the cool-down a 429's `Retry-After` asked for.
    pub retry_after_secs: Option<u64>,
    /// Attempts counted in the two figures below (the last 100 at most).
    pub recent_attempts: usize,
    pub recent_error_rate: f64,
    /// Mean milliseconds to the answer's head (or the failure).
    pub recent_latency_ms_avg: Option<u64>,
}

/// `{"object":"list","data":[…]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    /// Always `list`.
    pub object: String,
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
                    Circuit::Closed => "closed",
                    Circuit::Open => "open",
                    Circuit::HalfOpen => "half_open",
                }
                .into(),
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
