//! Request metrics: latency by matched route, and 429s by reason.
//!
//! Two middlewares cooperate: [`mark_route`] runs as a route layer (only
//! there does axum know the matched path, e.g. `/v1/agents/{id}`, never the
//! raw URI with its ids) and tags the response with it; [`track`] wraps the
//! whole stack (so auth, the envelope and panics are inside the measured
//! time) and records the histogram. A request that matched no route is
//! labelled `unmatched`, which keeps scanners from creating series.
//!
//! Histogram handles are cached by their three labels, so a request costs a
//! read lock and a hash lookup, and no allocation once warm.

use std::{collections::HashMap, sync::OnceLock, time::Instant};

use ::metrics::{Counter, Histogram};
use axum::{
    extract::{MatchedPath, Request},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};
use parking_lot::RwLock;

use crate::http::errors::ErrorMarker;

/// The matched route of a request, interned.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Route layer: records which route matched, for [`track`].
pub async fn mark_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| intern(p.as_str()));
    let mut resp = next.run(req).await;
    if let Some(route) = route {
        resp.extensions_mut().insert(RouteLabel(route));
    }
    resp
}

/// Outer layer: the latency histogram and the 429 counter.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map_or("unmatched", |r| r.0);
    let status = resp.status();
    histogram(method, route, status_class(status)).record(started.elapsed().as_secs_f64());
    if status == StatusCode::TOO_MANY_REQUESTS {
        let reason = resp
            .extensions()
            .get::<ErrorMarker>()
            .map_or("other", |m| m.0.code().as_str());
        rate_limited(reason).increment(1);
    }
    resp
}

/// Route templates are few and live for the whole process: leaking each one
/// once turns them into `&'static str` labels.
fn intern(path: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashMap<String, &'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(s) = routes.read().get(path) {
        return s;
    }
    let mut w = routes.write();
    w.entry(path.to_owned())
        .or_insert_with(|| Box::leak(path.to_owned().into_boxed_str()))
}

type HistKey = (&'static str, &'static str, &'static str);

fn histogram(method: &'static str, route: &'static str, class: &'static str) -> Histogram {
    static CACHE: OnceLock<RwLock<HashMap<HistKey, Histogram>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        super::init();
        Default::default()
    });
    let key = (method, route, class);
    if let Some(h) = cache.read().get(&key) {
        return h.clone();
    }
    let h = ::metrics::histogram!(
        "weir_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => class
    );
    cache.write().entry(key).or_insert(h).clone()
}

fn rate_limited(reason: &'static str) -> Counter {
    super::init();
    ::metrics::counter!("weir_rate_limited_total", "reason" => reason)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_routes_are_shared() {
        let a = intern("/v1/agents/{id}");
        let b = intern(&String::from("/v1/agents/{id}"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "/v1/agents/{id}");
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::SWITCHING_PROTOCOLS), "1xx");
    }
}
