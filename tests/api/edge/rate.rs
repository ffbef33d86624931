//! Per-key rate limits on a real gateway: headers, 429 + Retry-After, the
//! OpenAI shape, limits off, and the local fallback when Redis is away
//! (said once in the log, not once per request).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::common::{expect_error, spawn_gateway, Api, RedisServer, TestGateway, WeirProcess};

/// A key of account `default` with every scope and the given rpm.
pub async fn key_with_rpm(gw: &TestGateway, rpm: u32) -> String {
    gw.mint_key_rpm("default", &["*"], rpm).await
}

/// `GET /v1/account` as `key`: the cheapest request that counts against
/// the key's rate limit.
async fn account_as(gw: &TestGateway, key: &str) -> Response {
    gw.req_as(key, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap()
}

fn header(r: &Response, name: &str) -> u64 {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("header {name} on {}", r.url()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpm_plus_one_request_gets_429_with_headers_and_retry_after() {
    let gw = spawn_gateway().await;
    let key = key_with_rpm(&gw, 5).await;
    for i in 0..5u64 {
        let r = account_as(&gw, &key).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(header(&r, "x-ratelimit-limit"), 5);
        assert_eq!(header(&r, "x-ratelimit-remaining"), 4 - i);
        let reset = header(&r, "x-ratelimit-reset");
        let now = unix_now();
        // The whole allowance is back (i + 1) * 12 s from now.
        assert!(
            reset >= now + 12 * (i + 1) - 1 && reset <= now + 12 * (i + 1) + 1,
            "reset {reset} now {now} i {i}"
        );
    }
    let r = account_as(&gw, &key).await;
    assert_eq!(header(&r, "x-ratelimit-remaining"), 0);
    assert_eq!(header(&r, "x-ratelimit-limit"), 5);
    let retry = header(&r, "retry-after");
    assert!(
        (9..=12).contains(&retry),
        "Retry-After {retry}: one request comes back every 12 s"
    );
    let body = expect_error(r, 429, "rate_limit_exceeded").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("5 requests per minute"));

    // Streams and WebSocket upgrades count too; so does a 404.
    let r = gw
        .req_as(&key, Method::GET, "/v1/agents/agent-nope/events")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // The OpenAI routes answer OpenAI's shape, with the same headers.
    let r = gw
        .req_as(&key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after") >= 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    assert!(
        v["error"]["type"].is_string() && v["error"]["request_id"].is_string(),
        "{v}"
    );

    // Another key of the same account is not affected.
    let other = key_with_rpm(&gw, 5).await;
    let r = account_as(&gw, &other).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), 4);
    // Unauthenticated routes carry no rate-limit headers.
    let r = gw.client.get(gw.url("/healthz")).send().await.unwrap();
    assert!(r.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_regains_one_request_per_period() {
    let gw = spawn_gateway().await;
    // 120 rpm: one request back every 0.5 s.
    let key = key_with_rpm(&gw, 120).await;
    let mut ok = 0;
    let t0 = std::time::Instant::now();
    for _ in 0..125 {
        let r = account_as(&gw, &key).await;
        if r.status() == 200 {
            ok += 1;
        } else {
            assert_eq!(r.status(), 429);
        }
    }
    // 120 at once, plus one more for every 0.5 s the loop took.
    let back = (t0.elapsed().as_millis() / 500) as i32;
    assert!(
        (120..=121 + back).contains(&ok),
        "{ok} allowed in {:?}",
        t0.elapsed()
    );
    // A real wait, on purpose: the limiter refills with the clock.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = account_as(&gw, &key).await;
    assert_eq!(r.status(), 200, "one request is back after 0.5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_off_means_no_headers_and_no_429() {
    let gw = TestGateway::builder()
        .config(|c| c.edge.rate_limit = false)
        .spawn()
        .await;
    let key = key_with_rpm(&gw, 1).await;
    for _ in 0..3 {
        let r = account_as(&gw, &key).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-ratelimit-limit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_to_the_local_limiter() {
    let mut redis = RedisServer::start().await;
    let gw = TestGateway::builder().redis(&redis).spawn().await;
    let key = key_with_rpm(&gw, 3).await;
    let r = account_as(&gw, &key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), 2, "Redis counted it");
    redis.kill();
    let t0 = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = account_as(&gw, &key).await;
        statuses.push(r.status().as_u16());
    }
    // The local stage counted every request, so it knows the key is at 3.
    assert_eq!(statuses, [200, 200, 429], "the local limiter decides");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "no request waits on Redis for long: {:?}",
        t0.elapsed()
    );
}

/// What the log says when the edge falls back, and when Redis is back
/// (`src/edge/cluster.rs`).
const FALLBACK: &str = "falling back to this gateway's local limits";
const BACK: &str = "limits are cluster-wide again";

/// A real process, for its stderr: the outage is logged once, however many
/// requests meet it and however often Redis is tried again (once a breaker
/// period), and so is the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_logged_once_not_per_request() {
    let mut redis = RedisServer::start().await;
    let gw = WeirProcess::serve().redis(&redis).spawn().await;
    let key = gw.create_key(json!({"scopes": ["*"], "rpm": 1000})).await;
    let account = || async {
        let r = gw.req_as(&key, Method::GET, "/v1/account").send().await;
        r.unwrap().status().as_u16()
    };
    assert_eq!(account().await, 200);
    let count = |what: &str| gw.stderr().iter().filter(|l| l.contains(what)).count();
    assert_eq!(count(FALLBACK), 0, "Redis is up:\n{}", gw.logs());
    redis.kill();
    // Real waits, on purpose: 2.4 s of requests span two breaker periods
    // (1 s), so Redis is tried, and fails, more than once.
    for i in 0..12 {
        assert_eq!(
            account().await,
            200,
            "request {i}: the local limiter decides"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.wait_for_line(|l| l.contains(FALLBACK)).await;
    assert_eq!(count(FALLBACK), 1, "once, not per request:\n{}", gw.logs());
    // Back: said once too, and the outage is not repeated.
    redis.restart().await;
    for i in 0..12 {
        assert_eq!(account().await, 200, "request {i} after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.wait_for_line(|l| l.contains(BACK)).await;
    assert_eq!(
        (count(FALLBACK), count(BACK)),
        (1, 1),
        "one line each:\n{}",
        gw.logs()
    );
}
