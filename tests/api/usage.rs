//! `GET /v1/usage` end to end: authenticated requests are counted per key
//! and summed by key and by day, paged by cursor; two gateways sharing one
//! PostgreSQL database add to the same rows; the scope is needed; accounts
//! are apart; bad parameters are 400s naming the parameter. Usage is
//! written by a writer at least once a second, so tests poll; reading
//! usage is itself a request, so the counted keys are not the reader.

use std::{sync::Arc, time::Duration};

use reqwest::Method;
use serde_json::Value;
use weir::store::{postgres::scratch::ScratchDb, ListParams, UsageGroup, UsageQuery};

use crate::common::{expect_error, mint, poll, postgres_available, Api, TestGateway};

/// `n` authenticated requests of `key` (`GET /v1/agents`, any answer).
async fn requests(gw: &TestGateway, key: &str, n: usize) {
    for _ in 0..n {
        let r = gw
            .req_as(key, Method::GET, "/v1/agents")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
}

/// `GET /v1/usage{query}` as `key`, once `done` holds for the page.
async fn usage_until(
    gw: &TestGateway,
    key: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    let got = poll(Duration::from_secs(10), || async {
        let r = gw
            .req_as(key, Method::GET, &format!("/v1/usage{query}"))
            .send()
            .await
            .ok()?;
        assert_eq!(r.status(), 200, "usage{query}");
        let page: Value = r.json().await.ok()?;
        *last.lock().unwrap() = page.clone();
        done(&page).then_some(page)
    })
    .await;
    got.unwrap_or_else(|| {
        panic!(
            "usage{query} never got there; last: {}",
            last.lock().unwrap()
        )
    })
}

/// The line of `value` in a page, if any.
fn line<'a>(page: &'a Value, value: &str) -> Option<&'a Value> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|l| l["value"] == value)
}

/// The requests counted for `value` in a page (0 when it has no line).
fn requests_of(page: &Value, value: &str) -> i64 {
    line(page, value).map_or(0, |l| l["requests"].as_i64().expect("requests"))
}

fn today() -> String {
    weir::usage::today().to_string()
}

#[tokio::test]
async fn requests_are_counted_per_key_and_summed_by_key_and_day() {
    let mut gw = TestGateway::builder().spawn().await;
    let store = gw.store.clone();
    let (one_id, one) = mint(store.as_ref(), "acct-u", &["agents:read"], 1000).await;
    let (two_id, two) = mint(store.as_ref(), "acct-u", &["agents:read"], 1000).await;
    let (_, reader) = mint(store.as_ref(), "acct-u", &["usage"], 1000).await;
    requests(&gw, &one, 3).await;
    requests(&gw, &two, 2).await;

    let by_key = usage_until(&gw, &reader, "?group_by=key", |p| {
        requests_of(p, &one_id) == 3 && requests_of(p, &two_id) == 2
    })
    .await;
    crate::protocol::assert_valid("list.json#/$defs/usage", &by_key);
    let l = line(&by_key, &one_id).expect("key one");
    assert_eq!(l["group"], "key");
    for field in ["runs", "prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(l[field], 0, "{field}: plain requests");
    }
    requests(&gw, &one, 1).await;
    usage_until(&gw, &reader, "", |p| requests_of(p, &one_id) == 4).await;

    // Walk the keys one by one: three keys (the reader's too), in order.
    let first = usage_until(&gw, &reader, "?limit=1", |p| p["pagination"]["total"] == 3).await;
    let mut seen = vec![first["data"][0]["value"].as_str().unwrap().to_owned()];
    let mut cursor = first["pagination"]["next_cursor"].clone();
    while let Some(c) = cursor.as_str() {
        let r = gw
            .req_as(
                &reader,
                Method::GET,
                &format!("/v1/usage?limit=1&after={c}"),
            )
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.expect("json");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["value"].as_str().unwrap().to_owned()),
        );
        cursor = page["pagination"]["next_cursor"].clone();
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered: {seen:?}");

    let day = today();
    let by_day = usage_until(&gw, &reader, "?group_by=day", |p| requests_of(p, &day) >= 6).await;
    assert_eq!(by_day["data"].as_array().unwrap().len(), 1, "{by_day}");
    assert_eq!(by_day["data"][0]["group"], "day");
    crate::protocol::assert_valid("list.json#/$defs/usage", &by_day);
    let empty = usage_until(&gw, &reader, "?from=2000-01-01&to=2000-12-31", |_| true).await;
    assert_eq!(empty["pagination"]["total"], 0, "{empty}");
    let reversed = format!("?from={day}&to=2000-01-01");
    let empty = usage_until(&gw, &reader, &reversed, |_| true).await;
    assert_eq!(empty["pagination"]["total"], 0, "an empty range: {empty}");

    // The last sums are written on shutdown (a request just before it
    // too): by day, exactly what the keys' lines hold.
    requests(&gw, &two, 1).await;
    gw.shutdown().await;
    let q = |group_by| UsageQuery {
        from: day.clone(),
        to: day.clone(),
        group_by,
    };
    let keys = store
        .list_usage("acct-u", q(UsageGroup::Key), ListParams::default())
        .await
        .expect("by key");
    let days = store
        .list_usage("acct-u", q(UsageGroup::Day), ListParams::default())
        .await
        .expect("by day");
    let sum: i64 = keys.data.iter().map(|l| l.requests).sum();
    assert_eq!(days.data.len(), 1);
    assert_eq!(days.data[0].requests, sum);
    assert_eq!(
        keys.data
            .iter()
            .find(|l| l.value.as_deref() == Some(&*two_id))
            .map(|l| l.requests),
        Some(3)
    );
}

