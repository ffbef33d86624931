//! Every route of the gateway, one declaration each. The router
//! ([`super::router`]), auth's scope check, `/v1/openapi.json`
//! ([`super::openapi`]), the direct SSE path ([`super::serve`]) and the
//! error shape of the envelope are all derived from [`ROUTES`]; see
//! [`super::route::Route`] for what each field means.
//!
//! # Adding a route
//!
//! Write the handler with its `#[utoipa::path(…)]` annotation (parameters,
//! body, success and handler-specific responses; auth, edge and timeout
//! errors are added from this table), then add one entry here:
//!
//! ```ignore
//! Route {
//!     verb: Get, path: "/v1/widgets/{id}",
//!     access: Scope("widgets:read"), errors: Weir, transport: Json, timeout: true,
//!     mount: |m, _| on(m, widgets::get_widget),
//!     doc: Doc::of::<widgets::__path_get_widget>(),
//! },
//! ```
//!
//! Every field must be given (there is no default), so a route cannot be
//! added without saying who may call it; `Public` is the only way to need
//! no key. Tests check the rest: that the annotation names the same method
//! and path (`openapi`), that every scope is a real one, that
//! protocol/rest.md and auth.md list the route, and (tests/api/scopes.rs)
//! that it is routed and refuses a key without its scope.

use axum::routing::on;

use super::{
    account, agents, approvals, audit, keys, messages, openapi, ops, providers,
    route::{
        Access::{AnyKey, Public, Scope},
        Doc,
        Errors::{OpenAi, Weir},
        Route,
        Transport::{Json, JsonOrSse, Sse, Text, WebSocket},
        Verb::{self, Delete, Get, Patch, Post},
    },
    runs, sessions, streams as sse, tools, usage, webhooks, ws,
};
use crate::openai;

