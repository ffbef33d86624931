//! Unit tests of [`super::MemoryBus`]: ordering, resume without gap or
//! duplicate under concurrent publishing, expiry, seeding, lag, memory.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Map, Value};

use super::MemoryBus;
use crate::bus::{Bus, BusError};

fn ev(n: u64) -> Map<String, Value> {
    match json!({"message_type": "log", "n": n, "run_id": "run-1"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

async fn publish_n(bus: &MemoryBus, channel: &str, n: u64) {
    for i in 0..n {
        bus.publish(channel, ev(i)).await.unwrap();
    }
}

#[tokio::test]
async fn publishes_are_numbered_in_order_per_channel() {
    let bus = MemoryBus::new(100, 16);
    let mut sub = bus.subscribe("agent:a", None).await.unwrap();
    publish_n(&bus, "agent:a", 3).await;
    let other = bus.publish("agent:b", ev(9)).await.unwrap();
    assert_eq!(other.seq, 1, "each channel numbers on its own");
    for want in 1..=3 {
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(got.seq, want);
        let body: Value = serde_json::from_slice(&got.json).unwrap();
        assert_eq!(body["seq"], want);
        assert_eq!(body["n"], want - 1);
        assert_eq!(got.run_id.as_deref(), Some("run-1"));
    }
    assert_eq!(sub.last_seq(), 3);
}

#[tokio::test]
async fn resume_replays_history_then_live_without_duplicates() {
    let bus = MemoryBus::new(100, 16);
    publish_n(&bus, "c", 5).await;
    let mut sub = bus.subscribe("c", Some(2)).await.unwrap();
    publish_n(&bus, "c", 2).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sub.next().await.unwrap().unwrap().seq);
    }
    assert_eq!(got, vec![3, 4, 5, 6, 7]);
    // A cursor at the head replays nothing and still gets what comes next.
    let mut head = bus.subscribe("c", Some(7)).await.unwrap();
    bus.publish("c", ev(0)).await.unwrap();
    assert_eq!(head.next().await.unwrap().unwrap().seq, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_publishing_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 3000;
    let bus = Arc::new(MemoryBus::new(TOTAL as usize, 8192));
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                bus.publish("agent:x", ev(i)).await.unwrap();
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut readers = Vec::new();
    for k in 0..20u64 {
        let bus = bus.clone();
        readers.push(tokio::spawn(async move {
            // Join at different moments, resuming from a cursor behind the
            // head (real time on purpose: the publisher runs meanwhile).
            tokio::time::sleep(Duration::from_micros(k * 150)).await;
            let after = (k * 97).min(TOTAL / 2);
            let mut sub = bus.subscribe("agent:x", Some(after)).await.unwrap();
            let mut expect = after + 1;
            while expect <= TOTAL {
                let got = sub.next().await.unwrap().unwrap();
                assert_eq!(got.seq, expect, "reader {k} resumed after {after}");
                expect += 1;
            }
        }));
    }
    publisher.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}

#[tokio::test]
async fn a_cursor_older_than_the_history_is_refused() {
    let bus = MemoryBus::new(3, 16);
    publish_n(&bus, "c", 5).await; // keeps 3, 4, 5
    assert!(
        bus.subscribe("c", Some(2)).await.is_ok(),
        "2 is the last dropped: nothing missing"
    );
    for after in [0, 1] {
        match bus.subscribe("c", Some(after)).await {
            Err(BusError::HistoryExpired { after: a, oldest }) => {
                assert_eq!((a, oldest), (after, 3));
            }
            other => panic!(
                "after {after}: expected HistoryExpired, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // Live-only subscriptions never expire.
    assert!(bus.subscribe("c", None).await.is_ok());
}

#[tokio::test]
async fn history_also_expires_by_age() {
    let bus = MemoryBus::new(100, 16).with_max_age(Duration::from_millis(30));
    publish_n(&bus, "c", 2).await;
    // A real wait: the history's ages are `std::time::Instant`s, which
    // tokio's paused clock does not move.
    tokio::time::sleep(Duration::from_millis(60)).await;
    bus.publish("c", ev(0)).await.unwrap();
    assert!(matches!(
        bus.subscribe("c", Some(0)).await,
        Err(BusError::HistoryExpired { oldest: 3, .. })
    ));
    let mut sub = bus.subscribe("c", Some(2)).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap().seq, 3);
}

#[tokio::test]
async fn seed_seq_raises_the_counter_and_never_lowers_it() {
    let bus = MemoryBus::new(100, 16);
    bus.seed_seq("c", 10).await.unwrap();
    assert_eq!(bus.publish("c", ev(0)).await.unwrap().seq, 11);
    bus.seed_seq("c", 4).await.unwrap();
    assert_eq!(bus.publish("c", ev(0)).await.unwrap().seq, 12);
    // Seqs below the seed were never in this bus's history: resuming there
    // must say so instead of skipping them.
    assert!(matches!(
        bus.subscribe("c", Some(5)).await,
        Err(BusError::HistoryExpired { oldest: 11, .. })
    ));
    let mut sub = bus.subscribe("c", Some(10)).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap().seq, 11);
    // A future cursor (e.g. from before a restart, before seeding) is accepted.
    assert!(bus.subscribe("fresh", Some(50)).await.is_ok());
}

#[tokio::test]
async fn a_slow_subscriber_lags_without_slowing_the_publisher() {
    let bus = MemoryBus::new(100, 4);
    let mut slow = bus.subscribe("c", None).await.unwrap();
    let mut fast = bus.subscribe("c", None).await.unwrap();
    bus.publish("c", ev(0)).await.unwrap();
    assert_eq!(slow.next().await.unwrap().unwrap().seq, 1);
    assert_eq!(fast.next().await.unwrap().unwrap().seq, 1);
    // slow stops reading; the publisher goes on, fast keeps up.
    for seq in 2..=11 {
        bus.publish("c", ev(seq)).await.unwrap();
        assert_eq!(fast.next().await.unwrap().unwrap().seq, seq);
    }
    assert_eq!(
        slow.next().await.unwrap_err(),
        BusError::Lagged { last_seq: 1 }
    );
}

#[tokio::test]
async fn the_broadcast_ring_is_freed_when_the_last_subscriber_leaves() {
    let bus = MemoryBus::new(10, 1024);
    bus.publish("c", ev(0)).await.unwrap();
    assert!(!bus.has_sender("c"), "nobody listens: no ring allocated");
    let sub = bus.subscribe("c", None).await.unwrap();
    assert!(bus.has_sender("c"));
    drop(sub);
    bus.publish("c", ev(0)).await.unwrap();
    assert!(!bus.has_sender("c"));
    let sub = bus.subscribe("c", None).await.unwrap();
    drop(sub);
    bus.sweep();
    assert!(!bus.has_sender("c"), "sweep frees it without a publish");
    // The seq survived all of that.
    assert_eq!(bus.publish("c", ev(0)).await.unwrap().seq, 3);
}

#[tokio::test]
async fn zero_history_keeps_nothing_but_still_numbers() {
    let bus = MemoryBus::new(0, 16);
    publish_n(&bus, "c", 2).await;
    assert!(bus.subscribe("c", Some(1)).await.is_err());
    assert!(bus.subscribe("c", Some(2)).await.is_ok());
}

fn run_ev(run: &str) -> Map<String, Value> {
    match json!({"message_type": "assistant_delta", "run_id": run}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_run_tap_gets_that_runs_events_only_and_closes_with_its_last_follower() {
    let bus = MemoryBus::new(100, 16);
    bus.publish("c", run_ev("run-2")).await.unwrap(); // before: not replayed
    let mut first = bus.subscribe_run("c", "run-2").await.unwrap();
    let mut second = bus.subscribe_run("c", "run-2").await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..12 {
        let run = ["run-1", "run-2", "run-3"][i % 3];
        let ev = bus.publish("c", run_ev(run)).await.unwrap();
        if run == "run-2" {
            seqs.push(ev.seq);
        }
    }
    for sub in [&mut first, &mut second] {
        let mut got = Vec::new();
        for _ in 0..seqs.len() {
            let ev = sub.next().await.unwrap().unwrap();
            assert_eq!(ev.run_id.as_deref(), Some("run-2"));
            got.push(ev.seq);
        }
        assert_eq!(got, seqs, "in order, nothing else");
    }
    assert_eq!(bus.taps_open("c"), 1, "one tap, two followers");
    drop(first);
    assert_eq!(bus.taps_open("c"), 1);
    drop(second);
    assert_eq!(bus.taps_open("c"), 0, "closed with its last follower");
}

#[tokio::test]
async fn a_lagging_run_tap_says_where_to_resume_on_the_channel() {
    let bus = MemoryBus::new(1000, 16);
    publish_n(&bus, "c", 3).await;
    let mut tap = bus.subscribe_run("c", "run-1").await.unwrap();
    publish_n(&bus, "c", 500).await; // `ev` is run-1's: far past the tap's ring
    match tap.next().await {
        Err(BusError::Lagged { last_seq }) => assert_eq!(last_seq, 3),
        other => panic!("expected Lagged, got {:?}", other.map(|e| e.map(|e| e.seq))),
    }
    let mut resumed = bus.subscribe("c", Some(3)).await.unwrap();
    assert_eq!(resumed.next().await.unwrap().unwrap().seq, 4);
}
