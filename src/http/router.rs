//! The router: the layer order, written once, over the route table.
//!
//! Requests pass, outermost first: request id (set or echoed) → access log
//! span (path only: the `api_key` query parameter never reaches a log) →
//! CORS (only with `--cors-origin`) → [`layers::front`] (header size limit,
//! then on the way back the error envelope and the request metrics) →
//! panic catcher → body limit → [[`layers::guard`] (auth with the route's
//! scope → per-key rate limit; the route label) → audit → REST timeout] →
//! handler. The bracketed layers are per route, from
//! [`super::routes::ROUTES`]: auth and the rate limit on every route whose
//! access is not `Public` (a route cannot be declared without its access),
//! the audit record on the routes that change something
//! ([`super::audit::audited`]), the timeout on routes that say
//! `timeout: true`. weir's own middlewares are two (one per request, one
//! per route) rather than one per concern: see [`layers`] for why.

use std::time::Duration;

use axum::{
    body::Body,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::MethodRouter,
    Router,
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
    LatencyUnit,
};

use super::{
    errors::{ApiError, ErrorMarker},
    layers,
    route::{Route, Transport},
    routes::ROUTES,
};
use crate::{domain::ErrorCode, state::AppState};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the complete gateway router over `state`.
pub fn build_router(state: AppState) -> Router {
    let routes = ROUTES.iter().fold(Router::new(), |router, r| {
        router.route(r.path, mount(r, &state))
    });
    // Other origins (a chat UI elsewhere) only with --cors-origin; clap
    // validated the value, so an error here cannot happen from the CLI.
    let cors = state.config.cors_origin.as_deref().and_then(|spec| {
        crate::web::cors::layer(spec)
            .map_err(|e| tracing::error!(error = %e, "WEIR_CORS_ORIGIN ignored"))
            .ok()
    });
    let max_body = state.config.max_body_bytes;
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeId))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(access_span)
                        // One access line per request, inside its span.
                        .on_response(
                            DefaultOnResponse::new()
                                .level(tracing::Level::INFO)
                                .latency_unit(LatencyUnit::Millis),
                        ),
                )
                .option_layer(cors)
                .layer(middleware::from_fn_with_state(
                    state.config.edge.max_header_bytes,
                    layers::front,
                ))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::internal().into_response()
                }))
                .layer(DefaultBodyLimit::max(max_body))
                .layer(RequestBodyLimitLayer::new(max_body)),
        )
        .with_state(state)
}

/// One route of the table with its per-route layers (module doc).
fn mount(route: &'static Route, state: &AppState) -> MethodRouter<AppState> {
    let mut handler = (route.mount)(route.verb.filter(), &state.config);
    if let (Transport::Sse, Some(after)) = (route.transport, state.config.test_only.sse_cut) {
        handler = handler.layer(middleware::map_response(move |r| cut_after(r, after)));
    }
    if route.timeout {
        // REST routes answer in bounded time; streams and runs carry their
        // own lifetimes (pings, drain).
        let timeout = Duration::from_secs(state.config.request_timeout_secs);
        handler = handler.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    }
    if let Some(action) = super::audit::action_of(route).filter(|_| !route.access.is_public()) {
        // Inside auth (it needs the key) and the rate limit (a refused
        // request changed nothing).
        let at = super::audit::Recorded {
            state: state.clone(),
            route,
            action,
        };
        handler = handler.route_layer(middleware::from_fn_with_state(at, super::audit::record));
    }
    // Auth, the rate limit (a route that starts runs checks its rate with
    // the run start: one Redis call) and the route's metric label, in one
    // layer (super::layers).
    handler.route_layer(middleware::from_fn_with_state(
        layers::Guarded::new(state, route),
        layers::guard,
    ))
}

/// Ends a response body `after` its start: endless streams end, for tests
/// that drive every route (`TestOnly::sse_cut`).
async fn cut_after(resp: Response, after: Duration) -> Response {
    use futures::StreamExt;
    let (parts, body) = resp.into_parts();
    let ends = tokio::time::sleep(after);
    let stream = body.into_data_stream().take_until(ends);
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Request ids like `req-…`, unless the client sent its own.
#[derive(Clone, Copy)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&crate::util::new_id("req"))
            .ok()
            .map(RequestId::new)
    }
}

/// The access-log span: method, path (never the query string), request id;
/// `key_id` is filled in by auth, `provider` by the relay (so the one access
/// line per request names the provider that served it, without a log line
/// of its own).
fn access_span(req: &http::Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id,
        key_id = tracing::field::Empty,
        provider = tracing::field::Empty,
    )
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Puts every error response into the envelope with the request id (called
/// by [`super::layers::front`] on every response): our own
/// `ApiError`s get the id filled in; anything else a layer produced (413 from
/// the body limit, 408 from the timeout, axum's 4xx) is wrapped by status.
/// On the OpenAI-compatible routes the same errors take OpenAI's shape
/// (`message`, `type`, `param`, `code`) plus `request_id`, because the
/// official SDKs parse that shape, including for 401/403/413/429.
pub(super) async fn envelope(resp: Response, request_id: &str, openai: bool) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let err = match resp.extensions().get::<ErrorMarker>() {
        Some(ErrorMarker(e)) => e.clone(),
        // A handler that built its own JSON error (the OpenAI-shaped ones)
        // meant that shape; it only gains the request id.
        None if is_json(&resp) => return with_request_id(resp, request_id).await,
        None => ApiError::for_status(status),
    };
    let body = if openai {
        let mut body = crate::openai::error::OpenAiError::from(err).body();
        body["error"]["request_id"] = request_id.into();
        body
    } else {
        err.body(request_id)
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// Adds `request_id` to a JSON error body made by a handler, if it has an
/// `error` object without one. Error bodies are small; a large or unreadable
/// one is passed on untouched.
async fn with_request_id(resp: Response, request_id: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    match value.get_mut("error").and_then(|e| e.as_object_mut()) {
        Some(obj) if !obj.contains_key("request_id") => {
            obj.insert("request_id".into(), request_id.into());
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Response::from_parts(
                parts,
                Body::from(serde_json::to_vec(&value).unwrap_or_default()),
            )
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
