//! Unit tests of the WebSocket core over in-memory channels (no socket), on
//! a real state: SQLite store in a temp dir, memory bus, real runtime.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::extract::ws::Message;
use futures::{channel::mpsc, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{session, WsSettings};
use crate::{
    agent::{Engine, Runtime},
    bus::{memory::MemoryBus, Bus},
    config::ServeConfig,
    domain::{AgentEvent, Channel, EventBody, MessageType},
    keys::KeyCache,
    state::AppState,
    store::{sqlite::SqliteStore, KeyRecord, NewAgent, Store},
};

/// A state over a fresh SQLite dir (kept alive by the returned guard).
pub(super) async fn test_state(history_len: usize) -> (AppState, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(tmp.path()).expect("store"));
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(history_len, 64));
    let config = Arc::new(ServeConfig::for_data_dir(tmp.path()));
    let config_edge = config.edge.clone();
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let engine = Engine::new(
        store.clone(),
        bus.clone(),
        config.clone(),
        tracker.clone(),
        shutdown.clone(),
    );
    let runtime = Runtime::local(Arc::new(engine));
    let audit = Arc::new(crate::audit::AuditLog::new(&config.audit));
    let state = AppState::new(crate::state::Shared {
        config,
        store,
        bus,
        keys: Arc::new(KeyCache::default()),
        runtime: Arc::new(runtime),
        shutdown,
        checks: Default::default(),
        drain: crate::stream::drain::Drain::new(std::time::Duration::ZERO),
        tracker,
        edge: Arc::new(crate::edge::Edge::new(&config_edge, None, "weir:").expect("edge")),
        audit,
        usage: Default::default(),
        webhooks: crate::webhooks::Hub::disabled(),
    });
    (state, tmp)
}

fn key(account: &str, scopes: &[&str]) -> Arc<KeyRecord> {
    let scopes = scopes.iter().map(|s| s.to_string()).collect();
    let m = crate::keys::mint(account, "", scopes, 1000, None);
    Arc::new(KeyRecord {
        id: format!("key-{account}").into(),
        hash: String::new(),
        ..KeyRecord::created(m.new_key, String::new())
    })
}

pub(super) async fn agent(state: &AppState, account: &str, metadata: Value) -> String {
    state.store.ensure_account(account).await.expect("account");
    let new = NewAgent {
        name: "a".into(),
        model: "echo".into(),
        system: String::new(),
        tools: vec![],
        tags: vec![],
        metadata,
        approval_required: vec![],
    };
    state
        .store
        .create_agent(account, new)
        .await
        .expect("agent")
        .id
        .into_string()
}

/// The client's end of an in-memory socket.
pub(super) struct Client {
    pub tx: mpsc::Sender<Result<Message, Infallible>>,
    pub rx: mpsc::Receiver<Message>,
    pub task: tokio::task::JoinHandle<()>,
}

pub(super) fn connect(
    state: &AppState,
    account: &str,
    scopes: &[&str],
    settings: WsSettings,
    buffer: usize,
) -> Client {
    let (tx, server_rx) = mpsc::channel(16);
    let (server_tx, rx) = mpsc::channel(buffer);
    let task = tokio::spawn(session::serve(
        state.clone(),
        key(account, scopes),
        Arc::new(settings),
        server_tx,
        server_rx,
    ));
    Client { tx, rx, task }
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.tx
            .send(Ok(Message::Text(text.into())))
            .await
            .expect("socket open");
    }

    /// The next frame of any kind, within 5 s.
    pub async fn frame(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(5), self.rx.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket still open")
    }

    /// The next JSON text frame, skipping pings.
    pub async fn json(&mut self) -> Value {
        loop {
            match self.frame().await {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Asserts that no text frame arrives within `wait`.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(Message::Text(t))) = tokio::time::timeout(wait, self.rx.next()).await {
            panic!("unexpected frame {t}");
        }
    }
}

