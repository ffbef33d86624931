//! The audit log at the HTTP boundary: which requests are recorded, under
//! which action and target, and `GET /v1/audit`.
//!
//! # What is recorded
//!
//! Every route of the table ([`super::routes`]) that is authenticated, is
//! not a `GET` and answers one JSON body ([`audited`]): the key, agent,
//! tool and session changes, agent start and stop, run cancel, and any
//! such route added later, with no edit here. Routes that stream work
//! (`POST …/messages`, `POST /v1/chat/completions`, the WebSocket) are not
//! changes of configuration and are left to the usage figures. A request
//! is recorded once it answered 2xx; a refused one changed nothing.
//!
//! The action is `<resource>.<verb>`, derived from the route's path and
//! method ([`action_of`]): `POST /v1/keys` is `keys.create`,
//! `PATCH /v1/agents/{id}` `agents.update`, `DELETE …/sessions/{sid}`
//! `sessions.delete`, `POST /v1/runs/{id}/cancel` `runs.cancel`. The target
//! is the last `{param}` of the path, unless the handler names it in its
//! answer ([`AuditTarget`]: a create names the new record's id).
//!
//! Nothing of the body is read or kept: a minted key's secret (or any
//! other) cannot reach a row. The row is queued ([`crate::audit`]), not
//! written, on the request path.

use std::{collections::HashMap, sync::LazyLock};

use axum::{
    extract::{Request, State},
    http::Uri,
    middleware::Next,
    response::{IntoResponseParts, Response, ResponseParts},
};
use utoipa::IntoParams;

use super::{
    auth::Auth,
    errors::ApiError,
    route::{Route, Transport, Verb},
    router::REQUEST_ID,
    routes::ROUTES,
};
use crate::{
    audit::Peer,
    state::AppState,
    store::{AuditFilter, AuditRecord, Page},
};

/// Whether requests of `route` are recorded (module doc).
pub fn audited(route: &Route) -> bool {
    route.verb != Verb::Get && !route.access.is_public() && route.transport == Transport::Json
}

/// Every audited route with its action, derived from the table once.
static ACTIONS: LazyLock<Vec<(Verb, &'static str, String)>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .filter(|r| audited(r))
        .map(|r| (r.verb, r.path, derive(r)))
        .collect()
});

/// The action recorded for `route`, `None` if it is not audited.
pub fn action_of(route: &Route) -> Option<&'static str> {
    ACTIONS
        .iter()
        .find(|(verb, path, _)| *verb == route.verb && *path == route.path)
        .map(|(_, _, action)| action.as_str())
}

/// Every action a row can have (what `?action=` accepts).
pub fn actions() -> impl Iterator<Item = &'static str> {
    ACTIONS.iter().map(|(_, _, a)| a.as_str())
}

/// `<resource>.<verb>` of an audited route: `…/{collection}` with `POST`
/// is `collection.create`; `…/{collection}/{id}` is `collection.update`
/// (`PATCH`) or `.delete`; `…/{collection}/{id}/{name}` is
/// `collection.name` (an action on one record), unless `name` is itself a
/// collection (the table has `…/{name}/{param}`): then it is
/// `name.create`, as for `POST /v1/agents/{id}/sessions`.
fn derive(route: &Route) -> String {
    let segs: Vec<&str> = route
        .path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "v1")
        .collect();
    let param = |s: &str| s.starts_with('{');
    let op = match route.verb {
        Verb::Post => "create",
        Verb::Patch => "update",
        Verb::Delete => "delete",
        Verb::Get => "read",
    };
    let (resource, verb) = match segs.as_slice() {
        [.., coll, last] if param(last) => (*coll, if op == "create" { "update" } else { op }),
        [.., coll, id, name] if param(id) && !is_collection(route.path) => (*coll, *name),
        _ => (segs.last().copied().unwrap_or("root"), op),
    };
    format!("{resource}.{verb}")
}

/// Whether some route of the table addresses one item under `path`.
fn is_collection(path: &str) -> bool {
    ROUTES.iter().any(|r| {
        r.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with("/{"))
    })
}

/// The value of the last `{param}` of `template` in `path`.
fn last_param(template: &str, path: &str) -> Option<String> {
    template
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{'))
        .last()
        .map(|(_, v)| v.to_owned())
}

/// The record a change was made to, when the path does not name it: put in
/// its answer by a handler that creates one (`(StatusCode::CREATED,
/// AuditTarget(id), Json(..))`).
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

impl IntoResponseParts for AuditTarget {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// What the recording middleware of one route knows.
#[derive(Clone)]
pub struct Recorded {
    pub state: AppState,
    pub route: &'static Route,
    pub action: &'static str,
}

/// Middleware of every audited route, inside auth: after a 2xx answer,
/// queues the row (module doc).
pub async fn record(State(at): State<Recorded>, req: Request, next: Next) -> Response {
    let Some(auth) = req.extensions().get::<Auth>().cloned() else {
        return next.run(req).await;
    };
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let peer = req.extensions().get::<Peer>().copied();
    let client = at.state.audit.client_addr(peer, req.headers());
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    if !resp.status().is_success() {
        return resp;
    }
    let target = match resp.extensions().get::<AuditTarget>() {
        Some(t) => Some(t.0.clone()),
        None => last_param(at.route.path, &path),
    };
    at.state.audit.record(AuditRecord {
        id: crate::util::new_id("audit"),
        account_id: auth.account().to_owned(),
        action: at.action.to_owned(),
        target,
        actor_key_id: auth.key.id.clone(),
        request_id,
        client_addr: client.map(|a| a.to_string()),
        method,
        path,
        created_at: crate::util::now(),
    });
    resp
}

/// The filters of `GET /v1/audit` (documentation of the query).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct AuditQuery {
    /// Only rows of this action (protocol/rest.md lists them).
    #[param(schema_with = action_schema, required = false)]
    action: String,
    /// Only rows whose target is this id.
    #[param(schema_with = target_schema, required = false)]
    target: String,
}

fn action_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let known: Vec<&str> = actions().collect();
    crate::domain::schema::schema_json(serde_json::json!({"type": "string", "enum": known}))
}

