//! `GET /llms.txt`: the whole protocol as one flat Markdown page, for
//! pasting into (or fetching from) an LLM's context. It is the files of
//! `protocol/` embedded at build time, so it always matches the binary
//! (a test checks that no file of the folder is left out).

use std::sync::OnceLock;

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

/// The protocol files, in reading order: overview, then the contract, then
/// the history.
pub const FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../protocol/README.md")),
    ("auth.md", include_str!("../../protocol/auth.md")),
    ("errors.md", include_str!("../../protocol/errors.md")),
    ("rest.md", include_str!("../../protocol/rest.md")),
    ("events.md", include_str!("../../protocol/events.md")),
    ("sse.md", include_str!("../../protocol/sse.md")),
    ("websocket.md", include_str!("../../protocol/websocket.md")),
    ("openai.md", include_str!("../../protocol/openai.md")),
    ("transport.md", include_str!("../../protocol/transport.md")),
    ("limits.md", include_str!("../../protocol/limits.md")),
    ("metrics.md", include_str!("../../protocol/metrics.md")),
    ("CHANGELOG.md", include_str!("../../protocol/CHANGELOG.md")),
];

/// The page, built once.
pub fn text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut out = String::with_capacity(FILES.iter().map(|(_, b)| b.len() + 80).sum());
        out.push_str(
            "# weir protocol (llms.txt)\n\n\
             > weir is a streaming chat and agent gateway (SSE, WebSocket, OpenAI-compatible). \
             This page is every file of its `protocol/` folder, concatenated: the versioned \
             wire contract. JSON Schemas are referenced by file name (`schemas/*.json`) and \
             live beside these files in the source tree.\n\nFiles:",
        );
        for (name, _) in FILES {
            out.push_str(&format!(" protocol/{name}"));
        }
        out.push('\n');
        for (name, body) in FILES {
            out.push_str(&format!("\n\n<!-- file: protocol/{name} -->\n\n"));
            out.push_str(body.trim_end());
            out.push('\n');
        }
        out
    })
}

pub async fn serve() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        text(),
    )
        .into_response()
}
