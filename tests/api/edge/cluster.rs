//! Cluster-wide limits: two `weir serve` processes sharing a `weir store`
//! and a private redis-server (a [`Cluster`]). A 10-rpm key gets 10 requests
//! across both, not 20; stream caps count streams on both; a killed
//! gateway's slots come back when its leases expire.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::caps::open_ws;
use crate::common::{poll, Api, Cluster, WeirProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_rpm_key_gets_10_requests_across_two_gateways_not_20() {
    let c = Cluster::start(&[]).await;
    let client = reqwest::Client::new();
    let key = c.a.create_key(json!({"scopes": ["*"], "rpm": 10})).await;
    let (mut ok, mut limited) = (0, 0);
    for i in 0..20 {
        let gw = if i % 2 == 0 { &c.a } else { &c.b };
        let r = client
            .request(Method::GET, gw.url("/v1/account"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-ratelimit-limit"], "10");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                limited += 1;
            }
            s => panic!("status {s}"),
        }
    }
    assert!(
        (9..=11).contains(&ok),
        "{ok} allowed across both gateways, {limited} limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_caps_hold_across_gateways_and_a_killed_gateways_slots_come_back() {
    let mut c =
        Cluster::start(&[("WEIR_LEASE_TTL_SECS", "2"), ("WEIR_MAX_SSE_PER_KEY", "2")]).await;
    let client = reqwest::Client::new();
    let key =
        c.a.create_key(json!({"scopes": ["*"], "rpm": 10_000}))
            .await;
    let agent = c.a.create_agent_as(&key, json!({})).await;
    let sse = |gw: &WeirProcess| {
        client
            .get(gw.url(&format!("/v1/agents/{agent}/events")))
            .bearer_auth(&key)
            .send()
    };
    // 10 WebSockets, 5 on each gateway: the 11th is refused on either.
    let (addr_a, addr_b) = (c.a.host().to_owned(), c.b.host().to_owned());
    let mut sockets = Vec::new();
    for i in 0..10 {
        let addr = if i % 2 == 0 { &addr_a } else { &addr_b };
        sockets.push(
            open_ws(addr, &key)
                .await
                .unwrap_or_else(|e| panic!("socket {i}: {e:?}")),
        );
    }
    let (status, body) = open_ws(&addr_b, &key).await.err().expect("11th refused");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections"))
    );

    // Both SSE slots held on gateway A: B refuses a third.
    let s1 = sse(&c.a).await.unwrap();
    let s2 = sse(&c.a).await.unwrap();
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    assert_eq!(sse(&c.b).await.unwrap().status(), 429);

    // A dies without a word (SIGKILL): its leases stop being refreshed and
    // expire within the 2 s TTL, so B gets the slots back.
    c.a.signal("KILL");
    c.a.wait_exit(Duration::from_secs(5)).await.expect("killed");
    let t0 = Instant::now();
    let back = poll(Duration::from_secs(8), || async {
        (sse(&c.b).await.unwrap().status() == 200).then(|| t0.elapsed())
    })
    .await;
    let back = back.expect("the dead gateway's SSE slots came back");
    assert!(
        back <= Duration::from_secs(4),
        "within about one TTL: {back:?}"
    );
    // The WebSockets A held came back too: 5 more fit on B, then no more.
    for i in 0..5 {
        sockets.push(
            open_ws(&addr_b, &key)
                .await
                .unwrap_or_else(|e| panic!("socket {i}: {e:?}")),
        );
    }
    assert_eq!(open_ws(&addr_b, &key).await.err().map(|e| e.0), Some(429));
}
