//! The responses every operation shares, derived from its route's entry in
//! the table rather than written on each handler: auth and the edge answer
//! them before (or around) the handler, so the handler cannot know them.
//!
//! | route fact | statuses |
//! |---|---|
//! | any | 431 (headers over the limit), 500 (a panic) |
//! | not `Public` | 401, 403, 429 (`Retry-After`), 503 (store or bus down); `X-RateLimit-*` on answers past the rate limiter |
//! | starts runs ([`Route::starts_runs`]) | 429 names `too_many_runs` and `token_budget_exceeded` too |
//! | a body, a query, a path or header parameter | 400 |
//! | a body | 413 |
//! | a path parameter | 404 |
//! | `timeout: true` | 408 |
//!
//! Every error response, these and the handlers' own, carries the body of
//! the route's error shape.

use utoipa::openapi::{
    header::HeaderBuilder,
    path::{Operation, ParameterIn},
    ContentBuilder, Ref, RefOr, Response, ResponseBuilder,
};

use super::schemas::from_json;
use crate::http::route::{Errors, Route, Transport};

/// Adds the shared responses of `route` to `op` (module doc), keeping any
/// the annotation already has, and gives every error its body.
pub fn complete(route: &Route, op: &mut Operation) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    let body = op.request_body.is_some();
    let path = has(ParameterIn::Path);
    let input = body || path || has(ParameterIn::Query) || has(ParameterIn::Header);
    let list = params
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Query && p.name == "limit");
    let authed = !route.access.is_public();
    let mut add = |status: u16, why: &str, on: bool| {
        if on {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| ResponseBuilder::new().description(why).into());
        }
    };
    add(
        400,
        "validation_error: a parameter or the body breaks a rule",
        input,
    );
    add(
        401,
        "unauthorized: no key, or an unknown or revoked one; key_expired: the key expired",
        authed,
    );
    add(403, "forbidden: the key lacks the route's scope", authed);
    add(
        404,
        "the resource does not exist (or is another account's)",
        path,
    );
    add(
        408,
        "timeout: the request took longer than the REST timeout",
        route.timeout,
    );
    add(413, "payload_too_large: the body is over the limit", body);
    let too_many = match route.starts_runs() {
        true => "rate_limit_exceeded; too_many_connections for streams; too_many_runs: the key has its limit of runs going (max_runs); token_budget_exceeded: a token budget (tpm, daily_tokens) of the key or its account is spent",
        false => "rate_limit_exceeded, or too_many_connections for streams",
    };
    add(429, too_many, authed);
    add(
        431,
        "headers_too_large: the request head is over the limit",
        true,
    );
    add(500, "internal_error", true);
    add(
        503,
        "unavailable: the store or bus is unreachable, or the gateway is draining",
        authed,
    );
    for (status, resp) in op.responses.responses.iter_mut() {
        if let RefOr::T(resp) = resp {
            decorate(route, status, resp);
            if list && status == "200" {
                cursor_headers(resp);
            }
        }
    }
}

/// A list's page carries its cursors as headers too
/// ([`crate::http::params::Paged`]).
fn cursor_headers(resp: &mut Response) {
    for (name, why) in [
        ("Next-Cursor", "The page's `next_cursor`: pass it as `after` for the next page. Absent on the last page."),
        ("Prev-Cursor", "The page's `prev_cursor`: pass it as `before` for the previous page. Absent on the first page."),
    ] {
        let RefOr::T(schema) = from_json(serde_json::json!({"type": "string", "minLength": 1})) else {
            unreachable!("an inline schema")
        };
        let h = HeaderBuilder::new().schema(schema).description(Some(why)).build();
        resp.headers.insert(name.into(), h);
    }
}

/// The error body of the route's shape on an error without one, and the
/// rate-limit headers where the rate limiter has run.
fn decorate(route: &Route, status: &str, resp: &mut Response) {
    let code: u16 = status.parse().unwrap_or(0);
    if code >= 400 && resp.content.is_empty() {
        use utoipa::ToSchema;
        let schema = match route.errors {
            Errors::Weir => super::schemas::ErrorEnvelope::name(),
            Errors::OpenAi => crate::openai::schema::ErrorShape::name(),
        };
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build();
        resp.content.insert("application/json".into(), content);
    }
    if route.access.is_public() || matches!(code, 401 | 403 | 431) {
        return;
    }
    if code == 429 {
        let retry = header("Seconds to wait (rate_limit_exceeded, token_budget_exceeded).");
        resp.headers.insert("Retry-After".into(), retry);
    }
    if route.transport == Transport::WebSocket && code == 101 {
        return;
    }
    for (name, why) in [
        ("X-RateLimit-Limit", "The key's requests per minute."),
        (
            "X-RateLimit-Remaining",
            "Requests left in the current window.",
        ),
        (
            "X-RateLimit-Reset",
            "When the window is full again (unix seconds).",
        ),
        (
            "X-RateLimit-Limit-Tokens",
            "Only when a token budget applies to the key (its own or its account's): the tighter budget (tpm or daily_tokens).",
        ),
        (
            "X-RateLimit-Remaining-Tokens",
            "Only when a token budget applies: tokens left of it now.",
        ),
        (
            "X-RateLimit-Reset-Tokens",
            "Only when a token budget applies: when it is whole again (unix seconds).",
        ),
    ] {
        resp.headers.insert(name.into(), header(why));
    }
}

fn header(description: &str) -> utoipa::openapi::header::Header {
    let integer = from_json(serde_json::json!({"type": "integer", "minimum": 0}));
    let RefOr::T(schema) = integer else {
        unreachable!("an inline schema")
    };
    HeaderBuilder::new()
        .schema(schema)
        .description(Some(description))
        .build()
}
