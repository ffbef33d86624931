//! Query parameters shared by list routes: `limit`, `offset`, `after`.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Query},
    http::request::Parts,
};

use super::errors::ApiError;
use crate::store::ListParams;

/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// Paging parameters, validated: a bad value is a 400 naming the parameter.
#[derive(Debug, Clone)]
pub struct ListQuery(pub ListParams);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(format!("query: {e}")))?;
        parse(&q).map(ListQuery)
    }
}

/// Validates `limit` (1..=1000, default 50), `offset` (≥ 0) and `after`.
pub fn parse(q: &HashMap<String, String>) -> Result<ListParams, ApiError> {
    let mut params = ListParams::default();
    if let Some(v) = q.get("limit") {
        params.limit = v
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "limit: must be an integer from 1 to {MAX_LIMIT}, got `{v}`"
                ))
            })?;
    }
    if let Some(v) = q.get("offset") {
        params.offset = v.parse::<u64>().map_err(|_| {
            ApiError::validation(format!("offset: must be a non-negative integer, got `{v}`"))
        })?;
    }
    if let Some(v) = q.get("after") {
        if v.is_empty() {
            return Err(ApiError::validation("after: must not be empty"));
        }
        params.after = Some(v.clone());
    }
    Ok(params)
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

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse(&q(&[])).unwrap(), ListParams::default());
        assert_eq!(parse(&q(&[("limit", "1000")])).unwrap().limit, 1000);
        for bad in ["0", "1001", "-1", "x"] {
            let e = parse(&q(&[("limit", bad)])).unwrap_err();
            assert!(e.message.starts_with("limit:"), "{}", e.message);
        }
        assert!(parse(&q(&[("offset", "-2")]))
            .unwrap_err()
            .message
            .starts_with("offset:"));
        assert_eq!(
            parse(&q(&[("after", "17")])).unwrap().after.as_deref(),
            Some("17")
        );
    }
}
