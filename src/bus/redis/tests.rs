//! Unit tests of [`RedisBus`] against a real private redis-server: ordering,
//! one seq across buses (gateways), resume without gap or duplicate under
//! concurrent publishing, SUBSCRIBE refcounting, expiry, control messages,
//! and surviving a dropped connection and a Redis restart.

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use super::{redis_support::RedisServer, RedisBus, RedisBusConfig};
use crate::{
    bus::{Bus, BusError, Control, Subscription},
    domain::{AgentEvent, Channel},
};

fn start(redis: &RedisServer, tweak: impl FnOnce(&mut RedisBusConfig)) -> Arc<RedisBus> {
    let mut cfg = RedisBusConfig::new(redis.url());
    cfg.timeout = Duration::from_millis(500);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.reconnect_max = Duration::from_millis(400);
    tweak(&mut cfg);
    Arc::new(started(cfg))
}

/// A bus with its pub/sub link running.
fn started(cfg: RedisBusConfig) -> RedisBus {
    let bus = RedisBus::new(cfg).expect("bus builds");
    bus.start();
    bus
}

/// The channel called `name` (`agent:…` or `logs:…`).
fn ch(name: &str) -> Channel {
    Channel::parse(name).expect("a channel name")
}

fn ev(n: u64) -> AgentEvent {
    AgentEvent::test_line("run-1", n)
}

async fn next_seq(sub: &mut Subscription) -> u64 {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an event within 5 s")
        .expect("no bus error")
        .expect("channel open")
        .seq
}

async fn numsub(redis: &RedisServer, channel: &str) -> i64 {
    let mut conn = redis.connection().await;
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("weir:ev:{{{channel}}}"))
        .query_async(&mut conn)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

/// Polls `f` until it returns `want` (3 s at most).
async fn eventually<F, Fut>(want: i64, mut f: F) -> i64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let mut got = f().await;
    for _ in 0..150 {
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = f().await;
    }
    got
}

