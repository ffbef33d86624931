//! Outbound webhooks end to end, against a real HTTP receiver on
//! 127.0.0.1 (an axum server in the test): deliveries arrive signed the
//! Standard Webhooks way (checked here with hmac and sha2, not weir's own
//! code), are retried until they get through with the same `webhook-id`,
//! survive a gateway restart while the receiver is down, and are refused
//! for a private address the operator did not allow. The secret is shown
//! once. Retry timing is shortened by configuration so each test takes
//! seconds.

mod gone;
mod hanging;
mod receiver;
mod remote;
mod settled;
mod slow;

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use self::receiver::{Received, Receiver};
use crate::common::{expect_error, free_port, poll, Api, TestGateway};

/// A gateway that may reach loopback receivers, retrying fast.
async fn gateway_allowing_loopback() -> TestGateway {
    TestGateway::builder()
        .config(|c| {
            c.webhooks.egress_allow = vec!["127.0.0.1/32".parse().unwrap()];
            c.webhooks.webhook_retry_base_ms = 300;
        })
        .spawn()
        .await
}

/// Subscribes `url` to `events`; the created body (with its secret).
async fn subscribe(gw: &TestGateway, url: &str, events: &[&str]) -> Value {
    let r = gw
        .post("/v1/webhooks", json!({"url": url, "events": events}))
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// Checks a delivery's signature as a receiver would: HMAC-SHA256 of
/// `id.timestamp.body` keyed by the base64 after `whsec_`.
fn verify(secret: &str, got: &Received) {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let id = got.header("webhook-id");
    let ts = got.header("webhook-timestamp");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&got.body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let sigs = got.header("webhook-signature");
    assert!(
        sigs.split(' ').any(|s| s == want),
        "signature {sigs} is not {want}"
    );
    let age = weir::util::unix_now().abs_diff(ts.parse::<u64>().expect("unix seconds"));
    assert!(age < 60, "timestamp is now");
}

/// The subscription's deliveries, once `done` holds for them.
async fn deliveries_until(
    gw: &TestGateway,
    hook: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!("/v1/webhooks/{hook}/deliveries");
    let mut last = Vec::new();
    let got = poll(Duration::from_secs(15), || {
        let r = gw.get(&path);
        async {
            let page: Value = r.await.json().await.ok()?;
            let rows = page["data"].as_array()?.clone();
            done(&rows).then_some(rows)
        }
    })
    .await;
    if let Some(rows) = got {
        return rows;
    }
    let page: Value = gw.get(&path).await.json().await.unwrap();
    last.push(page);
    panic!("deliveries never got there: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_the_event_once_signed() {
    let gw = gateway_allowing_loopback().await;
    let rx = Receiver::start_failing(2).await;
    let created = subscribe(&gw, &rx.url, &["run.completed"]).await;
    let secret = created["secret"].as_str().unwrap();
    let hook = created["id"].as_str().unwrap();
    let agent = gw.create_agent("hooked").await;
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            json!({"message": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.unwrap();
    let run_id = run["run_id"].as_str().unwrap().to_owned();

    let rows = deliveries_until(&gw, hook, |d| d.len() == 1 && d[0]["status"] == "delivered").await;
    let d = &rows[0];
    assert_eq!(d["attempts"], 3, "{d}");
    let history = d["history"].as_array().unwrap();
    assert_eq!(history[0]["status_code"], 500);
    assert!(history[0]["error"].as_str().unwrap().contains("500"));
    assert_eq!(history[1]["status_code"], 500);
    assert_eq!(history[2]["status_code"], 200);
    assert_eq!(history[2]["response_excerpt"], "ok");
    assert!(history[2]["error"].is_null());

    // Three requests came, with one stable id; the one accepted is signed.
    let all = rx.requests();
    assert_eq!(all.len(), 3, "two failures then the success");
    let ids: Vec<&str> = all.iter().map(|g| g.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "stable id: {ids:?}");
    assert_eq!(ids[0], d["message_id"]);
    let accepted = &all[2];
    verify(secret, accepted);
    assert_eq!(accepted.header("content-type"), "application/json");
    let body: Value = serde_json::from_slice(&accepted.body).unwrap();
    assert_eq!(body["type"], "run.completed");
    assert_eq!(body["data"]["run_id"], run_id);
    assert_eq!(body["data"]["agent_id"], agent);
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["stop_reason"], "end_turn");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    // The second attempt came within 10 s of the first, as promised.
    let gap = all[1].at.duration_since(all[0].at);
    assert!(gap < Duration::from_secs(10), "{gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_across_a_restart_gets_the_event_after() {
    let gw = gateway_allowing_loopback().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let created = subscribe(&gw, &url, &["agent.created"]).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let hook = created["id"].as_str().unwrap().to_owned();
    let agent = gw.create_agent("announced").await;
    // Nobody listens: attempts fail with a connection error.
    let rows = deliveries_until(&gw, &hook, |d| {
        d.len() == 1 && d[0]["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(rows[0]["status"], "pending");
    let err = rows[0]["history"][0]["error"].as_str().unwrap();
    assert!(err.contains("connect"), "{err}");

    let gw = gw.restart().await;
    let rx = Receiver::start_on(port, 0).await;
    let rows = deliveries_until(&gw, &hook, |d| {
        d.len() == 1 && d[0]["status"] == "delivered"
    })
    .await;
    assert!(rows[0]["attempts"].as_u64().unwrap() >= 2);
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    verify(&secret, &got[0]);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "agent.created");
    assert_eq!(body["data"]["agent_id"], agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_address_is_refused_unless_allowed() {
    // 10/8 is allowed, loopback is not.
    let gw = TestGateway::builder()
        .config(|c| {
            c.webhooks.egress_allow = vec!["10.0.0.0/8".parse().unwrap()];
            c.webhooks.webhook_retry_base_ms = 200;
            c.webhooks.webhook_retry_window_secs = 1;
        })
        .spawn()
        .await;
    let rx = Receiver::start_failing(0).await;
    let created = subscribe(&gw, &rx.url, &["agent.created"]).await;
    let hook = created["id"].as_str().unwrap();
    gw.create_agent("refused").await;
    let rows = deliveries_until(&gw, hook, |d| d.len() == 1 && d[0]["status"] == "failed").await;
    let history = rows[0]["history"].as_array().unwrap();
    assert!(!history.is_empty());
    for attempt in history {
        let err = attempt["error"].as_str().unwrap();
        assert!(err.contains("127.0.0.1 is not public"), "{err}");
        assert!(err.contains("--egress-allow"), "{err}");
        assert!(attempt["status_code"].is_null());
    }
    assert!(rows[0]["next_attempt_at"].is_null());
    assert!(rx.requests().is_empty(), "nothing reached the receiver");

    // A manual retry through a gateway that allows loopback gets through.
    let mut gw = gw;
    gw.shutdown().await;
    let gw = TestGateway::builder()
        .share_store(&gw)
        .config(|c| c.webhooks.egress_allow = vec!["127.0.0.1/32".parse().unwrap()])
        .spawn()
        .await;
    let id = rows[0]["id"].as_str().unwrap();
    let r = gw
        .post(
            &format!("/v1/webhooks/{hook}/deliveries/{id}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    deliveries_until(&gw, hook, |d| d[0]["status"] == "delivered").await;
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn the_secret_is_shown_once_and_bodies_are_checked() {
    let gw = TestGateway::builder().spawn().await;
    let created = subscribe(
        &gw,
        "https://hooks.example.com/x",
        &["run.failed", "agent.deleted"],
    )
    .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let raw = STANDARD.decode(&secret[6..]).unwrap();
    assert!((24..=32).contains(&raw.len()));
    let id = created["id"].as_str().unwrap();
    for path in [format!("/v1/webhooks/{id}"), "/v1/webhooks".to_owned()] {
        let text = gw.get(&path).await.text().await.unwrap();
        assert!(
            !text.contains(secret) && !text.contains("secret"),
            "{path}: {text}"
        );
    }
    let r = gw
        .req(Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&json!({"events": ["run.completed"], "agent_id": "agent-abc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("secret"), "{text}");
    let patched: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(patched["events"], json!(["run.completed"]));
    assert_eq!(patched["agent_id"], "agent-abc");
    // The store holds it sealed, not in the clear.
    let stored = gw.store.get_webhook("default", id).await.unwrap();
    assert!(!stored.sealed_secret.contains(&secret[6..]));

    for (body, what) in [
        (
            json!({"url": "https://a.example/x", "events": ["run.started"]}),
            "run.started",
        ),
        (
            json!({"url": "https://a.example/x", "events": []}),
            "events",
        ),
        (
            json!({"url": "ftp://a.example/x", "events": ["run.failed"]}),
            "url",
        ),
        (
            json!({"url": "https://a.example/x", "events": ["run.failed", "run.failed"]}),
            "twice",
        ),
    ] {
        let r = gw.post("/v1/webhooks", body).await;
        let e = expect_error(r, 400, "validation_error").await;
        assert!(
            e["error"]["message"].as_str().unwrap().contains(what),
            "{e}"
        );
    }
    // Another account sees none of it.
    let other = gw.mint_key("other", &["webhooks"]).await;
    let r = gw
        .req_as(&other, Method::GET, &format!("/v1/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
    let r = gw
        .req(Method::DELETE, &format!("/v1/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = gw.get(&format!("/v1/webhooks/{id}")).await;
    expect_error(r, 404, "not_found").await;
}

/// Two gateways on one PostgreSQL database (one server key): each event
/// is delivered once, whichever gateway's loop claims it, and a
/// subscription made on one is signed by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_postgres_deliver_each_event_once() {
    if !crate::common::postgres_available().await {
        return;
    }
    let db = weir::store::postgres::scratch::ScratchDb::create()
        .await
        .expect("database");
    let on_db = |url: String| {
        move |c: &mut weir::config::ServeConfig| {
            c.data.db = Some(url);
            c.webhooks.webhook_secret_key = Some("11".repeat(32));
            c.webhooks.egress_allow = vec!["127.0.0.1/32".parse().unwrap()];
        }
    };
    let a = TestGateway::builder()
        .config(on_db(db.url.clone()))
        .spawn()
        .await;
    let b = TestGateway::builder()
        .config(on_db(db.url.clone()))
        .spawn()
        .await;
    let rx = Receiver::start_failing(0).await;
    let created = subscribe(&a, &rx.url, &["agent.created", "agent.deleted"]).await;
    let secret = created["secret"].as_str().unwrap();
    let hook = created["id"].as_str().unwrap();
    let mut agents = Vec::new();
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        agents.push(gw.create_agent(&format!("pg{i}")).await);
    }
    let rows = deliveries_until(&b, hook, |d| {
        d.len() == 10 && d.iter().all(|x| x["status"] == "delivered")
    })
    .await;
    assert!(rows.iter().all(|d| d["attempts"] == 1), "{rows:?}");
    // Give a duplicate the time to show up, then count.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = rx.requests();
    assert_eq!(got.len(), 10, "each event once");
    for g in &got {
        verify(secret, g);
    }
    let mut ids: Vec<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_requested_and_resolved_are_delivered() {
    let gw = gateway_allowing_loopback().await;
    let rx = Receiver::start_failing(0).await;
    let events = ["approval.requested", "approval.resolved", "run.completed"];
    let created = subscribe(&gw, &rx.url, &events).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let agent = gw
        .create_agent_as(
            &gw.key,
            json!({"tools": ["get_time"], "approval_required": ["get_time"]}),
        )
        .await;
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            json!({"message": "what time is it?", "stream": true, "background": true}),
        )
        .await;
    // The stream is dropped at once: the run goes on in the background.
    assert_eq!(r.status(), 200);
    drop(r);
    let types = |rx: &Receiver| -> Vec<Value> {
        rx.requests()
            .iter()
            .map(|g| serde_json::from_slice::<Value>(&g.body).unwrap())
            .collect()
    };
    let requested = poll(Duration::from_secs(15), || {
        let got = types(&rx);
        async move { got.into_iter().find(|b| b["type"] == "approval.requested") }
    })
    .await
    .expect("approval.requested delivered");
    assert_eq!(requested["data"]["tool"], "get_time");
    assert_eq!(requested["data"]["agent_id"], agent.as_str());
    let path = format!(
        "/v1/runs/{}/approvals/{}",
        requested["data"]["run_id"].as_str().unwrap(),
        requested["data"]["approval_id"].as_str().unwrap()
    );
    let r = gw.post(&path, json!({"decision": "approve"})).await;
    assert!(r.status().is_success(), "{}", r.status());
    let done = poll(Duration::from_secs(15), || {
        let got = types(&rx);
        async move {
            let resolved = got
                .iter()
                .find(|b| b["type"] == "approval.resolved")?
                .clone();
            got.iter()
                .any(|b| b["type"] == "run.completed")
                .then_some(resolved)
        }
    })
    .await
    .expect("approval.resolved and run.completed delivered");
    assert_eq!(done["data"]["status"], "approve", "{done}");
    assert_eq!(done["data"]["decided_by"], "key-bootstrap", "{done}");
    for got in rx.requests() {
        verify(&secret, &got);
    }
}

/// `agent.updated`, `agent.deleted` and `run.failed` reach a real receiver
/// signed, and a subscription filtered to agent A gets A's events and
/// nothing of agent B's, while an unfiltered one gets both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_failed_run_events_follow_the_agent_filter() {
    let gw = TestGateway::builder()
        .provider_unreachable()
        .config(|c| {
            c.webhooks.egress_allow = vec!["127.0.0.1/32".parse().unwrap()];
            c.webhooks.webhook_retry_base_ms = 300;
        })
        .spawn()
        .await;
    let events = ["agent.updated", "agent.deleted", "run.failed"];
    // Models on a provider that refuses connections: every run fails.
    let model = json!({"model": "upstream/m"});
    let a = gw.create_agent_as(&gw.key, model.clone()).await;
    let b = gw.create_agent_as(&gw.key, model).await;
    let every = Receiver::start_failing(0).await;
    let only_a = Receiver::start_failing(0).await;
    let all_secret = subscribe(&gw, &every.url, &events).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gw
        .post(
            "/v1/webhooks",
            json!({"url": only_a.url, "events": events, "agent_id": a}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let filtered: Value = r.json().await.unwrap();
    assert_eq!(filtered["agent_id"], a.as_str());
    let a_secret = filtered["secret"].as_str().unwrap().to_owned();

    let mut runs = Vec::new();
    for (agent, name) in [(&a, "renamed-a"), (&b, "renamed-b")] {
        let r = gw
            .req(Method::PATCH, &format!("/v1/agents/{agent}"))
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = gw
            .post(
                &format!("/v1/agents/{agent}/messages"),
                json!({"message": "hi"}),
            )
            .await;
        let body: Value = r.json().await.unwrap();
        runs.push(body["run_id"].as_str().expect("a run id").to_owned());
    }
    for agent in [&a, &b] {
        let r = gw
            .req(Method::DELETE, &format!("/v1/agents/{agent}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    let bodies = |rx: &Receiver| -> Vec<Value> {
        rx.requests()
            .iter()
            .map(|g| serde_json::from_slice::<Value>(&g.body).unwrap())
            .collect()
    };
    poll(Duration::from_secs(15), || {
        let n = every.requests().len();
        async move { (n >= 6).then_some(()) }
    })
    .await
    .expect("three events of each agent delivered");
    // The filtered subscription's deliveries are independent of the other's.
    poll(Duration::from_secs(15), || {
        let n = only_a.requests().len();
        async move { (n >= 3).then_some(()) }
    })
    .await
    .expect("agent A's three events delivered to its filtered subscription");
    // Give a stray delivery to the filtered receiver the time to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (rx, secret) in [(&every, &all_secret), (&only_a, &a_secret)] {
        for got in rx.requests() {
            verify(secret, &got);
        }
    }
    let got = bodies(&every);
    assert_eq!(got.len(), 6, "{got:?}");
    for (agent, name, run) in [(&a, "renamed-a", &runs[0]), (&b, "renamed-b", &runs[1])] {
        let of = |kind: &str| -> Vec<&Value> {
            got.iter()
                .filter(|e| e["type"] == kind && e["data"]["agent_id"] == agent.as_str())
                .collect()
        };
        let updated = of("agent.updated");
        assert_eq!(updated.len(), 1, "{got:?}");
        assert_eq!(updated[0]["data"]["agent"]["id"], agent.as_str());
        assert_eq!(updated[0]["data"]["agent"]["name"], name);
        let failed = of("run.failed");
        assert_eq!(failed.len(), 1, "{got:?}");
        let data = &failed[0]["data"];
        assert_eq!(data["run_id"], run.as_str());
        assert_eq!(data["status"], "failed");
        assert_eq!(data["stop_reason"], "error");
        assert!(
            data["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{data}"
        );
        // The provider refuses connections: the run's code, as GET shows it.
        assert_eq!(data["error_code"], "upstream_unavailable", "{data}");
        assert_eq!(of("agent.deleted").len(), 1, "{got:?}");
    }
    let mine = bodies(&only_a);
    // Deliveries go out side by side: in no particular order.
    let mut kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["agent.deleted", "agent.updated", "run.failed"],
        "{mine:?}"
    );
    assert!(
        mine.iter().all(|e| e["data"]["agent_id"] == a.as_str()),
        "nothing of agent B: {mine:?}"
    );
}
