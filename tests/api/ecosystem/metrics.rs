//! `/metrics` of a real `weir serve` process (its own registry, so the
//! numbers are exact): every family is exported, and each one moves when
//! the thing it counts happens.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

use crate::{
    common::{poll, within, Api, RedisServer, WeirProcess},
    fake_provider::FakeProvider,
};

/// The value of the sample `series` (`name{labels}` exactly as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

struct Scraper {
    client: Client,
    proc: WeirProcess,
}

impl Scraper {
    async fn scrape(&self) -> String {
        let r = self
            .client
            .get(self.proc.url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }

    /// Polls until `series` equals `want` (streams close asynchronously).
    async fn expect(&self, series: &str, want: f64) -> String {
        let hit = poll(Duration::from_secs(5), || async {
            let text = self.scrape().await;
            (sample(&text, series) == Some(want)).then_some(text)
        })
        .await;
        if let Some(text) = hit {
            return text;
        }
        let text = self.scrape().await;
        panic!(
            "{series} is {:?}, want {want}:\n{text}",
            sample(&text, series)
        );
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.proc.url(path))
            .bearer_auth(&self.proc.key)
            .json(&body)
    }

    async fn agent(&self, model: &str) -> String {
        let r = self
            .post("/v1/agents", json!({"name": model, "model": model}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn run(&self, agent: &str, message: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/agents/{agent}/messages"),
                json!({ "message": message }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_moves_with_what_it_counts() {
    let provider = FakeProvider::start().await;
    let proc = WeirProcess::serve()
        .envs(&[("WEIR_PROVIDER_URL", &provider.url)])
        .spawn()
        .await;
    let m = Scraper {
        client: Client::new(),
        proc,
    };

    // Public, Prometheus text, every family there from the start.
    let r = m.client.get(m.proc.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let ready = m.client.get(m.proc.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let text = m.scrape().await;
    for (series, want) in [
        (r#"weir_connections_open{kind="sse"}"#, 0.0),
        (r#"weir_connections_open{kind="ws"}"#, 0.0),
        (r#"weir_events_published_total{kind="agent"}"#, 0.0),
        ("weir_events_delivered_total", 0.0),
        (r#"weir_lagged_closes_total{kind="sse"}"#, 0.0),
        (r#"weir_lagged_closes_total{kind="ws"}"#, 0.0),
        (r#"weir_bus_up{backend="memory"}"#, 1.0),
        ("weir_store_up", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
    }
    assert!(
        text.contains("# TYPE weir_connections_open gauge"),
        "{text}"
    );
    assert!(
        text.contains("# HELP weir_events_delivered_total"),
        "{text}"
    );

    streams_and_runs(&m).await;
    routes_and_rate_limits(&m).await;
    upstream(&m).await;
}

async fn streams_and_runs(m: &Scraper) {
    let agent = m.agent("echo").await;
    let sse = m
        .client
        .get(m.proc.url(&format!("/v1/agents/{agent}/events")))
        .bearer_auth(&m.proc.key)
        .send()
        .await
        .unwrap();
    let mut events = sse.bytes_stream();
    let (ws, _) = tokio_tungstenite::connect_async(m.proc.ws_url(&m.proc.key))
        .await
        .unwrap();
    m.expect(r#"weir_connections_open{kind="sse"}"#, 1.0).await;
    m.expect(r#"weir_connections_open{kind="ws"}"#, 1.0).await;

    let answer = m.run(&agent, "what time is it?").await;
    let n = answer["messages"].as_array().unwrap().len() as f64;
    // The SSE tail receives them too.
    let _ = tokio::time::timeout(Duration::from_secs(2), events.next()).await;
    let text = m
        .expect(
            r#"weir_run_duration_seconds_count{status="completed"}"#,
            1.0,
        )
        .await;
    // Published: the run's events plus the user's own message.
    let published = sample(&text, r#"weir_events_published_total{kind="agent"}"#).unwrap();
    assert!(published > n, "published {published}, answered {n}");
    assert!(sample(&text, r#"weir_events_published_total{kind="logs"}"#).unwrap() >= 2.0);
    // Two subscribers saw them: the SSE tail and the POST's own follower.
    let delivered = sample(&text, "weir_events_delivered_total").unwrap();
    assert!(delivered >= 2.0 * n, "delivered {delivered}, answered {n}");

    drop(events);
    drop(ws);
    m.expect(r#"weir_connections_open{kind="sse"}"#, 0.0).await;
    m.expect(r#"weir_connections_open{kind="ws"}"#, 0.0).await;
}

async fn routes_and_rate_limits(m: &Scraper) {
    let agent = m.agent("echo").await;
    for _ in 0..2 {
        let r = m
            .client
            .get(m.proc.url(&format!("/v1/agents/{agent}")))
            .bearer_auth(&m.proc.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let nope = m
        .client
        .get(m.proc.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(nope.status(), StatusCode::NOT_FOUND);

    let minted: Value = m
        .post("/v1/keys", json!({"scopes": ["agents:read"], "rpm": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slow_key = minted["secret"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = m
            .client
            .get(m.proc.url("/v1/agents"))
            .bearer_auth(slow_key)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 429]);

    let text = m.scrape().await;
    let by_route = r#"weir_http_request_duration_seconds_count{method="GET",route="/v1/agents/{id}",status="2xx"}"#;
    assert_eq!(sample(&text, by_route), Some(2.0), "{text}");
    assert!(!text.contains(&agent), "raw paths never become labels");
    let unmatched =
        r#"weir_http_request_duration_seconds_count{method="GET",route="unmatched",status="4xx"}"#;
    assert_eq!(sample(&text, unmatched), Some(1.0), "{text}");
    assert!(text.contains(r#"weir_http_request_duration_seconds_bucket{method="GET",route="/v1/agents/{id}",status="2xx",le="0.005"}"#));
    assert_eq!(
        sample(
            &text,
            r#"weir_rate_limited_total{reason="rate_limit_exceeded"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

async fn upstream(m: &Scraper) {
    let ok = m.agent("upstream/fake-text").await;
    let answer = m.run(&ok, "hi").await;
    assert!(
        answer["messages"].to_string().contains("Hello world"),
        "{answer}"
    );
    let failing = m.agent("upstream/fake-500").await;
    m.run(&failing, "hi").await;
    let r = m
        .post(
            "/v1/chat/completions",
            json!({"model": "upstream/fake-text", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A run's duration is recorded just after its `done` is published, so
    // the failed run's answer can arrive first (seen under load): poll.
    let text = m
        .expect(r#"weir_run_duration_seconds_count{status="failed"}"#, 1.0)
        .await;
    assert_eq!(
        sample(
            &text,
            r#"weir_upstream_duration_seconds_count{caller="agent",provider="default"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"weir_upstream_duration_seconds_count{caller="relay",provider="default"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"weir_upstream_errors_total{caller="agent",provider="default",kind="status"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_health_follows_redis() {
    let mut redis = RedisServer::start().await;
    let proc = WeirProcess::serve()
        .redis(&redis)
        .args(&["--redis-timeout-ms", "500"])
        .spawn()
        .await;
    let m = Scraper {
        client: Client::new(),
        proc,
    };
    let ready = m.client.get(m.proc.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let text = m.expect(r#"weir_bus_up{backend="redis"}"#, 1.0).await;
    assert_eq!(sample(&text, r#"weir_bus_up{backend="memory"}"#), None);

    redis.kill();
    // /readyz notices at once and records it.
    let ready = m.client.get(m.proc.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    m.expect(r#"weir_bus_up{backend="redis"}"#, 0.0).await;

    redis.restart().await;
    let back = within(Duration::from_secs(5), || async {
        let r = m.client.get(m.proc.url("/readyz")).send().await.unwrap();
        r.status() == StatusCode::OK
    })
    .await;
    assert!(back, "/readyz recovers with Redis");
    m.expect(r#"weir_bus_up{backend="redis"}"#, 1.0).await;
}
