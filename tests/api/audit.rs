//! The audit log end to end: every kind of change leaves a row with the
//! actor, request id, client address, action and target; `GET /v1/audit`
//! pages it newest first with filters and the usual 400s; accounts are
//! apart; no secret reaches a row; `X-Forwarded-For` counts only from a
//! trusted proxy. Rows are written off the request path, so tests poll.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use weir::{audit::ProxyNet, store::AuditFilter};

use crate::common::{
    expect_error, mint, poll, postgres_available, spawn_gateway, Api, StoreMode, TestGateway,
};

/// The bootstrap key's id (`wk_<id>_…` → `key-<id>`).
const BOOTSTRAP_ID: &str = "key-bootstrap";

/// The request's id as the gateway answered it.
fn request_id(r: &Response) -> String {
    r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Sends and checks the status; the request id and body.
async fn change(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> (String, Value) {
    let mut req = gw.req(method.clone(), path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let rid = request_id(&r);
    assert_eq!(r.status().as_u16(), status, "{method} {path}");
    (rid, r.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/audit{query}` with `key`, once it lists `want` rows in all.
async fn audit_rows(gw: &TestGateway, key: &str, query: &str, want: u64) -> Value {
    let got = poll(Duration::from_secs(10), || async {
        let r = gw
            .req_as(key, Method::GET, &format!("/v1/audit{query}"))
            .send()
            .await
            .ok()?;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.ok()?;
        (page["pagination"]["total"] == want).then_some(page)
    })
    .await;
    got.unwrap_or_else(|| panic!("audit{query} never reached {want} rows"))
}

#[tokio::test]
async fn every_kind_of_change_is_recorded_with_its_actor_and_request() {
    let gw = spawn_gateway().await;
    let mut expected: Vec<(String, String, Option<String>)> = Vec::new();
    let mut add = |action: &str, rid: String, target: Option<&str>| {
        expected.push((action.to_owned(), rid, target.map(str::to_owned)));
    };

    let (rid, key) = change(
        &gw,
        Method::POST,
        "/v1/keys",
        Some(json!({"scopes": ["chat"]})),
        201,
    )
    .await;
    let key_id = key["id"].as_str().expect("key id").to_owned();
    let secret = key["secret"].as_str().expect("secret").to_owned();
    add("keys.create", rid, Some(&key_id));
    // A limit change, then a rotation whose answer carries a new secret.
    let key_at = format!("/v1/keys/{key_id}");
    let (rid, patched) = change(&gw, Method::PATCH, &key_at, Some(json!({"rpm": 7})), 200).await;
    assert_eq!(patched["rpm"], 7, "{patched}");
    add("keys.update", rid, Some(&key_id));
    let (rid, rotated) = change(
        &gw,
        Method::POST,
        &format!("{key_at}/rotate"),
        Some(json!({"grace_secs": 60})),
        200,
    )
    .await;
    let rotated_secret = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(rotated_secret, secret);
    add("keys.rotate", rid, Some(&key_id));
    let (rid, agent) = change(
        &gw,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": "a"})),
        201,
    )
    .await;
    let agent_id = agent["id"].as_str().expect("agent id").to_owned();
    add("agents.create", rid, Some(&agent_id));
    let at = format!("/v1/agents/{agent_id}");
    let (rid, _) = change(&gw, Method::PATCH, &at, Some(json!({"name": "b"})), 200).await;
    add("agents.update", rid, Some(&agent_id));
    let (rid, _) = change(&gw, Method::POST, &format!("{at}/stop"), None, 200).await;
    add("agents.stop", rid, Some(&agent_id));
    let (rid, _) = change(&gw, Method::POST, &format!("{at}/start"), None, 200).await;
    add("agents.start", rid, Some(&agent_id));
    let (rid, tool) = change(
        &gw,
        Method::POST,
        "/v1/tools",
        Some(json!({"name": "t", "kind": "builtin"})),
        201,
    )
    .await;
    let tool_id = tool["id"].as_str().expect("tool id").to_owned();
    add("tools.create", rid, Some(&tool_id));
    let (rid, _) = change(
        &gw,
        Method::DELETE,
        &format!("/v1/tools/{tool_id}"),
        None,
        204,
    )
    .await;
    add("tools.delete", rid, Some(&tool_id));
    let (rid, session) = change(
        &gw,
        Method::POST,
        &format!("{at}/sessions"),
        Some(json!({})),
        201,
    )
    .await;
    let session_id = session["id"].as_str().expect("session id").to_owned();
    add("sessions.create", rid, Some(&session_id));
    // A run, to cancel (a finished run's cancel answers 200 as it is).
    let (_, run) = change(
        &gw,
        Method::POST,
        &format!("{at}/messages"),
        Some(json!({"message": "hi"})),
        200,
    )
    .await;
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let (rid, _) = change(
        &gw,
        Method::POST,
        &format!("/v1/runs/{run_id}/cancel"),
        None,
        200,
    )
    .await;
    add("runs.cancel", rid, Some(&run_id));
    let path = format!("{at}/sessions/{session_id}");
    let (rid, _) = change(&gw, Method::DELETE, &path, None, 204).await;
    add("sessions.delete", rid, Some(&session_id));
    let (rid, _) = change(
        &gw,
        Method::DELETE,
        &format!("/v1/keys/{key_id}"),
        None,
        204,
    )
    .await;
    add("keys.delete", rid, Some(&key_id));
    let (rid, _) = change(&gw, Method::DELETE, &at, None, 204).await;
    add("agents.delete", rid, Some(&agent_id));
    // Refused changes leave nothing.
    change(&gw, Method::DELETE, "/v1/tools/tool-nope", None, 404).await;
    change(
        &gw,
        Method::POST,
        "/v1/keys",
        Some(json!({"scopes": []})),
        400,
    )
    .await;

    let n = expected.len() as u64;
    let page = audit_rows(&gw, &gw.key, "?limit=100", n).await;
    let rows = page["data"].as_array().expect("rows");
    expected.reverse(); // newest first
    for (row, (action, rid, target)) in rows.iter().zip(&expected) {
        assert_eq!(row["action"], action.as_str(), "{row}");
        assert_eq!(row["request_id"], rid.as_str(), "{row}");
        assert_eq!(row["target"].as_str(), target.as_deref(), "{row}");
        assert_eq!(row["actor_key_id"], BOOTSTRAP_ID, "{row}");
        assert_eq!(row["client_addr"], "127.0.0.1", "{row}");
        assert!(
            row["id"].as_str().is_some_and(|i| i.starts_with("audit-")),
            "{row}"
        );
        assert!(
            row.get("account_id").is_none(),
            "tenancy stays off the wire: {row}"
        );
    }
    crate::protocol::assert_valid("list.json#/$defs/audit", &page);
    let create = &rows[rows.len() - 1];
    assert_eq!(
        (create["method"].as_str(), create["path"].as_str()),
        (Some("POST"), Some("/v1/keys"))
    );

    // No secret is anywhere, the minted one nor the rotated one: not in the
    // answer, not in the stored rows.
    let stored = gw
        .store
        .list_audit(
            "default",
            AuditFilter::default(),
            weir::store::ListParams::default(),
        )
        .await
        .expect("stored rows");
    for text in [
        page.to_string(),
        serde_json::to_string(&stored).expect("json"),
    ] {
        for secret in [&secret, &rotated_secret] {
            let tail = secret.rsplit('_').next().expect("tail");
            assert!(
                !text.contains(secret.as_str()),
                "a secret is in an audit row"
            );
            assert!(
                tail.len() >= 16 && !text.contains(tail),
                "its random part is too"
            );
        }
    }
}

#[tokio::test]
async fn the_log_pages_newest_first_and_filters() {
    let gw = spawn_gateway().await;
    let a1 = gw.create_agent("one").await;
    let a2 = gw.create_agent("two").await;
    let (rid, _) = change(
        &gw,
        Method::PATCH,
        &format!("/v1/agents/{a1}"),
        Some(json!({"name": "x"})),
        200,
    )
    .await;
    audit_rows(&gw, &gw.key, "", 3).await;

    let creates = audit_rows(&gw, &gw.key, "?action=agents.create", 2).await;
    let targets: Vec<&str> = creates["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, [a2.as_str(), a1.as_str()], "newest first");
    let first = audit_rows(&gw, &gw.key, &format!("?target={a1}"), 2).await;
    assert_eq!(first["data"][0]["request_id"], rid.as_str());
    assert_eq!(first["data"][0]["action"], "agents.update");
    audit_rows(
        &gw,
        &gw.key,
        &format!("?target={a1}&action=agents.update"),
        1,
    )
    .await;
    audit_rows(&gw, &gw.key, "?target=agent-nope", 0).await;

    // Walk it two by two with the cursor: three rows, then the end.
    let page = audit_rows(&gw, &gw.key, "?limit=2", 3).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["data"][0]["action"], "agents.update");
    let cursor = page["pagination"]["next_cursor"]
        .as_str()
        .expect("more")
        .to_owned();
    let rest = audit_rows(&gw, &gw.key, &format!("?limit=2&after={cursor}"), 3).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["target"], a1.as_str(), "the oldest last");
    assert_eq!(rest["pagination"]["next_cursor"], Value::Null);

    for (query, field) in [
        ("action=keys.steal", "action:"),
        ("target=", "target:"),
        ("limit=0", "limit:"),
        ("after=x", "after:"),
        ("offset=-1", "offset:"),
    ] {
        let r = gw.get(&format!("/v1/audit?{query}")).await;
        let body = expect_error(r, 400, "validation_error").await;
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{query}: {msg}");
    }
}

#[tokio::test]
async fn an_account_never_sees_another_accounts_rows() {
    let gw = spawn_gateway().await;
    let (_, other) = mint(gw.store.as_ref(), "acct-other", &["*"], 1000).await;
    let mine = gw.create_agent("mine").await;
    let theirs = gw.create_agent_as(&other, json!({"name": "theirs"})).await;
    let own = audit_rows(&gw, &gw.key, "", 1).await;
    assert_eq!(own["data"][0]["target"], mine.as_str());
    let seen = audit_rows(&gw, &other, "", 1).await;
    assert_eq!(seen["data"][0]["target"], theirs.as_str());
    audit_rows(&gw, &other, &format!("?target={mine}"), 0).await;
    audit_rows(&gw, &gw.key, &format!("?target={theirs}"), 0).await;
}

#[tokio::test]
async fn reading_the_log_needs_the_audit_scope() {
    let gw = spawn_gateway().await;
    let (_, keys_only) = mint(gw.store.as_ref(), "default", &["keys"], 1000).await;
    let (_, auditor) = mint(gw.store.as_ref(), "default", &["audit"], 1000).await;
    let r = gw
        .req_as(&keys_only, Method::GET, "/v1/audit")
        .send()
        .await
        .expect("request");
    expect_error(r, 403, "forbidden").await;
    let r = gw
        .req_as(&auditor, Method::GET, "/v1/audit")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

/// The client address of the first row after one `POST /v1/agents` with
/// `X-Forwarded-For: forwarded`.
async fn recorded_client(gw: &TestGateway, forwarded: &str) -> Value {
    let r = gw
        .req(Method::POST, "/v1/agents")
        .header("x-forwarded-for", forwarded)
        .json(&json!({"name": "via"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    audit_rows(gw, &gw.key, "", 1).await["data"][0]["client_addr"].clone()
}

fn trusting(nets: &'static [&'static str]) -> impl FnOnce(&mut weir::config::ServeConfig) + Send {
    move |c| {
        c.audit.trusted_proxies = nets
            .iter()
            .map(|n| n.parse::<ProxyNet>().expect("net"))
            .collect();
    }
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let forged = "6.6.6.6, 198.51.100.7";
    let plain = spawn_gateway().await;
    assert_eq!(
        recorded_client(&plain, forged).await,
        "127.0.0.1",
        "no proxy is trusted"
    );
    let elsewhere = TestGateway::builder()
        .config(trusting(&["10.0.0.0/8"]))
        .spawn()
        .await;
    assert_eq!(
        recorded_client(&elsewhere, forged).await,
        "127.0.0.1",
        "the peer is not a trusted proxy"
    );
    let behind = TestGateway::builder()
        .config(trusting(&["127.0.0.1/32", "::1"]))
        .spawn()
        .await;
    assert_eq!(
        recorded_client(&behind, forged).await,
        "198.51.100.7",
        "the right-most untrusted address, not the client's own claim"
    );
}

/// Rows travel the remote store API (`weir store`) to SQLite and to
/// PostgreSQL like any record.
#[tokio::test]
async fn the_log_is_kept_by_a_remote_store_on_sqlite_and_postgres() {
    let mut modes = vec![StoreMode::Remote];
    if postgres_available().await {
        modes.push(StoreMode::RemotePostgres);
    }
    for mode in modes {
        let gw = TestGateway::builder().store(mode).spawn().await;
        let agent = gw.create_agent("kept").await;
        let r = gw
            .req(Method::DELETE, &format!("/v1/agents/{agent}"))
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), 204);
        let page = audit_rows(&gw, &gw.key, "", 2).await;
        let actions: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["agents.delete", "agents.create"], "{mode:?}");
        audit_rows(&gw, &gw.key, "?action=agents.delete", 1).await;
    }
}
