//! weir's own two middlewares, one per request and one per route, in
//! place of the six it had (metrics, envelope and head size on every
//! request; route label, auth and rate limit on every route).
//!
//! Why so few: each `axum::middleware::from_fn` layer costs every request
//! a boxed `Next`, a boxed future and a clone of the boxed service inside
//! it, and every boxed layer nests the ones below it, so the clones grow
//! with the square of the depth. On the OpenAI relay those layers were
//! about a fifth of the allocations per request (BENCHMARKS.md, "Fewer
//! layers"). The order of the checks is unchanged; they are only called
//! from fewer places.
//!
//! - [`front`] (every request, inside the request id, access span and
//!   CORS; outside the panic catcher): the head size check, then the route,
//!   then the error envelope of whatever came back (a handler's panic
//!   included, as a 500 in the route's error shape with the request id),
//!   then the latency metric. Being outside the catcher, a panic in the
//!   envelope itself would end the connection rather than answer 500; the
//!   envelope only re-renders error bodies it holds in full.
//! - [`guard`] (every route of the table, [`super::routes::ROUTES`]): for a
//!   non-public route the key and its scope ([`auth::authenticate`]), then
//!   the key's rate ([`limits::rate_limit`], or on the routes that start
//!   runs [`limits::run_start_rate`]); on every route, the route label of
//!   the latency metric.

use std::time::Instant;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    auth, limits,
    route::{self, Errors, Route},
    router::{envelope, REQUEST_ID},
};
use crate::{metrics::http as metrics, state::AppState};

/// The outer middleware of every request (module doc); `max_header` is the
/// configured head size.
pub async fn front(State(max_header): State<usize>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(req.method());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let openai = route::errors_of(req.uri().path()) == Errors::OpenAi;
    let resp = match limits::check_headers(&req, max_header) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let resp = envelope(resp, &request_id, openai).await;
    metrics::record(method, started, &resp);
    resp
}

/// What [`guard`] knows of its route.
#[derive(Clone)]
pub struct Guarded {
    pub state: AppState,
    pub route: &'static Route,
    /// Whether the route starts runs ([`Route::starts_runs`], looked up once).
    pub starts_runs: bool,
}

impl Guarded {
    pub fn new(state: &AppState, route: &'static Route) -> Self {
        Self {
            state: state.clone(),
            route,
            starts_runs: route.starts_runs(),
        }
    }
}

/// The per-route middleware (module doc).
pub async fn guard(State(g): State<Guarded>, mut req: Request, next: Next) -> Response {
    let mut resp = match g.route.access.is_public() {
        true => next.run(req).await,
        false => match auth::authenticate(&g.state, g.route.access, &mut req).await {
            Err(e) => e.into_response(),
            Ok(auth) if g.starts_runs => limits::run_start_rate(&g.state, auth, req, next).await,
            Ok(auth) => limits::rate_limit(&g.state, auth, req, next).await,
        },
    };
    resp.extensions_mut()
        .insert(metrics::RouteLabel(g.route.path));
    resp
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get, Router};
    use tower::{ServiceBuilder, ServiceExt};
    use tower_http::{
        catch_panic::CatchPanicLayer,
        request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    };

    use super::*;
    use crate::http::errors::ApiError;

    /// `front` over a panic catcher, as the router stacks them.
    fn app() -> Router {
        async fn boom() -> &'static str {
            panic!("a handler bug")
        }
        Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(
                        REQUEST_ID,
                        tower_http::request_id::MakeRequestUuid,
                    ))
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    .layer(axum::middleware::from_fn_with_state(64, front))
                    .layer(CatchPanicLayer::custom(|_| {
                        ApiError::internal().into_response()
                    })),
            )
    }

    async fn call(uri: &str, header: Option<&str>) -> (http::StatusCode, serde_json::Value) {
        let mut req = http::Request::get(uri).header(REQUEST_ID, "req-test");
        if let Some(v) = header {
            req = req.header("x-padding", v);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_panic_is_enveloped_with_the_request_id() {
        let (status, body) = call("/boom", None).await;
        assert_eq!(status, http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal_error");
        assert_eq!(body["error"]["request_id"], "req-test");
    }

    #[tokio::test]
    async fn the_head_limit_answers_before_the_route() {
        let (status, body) = call("/fine", Some(&"x".repeat(100))).await;
        assert_eq!(status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["error"]["code"], "headers_too_large");
        assert_eq!(body["error"]["request_id"], "req-test");
        assert_eq!(call("/fine", None).await.0, http::StatusCode::OK);
    }
}