/// Every route, public ones first, then by resource.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    // Ops, the document, metrics and the web page: no key.
    Route {
        verb: Get, path: "/healthz",
        access: Public, errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, ops::healthz),
        doc: Doc::of::<ops::__path_healthz>(),
    },
    Route {
        verb: Get, path: "/readyz",
        access: Public, errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, ops::readyz),
        doc: Doc::of::<ops::__path_readyz>(),
    },
    Route {
        verb: Get, path: "/v1/openapi.json",
        access: Public, errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, openapi::openapi_json),
        doc: None,
    },
    Route {
        verb: Get, path: "/docs",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, openapi::docs),
        doc: None,
    },
    Route {
        verb: Get, path: "/metrics",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, crate::metrics::render),
        doc: None,
    },
    Route {
        verb: Get, path: "/",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, crate::web::index),
        doc: None,
    },
    Route {
        verb: Get, path: "/assets/{name}",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, crate::web::asset),
        doc: None,
    },
    Route {
        verb: Get, path: "/llms.txt",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, crate::web::llms::serve),
        doc: None,
    },
    Route {
        verb: Get, path: "/llms-full.txt",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, crate::web::llms::serve_full),
        doc: None,
    },
    Route {
        verb: Get, path: "/protocol/{name}",
        access: Public, errors: Weir, transport: Text, timeout: false,
        mount: |m, _| on(m, crate::web::llms::serve_file),
        doc: None,
    },
    // The account and its keys.
    Route {
        verb: Get, path: "/v1/account",
        access: AnyKey, errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, account::get_account),
        doc: Doc::of::<account::__path_get_account>(),
    },
    Route {
        verb: Get, path: "/v1/keys",
        access: Scope("keys"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, keys::list_keys),
        doc: Doc::of::<keys::__path_list_keys>(),
    },
    Route {
        verb: Post, path: "/v1/keys",
        access: Scope("keys"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, keys::create_key),
        doc: Doc::of::<keys::__path_create_key>(),
    },
    Route {
        verb: Patch, path: "/v1/keys/{id}",
        access: Scope("keys"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, keys::update_key),
        doc: Doc::of::<keys::__path_update_key>(),
    },
    Route {
        verb: Post, path: "/v1/keys/{id}/rotate",
        access: Scope("keys"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, keys::rotate_key),
        doc: Doc::of::<keys::__path_rotate_key>(),
    },
    Route {
        verb: Delete, path: "/v1/keys/{id}",
        access: Scope("keys"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, keys::revoke_key),
        doc: Doc::of::<keys::__path_revoke_key>(),
    },
    // The audit log.
    Route {
        verb: Get, path: "/v1/audit",
        access: Scope("audit"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, audit::list_audit),
        doc: Doc::of::<audit::__path_list_audit>(),
    },
    // Usage.
    Route {
        verb: Get, path: "/v1/usage",
        access: Scope("usage"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, usage::list_usage),
        doc: Doc::of::<usage::__path_list_usage>(),
    },
    // The deployment's providers (operator scope).
    Route {
        verb: Get, path: "/v1/providers",
        access: Scope("providers"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, providers::list_providers),
        doc: Doc::of::<providers::__path_list_providers>(),
    },
    // Outbound event webhooks.
    Route {
        verb: Get, path: "/v1/webhooks",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::list_webhooks),
        doc: Doc::of::<webhooks::__path_list_webhooks>(),
    },
    Route {
        verb: Post, path: "/v1/webhooks",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::create_webhook),
        doc: Doc::of::<webhooks::__path_create_webhook>(),
    },
    Route {
        verb: Get, path: "/v1/webhooks/{id}",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::get_webhook),
        doc: Doc::of::<webhooks::__path_get_webhook>(),
    },
    Route {
        verb: Patch, path: "/v1/webhooks/{id}",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::update_webhook),
        doc: Doc::of::<webhooks::__path_update_webhook>(),
    },
    Route {
        verb: Delete, path: "/v1/webhooks/{id}",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::delete_webhook),
        doc: Doc::of::<webhooks::__path_delete_webhook>(),
    },
    Route {
        verb: Get, path: "/v1/webhooks/{id}/deliveries",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::list_deliveries),
        doc: Doc::of::<webhooks::__path_list_deliveries>(),
    },
    Route {
        verb: Post, path: "/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
        access: Scope("webhooks"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, webhooks::retry_delivery),
        doc: Doc::of::<webhooks::__path_retry_delivery>(),
    },
    // Agents.
    Route {
        verb: Get, path: "/v1/agents",
        access: Scope("agents:read"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::list_agents),
        doc: Doc::of::<agents::__path_list_agents>(),
    },
    Route {
        verb: Post, path: "/v1/agents",
        access: Scope("agents:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::create_agent),
        doc: Doc::of::<agents::__path_create_agent>(),
    },
    Route {
        verb: Get, path: "/v1/agents/{id}",
        access: Scope("agents:read"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::get_agent),
        doc: Doc::of::<agents::__path_get_agent>(),
    },
    Route {
        verb: Patch, path: "/v1/agents/{id}",
        access: Scope("agents:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::update_agent),
        doc: Doc::of::<agents::__path_update_agent>(),
    },
    Route {
        verb: Delete, path: "/v1/agents/{id}",
        access: Scope("agents:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::delete_agent),
        doc: Doc::of::<agents::__path_delete_agent>(),
    },
    Route {
        verb: Post, path: "/v1/agents/{id}/start",
        access: Scope("agents:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::start_agent),
        doc: Doc::of::<agents::__path_start_agent>(),
    },
    Route {
        verb: Post, path: "/v1/agents/{id}/stop",
        access: Scope("agents:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, agents::stop_agent),
        doc: Doc::of::<agents::__path_stop_agent>(),
    },
    // Tools.
    Route {
        verb: Get, path: "/v1/tools",
        access: Scope("tools:read"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, tools::list_tools),
        doc: Doc::of::<tools::__path_list_tools>(),
    },
    Route {
        verb: Post, path: "/v1/tools",
        access: Scope("tools:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, tools::create_tool),
        doc: Doc::of::<tools::__path_create_tool>(),
    },
    Route {
        verb: Get, path: "/v1/tools/{id}",
        access: Scope("tools:read"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, tools::get_tool),
        doc: Doc::of::<tools::__path_get_tool>(),
    },
    Route {
        verb: Delete, path: "/v1/tools/{id}",
        access: Scope("tools:write"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, tools::delete_tool),
        doc: Doc::of::<tools::__path_delete_tool>(),
    },
    // Sessions, messages and runs.
    Route {
        verb: Get, path: "/v1/agents/{id}/sessions",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, sessions::list_sessions),
        doc: Doc::of::<sessions::__path_list_sessions>(),
    },
    Route {
        verb: Post, path: "/v1/agents/{id}/sessions",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, sessions::create_session),
        doc: Doc::of::<sessions::__path_create_session>(),
    },
    Route {
        verb: Delete, path: "/v1/agents/{id}/sessions/{sid}",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, sessions::delete_session),
        doc: Doc::of::<sessions::__path_delete_session>(),
    },
    Route {
        verb: Post, path: "/v1/agents/{id}/messages",
        access: Scope("chat"), errors: Weir, transport: JsonOrSse, timeout: false,
        mount: |m, _| on(m, messages::send_message),
        doc: Doc::of::<messages::__path_send_message>(),
    },
    Route {
        verb: Get, path: "/v1/agents/{id}/messages",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, messages::list_messages),
        doc: Doc::of::<messages::__path_list_messages>(),
    },
    Route {
        verb: Get, path: "/v1/agents/{id}/events",
        access: Scope("chat"), errors: Weir, transport: Sse, timeout: false,
        mount: |m, _| on(m, sse::stream_agent_events),
        doc: Doc::of::<sse::__path_stream_agent_events>(),
    },
    Route {
        verb: Get, path: "/v1/agents/{id}/runs",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, runs::list_runs),
        doc: Doc::of::<runs::__path_list_runs>(),
    },
    Route {
        verb: Get, path: "/v1/runs/{id}",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, runs::get_run),
        doc: Doc::of::<runs::__path_get_run>(),
    },
    Route {
        verb: Get, path: "/v1/runs/{id}/messages",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: true,
        mount: |m, _| on(m, runs::list_run_messages),
        doc: Doc::of::<runs::__path_list_run_messages>(),
    },
    Route {
        verb: Post, path: "/v1/runs/{id}/cancel",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, runs::cancel_run),
        doc: Doc::of::<runs::__path_cancel_run>(),
    },
    Route {
        verb: Post, path: "/v1/runs/{id}/approvals/{approval_id}",
        access: Scope("chat"), errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, approvals::decide_approval),
        doc: Doc::of::<approvals::__path_decide_approval>(),
    },
    Route {
        verb: Get, path: "/v1/runs/{id}/stream",
        access: Scope("chat"), errors: Weir, transport: Sse, timeout: false,
        mount: |m, _| on(m, sse::stream_run),
        doc: Doc::of::<sse::__path_stream_run>(),
    },
    // Logs.
    Route {
        verb: Get, path: "/v1/agents/{id}/logs",
        access: Scope("logs"), errors: Weir, transport: Json, timeout: false,
        mount: |m, _| on(m, runs::list_logs),
        doc: Doc::of::<runs::__path_list_logs>(),
    },
    Route {
        verb: Get, path: "/v1/agents/{id}/logs/stream",
        access: Scope("logs"), errors: Weir, transport: Sse, timeout: false,
        mount: |m, _| on(m, sse::stream_agent_logs),
        doc: Doc::of::<sse::__path_stream_agent_logs>(),
    },
    // OpenAI-compatible.
    Route {
        verb: Post, path: "/v1/chat/completions",
        access: Scope("chat"), errors: OpenAi, transport: JsonOrSse, timeout: false,
        mount: |m, _| on(m, openai::chat_completions),
        doc: Doc::of::<openai::__path_chat_completions>(),
    },
    Route {
        verb: Get, path: "/v1/models",
        access: Scope("chat"), errors: OpenAi, transport: Json, timeout: false,
        mount: |m, _| on(m, openai::models::list_models),
        doc: Doc::of::<openai::models::__path_list_models>(),
    },
    // The WebSocket.
    Route {
        verb: Get, path: "/v1/ws",
        access: Scope("chat"), errors: Weir, transport: WebSocket, timeout: false,
        mount: |m, cfg| ws::route(m, ws::WsSettings::from_config(cfg)),
        doc: Doc::of::<ws::__path_upgrade>(),
    },
    // `/v1/ws` under the path other clients use: the same handler, scope
    // and limits.
    Route {
        verb: Get, path: "/ws",
        access: Scope("chat"), errors: Weir, transport: WebSocket, timeout: false,
        mount: |m, cfg| ws::route(m, ws::WsSettings::from_config(cfg)),
        doc: Doc::of::<ws::__path_upgrade_alias>(),
    },
];

