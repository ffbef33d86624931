//! Redis Sentinel (issue 20), with real processes: a master, its replica and
//! three Sentinels; two gateways that find the master through the Sentinels
//! (`WEIR_REDIS_SENTINEL`). The master is SIGKILLed mid-run: /readyz says
//! Redis is the problem until the pub/sub link is back on the promoted
//! replica, the run goes on, its remaining events reach an SSE stream on
//! each gateway, the run's own stream and a WebSocket, with no duplicate and
//! no silent hole (a hole only behind a `gap` frame), and the rate limiter
//! and stream caps still hold across both gateways afterwards
//! ([`super::failover_limits`]).

use eventsource_stream::Event;
use futures::{SinkExt, Stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::{events, failover_limits::limits_hold, next_event, open_sse, WAIT};
use crate::common::{
    topology::sentinel::{Sentinels, MASTER},
    Api, Cluster, RedisServer,
};

/// Seqs of the events and the gaps' ranges a stream showed.
#[derive(Default, Debug)]
pub(super) struct Seen {
    pub seqs: Vec<u64>,
    pub gaps: Vec<(u64, u64)>,
}

impl Seen {
    /// In order, never twice, and every hole announced by a gap.
    pub fn assert_honest(&self, name: &str) {
        let s = &self.seqs;
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "{name}: in order, no duplicate: {s:?}"
        );
        for w in s.windows(2) {
            if w[1] != w[0] + 1 {
                let (from, to) = (w[0] + 1, w[1] - 1);
                assert!(
                    self.gaps.iter().any(|&(a, b)| a <= from && b >= to),
                    "{name}: {from}..={to} missing without a gap frame: {self:?}"
                );
            }
        }
    }
}

/// SSE frames until the `done` of `run`.
pub(super) async fn sse_until_done(s: &mut (impl Stream<Item = Event> + Unpin), run: &str) -> Seen {
    let mut seen = Seen::default();
    loop {
        let e = next_event(s).await;
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if e.event == "gap" {
            assert_eq!(e.id, "", "a gap has no id");
            assert_eq!(v["message_type"], "gap");
            seen.gaps.push((
                v["from_seq"].as_u64().unwrap(),
                v["to_seq"].as_u64().unwrap(),
            ));
            continue;
        }
        assert_eq!(v["seq"].to_string(), e.id, "SSE id is the seq: {v}");
        seen.seqs.push(v["seq"].as_u64().unwrap());
        if e.event == "done" && v["run_id"] == run {
            return seen;
        }
    }
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("readable frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

pub(super) async fn ws_until_done(ws: &mut Ws, run: &str) -> Seen {
    let mut seen = Seen::default();
    loop {
        let v = recv(ws).await;
        match v["type"].as_str() {
            Some("gap") => {
                seen.gaps.push((
                    v["from_seq"].as_u64().unwrap(),
                    v["to_seq"].as_u64().unwrap(),
                ));
            }
            Some("agent_response") => {
                seen.seqs.push(v["seq"].as_u64().unwrap());
                if v["message_type"] == "done" && v["run_id"] == run {
                    return seen;
                }
            }
            _ => panic!("unexpected frame {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_mid_run_loses_nothing_silently() {
    let fp = crate::fake_provider::FakeProvider::start().await;
    let master = RedisServer::start().await;
    let sentinels = Sentinels::start(master.port()).await.unwrap();
    let addrs = sentinels.addrs();
    let env = [
        ("WEIR_PROVIDER_URL", fp.url.as_str()),
        ("WEIR_REDIS_SENTINEL", addrs.as_str()),
        ("WEIR_REDIS_SENTINEL_MASTER", MASTER),
    ];
    let mut c = Cluster::start_on(master, &env, &[]).await;
    let key = c.key().await;
    let r =
        c.a.req_as(&key, Method::POST, "/v1/agents")
            .json(&json!({"name": "slow", "model": "upstream/fake-slow"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let agent = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/agents/{agent}/events");
    let mut sse_b = events(open_sse(&c.b, &key, &path, None).await);
    let mut sse_a = events(open_sse(&c.a, &key, &path, None).await);
    let (mut ws, _) = connect_async(c.b.ws_url(&key)).await.unwrap();
    let sub = json!({"type": "subscribe", "channel": format!("agent:{agent}")});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let r =
        c.a.req_as(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
            .json(&json!({"message": "go", "stream": true, "stream_tokens": true}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let mut own = events(r);
    let first = next_event(&mut own).await;
    assert_eq!(first.event, "assistant_delta");
    let run: Value = serde_json::from_str(&first.data).unwrap();
    let run = run["run_id"].as_str().unwrap().to_owned();

    c.redis.kill();
    for node in [&c.a, &c.b] {
        let (status, body) = node.wait_readyz(503).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.to_lowercase().contains("redis"),
            "readyz names Redis: {body}"
        );
    }
    sentinels.wait_promoted().await.unwrap();
    c.a.wait_ready().await;
    c.b.wait_ready().await;

    let mut own_seen = sse_until_done(&mut own, &run).await;
    own_seen.seqs.insert(0, first.id.parse().unwrap());
    own_seen.assert_honest("the run's own stream on A");
    for (name, s) in [("SSE on A", &mut sse_a), ("SSE on B", &mut sse_b)] {
        sse_until_done(s, &run).await.assert_honest(name);
    }
    ws_until_done(&mut ws, &run)
        .await
        .assert_honest("WebSocket on B");

    limits_hold(&c).await;
}
