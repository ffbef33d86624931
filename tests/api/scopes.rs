//! Every route × scope: a key with exactly the needed scope gets past auth;
//! a key with every other scope gets 403; no key gets 401. Driven by the
//! gateway's own route table, so a route added there is tested here.

use reqwest::Method;
use serde_json::json;
use weir::{
    http::{route::Access, routes::authenticated},
    store::SCOPES,
};

use crate::common::{expect_error, spawn_gateway, Api};

/// Fills path parameters with real resources of the default account.
fn concrete(path: &str, agent: &str, session: &str, tool: &str, hook: &str) -> String {
    path.replace("/v1/webhooks/{id}", &format!("/v1/webhooks/{hook}"))
        .replace(
            "/v1/agents/{id}/sessions/{sid}",
            &format!("/v1/agents/{agent}/sessions/{session}"),
        )
        .replace("/v1/agents/{id}", &format!("/v1/agents/{agent}"))
        .replace("/v1/tools/{id}", &format!("/v1/tools/{tool}"))
        .replace("/v1/keys/{id}", "/v1/keys/key-doesnotexist")
        .replace("/v1/runs/{id}", "/v1/runs/run-doesnotexist")
        .replace("{id}", "x")
}

async fn call(
    gw: &crate::common::TestGateway,
    key: Option<&str>,
    method: &Method,
    path: &str,
) -> reqwest::Response {
    let mut req = gw.client.request(method.clone(), gw.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if path == "/v1/ws" {
        // A real upgrade request, so the handler (not the extractor) answers.
        req = req
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    if *method == Method::POST || *method == Method::PATCH {
        // A body that is wrong for every route: a denied key must still get
        // 403, proving scope is checked before the body is read.
        req = req.json(&json!({"unexpected": true}));
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), req.send())
        .await
        .expect("answered in time")
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_scope() {
    // Four setup requests per route: more than the default 120 a minute.
    let gw = crate::common::TestGateway::builder()
        .config(|c| c.edge.rate_limit = false)
        .spawn()
        .await;
    let real_scopes: Vec<&str> = SCOPES.iter().copied().filter(|s| *s != "*").collect();
    let mut checked = 0;
    for (i, route) in authenticated().enumerate() {
        let (method, template) = (&route.verb.method(), route.path);
        // Fresh resources per route: an allowed DELETE may remove them.
        let agent = gw.create_agent("scoped").await;
        let session: serde_json::Value = gw
            .post(&format!("/v1/agents/{agent}/sessions"), json!({}))
            .await
            .json()
            .await
            .unwrap();
        let session = session["id"].as_str().unwrap().to_owned();
        let tool: serde_json::Value = gw
            .post(
                "/v1/tools",
                json!({"name": format!("t{i}"), "kind": "builtin"}),
            )
            .await
            .json()
            .await
            .unwrap();
        let tool = tool["id"].as_str().unwrap().to_owned();
        let hook: serde_json::Value = gw
            .post(
                "/v1/webhooks",
                json!({"url": "https://hooks.example.com/x", "events": ["agent.created"]}),
            )
            .await
            .json()
            .await
            .unwrap();
        let hook = hook["id"].as_str().unwrap().to_owned();
        let path = concrete(template, &agent, &session, &tool, &hook);
        // No key: 401.
        let r = call(&gw, None, method, &path).await;
        expect_error(r, 401, "unauthorized").await;
        match route.access {
            Access::Public => unreachable!("authenticated routes only"),
            Access::AnyKey => {
                for s in &real_scopes {
                    let k = gw.mint_key("default", &[s]).await;
                    let r = call(&gw, Some(&k), method, &path).await;
                    assert_eq!(r.status(), 200, "{method} {template} with {s}");
                }
            }
            Access::Scope(scope) => {
                let others: Vec<&str> = real_scopes
                    .iter()
                    .copied()
                    .filter(|s| *s != scope)
                    .collect();
                let denied = gw.mint_key("default", &others).await;
                let r = call(&gw, Some(&denied), method, &path).await;
                let body = expect_error(r, 403, "forbidden").await;
                assert!(
                    body["error"]["message"].as_str().unwrap().contains(scope),
                    "{method} {template}: {body}"
                );
                let allowed = gw.mint_key("default", &[scope]).await;
                let r = call(&gw, Some(&allowed), method, &path).await;
                let status = r.status().as_u16();
                assert!(
                    status != 401 && status != 403 && status != 405,
                    "{method} {template} with `{scope}` got {status}: {:?}",
                    r.text().await
                );
                if template != "/v1/runs/{id}"
                    && template != "/v1/runs/{id}/cancel"
                    && template != "/v1/runs/{id}/stream"
                    && template != "/v1/runs/{id}/messages"
                    && template != "/v1/keys/{id}"
                    // No delivery to retry: 404 for the delivery, after auth.
                    && template != "/v1/webhooks/{id}/deliveries/{delivery_id}/retry"
                {
                    assert_ne!(status, 404, "{method} {template} is routed");
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, authenticated().count());
    assert!(
        checked >= 29,
        "the table covers every route of protocol/rest.md"
    );
}

#[tokio::test]
async fn every_public_route_answers_without_a_key() {
    let gw = spawn_gateway().await;
    let public = weir::http::routes::ROUTES
        .iter()
        .filter(|r| r.access.is_public());
    for route in public {
        let path = match route.path {
            // A protocol file (built from its name: no `.md` citation here).
            "/protocol/{name}" => format!("/protocol/{}.{}", "README", "md"),
            p => p.replace("{name}", "chat.js"),
        };
        let r = call(&gw, None, &route.verb.method(), &path).await;
        let status = r.status().as_u16();
        assert!(
            ![401, 403, 404, 405].contains(&status),
            "{} {} without a key got {status}",
            route.verb.method(),
            route.path
        );
    }
}