/// Two gateways, each with the PostgreSQL database as its own store:
/// requests on both add up in one row, read the same on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_database_sum_their_usage() {
    if !postgres_available().await {
        return;
    }
    let db = Arc::new(ScratchDb::create().await.expect("database"));
    let url = db.url.clone();
    let on_db = move |c: &mut weir::config::ServeConfig| c.data.db = Some(url);
    let a = TestGateway::builder().config(on_db.clone()).spawn().await;
    let b = TestGateway::builder().config(on_db).spawn().await;
    let (key_id, key) = mint(a.store.as_ref(), "acct-pg", &["agents:read"], 1000).await;
    let (_, reader) = mint(a.store.as_ref(), "acct-pg", &["usage"], 1000).await;
    tokio::join!(requests(&a, &key, 4), requests(&b, &key, 3));
    for gw in [&a, &b] {
        usage_until(gw, &reader, "?group_by=key", |p| {
            requests_of(p, &key_id) == 7
        })
        .await;
    }
    drop(db);
}

#[tokio::test]
async fn reading_usage_needs_the_usage_scope() {
    let gw = TestGateway::builder().spawn().await;
    let (_, audit_only) = mint(gw.store.as_ref(), "default", &["audit", "keys"], 1000).await;
    let r = gw
        .req_as(&audit_only, Method::GET, "/v1/usage")
        .send()
        .await
        .expect("request");
    expect_error(r, 403, "forbidden").await;
    let (_, reader) = mint(gw.store.as_ref(), "default", &["usage"], 1000).await;
    let r = gw
        .req_as(&reader, Method::GET, "/v1/usage")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    // `*` covers it.
    assert_eq!(gw.get("/v1/usage").await.status(), 200);
}

