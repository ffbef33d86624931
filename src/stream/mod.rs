//! Delivery of bus events to clients: SSE responses and the WebSocket
//! endpoint, with resume cursors (`Last-Event-ID`, `?after=`, WS `after`).
//!
//! - [`feed`]: what a stream delivers (`agent:`, `logs:`, `run:` targets),
//!   checked against the caller's account; shared by SSE and WebSocket.
//! - [`cursor`]: the resume cursor of an SSE request.
//! - [`handlers`]: the SSE routes.
//! - [`sse`]: SSE framing and the streaming response (pings, drain).
//! - [`ws`]: `GET /v1/ws`, its protocol core and outbound queue.

pub mod cursor;
pub mod feed;
pub mod handlers;
pub mod sse;
pub mod ws;

use axum::{routing::get, Router};

use crate::state::AppState;

/// The streaming routes: SSE tails of agents, logs and runs, and `/v1/ws`.
pub fn routes() -> Router<AppState> {
    routes_with(ws::WsSettings::default())
}

/// [`routes`] with WebSocket settings other than API.md's defaults.
pub fn routes_with(ws: ws::WsSettings) -> Router<AppState> {
    Router::new()
        .route("/v1/agents/{id}/events", get(handlers::stream_agent_events))
        .route(
            "/v1/agents/{id}/logs/stream",
            get(handlers::stream_agent_logs),
        )
        .route("/v1/runs/{id}/stream", get(handlers::stream_run))
        .route("/v1/ws", ws::route(ws))
}
