//! What the gateway serves to browsers and to people reading about it:
//! the chat page at `/` with its assets, `/llms.txt` (the protocol as one
//! flat page for LLM context) and the CORS policy for UIs on other origins.
//!
//! Every file is embedded in the binary at build time (`include_str!`): no
//! build step, no CDN, no external fonts, and an air-gapped gateway serves
//! the same page. These routes are public: the page asks for the key itself
//! and keeps it in the tab's `sessionStorage`.
//!
//! - [`cors`]: the `--cors-origin` layer.
//! - [`llms`]: the protocol as one page, `/llms.txt`.

pub mod cors;
pub mod llms;

use std::sync::OnceLock;

use axum::{
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::http::errors::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The page and its assets, by the name they are served under
/// (`index.html` at `/`, the rest under `/assets/`).
static ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/api.js"),
    },
    Asset {
        name: "chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/chat.js"),
    },
    Asset {
        name: "logs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/logs.js"),
    },
];

/// The page may talk to any gateway (`?gateway=` for another origin), but
/// runs only its own scripts and styles: no inline code, no third parties.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src *; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the chat page (public, like `/assets/{name}` and `/llms.txt`).
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// `GET /assets/{name}`: the page's scripts and styles.
pub(crate) async fn asset(
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .skip(1)
        .find(|a| a.name == name)
        .map(|a| serve(a, &headers))
        .ok_or_else(|| ApiError::not_found("not_found", "no such asset"))
}

/// Answers an embedded file with a content ETag: browsers revalidate
/// (`no-cache`) and get a 304 while the binary is the same.
fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = etag_of(asset);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if asset.name == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

/// `"<16 hex digits of the SHA-256 of the file>"`, computed once per file.
fn etag_of(asset: &'static Asset) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                format!("\"{}\"", &hex::encode(digest)[..16])
            })
            .collect()
    });
    ASSETS
        .iter()
        .position(|a| a.name == asset.name)
        .and_then(|i| tags.get(i))
        .map_or("\"\"", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        for a in ASSETS {
            for line in a.body.lines() {
                let Some(rest) = line.trim().strip_prefix("import ") else {
                    continue;
                };
                let Some(from) = rest.split("from '").nth(1) else {
                    continue;
                };
                let file = from.trim_end_matches(';').trim_end_matches('\'');
                let file = file.trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|x| x.name == file),
                    "{} imports {file}, which is not embedded",
                    a.name
                );
            }
        }
    }

    #[test]
    fn etags_differ_per_file_and_are_quoted() {
        let tags: Vec<_> = ASSETS.iter().map(etag_of).collect();
        for t in &tags {
            assert!(
                t.starts_with('"') && t.ends_with('"') && t.len() == 18,
                "{t}"
            );
        }
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
    }
}
