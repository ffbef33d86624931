//! What one route is: the facts that used to live in five places (the
//! `.route(…)` calls, the scope table, the OpenAPI annotations, the direct
//! SSE classification and the OpenAI error selection), as one value.
//! [`super::routes::ROUTES`] holds every route; the router, auth, the
//! OpenAPI document, the direct SSE path and the error envelope all read
//! it, so a route added there is served, authenticated, documented and
//! classified with no other edit.
//!
//! The lookups the request path needs before axum routes a request (the
//! direct SSE path on raw request heads, the error shape in the envelope
//! middleware) are lists of path templates taken from the table once, at
//! first use, and matched segment by segment without allocating.

use std::sync::LazyLock;

use axum::routing::{MethodFilter, MethodRouter};
use http::Method;
use utoipa::openapi::{path::HttpMethod, path::Operation, schema::Schema, RefOr};

use crate::{config::ServeConfig, state::AppState};

/// One route: see the module doc and [`super::routes`].
pub struct Route {
    pub verb: Verb,
    /// The axum path template (`/v1/agents/{id}`).
    pub path: &'static str,
    /// Who may call it. There is no default: a route must say.
    pub access: Access,
    /// The shape of its error bodies.
    pub errors: Errors,
    /// What its successful response is.
    pub transport: Transport,
    /// Whether the REST request timeout (`--request-timeout-secs`, 408)
    /// applies. Streams carry their own lifetimes (pings, drain), and so do
    /// routes that wait for a run.
    pub timeout: bool,
    /// The handler, mounted for `verb` (the filter passed in); the
    /// configuration is there for handlers with settings (`/v1/ws`).
    pub mount: fn(MethodFilter, &ServeConfig) -> MethodRouter<AppState>,
    /// Its OpenAPI operation, or `None` for routes kept out of
    /// `/v1/openapi.json` (the web page, `/metrics`, the document itself).
    pub doc: Option<Doc>,
}

impl Route {
    /// Whether the route starts runs ([`super::routes::RUN_STARTS`]).
    pub fn starts_runs(&self) -> bool {
        super::routes::RUN_STARTS
            .iter()
            .any(|&(verb, path)| verb == self.verb && path == self.path)
    }
}

/// The HTTP methods routes use. `HEAD` is served by every `GET` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Delete,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }

    pub fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    pub fn openapi(self) -> HttpMethod {
        match self {
            Verb::Get => HttpMethod::Get,
            Verb::Post => HttpMethod::Post,
            Verb::Patch => HttpMethod::Patch,
            Verb::Delete => HttpMethod::Delete,
        }
    }
}

/// Who may call a route. Auth checks it on the route itself, before any
/// extractor reads the body, so a caller without the scope gets 403
/// whatever it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed (ops, the document, the web page, metrics).
    Public,
    /// Any valid key.
    AnyKey,
    /// A key with this scope (or `*`); one of [`crate::store::SCOPES`].
    Scope(&'static str),
}

impl Access {
    pub fn is_public(self) -> bool {
        self == Access::Public
    }
}

/// The shape of a route's error bodies (protocol/errors.md, openai.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errors {
    /// `{"error":{"code","message","request_id"}}`.
    Weir,
    /// OpenAI's `{"error":{"message","type","param","code"}}` plus
    /// `request_id`: the official SDKs parse that shape, for every status.
    OpenAi,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One JSON body (or none, 204).
    Json,
    /// A long-lived `text/event-stream`. A `GET` SSE route takes the
    /// direct path (`super::serve`), off hyper.
    Sse,
    /// JSON, or SSE when the body's `stream` is true (or, for messages,
    /// `Accept: text/event-stream`). A `POST` of this kind with a body of
    /// known length takes the direct path too.
    JsonOrSse,
    /// A WebSocket upgrade (101).
    WebSocket,
    /// A document that is not JSON: HTML, JavaScript, Markdown, Prometheus text.
    Text,
}

