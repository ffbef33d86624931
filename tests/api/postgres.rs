//! PostgreSQL behind real gateways: two `weir store --db` processes on one
//! database act as one store for two gateways; `weir serve --db` and
//! `weir keys create --db` work on the database directly. (The REST suites
//! in `both_stores!` also run once through `weir store --db`.) Each test
//! skips, with a printed line, when no PostgreSQL is reachable outside CI.

use std::{process::Command, sync::Arc, time::Duration};

use reqwest::Method;
use serde_json::{json, Value};
use weir::store::postgres::scratch::ScratchDb;

use crate::common::{
    poll, postgres_available, spawn_pg_store_process, weir_bin, Api, StoreProcess, TestGateway,
};

/// A gateway forwarding to `store`.
async fn gateway_on(store: &StoreProcess) -> TestGateway {
    TestGateway::builder().store_url(&store.url).spawn().await
}

/// `weir keys create --db <url>`: the secret it prints.
fn keys_create(db_url: &str, account: &str) -> String {
    let out = Command::new(weir_bin())
        .args([
            "keys",
            "create",
            "--scopes",
            "*",
            "--account",
            account,
            "--db",
            db_url,
        ])
        .env_remove("WEIR_CONFIG")
        .output()
        .expect("run weir keys create");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

async fn call(
    gw: &TestGateway,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = gw.req_as(key, method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A write through one store process is read through the other; a run
/// driven through gateway A is visible, with its history, on gateway B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_store_processes_serve_one_database() {
    if !postgres_available().await {
        return;
    }
    let db = Arc::new(ScratchDb::create().await.expect("database"));
    // Started together on an empty database: their migrations race.
    let (one, two) = tokio::join!(
        spawn_pg_store_process(db.clone()),
        spawn_pg_store_process(db.clone())
    );
    let (a, b) = (gateway_on(&one).await, gateway_on(&two).await);
    let key = keys_create(&db.url, "pg-acct");

    let (status, agent) = call(
        &a,
        &key,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": "pg"})),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let id = agent["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/agents/{id}");
    assert_eq!(
        call(&b, &key, Method::GET, &path, None).await,
        (200, agent.clone())
    );

    let patch = json!({"name": "renamed", "tags": ["x"]});
    let (status, patched) = call(&b, &key, Method::PATCH, &path, Some(patch)).await;
    assert_eq!((status, &patched["name"]), (200, &json!("renamed")));
    assert_eq!(
        call(&a, &key, Method::GET, &path, None).await,
        (200, patched)
    );
    let (_, list) = call(&a, &key, Method::GET, "/v1/agents", None).await;
    assert_eq!(list["pagination"]["total"], 1, "{list}");

    let msg = json!({"message": "hello from A"});
    let (status, reply) = call(
        &a,
        &key,
        Method::POST,
        &format!("{path}/messages"),
        Some(msg),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let run_id = reply["run_id"].as_str().expect("run id");
    let (status, run) = call(&b, &key, Method::GET, &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("completed")),
        "{run}"
    );
    // The session history on B: the user's message, then exactly the events
    // A answered with. Events are persisted in the background, so the last
    // ones may land a moment after the reply.
    let seqs = |v: &Value| -> Vec<Value> {
        v.as_array()
            .map(|a| a.iter().map(|e| e["seq"].clone()).collect())
            .unwrap_or_default()
    };
    let sent = seqs(&reply["messages"]);
    assert_eq!(sent.len(), 4, "{reply}");
    let history_on_b = || async {
        call(&b, &key, Method::GET, &format!("{path}/messages"), None)
            .await
            .1
    };
    let complete = poll(Duration::from_secs(5), || async {
        let history = history_on_b().await;
        (seqs(&history["data"]).len() > sent.len()).then_some(history)
    })
    .await;
    let history = match complete {
        Some(history) => history,
        None => history_on_b().await,
    };
    assert_eq!(
        history["data"][0]["message_type"], "user_message",
        "{history}"
    );
    assert_eq!(
        seqs(&history["data"])[1..],
        sent[..],
        "B's history is what A streamed"
    );

    let (status, _) = call(&a, &key, Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    assert_eq!(call(&b, &key, Method::GET, &path, None).await.0, 404);
}

/// `weir serve --db`: two gateways on one database, no `weir store` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_can_share_postgres_directly() {
    if !postgres_available().await {
        return;
    }
    let db = ScratchDb::create().await.expect("database");
    let on_db = |url: String| move |c: &mut weir::config::ServeConfig| c.data.db = Some(url);
    let a = TestGateway::builder()
        .config(on_db(db.url.clone()))
        .spawn()
        .await;
    let b = TestGateway::builder()
        .config(on_db(db.url.clone()))
        .spawn()
        .await;
    assert!(
        !a.data_dir.join("weir.db").exists(),
        "no SQLite file when WEIR_DB is set"
    );
    let id = a.create_agent("direct").await;
    let (status, got) = call(&b, &b.key, Method::GET, &format!("/v1/agents/{id}"), None).await;
    assert_eq!((status, &got["name"]), (200, &json!("direct")));
    let key = keys_create(&db.url, "default");
    let (status, account) = call(&b, &key, Method::GET, "/v1/account", None).await;
    assert_eq!(
        (status, &account["id"]),
        (200, &json!("default")),
        "{account}"
    );
}