const ALL: &[&str] = &["*"];

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_lives_on() {
    let (state, _tmp) = test_state(100).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 16);
    c.send_text("{not json").await;
    let e = c.json().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("validation_error"))
    );
    c.send(json!({"type": "dance", "request_id": "r1"})).await;
    let e = c.json().await;
    assert_eq!(e["code"], "unknown_type");
    assert_eq!(e["request_id"], "r1");
    c.send(json!({"type": "subscribe", "request_id": "r2"}))
        .await;
    let e = c.json().await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("validation_error"), Some("r2"))
    );
    assert!(e["message"].as_str().unwrap().contains("`channel`"), "{e}");
    c.tx.send(Ok(Message::Binary(vec![1, 2].into())))
        .await
        .unwrap();
    assert_eq!(c.json().await["code"], "validation_error");
    c.send(json!({"type": "ping", "request_id": 5})).await;
    assert_eq!(c.json().await, json!({"type": "pong", "request_id": 5}));
}

// Paused time: `quiet` below waits 100 ms of tokio time, which passes only
// once the socket has nothing left to do.
#[tokio::test(start_paused = true)]
async fn two_channels_on_one_socket_share_the_published_bytes() {
    let (state, _tmp) = test_state(100).await;
    let id = agent(&state, "acc", json!({})).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 16);
    for ch in [format!("agent:{id}"), format!("logs:{id}")] {
        c.send(json!({"type": "subscribe", "channel": ch, "request_id": ch}))
            .await;
        assert_eq!(
            c.json().await,
            json!({"type": "subscribed", "channel": ch, "request_id": ch})
        );
    }
    let ev = state
        .bus
        .publish(
            &Channel::Agent(id.as_str().into()),
            &AgentEvent::test_event(
                "run-1",
                EventBody::AssistantMessage {
                    message: "hi".into(),
                },
            ),
        )
        .await
        .unwrap();
    let Message::Text(t) = c.frame().await else {
        panic!("text")
    };
    assert_eq!(
        t.as_bytes(),
        &ev.ws[..],
        "the bus's bytes, not a re-encoding"
    );
    let log = state
        .bus
        .publish(
            &Channel::Logs(id.as_str().into()),
            &AgentEvent::test_line("run-1", 0),
        )
        .await
        .unwrap();
    let v = c.json().await;
    assert_eq!(
        (v["type"].as_str(), v["message_type"].as_str()),
        (Some("agent_response"), Some("log"))
    );
    assert_eq!(v["seq"], log.seq);
    // Unsubscribe: that channel goes quiet, the other one still flows.
    c.send(json!({"type": "unsubscribe", "channel": format!("logs:{id}")}))
        .await;
    assert_eq!(c.json().await["type"], "unsubscribed");
    state
        .bus
        .publish(
            &Channel::Logs(id.as_str().into()),
            &AgentEvent::test_line("run-1", 0),
        )
        .await
        .unwrap();
    c.quiet(Duration::from_millis(100)).await;
    state
        .bus
        .publish(
            &Channel::Agent(id.as_str().into()),
            &AgentEvent::test_of(MessageType::Usage, "run-1"),
        )
        .await
        .unwrap();
    assert_eq!(c.json().await["message_type"], "usage");
}

#[tokio::test]
async fn subscribing_checks_account_scope_and_name() {
    let (state, _tmp) = test_state(100).await;
    let theirs = agent(&state, "other", json!({})).await;
    let mine = agent(&state, "acc", json!({})).await;
    let mut c = connect(&state, "acc", &["chat"], WsSettings::default(), 16);
    c.send(json!({"type": "subscribe", "channel": format!("agent:{theirs}"), "request_id": "x"}))
        .await;
    let e = c.json().await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("agent_not_found"), Some("x"))
    );
    assert_eq!(e["channel"], format!("agent:{theirs}"));
    c.send(json!({"type": "subscribe", "channel": "run:run-nope"}))
        .await;
    assert_eq!(c.json().await["code"], "run_not_found");
    c.send(json!({"type": "subscribe", "channel": format!("logs:{mine}")}))
        .await;
    assert_eq!(
        c.json().await["code"],
        "forbidden",
        "logs need the `logs` scope"
    );
    c.send(json!({"type": "subscribe", "channel": "queue:1"}))
        .await;
    assert_eq!(c.json().await["code"], "validation_error");
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.json().await["type"], "pong");
}

