//! HTTP routes of the agent runtime: sending messages (SSE or JSON), history,
//! run status and cancellation, and log pages. Every error goes through
//! [`crate::http::errors::ApiError`]; [`crate::agent::RunError`] maps to it in
//! one place (`From`).

mod messages;
mod runs;

use axum::{
    routing::{get, post},
    Router,
};

use crate::{
    state::AppState,
    store::{ListParams, Page, Pagination},
};

/// The runtime's routes, merged into the gateway router (which adds auth).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/agents/{id}/messages",
            post(messages::send_message).get(messages::list_messages),
        )
        .route("/v1/agents/{id}/logs", get(runs::list_logs))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/cancel", post(runs::cancel_run))
}

fn empty_page<T>(params: &ListParams) -> Page<T> {
    Page {
        data: Vec::new(),
        pagination: Pagination {
            total: 0,
            limit: params.limit,
            offset: params.offset,
            next_cursor: None,
        },
    }
}