fn target_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::domain::schema::schema_json(
        serde_json::json!({"type": "string", "minLength": 1, "maxLength": 200}),
    )
}

/// The account's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(super::openapi::schemas::PageParams, AuditQuery),
    responses((status = 200, body = Page<AuditRecord>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    uri: Uri,
) -> Result<super::params::Paged<AuditRecord>, ApiError> {
    let q = super::params::query_of(&uri)?;
    let params = super::params::parse_list(&q, &["action", "target"])?;
    let filter = parse_filter(&q)?;
    let page = state
        .store
        .list_audit(auth.account(), filter, params)
        .await?;
    Ok(super::params::Paged(page.map(|mut r| {
        r.account_id.clear();
        r
    })))
}

/// `action` (one of [`actions`]) and `target` (1 to 200 characters).
fn parse_filter(q: &HashMap<String, String>) -> Result<AuditFilter, ApiError> {
    let action = q.get("action").cloned();
    if let Some(a) = &action {
        if !actions().any(|known| known == a) {
            let known: Vec<&str> = actions().collect();
            return Err(ApiError::validation(format!(
                "action: unknown action `{a}` (known: {})",
                known.join(", ")
            )));
        }
    }
    let target = q.get("target").cloned();
    if let Some(t) = &target {
        if t.is_empty() || t.chars().count() > 200 {
            return Err(ApiError::validation("target: must be 1 to 200 characters"));
        }
    }
    Ok(AuditFilter { action, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(verb: Verb, path: &str) -> Option<&'static str> {
        let route = ROUTES
            .iter()
            .find(|r| r.verb == verb && r.path == path)
            .unwrap_or_else(|| panic!("{verb:?} {path} is not routed"));
        action_of(route)
    }

    #[test]
    fn actions_are_named_from_the_table() {
        use Verb::*;
        for (verb, path, want) in [
            (Post, "/v1/keys", "keys.create"),
            (Delete, "/v1/keys/{id}", "keys.delete"),
            (Patch, "/v1/keys/{id}", "keys.update"),
            (Post, "/v1/keys/{id}/rotate", "keys.rotate"),
            (Post, "/v1/agents", "agents.create"),
            (Patch, "/v1/agents/{id}", "agents.update"),
            (Delete, "/v1/agents/{id}", "agents.delete"),
            (Post, "/v1/agents/{id}/start", "agents.start"),
            (Post, "/v1/agents/{id}/stop", "agents.stop"),
            (Post, "/v1/tools", "tools.create"),
            (Delete, "/v1/tools/{id}", "tools.delete"),
            (Post, "/v1/agents/{id}/sessions", "sessions.create"),
            (Delete, "/v1/agents/{id}/sessions/{sid}", "sessions.delete"),
            (Post, "/v1/runs/{id}/cancel", "runs.cancel"),
        ] {
            assert_eq!(action(verb, path), Some(want), "{verb:?} {path}");
        }
        assert_eq!(
            action(Post, "/v1/agents/{id}/messages"),
            None,
            "work, not a change"
        );
        assert_eq!(action(Post, "/v1/chat/completions"), None);
        assert_eq!(action(Get, "/v1/keys"), None);
    }

    #[test]
    fn every_action_is_well_formed_and_names_one_route() {
        let all: Vec<&str> = actions().collect();
        for (i, a) in all.iter().enumerate() {
            let (resource, verb) = a.split_once('.').expect("resource.verb");
            let word =
                |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(word(resource) && word(verb), "{a}");
            assert!(!all[i + 1..].contains(a), "{a} names two routes");
        }
    }

    #[test]
    fn the_target_is_the_last_path_parameter() {
        let t = |template, path| last_param(template, path);
        assert_eq!(t("/v1/keys/{id}", "/v1/keys/key-1"), Some("key-1".into()));
        assert_eq!(
            t("/v1/agents/{id}/sessions/{sid}", "/v1/agents/a/sessions/s"),
            Some("s".into())
        );
        assert_eq!(
            t("/v1/runs/{id}/cancel", "/v1/runs/run-9/cancel"),
            Some("run-9".into())
        );
        assert_eq!(t("/v1/keys", "/v1/keys"), None);
    }

    #[test]
    fn filters_are_checked() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_owned(), v.to_owned())]);
        let f = parse_filter(&q("action", "keys.create")).expect("known");
        assert_eq!(f.action.as_deref(), Some("keys.create"));
        let e = parse_filter(&q("action", "keys.steal")).expect_err("unknown");
        assert!(
            e.message.starts_with("action: unknown action `keys.steal`"),
            "{}",
            e.message
        );
        assert!(parse_filter(&q("target", "")).is_err());
        assert!(parse_filter(&q("target", &"x".repeat(201))).is_err());
        assert_eq!(
            parse_filter(&q("target", "key-1"))
                .expect("ok")
                .target
                .as_deref(),
            Some("key-1")
        );
    }
}
