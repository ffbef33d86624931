//! The edge's limits as HTTP: the rate-limit middleware (right after auth),
//! the head-size middleware, and the edge's refusals as [`ApiError`]s. The
//! edge ([`crate::edge`]) decides; this module answers.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{auth::Auth, errors::ApiError};
use crate::{
    domain::ErrorCode,
    edge::{limits::HeadTooLarge, CapError},
    state::AppState,
};

/// Middleware right after auth: counts the request against its key, refuses
/// it with 429 `rate_limit_exceeded` (and `Retry-After`) when over, and puts
/// the `X-RateLimit-*` headers on every authenticated response.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(auth) = req.extensions().get::<Auth>().cloned() else {
        return next.run(req).await;
    };
    let Some(decision) = state.edge.check_rate(&auth.key).await else {
        return next.run(req).await;
    };
    if !decision.allowed {
        let secs = decision.retry_after_secs();
        let err = ApiError::new(
            ErrorCode::RateLimitExceeded,
            format!(
                "this key is limited to {} requests per minute; retry after {secs} s",
                decision.limit
            ),
        )
        .with_retry_after(secs);
        let mut resp = err.into_response();
        decision.write_headers(resp.headers_mut());
        return resp;
    }
    let mut resp = next.run(req).await;
    decision.write_headers(resp.headers_mut());
    resp
}

/// Middleware: 431 `headers_too_large` when the request line and headers
/// together exceed `max` bytes ([`crate::edge::limits::check_head`]).
pub async fn limit_headers(State(max): State<usize>, req: Request, next: Next) -> Response {
    match crate::edge::limits::check_head(req.uri(), req.headers(), max) {
        Ok(()) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

impl From<CapError> for ApiError {
    fn from(e: CapError) -> Self {
        let err = ApiError::new(e.code(), e.to_string());
        match e.retry_after() {
            Some(secs) => err.with_retry_after(secs),
            None => err,
        }
    }
}

impl From<HeadTooLarge> for ApiError {
    fn from(e: HeadTooLarge) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}