/// A route's OpenAPI operation, from the `__path_*` type that
/// `#[utoipa::path]` generates next to its handler: the annotation keeps
/// the parts only the handler knows (parameters, body, success and
/// handler-specific responses); [`super::openapi`] adds what the table
/// knows (security, auth and edge errors, timeouts).
#[derive(Clone, Copy)]
pub struct Doc {
    pub operation: fn() -> Operation,
    /// The schemas the operation refers to, for `components`.
    pub schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
    /// The path and methods the annotation names: a test checks that they
    /// are the table's.
    pub path: fn() -> String,
    pub methods: fn() -> Vec<HttpMethod>,
    /// The annotation's `tag`s (utoipa keeps them apart from the operation).
    pub tags: fn() -> Vec<&'static str>,
}

impl Doc {
    /// The operation of handler `f`: `Doc::of::<__path_f>()`.
    pub const fn of<P>() -> Option<Doc>
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences + utoipa::__dev::Tags<'static>,
    {
        Some(Doc {
            operation: P::operation,
            schemas: P::schemas,
            path: P::path,
            methods: P::methods,
            tags: P::tags,
        })
    }
}

/// Whether the request target (path, maybe with a query) is a `GET` SSE
/// route of the table: those take the direct path (`crate::http::serve`).
pub fn is_direct_sse(target: &str) -> bool {
    static SSE: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| templates(|r| r.verb == Verb::Get && r.transport == Transport::Sse));
    matches_any(&SSE, target)
}

/// Whether the request target is a `POST` route that may answer with a
/// stream (`/v1/chat/completions`, an agent's messages): with a
/// `content-length` body of at most 1 MiB (or the body limit if lower),
/// those take the direct path too (`crate::http::serve`).
pub fn is_direct_post(target: &str) -> bool {
    static POST: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        templates(|r| r.verb == Verb::Post && r.transport == Transport::JsonOrSse)
    });
    matches_any(&POST, target)
}

/// Whether the target's path (its query left out) matches one of `list`.
fn matches_any(list: &[&str], target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    list.iter().any(|t| matches(t, path))
}

/// The error shape of a request path, before routing (the envelope
/// middleware runs outside the router): OpenAI's if some route of that path
/// answers in it, so a 405 on `/v1/models` is OpenAI-shaped too.
pub fn errors_of(path: &str) -> Errors {
    static OPENAI: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| templates(|r| r.errors == Errors::OpenAi));
    if matches_any(&OPENAI, path) {
        Errors::OpenAi
    } else {
        Errors::Weir
    }
}

fn templates(keep: impl Fn(&Route) -> bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = super::routes::ROUTES
        .iter()
        .filter(|r| keep(r))
        .map(|r| r.path)
        .collect();
    out.dedup();
    out
}

/// `path` matches `template` segment by segment; a `{param}` segment
/// matches any non-empty segment (as axum's router does).
pub fn matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.starts_with('{') && x.ends_with('}') => {
                if y.is_empty() {
                    return false;
                }
            }
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_segment_by_segment() {
        assert!(matches("/v1/agents/{id}/events", "/v1/agents/a/events"));
        assert!(!matches("/v1/agents/{id}/events", "/v1/agents//events"));
        assert!(!matches("/v1/agents/{id}/events", "/v1/agents/a/events/"));
        assert!(!matches("/v1/agents/{id}", "/v1/agents/a/events"));
        assert!(matches("/v1/models", "/v1/models"));
        assert!(!matches("/v1/models", "/v1/models/x"));
    }

    #[test]
    fn the_openai_routes_take_openai_errors() {
        assert_eq!(errors_of("/v1/chat/completions"), Errors::OpenAi);
        assert_eq!(errors_of("/v1/models"), Errors::OpenAi);
        assert_eq!(errors_of("/v1/agents"), Errors::Weir);
        assert_eq!(errors_of("/nope"), Errors::Weir);
    }
}
