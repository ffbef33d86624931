//! The chat page, `/llms.txt`, `/llms-full.txt` and `/protocol/{name}`:
//! public, embedded, self-contained.

use reqwest::{header, StatusCode};

use crate::common::{expect_error, spawn_gateway, Api};

const ASSETS: &[&str] = &["app.css", "app.js", "api.js", "chat.js", "logs.js"];

#[tokio::test]
async fn chat_page_and_assets_are_served_without_a_key() {
    let gw = spawn_gateway().await;
    let r = gw.client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(h.contains_key("x-request-id"));
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
    assert!(html.contains(r#"href="/assets/app.css""#));
    // No CDN, no external fonts: nothing in the page or its CSS names another host.
    assert!(
        !html.contains("://"),
        "the page loads nothing from elsewhere"
    );
    for name in ASSETS {
        let r = gw
            .client
            .get(gw.url(&format!("/assets/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = r.text().await.unwrap();
        if name.ends_with(".css") {
            assert!(ct.starts_with("text/css"), "{name}: {ct}");
            assert!(
                !body.contains("://"),
                "the CSS loads nothing from elsewhere"
            );
        } else {
            assert!(ct.starts_with("text/javascript"), "{name}: {ct}");
            assert!(
                !body.contains("from 'http") && !body.contains("import('http"),
                "{name} imports nothing from elsewhere"
            );
        }
    }
}

#[tokio::test]
async fn assets_revalidate_with_their_etag() {
    let gw = spawn_gateway().await;
    let r = gw
        .client
        .get(gw.url("/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
    let etag = r.headers()[header::ETAG].clone();
    let again = gw
        .client
        .get(gw.url("/assets/app.js"))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], etag);
    let other = gw
        .client
        .get(gw.url("/assets/app.js"))
        .header(header::IF_NONE_MATCH, "\"0000000000000000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_assets_answer_the_error_envelope() {
    let gw = spawn_gateway().await;
    let r = gw
        .client
        .get(gw.url("/assets/nope.js"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
    let r = gw
        .client
        .get(gw.url("/assets/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn llms_full_txt_is_every_protocol_file_and_the_openapi_document() {
    let gw = spawn_gateway().await;
    let r = gw
        .client
        .get(gw.url("/llms-full.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(text.starts_with("# weir\n\n> "), "{}", &text[..80]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        files += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let marker = format!("<!-- file: protocol/{name} -->");
        let at = text.find(&marker).unwrap_or_else(|| {
            panic!("/llms-full.txt leaves out protocol/{name} (add it to src/web/llms.rs)")
        });
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(
            text[at..].contains(body.trim_end()),
            "/llms-full.txt has a stale copy of protocol/{name}: rebuild"
        );
    }
    assert!(files >= 10, "protocol files found: {files}");
    // The overview first, the changelog after the contract, then the document.
    assert!(text.find("protocol/README.md -->") < text.find("protocol/rest.md -->"));
    let (_, doc) = text
        .split_once("<!-- file: /v1/openapi.json -->\n\n```json\n")
        .expect("the OpenAPI document is in the text");
    let doc: serde_json::Value =
        serde_json::from_str(doc.trim_end().strip_suffix("```").unwrap()).unwrap();
    let served: serde_json::Value = gw
        .client
        .get(gw.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc, served,
        "the document in /llms-full.txt is the served one"
    );
}

#[tokio::test]
async fn llms_txt_is_a_short_index_whose_links_work() {
    let gw = spawn_gateway().await;
    let r = gw.client.get(gw.url("/llms.txt")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    // llmstxt.org: an H1 title, a blockquote summary, H2 sections of
    // `- [name](url): notes` lists.
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# weir"));
    assert_eq!(lines.next(), Some(""));
    assert!(lines.next().unwrap().starts_with("> "), "{text}");
    assert!(text.contains("\n## Protocol\n") && text.contains("\n## Optional\n"));
    assert!(
        text.len() < 4000,
        "an index, not the docs: {} bytes",
        text.len()
    );
    let links: Vec<&str> = text.lines().filter(|l| l.starts_with("- [")).collect();
    assert!(links.len() >= 12, "{links:?}");
    for line in &links {
        let (_, rest) = line.split_once("](").unwrap();
        let (url, note) = rest.split_once("): ").expect("every link has a summary");
        assert!(!note.trim().is_empty(), "{line}");
        let r = gw.client.get(gw.url(url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
    }
    for name in [
        "README.md",
        "rest.md",
        "events.md",
        "websocket.md",
        "CHANGELOG.md",
    ] {
        let url = format!("/protocol/{name}");
        assert!(text.contains(&format!("]({url})")), "{name} is linked");
        let body = gw
            .client
            .get(gw.url(&url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("protocol")
            .join(name);
        assert_eq!(body, std::fs::read_to_string(file).unwrap(), "{url}");
    }
    assert!(text.contains("](/llms-full.txt)") && text.contains("](/v1/openapi.json)"));
    let r = gw
        .client
        .get(gw.url("/protocol/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
