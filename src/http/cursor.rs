//! Resume cursors: where a reconnecting SSE client wants its stream to start.
//!
//! A cursor is the `seq` of the last event the client saw. It comes from the
//! `Last-Event-ID` header (sent by EventSource on its own when it reconnects)
//! or from `?after=` (for the first connection, or clients that cannot set
//! headers). When both are present the header wins: EventSource reconnects to
//! the same URL, so the query holds the *first* cursor and the header the
//! latest.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Query},
    http::{request::Parts, HeaderMap},
};

use super::errors::ApiError;

/// The resume cursor of a stream request: `None` means "live from now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for Resume {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(format!("query: {e}")))?;
        resume_cursor(&parts.headers, q.get("after").map(String::as_str)).map(Resume)
    }
}

/// Reads the cursor from `Last-Event-ID` or `?after=`; a value that is not a
/// non-negative integer is a 400 naming where it came from.
pub fn resume_cursor(headers: &HeaderMap, after: Option<&str>) -> Result<Option<u64>, ApiError> {
    // `?after=` is checked even when the header wins: a malformed parameter
    // is a 400 whatever else the request carries.
    let query = match after {
        None => None,
        Some(v) => Some(parse(v).ok_or_else(|| {
            ApiError::validation(format!(
                "after: must be a non-negative integer (an event seq), got `{v}`"
            ))
        })?),
    };
    if let Some(v) = headers.get("last-event-id") {
        let v = v.to_str().unwrap_or("\u{fffd}").trim();
        // EventSource sends no header when its last id is empty; an empty
        // header from another client means the same: no cursor.
        if !v.is_empty() {
            return parse(v).map(Some).ok_or_else(|| {
                ApiError::validation(format!(
                    "after: the `Last-Event-ID` header must be a non-negative integer (an event seq), got `{v}`"
                ))
            });
        }
    }
    Ok(query)
}

fn parse(v: &str) -> Option<u64> {
    // `u64::from_str` accepts a leading `+`; a seq never has one.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_after_is_refused_even_when_the_header_wins() {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "7".parse().unwrap());
        assert_eq!(resume_cursor(&h, Some("3")).unwrap(), Some(7));
        let e = resume_cursor(&h, Some("\u{8f}>m")).unwrap_err();
        assert!(e.message.starts_with("after: must be"), "{}", e.message);
    }

    fn headers(last_event_id: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = last_event_id {
            h.insert("last-event-id", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn header_wins_over_query_and_empty_header_is_no_cursor() {
        assert_eq!(resume_cursor(&headers(None), None).unwrap(), None);
        assert_eq!(resume_cursor(&headers(None), Some("7")).unwrap(), Some(7));
        assert_eq!(
            resume_cursor(&headers(Some("12")), Some("7")).unwrap(),
            Some(12)
        );
        assert_eq!(
            resume_cursor(&headers(Some("")), Some("7")).unwrap(),
            Some(7)
        );
        assert_eq!(resume_cursor(&headers(Some(" 0 ")), None).unwrap(), Some(0));
    }

    #[test]
    fn bad_values_name_the_cursor() {
        for bad in ["-1", "+3", "x", "", "1.5", "99999999999999999999999"] {
            let e = resume_cursor(&headers(None), Some(bad)).unwrap_err();
            assert_eq!(e.code(), crate::domain::ErrorCode::ValidationError);
            assert!(e.message.starts_with("after:"), "{}", e.message);
        }
        let e = resume_cursor(&headers(Some("abc")), None).unwrap_err();
        assert!(e.message.contains("Last-Event-ID"), "{}", e.message);
    }
}
