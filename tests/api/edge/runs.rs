//! Run starts are governed on every transport (issue 16, parts 1 and 2):
//! a WebSocket `user_message` counts against the key's `rpm` as a REST
//! request does, cluster-wide, and a key has at most `max_runs` runs going,
//! on all gateways together, whose slots come back when a run ends or the
//! process executing it is killed.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message, MaybeTlsStream, WebSocketStream};

use crate::common::{expect_error, poll, Api, Cluster, TestGateway, BOOTSTRAP_KEY};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: &str, key: &str) -> Ws {
    connect_async(format!("ws://{addr}/v1/ws?api_key={key}"))
        .await
        .expect("websocket")
        .0
}

/// Sends `frame` with `request_id: rid` and returns the reply to it
/// (`run_started`, `pong` or `error`), skipping the events in between.
async fn ask(ws: &mut Ws, mut frame: Value, rid: &str) -> Value {
    frame["request_id"] = rid.into();
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("socket ended before the reply to {rid}");
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["request_id"] == rid && v["type"] != "agent_response" {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no reply to {rid}"))
}

fn user_message(agent: &str, background: bool) -> Value {
    json!({"type": "user_message", "agent_id": agent, "message": "hi", "background": background})
}

/// Starts a run over REST in the background: the SSE answer's status (the
/// stream is dropped at once; the run goes on).
async fn start_rest(gw: &impl Api, key: &str, agent: &str) -> reqwest::Response {
    gw.req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({"message": "hi", "stream": true, "background": true}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_messages_count_against_rpm_across_gateways_and_the_socket_stays_open() {
    let c = Cluster::start(&[]).await;
    let key = c.a.create_key(json!({"scopes": ["*"], "rpm": 10})).await;
    let agent = c.a.create_agent_as(BOOTSTRAP_KEY, json!({})).await;
    // The upgrade is one request, and each of nine frames one more: ten.
    let mut sock = ws(c.a.host(), &key).await;
    for i in 1..=9 {
        let r = ask(&mut sock, user_message(&agent, false), &format!("m{i}")).await;
        assert_eq!(r["type"], "run_started", "frame {i}: {r}");
    }
    let r = ask(&mut sock, user_message(&agent, false), "m10").await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], "rate_limit_exceeded", "{r}");
    let retry = r["retry_after"].as_u64().expect("retry_after in seconds");
    assert!((1..=6).contains(&retry), "one request back every 6 s: {r}");
    assert!(r.get("channel").is_none(), "{r}");
    // Nothing started, and the socket still answers.
    let pong = ask(&mut sock, json!({"type": "ping"}), "p1").await;
    assert_eq!(pong["type"], "pong");
    // The same bucket on the other gateway: REST is refused there too.
    let r =
        c.b.req_as(&key, Method::GET, "/v1/account")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 429, "the budget is cluster-wide");
    let path = format!("/v1/agents/{agent}/messages?limit=100");
    let users = || async {
        let page: Value =
            c.a.req(Method::GET, &path)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let events = page["data"].as_array().unwrap().iter();
        events
            .filter(|e| e["message_type"] == "user_message")
            .count()
    };
    let nine = poll(Duration::from_secs(5), || async {
        (users().await >= 9).then_some(())
    });
    assert!(nine.await.is_some(), "the nine runs were stored");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(users().await, 9, "the refused frame started no run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_frames_are_not_counted_against_rpm() {
    let gw = TestGateway::builder().spawn().await;
    let key = gw.create_key(json!({"scopes": ["*"], "rpm": 3})).await;
    // Four agents (made with the bootstrap key, not counted against `key`):
    // eight distinct channels, more than the key's rpm, none a no-op.
    let mut channels = Vec::new();
    for _ in 0..4 {
        let agent = gw.create_agent_as(BOOTSTRAP_KEY, json!({})).await;
        channels.push(format!("agent:{agent}"));
        channels.push(format!("logs:{agent}"));
    }
    let agent = channels[0].trim_start_matches("agent:").to_owned();
    // The upgrade is one request of three.
    let mut sock = ws(gw.host(), &key).await;
    for (i, channel) in channels.iter().enumerate() {
        let frame = json!({"type": "subscribe", "channel": channel});
        let r = ask(&mut sock, frame, &format!("s{i}")).await;
        assert_eq!(r["type"], "subscribed", "subscribe {i}: {r}");
        assert_eq!(r["channel"], channel.as_str(), "{r}");
    }
    // Two run starts are left, exactly: the subscribes took none.
    for i in 1..=2 {
        let r = ask(&mut sock, user_message(&agent, false), &format!("m{i}")).await;
        assert_eq!(r["type"], "run_started", "frame {i}: {r}");
    }
    let r = ask(&mut sock, user_message(&agent, false), "m3").await;
    assert_eq!(r["code"], "rate_limit_exceeded", "the fourth request: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runs_holds_across_gateways_and_a_killed_gateway_gives_its_slots_back() {
    // B only queues; A executes every run (and holds its slots).
    let mut c = Cluster::start_each(
        &[("WEIR_LEASE_TTL_SECS", "2"), ("WEIR_MAX_RUNS_PER_KEY", "2")],
        &[("WEIR_WORKERS", "0")],
    )
    .await;
    let key =
        c.a.create_key(json!({"scopes": ["*"], "rpm": 10_000}))
            .await;
    let slow = json!({"metadata": {"echo_delay_ms": 30_000}});
    let agent = c.a.create_agent_as(BOOTSTRAP_KEY, slow).await;
    let mut sock = ws(c.b.host(), &key).await;
    for i in 1..=2 {
        let r = ask(&mut sock, user_message(&agent, true), &format!("m{i}")).await;
        assert_eq!(r["type"], "run_started", "{r}");
    }
    // Two runs going: a third is refused on either gateway and transport.
    let r = ask(&mut sock, user_message(&agent, true), "m3").await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("too_many_runs")),
        "{r}"
    );
    assert!(r.get("retry_after").is_none(), "{r}");
    let body = expect_error(start_rest(&c.a, &key, &agent).await, 429, "too_many_runs").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains('2'),
        "{body}"
    );
    assert_eq!(
        ask(&mut sock, json!({"type": "ping"}), "p").await["type"],
        "pong"
    );

    // A, which executes both runs, dies without a word: their leases expire
    // within the 2 s TTL and B may start runs again.
    c.a.signal("KILL");
    c.a.wait_exit(Duration::from_secs(5)).await.expect("killed");
    let t0 = Instant::now();
    let mut back = None;
    for n in 0.. {
        let r = ask(&mut sock, user_message(&agent, true), &format!("again{n}")).await;
        if r["type"] == "run_started" {
            back = Some(t0.elapsed());
            break;
        }
        assert_eq!(r["code"], "too_many_runs", "{r}");
        if t0.elapsed() > Duration::from_secs(8) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("the killed gateway's run slots came back");
    assert!(
        back <= Duration::from_secs(4),
        "within about one TTL: {back:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_runs_slot_comes_back_when_it_ends_however_it_ends() {
    let gw = TestGateway::builder()
        .config(|c| c.edge.max_runs_per_key = 1)
        .spawn()
        .await;
    let quick = gw.create_agent_as(BOOTSTRAP_KEY, json!({})).await;
    let slow = json!({"metadata": {"echo_delay_ms": 30_000}});
    let slow = gw.create_agent_as(BOOTSTRAP_KEY, slow).await;
    // A run that ends by itself gives its slot back: two in a row pass.
    for _ in 0..2 {
        let r = gw
            .req(Method::POST, &format!("/v1/agents/{quick}/messages"))
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-ratelimit-remaining"));
    }
    // A background run holds it after its client left, on every route.
    let mut sock = ws(gw.host(), BOOTSTRAP_KEY).await;
    let started = ask(&mut sock, user_message(&slow, true), "bg").await;
    let run_id = started["run_id"].as_str().expect("run_started").to_owned();
    drop(sock);
    let mut sock = ws(gw.host(), BOOTSTRAP_KEY).await;
    let r = ask(&mut sock, user_message(&quick, false), "again").await;
    assert_eq!(r["code"], "too_many_runs", "{r}");
    let refused = start_rest(&gw, BOOTSTRAP_KEY, &quick).await;
    let body = expect_error(refused, 429, "too_many_runs").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("runs going"));
    let oai = gw
        .req(Method::POST, "/v1/chat/completions")
        .json(&json!({"model": quick, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(oai.status(), 429);
    let oai: Value = oai.json().await.unwrap();
    assert_eq!(oai["error"]["code"], "too_many_runs", "{oai}");
    // A cancel ends it, and the slot is back.
    let r = gw
        .req(Method::POST, &format!("/v1/runs/{run_id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .req(Method::POST, &format!("/v1/agents/{quick}/messages"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the cancelled run's slot came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_own_max_runs_is_the_limit_in_force_and_patch_changes_it() {
    let gw = TestGateway::builder().spawn().await;
    let minted: Value = gw
        .post(
            "/v1/keys",
            json!({"scopes": ["*"], "rpm": 10_000, "max_runs": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (id, key) = (
        minted["id"].as_str().unwrap(),
        minted["secret"].as_str().unwrap(),
    );
    let other = gw.create_key(json!({"scopes": ["*"], "rpm": 10_000})).await;
    let slow = json!({"metadata": {"echo_delay_ms": 30_000}});
    let agent = gw.create_agent_as(BOOTSTRAP_KEY, slow).await;
    assert_eq!(start_rest(&gw, key, &agent).await.status(), 200);
    // Its own limit (1), not the default (16), is in force; other keys are apart.
    let body = expect_error(start_rest(&gw, key, &agent).await, 429, "too_many_runs").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 runs going"),
        "{body}"
    );
    assert_eq!(start_rest(&gw, &other, &agent).await.status(), 200);
    // Raised to 2 with PATCH: one more run, then the new limit holds.
    let r = gw
        .req(Method::PATCH, &format!("/v1/keys/{id}"))
        .json(&json!({"max_runs": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = poll(Duration::from_secs(5), || async {
        (start_rest(&gw, key, &agent).await.status() == 200).then_some(())
    });
    assert!(again.await.is_some(), "the raised max_runs is in force");
    let body = expect_error(start_rest(&gw, key, &agent).await, 429, "too_many_runs").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 runs going"),
        "{body}"
    );
}