#[tokio::test]
async fn subscribe_with_after_resumes_and_old_cursors_expire() {
    let (state, _tmp) = test_state(3).await;
    let id = agent(&state, "acc", json!({})).await;
    let ch = format!("agent:{id}");
    for i in 0..5 {
        state
            .bus
            .publish(
                &Channel::parse(&ch).unwrap(),
                &AgentEvent::test_line("run-1", i),
            )
            .await
            .unwrap();
    }
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 16);
    c.send(json!({"type": "subscribe", "channel": ch, "after": 3}))
        .await;
    assert_eq!(c.json().await["type"], "subscribed");
    assert_eq!(c.json().await["seq"], 4);
    assert_eq!(c.json().await["seq"], 5);
    state
        .bus
        .publish(
            &Channel::parse(&ch).unwrap(),
            &AgentEvent::test_line("run-1", 0),
        )
        .await
        .unwrap();
    assert_eq!(c.json().await["seq"], 6);
    // Seq 1..3 left the 3-event history: resuming at 1 must say so.
    let mut d = connect(&state, "acc", ALL, WsSettings::default(), 16);
    d.send(json!({"type": "subscribe", "channel": ch, "after": 1, "request_id": "r"}))
        .await;
    let e = d.json().await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("history_expired"), Some("r"))
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_lagged_without_blocking_others() {
    let (state, _tmp) = test_state(1000).await;
    let id = agent(&state, "acc", json!({})).await;
    let ch = format!("agent:{id}");
    let settings = WsSettings {
        queue: 8,
        close_timeout: Duration::from_millis(500),
        ..WsSettings::default()
    };
    let mut slow = connect(&state, "acc", ALL, settings.clone(), 1);
    let mut fast = connect(&state, "acc", ALL, settings, 1);
    for c in [&mut slow, &mut fast] {
        c.send(json!({"type": "subscribe", "channel": ch})).await;
        assert_eq!(c.json().await["type"], "subscribed");
    }
    for i in 1..=200u64 {
        state
            .bus
            .publish(
                &Channel::parse(&ch).unwrap(),
                &AgentEvent::test_line("run-1", 0),
            )
            .await
            .unwrap();
        assert_eq!(fast.json().await["seq"], i, "the fast socket keeps up");
    }
    // The slow one got a few frames, then the lagged error with the last
    // seq it was actually sent, then close 1013.
    let mut last = 0;
    loop {
        match slow.frame().await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "agent_response" {
                    last = v["seq"].as_u64().unwrap();
                    continue;
                }
                assert_eq!(v["code"], "lagged", "{v}");
                assert_eq!(v["last_seq"], last);
                assert_eq!(v["channel"], ch);
                assert!(last < 200);
            }
            Message::Close(Some(f)) => {
                assert_eq!(f.code, 1013);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(2), slow.task)
        .await
        .expect("slow socket ended")
        .unwrap();
}

// Paused time: the pings, the idle timeout and the pauses between pongs
// are all on tokio's clock, so the timings below are exact.
#[tokio::test(start_paused = true)]
async fn server_pings_and_closes_a_silent_socket() {
    let (state, _tmp) = test_state(10).await;
    let settings = WsSettings {
        ping_every: Duration::from_millis(40),
        idle_timeout: Duration::from_millis(300),
        ..WsSettings::default()
    };
    let mut c = connect(&state, "acc", ALL, settings, 16);
    assert!(matches!(c.frame().await, Message::Ping(_)));
    // Answering keeps it open past the idle timeout …
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.tx.send(Ok(Message::Pong(Default::default())))
            .await
            .unwrap();
    }
    // … silence closes it with 1000.
    let started = tokio::time::Instant::now();
    loop {
        match c.frame().await {
            Message::Ping(_) => continue,
            Message::Close(Some(f)) => {
                assert_eq!(f.code, 1000);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn draining_gateway_closes_with_1001() {
    let (state, _tmp) = test_state(10).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 16);
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.json().await["type"], "pong");
    state.shutdown.cancel();
    // The socket's turn in the drain of idle streams (no spread here).
    state.drain.close_spread(&state.edge.hard_stop).await;
    match c.frame().await {
        Message::Close(Some(f)) => assert_eq!((f.code, f.reason.as_str()), (1001, "draining")),
        other => panic!("unexpected {other:?}"),
    }
}

mod runs;
