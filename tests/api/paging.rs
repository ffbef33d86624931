//! Runs as resources and paging both ways, against real gateways on every
//! store (embedded SQLite, a remote SQLite store, a remote PostgreSQL
//! store): `GET /v1/agents/{id}/runs` and `GET /v1/runs/{id}/messages`
//! over a few hundred runs, walked forwards to the end and back to the
//! start; `count`; unknown and contradictory parameters; the agent filters;
//! the `/ws` alias.

use std::collections::HashSet;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::{
    both_stores,
    common::{expect_error, spawn_gateway, Api, TestGateway},
};

/// Runs made by the big test: a few hundred, each a short echo run.
const RUNS: usize = 240;

/// A gateway seen through another key: the bootstrap key's 120 requests a
/// minute are too few for these walks.
struct Keyed<'a> {
    gw: &'a TestGateway,
    key: String,
}

impl Api for Keyed<'_> {
    fn endpoint(&self) -> (&str, &str, &reqwest::Client) {
        let (base, _, client) = self.gw.endpoint();
        (base, &self.key, client)
    }
}

/// `gw` with a fresh all-scopes key of the default account, 100 000 rpm.
async fn keyed(gw: &TestGateway) -> Keyed<'_> {
    let key = gw.mint_key("default", &["*"]).await;
    Keyed { gw, key }
}

async fn get_ok(gw: &impl Api, path: &str) -> (Value, Option<String>, Option<String>) {
    let r = gw.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (next, prev) = (header("next-cursor"), header("prev-cursor"));
    let page: Value = r.json().await.unwrap();
    let p = &page["pagination"];
    assert_eq!(
        next.as_deref(),
        p["next_cursor"].as_str(),
        "{path}: Next-Cursor"
    );
    assert_eq!(
        prev.as_deref(),
        p["prev_cursor"].as_str(),
        "{path}: Prev-Cursor"
    );
    (page, next, prev)
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].to_string())
        .collect()
}

/// Walks `base` forwards with `after` to the last page, then back with
/// `before` to the first; both walks must give the same items, each once.
/// Returns them in list order.
async fn walk_both_ways(gw: &impl Api, base: &str, field: &str, total: usize) -> Vec<String> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut forward = Vec::new();
    let (mut page, mut next, mut prev) = get_ok(gw, base).await;
    assert_eq!(prev, None, "{base}: the first page has no prev_cursor");
    let mut pages = 0;
    loop {
        assert_eq!(page["pagination"]["total"], total, "{base}");
        forward.extend(ids(&page, field));
        pages += 1;
        let Some(c) = next else { break };
        (page, next, prev) = get_ok(gw, &format!("{base}{sep}after={c}")).await;
    }
    assert!(pages >= 3, "{base}: several pages ({pages})");
    let unique: HashSet<&String> = forward.iter().collect();
    assert_eq!(unique.len(), forward.len(), "{base}: no item twice");
    assert_eq!(forward.len(), total, "{base}: every item");
    // Back from the last page to the first.
    let mut backward: Vec<Vec<String>> = vec![ids(&page, field)];
    while let Some(c) = prev {
        let (p, n, pr) = get_ok(gw, &format!("{base}{sep}before={c}")).await;
        assert!(n.is_some(), "{base}: a page read backwards has a next page");
        backward.push(ids(&p, field));
        prev = pr;
    }
    backward.reverse();
    assert_eq!(
        backward.concat(),
        forward,
        "{base}: back to the start, the same items"
    );
    forward
}

