//! The route → scope table: the one place that says which scope each route
//! needs. Auth enforces it on the matched route *before* any extractor reads
//! the body, so a caller without the scope gets 403 whatever it sent, and a
//! route missing from the table is refused (fail closed).

use axum::http::Method;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid key.
    AnyKey,
    /// This scope (or `*`).
    Scope(&'static str),
}

use Need::{AnyKey, Scope};

/// Every authenticated route, as (method, axum path, need).
pub const ROUTE_SCOPES: &[(Method, &str, Need)] = &[
    (Method::GET, "/v1/account", AnyKey),
    (Method::GET, "/v1/keys", Scope("keys")),
    (Method::POST, "/v1/keys", Scope("keys")),
    (Method::DELETE, "/v1/keys/{id}", Scope("keys")),
    (Method::GET, "/v1/agents", Scope("agents:read")),
    (Method::POST, "/v1/agents", Scope("agents:write")),
    (Method::GET, "/v1/agents/{id}", Scope("agents:read")),
    (Method::PATCH, "/v1/agents/{id}", Scope("agents:write")),
    (Method::DELETE, "/v1/agents/{id}", Scope("agents:write")),
    (Method::POST, "/v1/agents/{id}/start", Scope("agents:write")),
    (Method::POST, "/v1/agents/{id}/stop", Scope("agents:write")),
    (Method::GET, "/v1/tools", Scope("tools:read")),
    (Method::POST, "/v1/tools", Scope("tools:write")),
    (Method::GET, "/v1/tools/{id}", Scope("tools:read")),
    (Method::DELETE, "/v1/tools/{id}", Scope("tools:write")),
    (Method::GET, "/v1/agents/{id}/sessions", Scope("chat")),
    (Method::POST, "/v1/agents/{id}/sessions", Scope("chat")),
    (
        Method::DELETE,
        "/v1/agents/{id}/sessions/{sid}",
        Scope("chat"),
    ),
    (Method::POST, "/v1/agents/{id}/messages", Scope("chat")),
    (Method::GET, "/v1/agents/{id}/messages", Scope("chat")),
    (Method::GET, "/v1/agents/{id}/events", Scope("chat")),
    (Method::GET, "/v1/runs/{id}", Scope("chat")),
    (Method::POST, "/v1/runs/{id}/cancel", Scope("chat")),
    (Method::GET, "/v1/runs/{id}/stream", Scope("chat")),
    (Method::GET, "/v1/agents/{id}/logs", Scope("logs")),
    (Method::GET, "/v1/agents/{id}/logs/stream", Scope("logs")),
    (Method::POST, "/v1/chat/completions", Scope("chat")),
    (Method::GET, "/v1/models", Scope("chat")),
    (Method::GET, "/v1/ws", Scope("chat")),
];

/// The need of a matched route; `None` if the route is not in the table.
pub fn need_for(method: &Method, path: &str) -> Option<Need> {
    // HEAD is served by GET routes, and so is CONNECT: the only route that
    // takes it is `/v1/ws`, whose HTTP/2 handshake (RFC 8441) it is.
    let method = if method == Method::HEAD || method == Method::CONNECT {
        &Method::GET
    } else {
        method
    };
    ROUTE_SCOPES
        .iter()
        .find(|(m, p, _)| m == method && same_shape(p, path))
        .map(|(_, _, n)| *n)
}

/// Paths match segment by segment; `{param}` segments match whatever the
/// parameter is called.
fn same_shape(a: &str, b: &str) -> bool {
    let param = |s: &str| s.starts_with('{') && s.ends_with('}');
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || (param(x) && param(y)) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_named_is_a_real_scope() {
        for (_, path, need) in ROUTE_SCOPES {
            if let Scope(s) = need {
                assert!(crate::store::SCOPES.contains(s), "{path}: {s}");
            }
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(
            need_for(&Method::HEAD, "/v1/agents"),
            Some(Scope("agents:read"))
        );
        assert_eq!(need_for(&Method::PUT, "/v1/agents"), None);
        assert_eq!(
            need_for(&Method::GET, "/v1/runs/{run_id}"),
            Some(Scope("chat"))
        );
        assert_eq!(need_for(&Method::GET, "/v1/runs/{run_id}/x"), None);
    }
}
