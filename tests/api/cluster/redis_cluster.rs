//! Redis Cluster (issue 20), with real processes: three masters and three
//! replicas on loopback ([`RedisCluster`]) and two gateways given
//! `WEIR_REDIS_CLUSTER`. Agents are chosen so their channels land on every
//! master; each has an SSE stream on both gateways, a WebSocket and its
//! run's own stream. One master is SIGKILLed mid-run: /readyz says Redis
//! until its replica is promoted and every channel is subscribed again,
//! then every stream gets the rest of its run in order, no duplicate, any
//! hole announced by a `gap` frame; the rate limiter and stream caps still
//! hold across both gateways ([`super::failover_limits`]). A slot
//! holding a live channel is moved to another master mid-run: the streams
//! keep going without a hole.

use std::collections::HashMap;

use futures::{SinkExt, Stream};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::{
    events,
    failover_limits::limits_hold,
    next_event, open_sse,
    sentinel::{recv, sse_until_done, ws_until_done, Seen, Ws},
};
use crate::common::{topology::cluster::RedisCluster, Api, Cluster, RedisServer};

/// The streams following one agent, and its run.
struct Followed {
    agent: String,
    run: String,
    first: u64,
    own: Box<dyn Stream<Item = eventsource_stream::Event> + Unpin + Send>,
    sse_a: Box<dyn Stream<Item = eventsource_stream::Event> + Unpin + Send>,
    sse_b: Box<dyn Stream<Item = eventsource_stream::Event> + Unpin + Send>,
    ws: Ws,
}

async fn start(fp_url: &str, rc: &RedisCluster) -> Cluster {
    let addrs = rc.addrs();
    let env = [
        ("WEIR_PROVIDER_URL", fp_url),
        ("WEIR_REDIS_CLUSTER", addrs.as_str()),
    ];
    // The standalone server only gives the data nodes' settings (none).
    Cluster::start_on(RedisServer::start().await, &env, &[]).await
}

async fn slow_agent(c: &Cluster, key: &str) -> String {
    let r =
        c.a.req_as(key, Method::POST, "/v1/agents")
            .json(&json!({"name": "slow", "model": "upstream/fake-slow"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The master holding `agent`'s channel (its keys' hash tag).
async fn master_of(rc: &RedisCluster, agent: &str) -> u16 {
    let slot = rc.slot(&format!("{{agent:{agent}}}")).await.unwrap();
    rc.shard_of(slot).await.unwrap().master
}

/// Opens every stream on `agent`, then starts a run through A.
async fn follow(c: &Cluster, key: &str, agent: String) -> Followed {
    let path = format!("/v1/agents/{agent}/events");
    let sse_a = Box::new(events(open_sse(&c.a, key, &path, None).await));
    let sse_b = Box::new(events(open_sse(&c.b, key, &path, None).await));
    let (mut ws, _) = connect_async(c.b.ws_url(key)).await.unwrap();
    let sub = json!({"type": "subscribe", "channel": format!("agent:{agent}")});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let r =
        c.a.req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
            .json(&json!({"message": "go", "stream": true, "stream_tokens": true}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let mut own = Box::new(events(r));
    let first = next_event(&mut own).await;
    assert_eq!(first.event, "assistant_delta");
    let run: Value = serde_json::from_str(&first.data).unwrap();
    Followed {
        agent,
        run: run["run_id"].as_str().unwrap().to_owned(),
        first: first.id.parse().unwrap(),
        own,
        sse_a,
        sse_b,
        ws,
    }
}

/// Reads every stream of `f` to its run's `done`; checks each is honest and
/// returns what the SSE stream on B saw.
async fn finish(f: &mut Followed) -> Seen {
    let name = &f.agent;
    let mut own = sse_until_done(&mut f.own, &f.run).await;
    own.seqs.insert(0, f.first);
    own.assert_honest(&format!("{name}: the run's own stream"));
    sse_until_done(&mut f.sse_a, &f.run)
        .await
        .assert_honest(&format!("{name}: SSE on A"));
    ws_until_done(&mut f.ws, &f.run)
        .await
        .assert_honest(&format!("{name}: WebSocket on B"));
    let b = sse_until_done(&mut f.sse_b, &f.run).await;
    b.assert_honest(&format!("{name}: SSE on B"));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_mid_run_loses_nothing_silently() {
    let fp = crate::fake_provider::FakeProvider::start().await;
    let mut rc = RedisCluster::start(1).await.unwrap();
    let c = start(&fp.url, &rc).await;
    let key = c.key().await;
    // One agent per master: the channels are spread over every shard.
    let mut by_master: HashMap<u16, String> = HashMap::new();
    for _ in 0..60 {
        if by_master.len() == 3 {
            break;
        }
        let agent = slow_agent(&c, &key).await;
        by_master
            .entry(master_of(&rc, &agent).await)
            .or_insert(agent);
    }
    assert_eq!(by_master.len(), 3, "agents on every master: {by_master:?}");
    let mut followed = Vec::new();
    for agent in by_master.values() {
        followed.push(follow(&c, &key, agent.clone()).await);
    }

    let victim = master_of(&rc, &followed[0].agent).await;
    let slot = rc
        .slot(&format!("{{agent:{}}}", followed[0].agent))
        .await
        .unwrap();
    let replica = rc.shard_of(slot).await.unwrap().replicas[0];
    rc.kill(victim);
    for node in [&c.a, &c.b] {
        let (status, body) = node.wait_readyz(503).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.to_lowercase().contains("redis"),
            "readyz names Redis: {body}"
        );
    }
    rc.wait_promoted(replica).await.unwrap();
    rc.wait_ok().await.unwrap();
    c.a.wait_ready().await;
    c.b.wait_ready().await;

    for f in &mut followed {
        finish(f).await;
    }

    limits_hold(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_live_channels_slot_keeps_its_streams_going() {
    let fp = crate::fake_provider::FakeProvider::start().await;
    let rc = RedisCluster::start(1).await.unwrap();
    let c = start(&fp.url, &rc).await;
    let key = c.key().await;
    let agent = slow_agent(&c, &key).await;
    let mut f = follow(&c, &key, agent.clone()).await;
    let slot = rc.slot(&format!("{{agent:{agent}}}")).await.unwrap();
    let from = rc.shard_of(slot).await.unwrap().master;
    let to = *rc
        .masters()
        .await
        .unwrap()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    rc.move_slot(slot, from, to).await.unwrap();
    assert_eq!(
        rc.shard_of(slot).await.unwrap().master,
        to,
        "the slot moved"
    );
    let seen = finish(&mut f).await;
    // Each gateway was unsubscribed by the old owner and subscribed again
    // on the new one (not merely kept going on a stale subscription).
    for node in [&c.a, &c.b] {
        node.wait_for_line(|l| l.contains("subscribed again and caught up") && l.contains(&agent))
            .await;
    }
    assert!(seen.gaps.is_empty(), "a migration loses nothing: {seen:?}");
    assert!(seen.seqs.len() > 100, "the whole run arrived: {seen:?}");
}
