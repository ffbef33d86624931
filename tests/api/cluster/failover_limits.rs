//! What both failover tests (`sentinel`, `redis_cluster`) check once Redis
//! has failed over: the limits shared through Redis still hold across the
//! two gateways. A 3-rpm key is limited cluster-wide (not 3 on each), and a
//! key allowed two SSE streams holds one on each gateway, is refused a third
//! on either with 429 `too_many_connections`, and gets the slot of a closed
//! one back within the lease period. The first edge call on a connection
//! left from before the failover may fail and open the edge's breaker for a
//! moment (the local count then decides), so a few fresh keys may be needed.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::json;

use super::create_agent;
use crate::common::{expect_error, poll, Api, Cluster, WeirProcess};

/// How long a stream's slot lease lives in Redis (`--lease-ttl-secs`'s
/// default): a closed stream's slot is free again within it.
const LEASE_TTL: Duration = Duration::from_secs(30);

/// The rate limiter and the stream caps, after a failover.
pub(super) async fn limits_hold(c: &Cluster) {
    rate_limit_holds(c).await;
    stream_caps_hold(c).await;
}

async fn rate_limit_holds(c: &Cluster) {
    let mut tries = Vec::new();
    for _ in 0..10 {
        let limited = c.a.create_key(json!({"scopes": ["*"], "rpm": 3})).await;
        let mut statuses = Vec::new();
        for i in 0..6 {
            let gw = if i % 2 == 0 { &c.a } else { &c.b };
            let r = gw
                .req_as(&limited, Method::GET, "/v1/account")
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        if (2..=4).contains(&ok) {
            return;
        }
        tries.push(statuses);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("never limited cluster-wide after the failover: {tries:?}");
}

async fn stream_caps_hold(c: &Cluster) {
    let mut tries = Vec::new();
    for _ in 0..10 {
        let key =
            c.a.create_key(json!({"scopes": ["*"], "rpm": 10_000, "max_sse_streams": 2}))
                .await;
        let agent = create_agent(&c.a, &key).await;
        let path = format!("/v1/agents/{agent}/events");
        let on_a = sse(&c.a, &key, &path).await;
        let on_b = sse(&c.b, &key, &path).await;
        let third_a = sse(&c.a, &key, &path).await;
        let third_b = sse(&c.b, &key, &path).await;
        let statuses = [&on_a, &on_b, &third_a, &third_b].map(|r| r.status().as_u16());
        if statuses != [200, 200, 429, 429] {
            tries.push(statuses);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        expect_error(third_a, 429, "too_many_connections").await;
        expect_error(third_b, 429, "too_many_connections").await;
        // Closing the stream on A frees its slot for B.
        drop(on_a);
        let back = poll(LEASE_TTL, || async {
            let r = sse(&c.b, &key, &path).await;
            (r.status() == 200).then_some(r)
        })
        .await;
        let _back = back.expect("a closed stream's slot came back within the lease period");
        // Two held again: the cap still holds.
        expect_error(sse(&c.a, &key, &path).await, 429, "too_many_connections").await;
        drop(on_b);
        return;
    }
    panic!("stream caps never held cluster-wide after the failover: {tries:?}");
}

/// `GET path` as an SSE stream on `gw` (its status tells whether a slot was
/// given; dropping it closes the stream).
async fn sse(gw: &WeirProcess, key: &str, path: &str) -> Response {
    gw.req_as(key, Method::GET, path).send().await.unwrap()
}