async fn post_ok(gw: &impl Api, path: &str, body: Value) -> Value {
    let r = gw.post(path, body).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

both_stores!(runs_and_their_messages_page_both_ways, |mode| async move {
    let base = TestGateway::builder().store(mode).spawn().await;
    let gw = keyed(&base).await;
    let agent = gw.create_agent("runner").await;
    let other = post_ok(
        &gw,
        &format!("/v1/agents/{agent}/sessions"),
        json!({"name": "b"}),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_owned();
    let mut made = Vec::new();
    let mut in_other = 0;
    for i in 0..RUNS {
        let mut body = json!({"message": format!("m{i}")});
        if i % 4 == 0 {
            body["session_id"] = json!(other);
            in_other += 1;
        }
        let run = post_ok(&gw, &format!("/v1/agents/{agent}/messages"), body).await;
        made.push(run["run_id"].to_string());
    }
    let runs = format!("/v1/agents/{agent}/runs?limit=37");
    let newest_first = walk_both_ways(&gw, &runs, "id", RUNS).await;
    let mut expected = made.clone();
    expected.reverse();
    assert_eq!(newest_first, expected, "runs: newest first by default");
    let asc = walk_both_ways(&gw, &format!("{runs}&order=asc"), "id", RUNS).await;
    assert_eq!(asc, made, "order=asc: oldest first");
    // Filters.
    let (page, _, _) = get_ok(
        &gw,
        &format!("/v1/agents/{agent}/runs?status=completed&count=5"),
    )
    .await;
    assert_eq!(page["pagination"]["total"], RUNS);
    assert_eq!(page["pagination"]["limit"], 5);
    assert_eq!(page["data"].as_array().unwrap().len(), 5, "count is limit");
    let (page, _, _) = get_ok(&gw, &format!("/v1/agents/{agent}/runs?status=running")).await;
    assert_eq!(page["pagination"]["total"], 0);
    let (page, _, _) = get_ok(
        &gw,
        &format!("/v1/agents/{agent}/runs?session_id={other}&limit=1000"),
    )
    .await;
    assert_eq!(page["pagination"]["total"], in_other);
    assert!(page["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["session_id"] == json!(other)));
    // A run's messages: oldest first, ending with done; one page each way.
    let run = made[7].trim_matches('"').to_owned();
    let (page, _, _) = get_ok(&gw, &format!("/v1/runs/{run}/messages")).await;
    let events = page["data"].as_array().unwrap().clone();
    assert!(events.len() >= 3, "{page}");
    assert!(events.iter().all(|e| e["run_id"] == json!(run)));
    assert_eq!(events[0]["message_type"], "user_message");
    assert_eq!(events.last().unwrap()["message_type"], "done");
    let walked = walk_both_ways(
        &gw,
        &format!("/v1/runs/{run}/messages?limit=1"),
        "seq",
        events.len(),
    )
    .await;
    let seqs: Vec<String> = events.iter().map(|e| e["seq"].to_string()).collect();
    assert_eq!(walked, seqs);
    let (page, _, _) = get_ok(
        &gw,
        &format!("/v1/runs/{run}/messages?message_type=assistant_message,done"),
    )
    .await;
    let types: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["assistant_message", "done"]);
    // Every event of every run of the default session, both ways.
    let (page, _, _) = get_ok(&gw, &format!("/v1/agents/{agent}/messages?limit=1")).await;
    let total = page["pagination"]["total"].as_u64().unwrap() as usize;
    assert!(total >= 3 * (RUNS - in_other), "{total}");
    walk_both_ways(
        &gw,
        &format!("/v1/agents/{agent}/messages?limit=97&order=desc"),
        "seq",
        total,
    )
    .await;
    // Unknown, and other accounts'.
    expect_error(
        gw.get("/v1/agents/agent-nope/runs").await,
        404,
        "agent_not_found",
    )
    .await;
    expect_error(
        gw.get("/v1/runs/run-nope/messages").await,
        404,
        "run_not_found",
    )
    .await;
    let stranger = base.mint_key("someone-else", &["chat"]).await;
    for (path, code) in [
        (format!("/v1/agents/{agent}/runs"), "agent_not_found"),
        (format!("/v1/runs/{run}/messages"), "run_not_found"),
    ] {
        let r = gw
            .req_as(&stranger, Method::GET, &path)
            .send()
            .await
            .unwrap();
        expect_error(r, 404, code).await;
    }
});

/// The message of a 400 `validation_error`.
async fn refused(gw: &impl Api, path: &str) -> String {
    let body = expect_error(gw.get(path).await, 400, "validation_error").await;
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn unknown_and_contradictory_parameters_are_400_on_every_list() {
    let base = spawn_gateway().await;
    let gw = keyed(&base).await;
    let agent = gw.create_agent("lists").await;
    post_ok(
        &gw,
        &format!("/v1/agents/{agent}/messages"),
        json!({"message": "hi"}),
    )
    .await;
    let (page, _, _) = get_ok(&gw, &format!("/v1/agents/{agent}/runs")).await;
    let run = page["data"][0]["id"].as_str().unwrap().to_owned();
    let key = gw.key().to_owned();
    for list in [
        "/v1/keys".to_owned(),
        "/v1/agents".to_owned(),
        "/v1/tools".to_owned(),
        "/v1/audit".to_owned(),
        "/v1/usage".to_owned(),
        format!("/v1/agents/{agent}/sessions"),
        format!("/v1/agents/{agent}/messages"),
        format!("/v1/agents/{agent}/logs"),
        format!("/v1/agents/{agent}/runs"),
        format!("/v1/runs/{run}/messages"),
    ] {
        let m = refused(&gw, &format!("{list}?bogus=1&zz=2")).await;
        assert!(
            m.starts_with("bogus, zz: unknown query parameters"),
            "{list}: {m}"
        );
        let m = refused(&gw, &format!("{list}?limit=2&count=3")).await;
        assert!(m.starts_with("limit, count:"), "{list}: {m}");
        let m = refused(&gw, &format!("{list}?order=sideways")).await;
        assert!(m.starts_with("order:"), "{list}: {m}");
        let m = refused(&gw, &format!("{list}?count=0")).await;
        assert!(m.starts_with("count:"), "{list}: {m}");
        let m = refused(&gw, &format!("{list}?before=")).await;
        assert!(m.starts_with("before:"), "{list}: {m}");
        // The documented global is no unknown parameter; count is limit.
        let (page, _, _) = get_ok(&gw, &format!("{list}?api_key={key}&count=1")).await;
        assert_eq!(page["pagination"]["limit"], 1, "{list}");
        assert!(page["data"].as_array().unwrap().len() <= 1, "{list}");
    }
    let m = refused(&gw, "/v1/agents/x/runs?status=sleeping").await;
    assert!(m.starts_with("status:"), "{m}");
    let m = refused(&gw, &format!("/v1/runs/{run}/messages?message_type=nope")).await;
    assert!(m.starts_with("message_type:"), "{m}");
    let m = refused(&gw, "/v1/agents?before=x").await;
    assert!(m.starts_with("before: not a valid cursor"), "{m}");
}

both_stores!(agents_filter_by_name_and_tags, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    for (name, tags) in [
        ("a", json!(["red", "big"])),
        ("b", json!(["red"])),
        ("c", json!(["big"])),
        ("a", json!([])),
    ] {
        post_ok(&gw, "/v1/agents", json!({"name": name, "tags": tags})).await;
    }
    let names = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, want) in [
        ("name=a", vec!["a", "a"]),
        ("name=%20b%20", vec!["b"]),
        ("tags=red", vec!["a", "b"]),
        ("tags=red,big", vec!["a", "b", "c"]),
        ("tags=red,big&match_all_tags=true", vec!["a"]),
        ("tags=red,red&match_all_tags=true", vec!["a", "b"]),
        ("name=a&tags=big", vec!["a"]),
        ("name=zzz", vec![]),
        (
            "tags=red,big&match_all_tags=false&order=desc",
            vec!["c", "b", "a"],
        ),
    ] {
        let (page, _, _) = get_ok(&gw, &format!("/v1/agents?{query}")).await;
        assert_eq!(names(&page), want, "{query}");
        assert_eq!(page["pagination"]["total"], want.len(), "{query}");
    }
    assert!(refused(&gw, "/v1/agents?match_all_tags=yes")
        .await
        .starts_with("match_all_tags:"));
    assert!(refused(&gw, "/v1/agents?tags=")
        .await
        .starts_with("tags[0]:"));
    assert!(refused(&gw, "/v1/agents?name=%20")
        .await
        .starts_with("name:"));
});

#[tokio::test]
async fn ws_alias_is_the_same_socket() {
    let gw = spawn_gateway().await;
    let url = format!("ws://{}/ws?api_key={}", gw.host(), gw.key());
    let (mut ws, resp) = connect_async(url).await.expect("handshake on /ws");
    assert_eq!(resp.status().as_u16(), 101);
    ws.send(Message::text(
        json!({"type": "ping", "request_id": "p"}).to_string(),
    ))
    .await
    .unwrap();
    let pong = loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("readable");
        if let Message::Text(t) = msg {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(pong, json!({"type": "pong", "request_id": "p"}));
    // The same scope as /v1/ws.
    let logs_only = gw.mint_key("default", &["logs"]).await;
    let url = format!("ws://{}/ws?api_key={logs_only}", gw.host());
    match connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("a logs-only key must be refused: {:?}", other.map(|_| ())),
    }
}
