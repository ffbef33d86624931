//! The protocol for LLMs, per the llms.txt convention (llmstxt.org):
//!
//! - `GET /llms.txt`: the short index: a title, a one-paragraph summary,
//!   and sections of links, each with a one-line summary;
//! - `GET /llms-full.txt`: every file of `protocol/` and the OpenAPI
//!   document, as one text;
//! - `GET /protocol/{name}`: one protocol file, what the index links to.
//!
//! The files are embedded at build time, so they always match the binary
//! (a test checks that no file of the folder is left out).

use std::sync::OnceLock;

use axum::{
    extract::Path,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

use crate::{
    domain::ErrorCode,
    http::{errors::ApiError, openapi},
};

/// The protocol files, in reading order (overview, contract, history),
/// each with the one line the index shows.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "overview, versioning and where everything is",
        include_str!("../../protocol/README.md"),
    ),
    (
        "auth.md",
        "API keys, how to send them, scopes",
        include_str!("../../protocol/auth.md"),
    ),
    (
        "errors.md",
        "the error envelope and every error code",
        include_str!("../../protocol/errors.md"),
    ),
    (
        "rest.md",
        "every REST route, pagination (cursors both ways), CORS",
        include_str!("../../protocol/rest.md"),
    ),
    (
        "events.md",
        "agent events: the JSON of every message type",
        include_str!("../../protocol/events.md"),
    ),
    (
        "sse.md",
        "Server-Sent Events streams and resuming them",
        include_str!("../../protocol/sse.md"),
    ),
    (
        "websocket.md",
        "the WebSocket (`/v1/ws`, alias `/ws`) and its frames",
        include_str!("../../protocol/websocket.md"),
    ),
    (
        "openai.md",
        "the OpenAI-compatible `/v1/chat/completions` and `/v1/models`",
        include_str!("../../protocol/openai.md"),
    ),
    (
        "providers.md",
        "upstream providers and routes: fallback, `mid_stream`, circuit breaking, `/v1/providers`",
        include_str!("../../protocol/providers.md"),
    ),
    (
        "transport.md",
        "HTTP versions, compression, keep-alive, timeouts",
        include_str!("../../protocol/transport.md"),
    ),
    (
        "webhooks.md",
        "outbound event webhooks: events, payloads, signatures, retries",
        include_str!("../../protocol/webhooks.md"),
    ),
    (
        "limits.md",
        "rate limits, token budgets, connection and size limits",
        include_str!("../../protocol/limits.md"),
    ),
    (
        "metrics.md",
        "`/metrics` and the structured logs",
        include_str!("../../protocol/metrics.md"),
    ),
    (
        "CHANGELOG.md",
        "what changed in each protocol version",
        include_str!("../../protocol/CHANGELOG.md"),
    ),
];

const TITLE: &str = "# weir";
const SUMMARY: &str = "> weir is a streaming chat and agent gateway: agents, sessions and \
runs over REST, Server-Sent Events, WebSocket and an OpenAI-compatible API, with API keys, \
scopes, limits and an audit log.";

/// `/llms.txt`, built once.
pub fn index() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut out = format!(
            "{TITLE}\n\n{SUMMARY}\n\nThe wire contract is the Markdown files below \
             (protocol version {}); JSON Schemas are named `schemas/*.json` in them. \
             Every route needs an API key except the documents listed here.\n\n## Protocol\n\n",
            crate::domain::PROTOCOL_VERSION
        );
        let link = |(name, line, _): &(&str, &str, &str)| format!("- [{name}](/protocol/{name}): {line}\n");
        let history = |f: &&(&str, &str, &str)| f.0 == "CHANGELOG.md";
        for f in FILES.iter().filter(|f| !history(f)) {
            out.push_str(&link(f));
        }
        out.push_str(
            "\n## API\n\n\
             - [OpenAPI document](/v1/openapi.json): every REST route, parameter and schema (OpenAPI 3.1)\n\
             - [API reference](/docs): the OpenAPI document as an interactive page\n\
             - [Everything in one text](/llms-full.txt): all the protocol files and the OpenAPI document\n\
             \n## Optional\n\n",
        );
        for f in FILES.iter().filter(history) {
            out.push_str(&link(f));
        }
        out
    })
}

/// `/llms-full.txt`, built once: the protocol files, then the OpenAPI
/// document (pretty JSON).
pub fn full() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut out = String::with_capacity(FILES.iter().map(|f| f.2.len() + 80).sum());
        out.push_str(&format!(
            "{TITLE}\n\n{SUMMARY}\n\nThis text is every file of weir's `protocol/` folder \
             (the versioned wire contract), then its OpenAPI document. JSON Schemas are \
             referenced by file name (`schemas/*.json`).\n\nFiles:"
        ));
        for (name, _, _) in FILES {
            out.push_str(&format!(" protocol/{name}"));
        }
        out.push_str(" /v1/openapi.json\n");
        for (name, _, body) in FILES {
            out.push_str(&format!("\n\n<!-- file: protocol/{name} -->\n\n"));
            out.push_str(body.trim_end());
            out.push('\n');
        }
        let doc = serde_json::to_string_pretty(&openapi::json()).unwrap_or_default();
        out.push_str("\n\n<!-- file: /v1/openapi.json -->\n\n```json\n");
        out.push_str(&doc);
        out.push_str("\n```\n");
        out
    })
}

fn markdown(text: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        text,
    )
        .into_response()
}

/// `GET /llms.txt`.
pub async fn serve() -> Response {
    markdown(index())
}

/// `GET /llms-full.txt`.
pub async fn serve_full() -> Response {
    markdown(full())
}

/// `GET /protocol/{name}`: one file of [`FILES`]; any other name is 404.
pub async fn serve_file(Path(name): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|f| f.0 == name)
        .map(|f| markdown(f.2))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such protocol file"))
}
