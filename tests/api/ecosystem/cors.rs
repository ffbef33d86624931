//! `--cors-origin`: a chat UI on another origin can call the gateway (fetch
//! with a preflight, EventSource with `?api_key=`); others cannot.

use reqwest::{header, Method, StatusCode};

use crate::common::{spawn_gateway, weir_bin, Api, TestGateway};

const UI: &str = "http://localhost:5173";

async fn with_cors(spec: &str) -> TestGateway {
    let spec = spec.to_owned();
    TestGateway::builder()
        .config(move |cfg| cfg.cors_origin = Some(spec))
        .spawn()
        .await
}

fn acao(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn header_list(r: &reqwest::Response, name: header::HeaderName) -> String {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

async fn preflight(gw: &TestGateway, origin: &str, path: &str) -> reqwest::Response {
    gw.client
        .request(Method::OPTIONS, gw.url(path))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,last-event-id",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn preflight_and_requests_from_an_allowed_origin() {
    let gw = with_cors(&format!("https://chat.example.com,{UI}")).await;
    let agent = gw.create_agent("cors").await;

    let pre = preflight(&gw, UI, &format!("/v1/agents/{agent}/messages")).await;
    assert!(pre.status().is_success(), "preflight: {}", pre.status());
    assert_eq!(acao(&pre).as_deref(), Some(UI));
    let methods = header_list(&pre, header::ACCESS_CONTROL_ALLOW_METHODS);
    assert!(
        methods.contains("post") && methods.contains("patch"),
        "{methods}"
    );
    let allowed = header_list(&pre, header::ACCESS_CONTROL_ALLOW_HEADERS);
    for h in [
        "authorization",
        "content-type",
        "last-event-id",
        "x-api-key",
    ] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
    assert_eq!(pre.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
    assert!(pre
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        .is_none());

    // The real request after it: the answer names the origin and exposes
    // the headers a UI reads.
    let r = gw
        .req(Method::GET, "/v1/agents")
        .header(header::ORIGIN, UI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(acao(&r).as_deref(), Some(UI));
    assert!(header_list(&r, header::VARY).contains("origin"));
    let exposed = header_list(&r, header::ACCESS_CONTROL_EXPOSE_HEADERS);
    for h in [
        "x-request-id",
        "x-ratelimit-remaining",
        "retry-after",
        "next-cursor",
        "prev-cursor",
    ] {
        assert!(exposed.contains(h), "{h} not in {exposed}");
    }

    // EventSource cannot set headers: the key rides in ?api_key=.
    let r = gw
        .client
        .get(gw.url(&format!(
            "/v1/agents/{agent}/logs/stream?api_key={}",
            gw.key
        )))
        .header(header::ORIGIN, UI)
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(acao(&r).as_deref(), Some(UI));
    drop(r);

    // Errors are readable cross-origin too (a UI shows why it failed).
    let r = gw
        .client
        .get(gw.url("/v1/agents"))
        .header(header::ORIGIN, UI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(acao(&r).as_deref(), Some(UI));
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let gw = with_cors(UI).await;
    let pre = preflight(&gw, "http://evil.example", "/v1/agents").await;
    assert_eq!(acao(&pre), None);
    let r = gw
        .req(Method::GET, "/v1/agents")
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r), None, "the browser will refuse to show it");
}

#[tokio::test]
async fn without_the_flag_there_is_no_cors_at_all() {
    let gw = spawn_gateway().await;
    let pre = preflight(&gw, UI, "/v1/agents").await;
    assert_eq!(acao(&pre), None);
    let r = gw
        .req(Method::GET, "/v1/agents")
        .header(header::ORIGIN, UI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(acao(&r), None);
}

#[tokio::test]
async fn star_allows_any_origin() {
    let gw = with_cors("*").await;
    let pre = preflight(&gw, "http://anything.example:8000", "/v1/chat/completions").await;
    assert_eq!(acao(&pre).as_deref(), Some("*"));
    let r = gw
        .req(Method::GET, "/v1/models")
        .header(header::ORIGIN, "http://anything.example:8000")
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r).as_deref(), Some("*"));
}

#[test]
fn a_bad_origin_stops_start_up_with_its_name() {
    let out = std::process::Command::new(weir_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--cors-origin"])
        .arg("https://ok.example,chat.example.com")
        .env_remove("WEIR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chat.example.com") && err.contains("--cors-origin"),
        "{err}"
    );
}
