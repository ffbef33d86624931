//! Request metrics: latency by matched route, and 429s by reason.
//!
//! Two layers cooperate ([`crate::http::layers`]): the route's own layer
//! tags the response with the route's template (e.g. `/v1/agents/{id}`,
//! never the raw URI with its ids, [`RouteLabel`]); the outer layer wraps
//! the whole stack (so auth, the envelope and panics are inside the
//! measured time) and calls [`record`]. A request that matched no route is
//! labelled `unmatched`, which keeps scanners from creating series.
//!
//! Histogram handles are cached by their three labels, so a request costs a
//! read lock and a hash lookup, and no allocation once warm.

use std::{collections::HashMap, sync::OnceLock, time::Instant};

use ::metrics::{Counter, Histogram};
use axum::{
    http::{Method, StatusCode},
    response::Response,
};
use parking_lot::RwLock;

use crate::http::errors::ErrorMarker;

/// The route a response answered, as its template (`/v1/agents/{id}`):
/// put on the response by the route's layer ([`crate::http::layers::guard`]).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Records a finished request: its latency since `started` under its
/// method, route and status class, and a 429 under its reason.
pub fn record(method: &'static str, started: Instant, resp: &Response) {
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

pub fn method_label(m: &Method) -> &'static str {
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
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::SWITCHING_PROTOCOLS), "1xx");
    }
}
