//! `/v1/openapi.json` (OpenAPI 3.1) and `/docs`, an interactive page
//! embedded in the binary: it needs no CDN and no build-time download, so
//! it works air-gapped.
//!
//! The document is built from the route table ([`super::routes::ROUTES`]):
//! each documented route contributes the operation of its handler's
//! `#[utoipa::path]` annotation, under the table's method and path, with
//! its security requirement and the responses the table implies
//! ([`responses`]). The framing of SSE and WebSocket messages is
//! beyond OpenAPI: `protocol/` (sse.md, websocket.md, events.md) and its
//! JSON Schemas are the reference. Those schemas and the document's
//! components come from the same types ([`crate::protocol`]).

mod responses;
pub mod schemas;

use std::sync::LazyLock;

use axum::{
    http::header,
    response::{Html, IntoResponse},
};
use utoipa::{
    openapi::{
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        Components, OpenApi as Document, SecurityRequirement,
    },
    OpenApi,
};

use super::{route::Route, routes::ROUTES};

#[derive(OpenApi)]
#[openapi(
    // The payloads of SSE and WebSocket frames, which no operation's body
    // names, so that the document has every shape of protocol/schemas/.
    components(schemas(schemas::ErrorEnvelope, crate::openai::schema::ErrorShape,
        crate::domain::AgentEvent, crate::stream::sse::StreamError<'static>,
        crate::stream::ws::protocol::Request, crate::stream::ws::schema::ServerFrame,
        crate::openai::schema::Chunk, crate::openai::schema::WeirError)),
    info(title = "weir", description = "Streaming chat and agent gateway. See protocol/ for SSE and WebSocket framing."),
    tags((name = "agents"), (name = "tools"), (name = "sessions"), (name = "chat"), (name = "streams"),
        (name = "logs"), (name = "openai"), (name = "keys"), (name = "audit"), (name = "usage"), (name = "webhooks"), (name = "account"), (name = "ops"))
)]
struct ApiDoc;

/// The document, built from the route table.
pub fn document() -> Document {
    let mut api = ApiDoc::openapi();
    api.info.version = crate::domain::PROTOCOL_VERSION.to_owned();
    let comps = api.components.get_or_insert_with(Components::new);
    comps.add_security_scheme(
        "api_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    comps.add_security_scheme(
        "x_api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
    );
    let mut schemas = Vec::new();
    for route in ROUTES {
        let Some(doc) = route.doc else { continue };
        (doc.schemas)(&mut schemas);
        let mut op = operation(route, (doc.operation)());
        let tags = (doc.tags)().into_iter().map(str::to_owned);
        op.tags.get_or_insert_with(Vec::new).extend(tags);
        api.paths
            .add_path_operation(route.path, vec![route.verb.openapi()], op);
    }
    let comps = api.components.get_or_insert_with(Components::new);
    for (name, schema) in schemas {
        comps.schemas.entry(name).or_insert(schema);
    }
    api
}

/// The document as JSON, with the keywords utoipa's model cannot hold put
/// back in place ([`crate::domain::schema`]).
pub fn json() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).unwrap_or_default();
    crate::domain::schema::lift(&mut doc);
    doc
}

/// The annotation's operation, completed with what the table knows.
fn operation(
    route: &Route,
    mut op: utoipa::openapi::path::Operation,
) -> utoipa::openapi::path::Operation {
    responses::complete(route, &mut op);
    optional_body_is_not_null(&mut op);
    if !route.access.is_public() {
        let bearer = SecurityRequirement::new("api_key", Vec::<String>::new());
        let header = SecurityRequirement::new("x_api_key", Vec::<String>::new());
        op.security = Some(vec![bearer, header]);
    }
    op
}

/// utoipa spells an optional body (`Option<T>`) as `oneOf: [null, T]`, a
/// body that may be JSON `null`; weir's optional bodies may be absent
/// (or empty), not `null`.
fn optional_body_is_not_null(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{schema::Schema, RefOr};
    let Some(body) = op.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one))) = &content.schema else {
            continue;
        };
        let null = |s: &RefOr<Schema>| {
            serde_json::to_value(s).ok() == Some(serde_json::json!({"type": "null"}))
        };
        if let [a, b] = one.items.as_slice() {
            if null(a) || null(b) {
                content.schema = Some(if null(a) { b.clone() } else { a.clone() });
            }
        }
    }
}

/// `GET /v1/openapi.json`: the document, serialized once.
pub(crate) async fn openapi_json() -> impl IntoResponse {
    static JSON: LazyLock<Vec<u8>> =
        LazyLock::new(|| serde_json::to_vec(&json()).unwrap_or_default());
    (
        [(header::CONTENT_TYPE, "application/json")],
        JSON.as_slice(),
    )
}

/// `GET /docs`: the interactive page.
pub(crate) async fn docs() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("docs.html")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authenticated_route_is_in_the_document() {
        let doc = serde_json::to_value(document()).unwrap();
        for r in super::super::routes::authenticated() {
            let m = r.verb.method().as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][r.path].get(&m).is_some(),
                "{m} {} is missing from /v1/openapi.json",
                r.path
            );
        }
    }

    #[test]
    fn annotations_name_the_tables_method_and_path() {
        for r in ROUTES {
            let Some(doc) = r.doc else { continue };
            assert_eq!((doc.path)(), r.path, "the annotation of {}", r.path);
            assert!(
                (doc.methods)() == vec![r.verb.openapi()],
                "the annotation of {} names another method",
                r.path
            );
        }
    }

    #[test]
    fn every_list_documents_paging_both_ways() {
        let doc = json();
        let mut lists = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let Some(get) = item.get("get") else { continue };
            let params: Vec<&str> = get["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            if !params.contains(&"limit") {
                continue;
            }
            lists += 1;
            for p in ["after", "before", "order", "offset"] {
                assert!(params.contains(&p), "GET {path} documents `{p}`");
            }
            let headers = &get["responses"]["200"]["headers"];
            for h in ["Next-Cursor", "Prev-Cursor"] {
                assert!(headers.get(h).is_some(), "GET {path}: the 200 has {h}");
            }
        }
        // keys, audit, usage, agents, tools, sessions, messages, runs,
        // a run's messages, logs, webhooks, a webhook's deliveries.
        assert_eq!(lists, 12);
    }
}
