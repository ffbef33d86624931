//! `/v1/openapi.json` (OpenAPI 3.1 generated from the handlers' annotations
//! by utoipa) and `/docs`, an interactive page embedded in the binary: it
//! needs no CDN and no build-time download, so it works air-gapped.

use axum::{
    http::header,
    response::{Html, IntoResponse},
    routing::get,
    Json, Router,
};
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{account, agents, keys, openapi_streams as streams, ops, sessions, tools};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "weir", description = "Streaming chat and agent gateway. See protocol/ for SSE and WebSocket framing."),
    paths(
        ops::healthz, ops::readyz,
        account::get_account,
        keys::create_key, keys::list_keys, keys::revoke_key,
        agents::create_agent, agents::list_agents, agents::get_agent, agents::update_agent,
        agents::delete_agent, agents::start_agent, agents::stop_agent,
        tools::create_tool, tools::list_tools, tools::get_tool, tools::delete_tool,
        sessions::create_session, sessions::list_sessions, sessions::delete_session,
        streams::send_message, streams::list_messages, streams::agent_events,
        streams::get_run, streams::cancel_run, streams::run_stream,
        streams::list_logs, streams::logs_stream,
        streams::chat_completions, streams::models, streams::websocket,
    ),
    modifiers(&Security),
    tags((name = "agents"), (name = "tools"), (name = "sessions"), (name = "chat"), (name = "streams"),
        (name = "logs"), (name = "openai"), (name = "keys"), (name = "account"), (name = "ops"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let comps = api.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        comps.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
}

/// The generated document; more routes are documented in `protocol/`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

async fn docs() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("docs.html")),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_authenticated_route_is_in_the_document() {
        let doc = serde_json::to_value(super::document()).unwrap();
        for (method, path, _) in crate::http::scopes::ROUTE_SCOPES {
            let item = &doc["paths"][*path];
            let m = method.as_str().to_ascii_lowercase();
            assert!(
                item.get(&m).is_some(),
                "{method} {path} is missing from /v1/openapi.json"
            );
        }
    }
}
