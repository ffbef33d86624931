//! Authentication at the edge: finds the key in any of the four forms protocol/auth.md
//! allows, checks it against the key cache, and hands handlers an [`Auth`].
//!
//! The router's per-route layer ([`super::layers::guard`]) runs
//! [`authenticate`] on every route of the table ([`super::routes`]) whose
//! access is not `Public`, with that route's [`Access`], and checks the
//! scope before the handler (and its body extractor) runs. A route cannot
//! be declared without its access, so there is no route without a scope
//! to refuse.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request},
    http::{request::Parts, HeaderMap},
};

use super::{errors::ApiError, route::Access};
use crate::{domain::ErrorCode, keys::Refused, state::AppState, store::KeyRecord};

/// The authenticated caller, put in request extensions by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Auth {
    pub key: Arc<KeyRecord>,
}

impl Auth {
    /// The caller's account: every store call is scoped by it.
    pub fn account(&self) -> &str {
        &self.key.account_id
    }

    /// Fails with 403 `forbidden` unless the key grants `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        Ok(crate::keys::require(&self.key, scope)?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Auth>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing API key"))
    }
}

/// The presented secret from `Authorization: Bearer`, `X-Api-Key`, `api_key`
/// header or `?api_key=` (browsers' EventSource and WebSocket cannot set
/// headers), in that order.
pub fn presented_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    let bearer = headers.get(axum::http::header::AUTHORIZATION);
    if let Some(v) = bearer.and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().into());
        }
    }
    for name in ["x-api-key", "api_key"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().into());
        }
    }
    let query = query?;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("api_key=") {
            return Some(percent_decode(v));
        }
    }
    None
}

/// A query value as form-urlencoded: `+` is a space, `%XX` a byte; an
/// escape that is not one stays as it is, and bytes that are not UTF-8
/// become U+FFFD (the key then fails to match, as any wrong key does).
fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('+') {
        return percent_encoding::percent_decode_str(s).decode_utf8_lossy();
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
        .into()
}

/// The key check of every non-public route, given that route's `access`
/// (run by [`super::layers::guard`]): 401 unless a valid, unrevoked key is
/// presented (`key_expired` for a right secret of an expired key), 403
/// unless it has the scope; otherwise [`Auth`] goes in the request's
/// extensions (for the handler) and is returned (for the rate limit).
pub async fn authenticate(
    state: &AppState,
    access: Access,
    req: &mut Request,
) -> Result<Auth, ApiError> {
    let secret = presented_key(req.headers(), req.uri().query())
        .map(|s| s.into_owned())
        .ok_or_else(|| {
            ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")
        })?;
    let key = match state
        .keys
        .authenticate(state.store.as_ref(), &secret)
        .await?
    {
        Ok(key) => key,
        Err(Refused::Invalid) => return Err(ApiError::unauthorized("invalid or revoked API key")),
        Err(Refused::Expired(at)) => {
            let msg = format!("this API key expired at {at}");
            return Err(ApiError::new(ErrorCode::KeyExpired, msg));
        }
    };
    tracing::Span::current().record("key_id", key.id.as_str());
    let auth = Auth { key };
    match access {
        Access::Public | Access::AnyKey => {}
        Access::Scope(scope) => auth.require(scope)?,
    }
    req.extensions_mut().insert(auth.clone());
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_key_in_every_form() {
        let mut h = HeaderMap::new();
        assert!(presented_key(&h, None).is_none());
        assert_eq!(presented_key(&h, Some("a=1&api_key=k%5F1")).unwrap(), "k_1");
        h.insert("api_key", "k2".parse().unwrap());
        assert_eq!(presented_key(&h, Some("api_key=q")).unwrap(), "k2");
        h.insert("x-api-key", "k3".parse().unwrap());
        assert_eq!(presented_key(&h, None).unwrap(), "k3");
        h.insert("authorization", "Bearer k4".parse().unwrap());
        assert_eq!(presented_key(&h, None).unwrap(), "k4");
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("a%41"), "aA");
        assert_eq!(percent_decode("%é%41"), "%éA");
        assert_eq!(percent_decode("a+b%2B%20"), "a b+ ");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
