//! Delivery of bus events to clients: SSE responses and the WebSocket
//! endpoint, with resume cursors (`Last-Event-ID`, `?after=`, WS `after`).

pub mod sse;

/// Routes of this module (placeholder until the module's routes land).
pub fn routes() -> axum::Router<crate::state::AppState> {
    axum::Router::new()
}
