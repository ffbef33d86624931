//! OpenAI-compatible `/v1/chat/completions` and `/v1/models`.

/// Routes of this module (placeholder until the module's routes land).
pub fn routes() -> axum::Router<crate::state::AppState> {
    axum::Router::new()
}