/// The routes that start runs: their requests are checked as run starts
/// (the key's rate and a `max_runs` slot in one go, 429 `too_many_runs`
/// beyond it; protocol/limits.md). The WebSocket's `user_message` frames
/// are checked the same way, one by one.
pub const RUN_STARTS: &[(Verb, &str)] = &[
    (Post, "/v1/agents/{id}/messages"),
    (Post, "/v1/chat/completions"),
    (Post, "/v1/runs/{id}/approvals/{approval_id}"),
];

/// The authenticated routes with what they need, for tests and docs.
pub fn authenticated() -> impl Iterator<Item = &'static Route> {
    ROUTES.iter().filter(|r| !r.access.is_public())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_named_is_a_real_scope() {
        for r in ROUTES {
            if let Scope(s) = r.access {
                assert!(crate::store::SCOPES.contains(&s), "{}: {s}", r.path);
            }
        }
    }

    #[test]
    fn no_route_is_declared_twice() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    a.verb != b.verb || a.path != b.path,
                    "{:?} {} twice",
                    a.verb,
                    a.path
                );
            }
        }
    }

    #[test]
    fn streams_and_runs_have_no_rest_timeout() {
        for r in ROUTES {
            if r.transport != Json {
                assert!(!r.timeout, "{} must not time out", r.path);
            }
        }
    }
}
