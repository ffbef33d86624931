//! Liveness and readiness: unauthenticated, for load balancers and orchestrators.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde_json::json;

use super::errors::ApiError;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "alive", body = super::openapi::schemas::Health)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready to serve: not draining, store and bus reachable. A 503 names what is missing.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready", body = super::openapi::schemas::Ready), (status = 503, description = "not ready")))]
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if state.drain.began() || state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "draining: the gateway is shutting down",
        ));
    }
    // Pings both and records them in the `weir_*_up` gauges.
    let (store, bus) = crate::metrics::health::check(&state).await;
    if let Err(e) = store {
        return Err(ApiError::unavailable(format!("store unreachable: {e}")));
    }
    if let Err(e) = bus {
        return Err(ApiError::unavailable(format!("bus unreachable: {e}")));
    }
    Ok((
        StatusCode::OK,
        Json(json!({"status": "ready", "store": "ok", "bus": "ok"})),
    ))
}