#[tokio::test]
async fn an_account_never_sees_another_accounts_usage() {
    let gw = TestGateway::builder().spawn().await;
    let store = gw.store.as_ref();
    let (mine_id, mine) = mint(store, "acct-mine", &["agents:read"], 1000).await;
    let (_, my_reader) = mint(store, "acct-mine", &["usage"], 1000).await;
    let (theirs_id, theirs) = mint(store, "acct-theirs", &["agents:read"], 1000).await;
    let (_, their_reader) = mint(store, "acct-theirs", &["usage"], 1000).await;
    requests(&gw, &mine, 2).await;
    requests(&gw, &theirs, 5).await;
    let seen = usage_until(&gw, &their_reader, "", |p| requests_of(p, &theirs_id) == 5).await;
    assert!(line(&seen, &mine_id).is_none(), "{seen}");
    let own = usage_until(&gw, &my_reader, "", |p| requests_of(p, &mine_id) == 2).await;
    assert!(line(&own, &theirs_id).is_none(), "{own}");
    for group in ["day", "model", "agent", "provider"] {
        let page = usage_until(&gw, &my_reader, &format!("?group_by={group}"), |_| true).await;
        let total: i64 = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["requests"].as_i64().unwrap())
            .sum();
        assert!(
            total < 100,
            "{group}: only this account's few requests: {page}"
        );
        assert!(page["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["group"] == group));
    }
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_the_parameter() {
    let gw = TestGateway::builder().spawn().await;
    for (query, field) in [
        ("from=2026-02-30", "from:"),
        ("from=12/04/2026", "from:"),
        ("to=tomorrow", "to:"),
        ("from=%2B2026-12-04", "from:"),
        ("group_by=account", "group_by:"),
        ("group_by=", "group_by:"),
        ("account=other", "account:"),
        ("limit=0", "limit:"),
        ("limit=1001", "limit:"),
        ("offset=-1", "offset:"),
        ("after=", "after:"),
        ("after=17", "after:"),
    ] {
        let r = gw.get(&format!("/v1/usage?{query}")).await;
        let body = expect_error(r, 400, "validation_error").await;
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{query}: {msg}");
    }
    let r = gw
        .get("/v1/usage?from=2026-12-04&to=2026-12-04&group_by=provider&limit=5&offset=0")
        .await;
    assert_eq!(r.status(), 200);
}

/// A run's tokens land under its key, model, agent and provider (the
/// edge's metering, as written by the usage writer).
#[tokio::test]
async fn a_runs_tokens_are_summed_by_model_agent_and_provider() {
    let gw = TestGateway::builder().spawn().await;
    let agent = gw.create_agent("metered").await;
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            serde_json::json!({"message": "count these words please"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let tokens =
        |p: &Value, v: &str| line(p, v).map_or(0, |l| l["completion_tokens"].as_i64().unwrap());
    let by_agent = usage_until(&gw, &gw.key, "?group_by=agent", |p| tokens(p, &agent) > 0).await;
    let l = line(&by_agent, &agent).expect("the agent's line");
    assert!(l["prompt_tokens"].as_i64().unwrap() > 0, "{l}");
    assert_eq!(l["runs"], 1, "one run start: {l}");
    assert_eq!(
        l["total_tokens"].as_i64().unwrap(),
        l["prompt_tokens"].as_i64().unwrap() + l["completion_tokens"].as_i64().unwrap()
    );
    let by_model = usage_until(&gw, &gw.key, "?group_by=model", |p| tokens(p, "echo") > 0).await;
    assert!(line(&by_model, "echo").is_some(), "{by_model}");
    let by_provider = usage_until(&gw, &gw.key, "?group_by=provider", |p| {
        tokens(p, "echo") > 0
    })
    .await;
    // Plain requests have no provider: the null line holds them.
    let none = by_provider["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["value"].is_null())
        .expect("a line of requests without a provider");
    assert!(none["requests"].as_i64().unwrap() >= 2, "{none}");
    let by_key = usage_until(&gw, &gw.key, "", |p| tokens(p, "key-bootstrap") > 0).await;
    crate::protocol::assert_valid("list.json#/$defs/usage", &by_key);
}

/// An agent on a route whose first target fails: its run's usage is filed
/// under the target that served it (as the relay's is), not `upstream`, and
/// its log line names that target.
#[tokio::test]
async fn an_agent_run_on_a_route_is_recorded_under_the_serving_provider() {
    use crate::{fake_provider::FakeProvider, routing};
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = routing::route("fast", "fake-500", "fake-text", "error");
    let gw = routing::gateway(&a, &b, "", &routes).await;
    let agent = crate::runs::agent_with(&gw, serde_json::json!({"model": "upstream/fast"})).await;
    let evs = crate::runs::run_sse(
        &gw,
        &agent,
        serde_json::json!({"message": "hi", "stream": true}),
    )
    .await;
    assert!(evs.iter().any(|e| e["message"] == "Hello world"), "{evs:?}");
    assert_eq!(
        (a.requests().len(), b.requests().len()),
        (1, 1),
        "a failed, b served"
    );
    let page = usage_until(&gw, &gw.key, "?group_by=provider", |p| {
        p["data"].as_array().is_some_and(|d| {
            d.iter()
                .any(|l| l["value"] == "b" && l["completion_tokens"].as_i64() > Some(0))
        })
    })
    .await;
    let lines = page["data"].as_array().unwrap();
    let b_line = lines.iter().find(|l| l["value"] == "b").unwrap();
    assert_eq!(
        (
            b_line["runs"].as_i64(),
            b_line["prompt_tokens"].as_i64(),
            b_line["completion_tokens"].as_i64()
        ),
        (Some(1), Some(11), Some(2)),
        "the run and the provider's own count, under b: {page}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["value"] != "upstream" && l["value"] != "a"),
        "nothing under the placeholder or the failed target: {page}"
    );
    let logs = poll(Duration::from_secs(5), || async {
        let page: Value = gw
            .get(&format!("/v1/agents/{agent}/logs"))
            .await
            .json()
            .await
            .ok()?;
        let text = page["data"].to_string();
        text.contains("provider b").then_some(text)
    })
    .await;
    assert!(logs.is_some(), "a log line names the serving provider");
}