#[tokio::test]
async fn events_are_numbered_once_and_delivered_in_order() {
    let redis = RedisServer::start().await;
    let bus = start(&redis, |_| {});
    assert_eq!(
        bus.publish(&ch("agent:a"), &ev(0)).await.unwrap_err(),
        BusError::NeedsSeed(ch("agent:a")),
        "an unseeded channel is never numbered from zero by accident"
    );
    bus.seed_seq(&ch("agent:a"), 10).await.unwrap();
    let mut sub = bus.subscribe(&ch("agent:a"), None).await.unwrap();
    assert_eq!(sub.last_seq(), 10);
    for i in 0..3 {
        assert_eq!(
            bus.publish(&ch("agent:a"), &ev(i)).await.unwrap().seq,
            11 + i
        );
    }
    for want in 11..=13 {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, want);
        let body: Value = serde_json::from_slice(&got.json).unwrap();
        assert_eq!(
            (body["seq"].as_u64(), body["message"].as_str()),
            (Some(want), Some((want - 11).to_string().as_str()))
        );
        assert!(got
            .sse
            .starts_with(format!("id: {want}\nevent: log\n").as_bytes()));
        assert_eq!(got.run_id, "run-1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buses_share_one_numbering_and_see_each_others_events() {
    let redis = RedisServer::start().await;
    let (a, b) = (start(&redis, |_| {}), start(&redis, |_| {}));
    a.seed_seq(&ch("agent:c"), 0).await.unwrap();
    let mut on_a = a.subscribe(&ch("agent:c"), None).await.unwrap();
    let mut on_b = b.subscribe(&ch("agent:c"), None).await.unwrap();
    let mut published = Vec::new();
    for i in 0..10 {
        let bus = if i % 2 == 0 { &a } else { &b };
        published.push(bus.publish(&ch("agent:c"), &ev(i)).await.unwrap().seq);
    }
    assert_eq!(published, (1..=10).collect::<Vec<_>>());
    for want in 1..=10 {
        assert_eq!(next_seq(&mut on_a).await, want);
        assert_eq!(next_seq(&mut on_b).await, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_publishing_has_no_gap_and_no_duplicate() {
    let redis = RedisServer::start().await;
    let (a, b) = (start(&redis, |_| {}), start(&redis, |_| {}));
    a.seed_seq(&ch("agent:c"), 0).await.unwrap();
    const N: u64 = 400;
    let publisher = a.clone();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            publisher.publish(&ch("agent:c"), &ev(i)).await.unwrap();
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Join at several points while events keep coming, from the other bus.
    let mut cursors = Vec::new();
    for _ in 0..4 {
        // Real time on purpose: the writer publishes meanwhile.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sub = b.subscribe(&ch("agent:c"), None).await.unwrap();
        let after = sub.last_seq().saturating_sub(7);
        drop(sub);
        cursors.push(after);
    }
    let mut subs = Vec::new();
    for &after in &cursors {
        subs.push((
            after,
            b.subscribe(&ch("agent:c"), Some(after)).await.unwrap(),
        ));
    }
    writer.await.unwrap();
    for (after, mut sub) in subs {
        for want in after + 1..=N {
            assert_eq!(next_seq(&mut sub).await, want, "resumed after {after}");
        }
    }
}

/// A run's follower on another gateway: its tap gets that run's events
/// alone, in order, and keeps the channel SUBSCRIBEd while it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_tap_on_another_gateway_gets_that_runs_events_only() {
    let redis = RedisServer::start().await;
    let (a, b) = (start(&redis, |_| {}), start(&redis, |_| {}));
    a.seed_seq(&ch("agent:t"), 0).await.unwrap();
    let mut tap = b.subscribe_run(&ch("agent:t"), "run-2").await.unwrap();
    assert_eq!(numsub(&redis, "agent:t").await, 1, "the tap subscribes");
    let mut wanted = Vec::new();
    for i in 0..9 {
        let run = ["run-1", "run-2", "run-3"][i % 3];
        let e = AgentEvent::test_line(run, i as u64);
        let seq = a.publish(&ch("agent:t"), &e).await.unwrap().seq;
        if run == "run-2" {
            wanted.push(seq);
        }
    }
    let mut got = Vec::new();
    for _ in 0..wanted.len() {
        got.push(next_seq(&mut tap).await);
    }
    assert_eq!(got, wanted);
    drop(tap);
    assert_eq!(eventually(0, || numsub(&redis, "agent:t")).await, 0);
}

#[tokio::test]
async fn one_redis_subscription_per_channel_while_anyone_listens() {
    let redis = RedisServer::start().await;
    let bus = start(&redis, |_| {});
    let first = bus.subscribe(&ch("agent:x"), None).await.unwrap();
    let second = bus.subscribe(&ch("agent:x"), None).await.unwrap();
    let other = bus.subscribe(&ch("logs:x"), None).await.unwrap();
    assert_eq!(
        numsub(&redis, "agent:x").await,
        1,
        "one SUBSCRIBE for two local subscribers"
    );
    assert_eq!(
        numsub(&redis, "logs:x").await,
        1,
        "channels share the one connection"
    );
    assert_eq!(bus.local_channels(), 2);
    drop(first);
    // A real wait for something that must not happen: a wrong UNSUBSCRIBE
    // would have reached Redis by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        numsub(&redis, "agent:x").await,
        1,
        "still one listener left"
    );
    drop(second);
    assert_eq!(
        eventually(0, || numsub(&redis, "agent:x")).await,
        0,
        "UNSUBSCRIBE after the last"
    );
    assert_eq!(numsub(&redis, "logs:x").await, 1);
    assert_eq!(bus.local_channels(), 1);
    drop(other);
    assert_eq!(eventually(0, || numsub(&redis, "logs:x")).await, 0);
    // And back again.
    let again = bus.subscribe(&ch("agent:x"), None).await.unwrap();
    assert_eq!(numsub(&redis, "agent:x").await, 1);
    // The link goes with the bus.
    drop((again, bus));
    let mut conn = redis.connection().await;
    let clients = || {
        let mut conn = conn.clone();
        async move {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg(&["NUMSUB", "weir:control"][..])
                .query_async(&mut conn)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(
        eventually(0, clients).await,
        0,
        "the link closed with the bus"
    );
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn history_expires_by_length_and_by_age() {
    let redis = RedisServer::start().await;
    let bus = start(&redis, |c| {
        c.history_len = 3;
        c.history_ttl = Duration::from_millis(1500);
    });
    bus.seed_seq(&ch("agent:c"), 0).await.unwrap();
    for i in 0..6 {
        bus.publish(&ch("agent:c"), &ev(i)).await.unwrap();
    }
    match bus.subscribe(&ch("agent:c"), Some(1)).await {
        Err(e) => assert_eq!(
            e,
            BusError::HistoryExpired {
                after: 1,
                oldest: 4
            }
        ),
        Ok(_) => panic!("seq 2 and 3 are gone"),
    }
    let mut sub = bus.subscribe(&ch("agent:c"), Some(3)).await.unwrap();
    for want in 4..=6 {
        assert_eq!(next_seq(&mut sub).await, want);
    }
    // By age: 7 is past the TTL when 8 (published later) is not.
    bus.publish(&ch("agent:c"), &ev(7)).await.unwrap();
    // Real waits: the ages are kept by Redis, on its own clock.
    tokio::time::sleep(Duration::from_millis(900)).await;
    bus.publish(&ch("agent:c"), &ev(8)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    match bus.subscribe(&ch("agent:c"), Some(6)).await {
        Err(e) => assert_eq!(
            e,
            BusError::HistoryExpired {
                after: 6,
                oldest: 8
            }
        ),
        Ok(_) => panic!("seq 7 is older than the TTL"),
    }
    let mut sub = bus.subscribe(&ch("agent:c"), Some(7)).await.unwrap();
    assert_eq!(next_seq(&mut sub).await, 8);
    // A counter seeded past the kept history (events only the store has).
    bus.seed_seq(&ch("agent:d"), 50).await.unwrap();
    assert!(matches!(
        bus.subscribe(&ch("agent:d"), Some(40)).await,
        Err(BusError::HistoryExpired {
            after: 40,
            oldest: 51
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_reach_every_bus() {
    let redis = RedisServer::start().await;
    let (a, b) = (start(&redis, |_| {}), start(&redis, |_| {}));
    let mut on_b = b.control();
    // The link subscribes the control channel before it reports ready.
    b.subscribe(&ch("agent:warm-up"), None).await.unwrap();
    let msg = Control::KeyRevoked {
        key_id: "key-1".into(),
    };
    a.publish_control(msg.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), on_b.recv())
        .await
        .expect("within 2 s")
        .unwrap();
    assert_eq!(got, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_link_reconnects_resubscribes_and_catches_up() {
    let redis = RedisServer::start().await;
    let (a, b) = (start(&redis, |_| {}), start(&redis, |_| {}));
    a.seed_seq(&ch("agent:c"), 0).await.unwrap();
    let mut sub = a.subscribe(&ch("agent:c"), None).await.unwrap();
    b.publish(&ch("agent:c"), &ev(0)).await.unwrap();
    assert_eq!(next_seq(&mut sub).await, 1);
    let mut admin = redis.connection().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "the pub/sub links were dropped");
    // Published while a's link is down: delivered from history on reconnect.
    for i in 1..5 {
        b.publish(&ch("agent:c"), &ev(i)).await.unwrap();
    }
    for want in 2..=5 {
        assert_eq!(next_seq(&mut sub).await, want);
    }
    assert_eq!(a.link_state(), (2, true), "one reconnect");
    assert_eq!(numsub(&redis, "agent:c").await, 1, "subscribed again");
    b.publish(&ch("agent:c"), &ev(5)).await.unwrap();
    assert_eq!(next_seq(&mut sub).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_fast_then_recovers_with_numbering_intact() {
    let mut redis = RedisServer::start().await;
    // Without publish patience: a publish fails as soon as Redis does (the
    // retry through an outage is tested with real gateways).
    let bus = start(&redis, |c| c.publish_patience = Duration::ZERO);
    bus.seed_seq(&ch("agent:c"), 0).await.unwrap();
    let mut sub = bus.subscribe(&ch("agent:c"), None).await.unwrap();
    for i in 0..3 {
        bus.publish(&ch("agent:c"), &ev(i)).await.unwrap();
    }
    assert_eq!(next_seq(&mut sub).await, 1);
    assert_eq!(next_seq(&mut sub).await, 2);
    assert_eq!(next_seq(&mut sub).await, 3);
    redis.kill();
    let t0 = std::time::Instant::now();
    let err = bus.publish(&ch("agent:c"), &ev(9)).await.unwrap_err();
    assert!(
        matches!(&err, BusError::Unavailable(m) if m.contains("redis")),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "fails within the timeout"
    );
    assert!(bus.ping().await.is_err());
    assert!(bus.subscribe(&ch("agent:other"), None).await.is_err());
    redis.restart().await;
    // Publishing (connection manager) and the pub/sub link reconnect on
    // their own schedules; wait for both before looking.
    let mut ready = false;
    for _ in 0..200 {
        if bus.ping().await.is_ok() && bus.link_state().1 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the link came back by itself");
    let (generation, up) = bus.link_state();
    assert!(up && generation >= 2, "reconnected: {generation}");
    assert_eq!(
        numsub(&redis, "agent:c").await,
        1,
        "the channel was subscribed again"
    );
    // Redis lost everything; the link re-seeded the counter from what this
    // gateway delivered, so numbering goes on instead of restarting at 1.
    let next = bus.publish(&ch("agent:c"), &ev(10)).await.unwrap();
    assert_eq!(next.seq, 4);
    assert_eq!(next_seq(&mut sub).await, 4);
}

async fn becomes_ready(bus: &RedisBus, within: Duration) -> bool {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if bus.ping().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_in_the_url_and_a_private_ca() {
    let redis = RedisServer::start_tls("s3cret").await;
    let tls = |url: String, ca: bool| {
        let mut cfg = RedisBusConfig::new(url);
        cfg.timeout = Duration::from_millis(500);
        cfg.reconnect_max = Duration::from_millis(200);
        cfg.ca_file = ca.then(|| redis.ca_file());
        started(cfg)
    };
    let bus = tls(redis.tls_url(), true);
    assert!(
        becomes_ready(&bus, Duration::from_secs(5)).await,
        "TLS link up"
    );
    bus.seed_seq(&ch("agent:c"), 0).await.unwrap();
    let mut sub = bus.subscribe(&ch("agent:c"), None).await.unwrap();
    bus.publish(&ch("agent:c"), &ev(1)).await.unwrap();
    assert_eq!(next_seq(&mut sub).await, 1);
    // A wrong password, or a server the public roots do not vouch for, is
    // refused (and reported by ping), never silently accepted.
    let wrong = tls(redis.tls_url().replace("s3cret", "wrong"), true);
    let untrusted = tls(redis.tls_url(), false);
    assert!(!becomes_ready(&wrong, Duration::from_secs(1)).await);
    assert!(!becomes_ready(&untrusted, Duration::from_millis(200)).await);
    assert!(matches!(wrong.ping().await, Err(BusError::Unavailable(m)) if m.contains("redis")));
}
