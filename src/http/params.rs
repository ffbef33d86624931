//! Paging of every list route, in one place: the query parameters
//! (`limit` or its alias `count`, `offset`, `after`, `before`, `order`),
//! the refusal of unknown or contradictory ones, and the answer
//! ([`Paged`]): the list envelope plus `Next-Cursor` / `Prev-Cursor`
//! headers carrying the envelope's cursors.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Query},
    http::{request::Parts, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use super::errors::ApiError;
use crate::store::{ListParams, Order, Page};

/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// The paging parameters every list takes.
pub const PAGING: &[&str] = &["limit", "count", "offset", "after", "before", "order"];

/// Query parameters any route accepts (auth.md's `?api_key=`): never
/// "unknown".
pub const GLOBALS: &[&str] = &["api_key"];

/// The paging of a list route without filters: any other parameter is a
/// 400 naming it.
#[derive(Debug, Clone)]
pub struct ListQuery(pub ListParams);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let q = query(parts, state).await?;
        parse_list(&q, &[]).map(ListQuery)
    }
}

/// The query as a map; a query that is not `k=v&…` is a 400.
pub async fn query<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::validation(format!("query: {e}")))?;
    Ok(q)
}

/// The query of `uri` as a map, for handlers that read their filters
/// beside the paging; a query that is not `k=v&…` is a 400.
pub fn query_of(uri: &axum::http::Uri) -> Result<HashMap<String, String>, ApiError> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::validation(format!("query: {e}")))
}

/// Refuses every parameter that is neither paging, a global, nor one of
/// the route's `filters`, naming them all (sorted).
pub fn refuse_unknown(q: &HashMap<String, String>, filters: &[&str]) -> Result<(), ApiError> {
    let mut unknown: Vec<&str> = q
        .keys()
        .map(String::as_str)
        .filter(|k| !PAGING.contains(k) && !GLOBALS.contains(k) && !filters.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let names = unknown.join(", ");
    let known: Vec<&str> = filters.iter().chain(PAGING).copied().collect();
    Err(ApiError::validation(format!(
        "{names}: unknown query parameter{} (known: {})",
        if unknown.len() > 1 { "s" } else { "" },
        known.join(", ")
    )))
}

/// [`refuse_unknown`], then [`parse`].
pub fn parse_list(q: &HashMap<String, String>, filters: &[&str]) -> Result<ListParams, ApiError> {
    refuse_unknown(q, filters)?;
    parse(q)
}

/// Validates the paging parameters: `limit` (or `count`, not both; 1 to
/// 1000, default 50), `offset` (≥ 0), `after` and `before` (not empty;
/// both: the rows between them) and `order` (`asc` or `desc`; default:
/// the list's own).
pub fn parse(q: &HashMap<String, String>) -> Result<ListParams, ApiError> {
    let mut params = ListParams::default();
    let size = match (q.get("limit"), q.get("count")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "limit, count: `count` is an alias of `limit`; give one",
            ))
        }
        (Some(v), None) => Some(("limit", v)),
        (None, Some(v)) => Some(("count", v)),
        (None, None) => None,
    };
    if let Some((name, v)) = size {
        params.limit = v
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "{name}: must be an integer from 1 to {MAX_LIMIT}, got `{v}`"
                ))
            })?;
    }
    if let Some(v) = q.get("offset") {
        params.offset = v.parse::<u64>().map_err(|_| {
            ApiError::validation(format!("offset: must be a non-negative integer, got `{v}`"))
        })?;
    }
    params.after = cursor(q, "after")?;
    params.before = cursor(q, "before")?;
    params.order = match q.get("order").map(String::as_str) {
        None => None,
        Some("asc") => Some(Order::Asc),
        Some("desc") => Some(Order::Desc),
        Some(v) => {
            return Err(ApiError::validation(format!(
                "order: must be `asc` or `desc`, got `{v}`"
            )))
        }
    };
    Ok(params)
}

/// Refuses `after` / `before` unless each is a numeric cursor (a row
/// number or `seq`, at most `i64::MAX`): what a list of numeric cursors
/// checks itself when it answers without asking the store (an empty page
/// it knows of beforehand), as the store would have.
pub fn check_int_cursors(params: &ListParams) -> Result<(), ApiError> {
    for (name, v) in [("after", &params.after), ("before", &params.before)] {
        let Some(v) = v else { continue };
        let ok = v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<i64>().is_ok();
        if !ok {
            return Err(ApiError::validation(format!("{name}: not a valid cursor")));
        }
    }
    Ok(())
}

fn cursor(q: &HashMap<String, String>, name: &str) -> Result<Option<String>, ApiError> {
    match q.get(name) {
        Some(v) if v.is_empty() => Err(ApiError::validation(format!("{name}: must not be empty"))),
        v => Ok(v.cloned()),
    }
}

/// A page as every list answers it: the envelope, and its cursors again
/// as `Next-Cursor` / `Prev-Cursor` headers (absent when null).
pub struct Paged<T>(pub Page<T>);

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let cursors = [
            ("next-cursor", self.0.pagination.next_cursor.clone()),
            ("prev-cursor", self.0.pagination.prev_cursor.clone()),
        ];
        let mut resp = Json(self.0).into_response();
        for (name, value) in cursors {
            // Cursors are digits or `u` + hex: always a valid header value.
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                resp.headers_mut().insert(HeaderName::from_static(name), v);
            }
        }
        resp
    }
}

impl<T> From<Page<T>> for Paged<T> {
    fn from(page: Page<T>) -> Self {
        Self(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        parse_list(&q(pairs), &["name"]).unwrap_err().message
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse(&q(&[])).unwrap(), ListParams::default());
        assert_eq!(parse(&q(&[("limit", "1000")])).unwrap().limit, 1000);
        assert_eq!(parse(&q(&[("count", "10")])).unwrap().limit, 10);
        for bad in ["0", "1001", "-1", "x"] {
            let e = parse(&q(&[("limit", bad)])).unwrap_err();
            assert!(e.message.starts_with("limit:"), "{}", e.message);
            let e = parse(&q(&[("count", bad)])).unwrap_err();
            assert!(e.message.starts_with("count:"), "{}", e.message);
        }
        assert!(err(&[("offset", "-2")]).starts_with("offset:"));
        assert_eq!(
            parse(&q(&[("after", "17")])).unwrap().after.as_deref(),
            Some("17")
        );
        let p = parse(&q(&[("before", "3"), ("order", "desc")])).unwrap();
        assert_eq!(
            (p.before.as_deref(), p.order),
            (Some("3"), Some(Order::Desc))
        );
    }

    #[test]
    fn unknown_and_contradictory_parameters_are_named() {
        assert!(err(&[("limit", "1"), ("count", "2")]).starts_with("limit, count:"));
        assert!(
            parse(&q(&[("after", "1"), ("before", "2")])).is_ok(),
            "a range"
        );
        assert!(err(&[("order", "up")]).starts_with("order:"));
        assert!(err(&[("before", "")]).starts_with("before:"));
        assert_eq!(
            err(&[("zeta", "1"), ("alpha", "2")]),
            "alpha, zeta: unknown query parameters \
             (known: name, limit, count, offset, after, before, order)"
        );
        assert!(parse_list(&q(&[("name", "x"), ("api_key", "k")]), &["name"]).is_ok());
    }
}
