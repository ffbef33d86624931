//! `--cors-origin` (`WEIR_CORS_ORIGIN`): which other origins may call the
//! gateway from a browser. Unset means no CORS headers at all (same-origin
//! only, the safe default). `*` allows any origin; otherwise a comma list of
//! exact origins (`https://chat.example.com,http://localhost:5173`).
//!
//! Keys travel in headers or `?api_key=`, never in cookies, so credentials
//! mode stays off and `*` is safe to offer. Preflights may send the key
//! headers and `Last-Event-ID` (a resuming fetch); the rate-limit and
//! request-id headers and the list cursors (`Next-Cursor`, `Prev-Cursor`)
//! are exposed so a UI can read them.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// Why a `--cors-origin` value was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CorsError {
    #[error("empty origin in the list")]
    Empty,
    #[error("`{0}` is not an origin: write scheme://host[:port] with no path, or `*`")]
    BadOrigin(String),
}

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Parses the flag: `*`, or origins separated by commas.
pub fn parse(spec: &str) -> Result<Option<Vec<HeaderValue>>, CorsError> {
    let spec = spec.trim();
    if spec == "*" {
        return Ok(None);
    }
    spec.split(',')
        .map(|o| origin(o.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn origin(o: &str) -> Result<HeaderValue, CorsError> {
    if o.is_empty() {
        return Err(CorsError::Empty);
    }
    let bad = || CorsError::BadOrigin(o.to_owned());
    let (scheme, rest) = o.split_once("://").ok_or_else(bad)?;
    let host_ok = !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
        && rest.chars().all(|c| c.is_ascii_graphic());
    if !matches!(scheme, "http" | "https") || !host_ok {
        return Err(bad());
    }
    HeaderValue::from_str(o).map_err(|_| bad())
}

/// clap's value parser: validates, keeps the text.
pub fn validate(spec: &str) -> Result<String, CorsError> {
    parse(spec).map(|_| spec.trim().to_owned())
}

/// The layer for a validated spec.
pub fn layer(spec: &str) -> Result<CorsLayer, CorsError> {
    let allow = match parse(spec)? {
        None => AllowOrigin::from(Any),
        Some(list) => AllowOrigin::list(list),
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("api_key"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
            HeaderName::from_static("next-cursor"),
            HeaderName::from_static("prev-cursor"),
        ])
        .max_age(PREFLIGHT_MAX_AGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_lists_parse() {
        assert_eq!(parse("*"), Ok(None));
        let list = parse("https://a.example, http://localhost:5173")
            .unwrap()
            .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1], "http://localhost:5173");
    }

    #[test]
    fn bad_origins_are_named() {
        for bad in [
            "a.example",
            "https://a.example/path",
            "ftp://x",
            "https://",
            "https://a b",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err, CorsError::BadOrigin(bad.to_owned()), "{bad}");
        }
        assert_eq!(parse("https://a.example,,"), Err(CorsError::Empty));
    }
}
