//! Unit tests of what keeps numbering and delivery honest when Redis changes
//! under the bus (issue 20), against a real private redis-server: a counter
//! left behind (as on a promoted replica) is raised past what was handed
//! out, events Redis lost arrive as a gap signal, and a retried publish whose
//! first attempt did run is not numbered twice.

use std::time::Duration;

use super::{redis_support::RedisServer, RedisBus, RedisBusConfig};
use crate::{
    bus::{Bus, BusEvent, Subscription},
    domain::{AgentEvent, Channel},
};

fn bus(redis: &RedisServer) -> RedisBus {
    let mut cfg = RedisBusConfig::new(redis.url());
    cfg.timeout = Duration::from_millis(500);
    cfg.reconnect_max = Duration::from_millis(400);
    let bus = RedisBus::new(cfg).expect("bus builds");
    bus.start();
    bus
}

fn ch() -> Channel {
    Channel::parse("agent:f").expect("a channel")
}

async fn next(sub: &mut Subscription) -> std::sync::Arc<BusEvent> {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("within 5 s")
        .expect("no bus error")
        .expect("open")
}

/// Sets the channel's counter as a replica that missed the newest writes
/// would have it (and drops the stream entries it would not have).
async fn fall_back_to(redis: &RedisServer, counter: u64) {
    let mut c = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("weir:{agent:f}:seq")
        .arg(counter)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XTRIM")
        .arg("weir:{agent:f}:hist")
        .arg("MAXLEN")
        .arg(counter)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_left_behind_is_raised_past_what_was_handed_out() {
    let redis = RedisServer::start().await;
    let (a, b) = (bus(&redis), bus(&redis));
    a.seed_seq(&ch(), 0).await.unwrap();
    let mut sub = b.subscribe(&ch(), None).await.unwrap();
    for i in 0..5 {
        a.publish(&ch(), &AgentEvent::test_line("run-1", i))
            .await
            .unwrap();
    }
    for want in 1..=5 {
        assert_eq!(next(&mut sub).await.seq, want);
    }
    fall_back_to(&redis, 2).await;
    // The publisher knows it handed out 5: numbering goes on at 6, not 3.
    let ev = a
        .publish(&ch(), &AgentEvent::test_line("run-1", 9))
        .await
        .unwrap();
    assert_eq!(ev.seq, 6);
    let got = next(&mut sub).await;
    assert_eq!((got.seq, got.is_gap()), (6, false), "no repeat, no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_redis_lost_reach_subscribers_as_a_gap() {
    let redis = RedisServer::start().await;
    let (a, b) = (bus(&redis), bus(&redis));
    a.seed_seq(&ch(), 0).await.unwrap();
    let mut sub = b.subscribe(&ch(), None).await.unwrap();
    a.publish(&ch(), &AgentEvent::test_line("run-1", 0))
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.seq, 1);
    // Another gateway raised the counter past events that were lost
    // (numbered on a master that died before anyone received them).
    let mut c = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("weir:{agent:f}:seq")
        .arg(4)
        .query_async(&mut c)
        .await
        .unwrap();
    a.publish(&ch(), &AgentEvent::test_line("run-1", 1))
        .await
        .unwrap();
    let gap = next(&mut sub).await;
    assert!(gap.is_gap());
    assert_eq!(gap.seq, 4);
    let sse = std::str::from_utf8(&gap.sse).unwrap();
    assert_eq!(
        sse,
        "event: gap\ndata: {\"from_seq\":2,\"message_type\":\"gap\",\"to_seq\":4}\n\n"
    );
    let ws: serde_json::Value = serde_json::from_slice(&gap.ws).unwrap();
    assert_eq!(
        ws,
        serde_json::json!({"type": "gap", "channel": "agent:f", "from_seq": 2, "to_seq": 4})
    );
    assert_eq!(next(&mut sub).await.seq, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_publish_that_did_run_keeps_its_seq() {
    let redis = RedisServer::start().await;
    let a = bus(&redis);
    a.seed_seq(&ch(), 0).await.unwrap();
    let json = AgentEvent::test_line("run-1", 0).to_json_with_seq(None);
    let name = ch().to_string();
    let first = a.core.publish(&ch(), &name, &json, 0, false).await.unwrap();
    // Its reply was lost: the retry finds the event and answers its seq.
    let again = a.core.publish(&ch(), &name, &json, 0, true).await.unwrap();
    assert_eq!((first, again), (1, 1));
    let other = AgentEvent::test_line("run-1", 1).to_json_with_seq(None);
    let next = a.core.publish(&ch(), &name, &other, 0, true).await.unwrap();
    assert_eq!(next, 2, "a retry of an event that did not run is numbered");
    assert_eq!(a.kept(&ch()).await.unwrap().len(), 2, "kept once each");
}
