//! `ws_frames.txt`: every frame the WebSocket server sends (`pong`,
//! `subscribed`, `unsubscribed`, `run_started`, `agent_response`, and
//! `error` for each way a client frame can be wrong or refused), the
//! handshakes it refuses, and the close frames a client can observe (1009
//! for an oversized frame, 1001 when the gateway drains).
//!
//! Not covered, because no client action reaches them in bounded time: the
//! `lagged` error and close 1013 (a queue of 1024 frames must overflow while
//! the client stops reading) and close 1000 on the 90 s idle timeout.

use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{
    check, main_key, settled,
    socket::{ws_refused, Socket},
    transcript::{Key, Req},
    Transcript,
};
use crate::common::{Api, TestGateway};

/// Client frames that are wrong, one per way of being wrong.
const BAD_FRAMES: &[&str] = &[
    r#"{"type": "#,
    r#"[1]"#,
    r#"{"type":"ping","request_id":{}}"#,
    r#"{"type":5,"request_id":"t"}"#,
    r#"{"channel":"x","request_id":"m"}"#,
    r#"{"type":"shout","request_id":"r1"}"#,
    r#"{"type":"a_frame_type_that_is_much_longer_than_sixty_four_characters_and_then_some"}"#,
    r#"{"type":"subscribe","request_id":"s0"}"#,
    r#"{"type":"subscribe","channel":"agent:x","after":-1}"#,
    r#"{"type":"unsubscribe"}"#,
    r#"{"type":"cancel","request_id":1.5}"#,
    r#"{"type":"user_message","message":"no agent","request_id":2}"#,
    r#"{"type":"user_message","agent_id":"agent-x"}"#,
    r#"{"type":"user_message","agent_id":"agent-x","message":"a","messages":[{"role":"user","content":"b"}]}"#,
    r#"{"type":"user_message","agent_id":"agent-x","messages":[]}"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_every_websocket_frame() {
    let mut gw = TestGateway::builder()
        .config(|c| c.edge.max_ws_per_key = 3)
        .spawn()
        .await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("every WebSocket server frame, refused handshakes, close codes");
    t.section("the agents of this scenario");
    let agent = create(&mut t, &gw, &key, json!({"name": "golden-ws"})).await;
    let slow_body = json!({"name": "golden-ws-slow", "metadata": {"echo_delay_ms": 5000}});
    let slow = create(&mut t, &gw, &key, slow_body).await;
    let stopped = create(&mut t, &gw, &key, json!({"name": "golden-ws-stopped"})).await;
    let stop = Req::post(format!("/v1/agents/{stopped}/stop"), &json!({}));
    t.http(&gw, stop.key(&key)).await;
    let mut ws = Socket::connect(&gw, &key).await;
    pings_and_bad_frames(&mut t, &mut ws).await;
    refusals(&mut t, &gw, &mut ws, &agent, &stopped).await;
    let run = run_over_the_socket(&mut t, &mut ws, &agent).await;
    settled(&gw, &key, &agent, 1).await;
    replays(&mut t, &mut ws, &agent, &run).await;
    cancel(&mut t, &mut ws, &slow).await;
    too_many_subscriptions(&mut t, &gw, &key).await;
    handshakes(&mut t, &gw).await;
    history_expired(&mut t).await;
    t.section("a frame over the size limit (1 MiB) closes the socket: 1009");
    let mut big = Socket::connect(&gw, &key).await;
    t.line("ws> (a 2 MiB text frame)");
    let pad = "x".repeat(2 << 20);
    big.send_message(Message::text(format!(r#"{{"type":"ping","pad":"{pad}"}}"#)))
        .await;
    big.closed(&mut t).await;
    t.section("the gateway drains: open sockets close with 1001");
    let ((), ()) = tokio::join!(gw.shutdown(), ws.closed(&mut t));
    check("ws_frames.txt", t);
}

async fn create(t: &mut Transcript, gw: &TestGateway, key: &Key, body: Value) -> String {
    t.http(gw, Req::post("/v1/agents", &body).key(key))
        .await
        .str("id")
}

/// Sends `frame` and records the one reply.
async fn exchange(t: &mut Transcript, ws: &mut Socket, frame: &str) -> String {
    ws.send(t, frame).await;
    ws.recv(t).await
}

async fn pings_and_bad_frames(t: &mut Transcript, ws: &mut Socket) {
    t.section("ping → pong, with the request_id echoed whatever its kind");
    for frame in [
        r#"{"type":"ping"}"#,
        r#"{"type":"ping","request_id":"p1"}"#,
        r#"{"type":"ping","request_id":7}"#,
        r#"{"type":"ping","request_id":null}"#,
    ] {
        exchange(t, ws, frame).await;
    }
    t.line("ws> (protocol ping, payload `hb`)");
    ws.send_message(Message::Ping(b"hb".to_vec().into())).await;
    match ws.next().await {
        Message::Pong(p) => t.line(&format!(
            "ws< (protocol pong, payload `{}`)",
            String::from_utf8_lossy(&p)
        )),
        other => panic!("expected a pong, got {other:?}"),
    }
    t.section("client frames the server cannot accept: an error frame each, the socket stays open");
    for frame in BAD_FRAMES {
        exchange(t, ws, frame).await;
    }
    t.line("ws> (a binary frame of 3 bytes)");
    ws.send_message(Message::binary(vec![0u8, 1, 2])).await;
    ws.recv(t).await;
    let deep = format!(
        r#"{{"type":"ping","pad":{}{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    exchange(t, ws, &deep).await;
}

async fn refusals(
    t: &mut Transcript,
    gw: &TestGateway,
    ws: &mut Socket,
    agent: &str,
    stopped: &str,
) {
    t.section("subscriptions refused (the error names the channel)");
    for ch in [
        "chan:x",
        "agent",
        "agent:",
        "agent:a b",
        "agent:agent-missing",
        "logs:agent-missing",
        "run:run-missing",
    ] {
        let frame = json!({"type": "subscribe", "channel": ch, "request_id": "s"});
        exchange(t, ws, &frame.to_string()).await;
    }
    t.note("a key without the `logs` scope, on its own socket:");
    let chat = Key {
        label: "chat-only",
        secret: gw.mint_key("default", &["chat"]).await,
    };
    let mut other = Socket::connect(gw, &chat).await;
    let frame = json!({"type": "subscribe", "channel": format!("logs:{agent}"), "request_id": "s"});
    exchange(t, &mut other, &frame.to_string()).await;
    t.section("runs that cannot start, and a cancel of no run");
    let frames = [
        json!({"type": "user_message", "agent_id": "agent-missing", "message": "hi", "request_id": "u1"}),
        json!({"type": "user_message", "agent_id": stopped, "message": "hi", "request_id": "u2"}),
        json!({"type": "user_message", "agent_id": agent, "message": "hi", "session_id": "sess-missing", "request_id": "u3"}),
        json!({"type": "user_message", "agent_id": agent, "messages": [{"role": "assistant", "content": "hi"}], "request_id": "u4"}),
        json!({"type": "user_message", "agent_id": agent, "message": "  ", "request_id": "u5"}),
        json!({"type": "cancel", "run_id": "run-missing", "request_id": "c1"}),
    ];
    for frame in frames {
        exchange(t, ws, &frame.to_string()).await;
    }
}

/// Reads and records frames until the `done` of `run`.
async fn until_done(t: &mut Transcript, ws: &mut Socket, run: &str) {
    loop {
        let f = ws.recv(t).await;
        if f.contains(r#""message_type":"done""#) && f.contains(run) {
            return;
        }
    }
}

async fn run_over_the_socket(t: &mut Transcript, ws: &mut Socket, agent: &str) -> String {
    t.section("subscribe (twice: the second is a no-op), then a run started over the socket");
    let sub =
        json!({"type": "subscribe", "channel": format!("agent:{agent}"), "request_id": "sub"});
    exchange(t, ws, &sub.to_string()).await;
    exchange(t, ws, &sub.to_string()).await;
    let msg = json!({"type": "user_message", "agent_id": agent, "message": "what time is it?", "stream_tokens": true, "request_id": "r1"});
    let started: Value = serde_json::from_str(&exchange(t, ws, &msg.to_string()).await).unwrap();
    assert_eq!(started["type"], "run_started", "run_started comes first");
    let run = started["run_id"].as_str().expect("run id").to_owned();
    until_done(t, ws, &run).await;
    t.section("unsubscribe, and unsubscribe from a channel not subscribed");
    for ch in [format!("agent:{agent}"), "logs:agent-missing".to_owned()] {
        let frame = json!({"type": "unsubscribe", "channel": ch, "request_id": "un"});
        exchange(t, ws, &frame.to_string()).await;
    }
    run
}

async fn replays(t: &mut Transcript, ws: &mut Socket, agent: &str, run: &str) {
    t.section("a finished run as a channel: its events from the store, then the channel ends");
    let frame = json!({"type": "subscribe", "channel": format!("run:{run}")});
    ws.send(t, &frame.to_string()).await;
    ws.recv(t).await;
    until_done(t, ws, run).await;
    t.section("an agent channel resumed with `after`");
    let frame = json!({"type": "subscribe", "channel": format!("agent:{agent}"), "after": 12, "request_id": "again"});
    ws.send(t, &frame.to_string()).await;
    ws.recv(t).await;
    until_done(t, ws, run).await;
    let frame = json!({"type": "unsubscribe", "channel": format!("agent:{agent}")});
    exchange(t, ws, &frame.to_string()).await;
    t.section("the logs channel from its start");
    let frame = json!({"type": "subscribe", "channel": format!("logs:{agent}"), "after": 0});
    ws.send(t, &frame.to_string()).await;
    ws.recv(t).await;
    while !ws.recv(t).await.contains("run ended") {}
    let frame = json!({"type": "unsubscribe", "channel": format!("logs:{agent}")});
    exchange(t, ws, &frame.to_string()).await;
}

async fn cancel(t: &mut Transcript, ws: &mut Socket, slow: &str) {
    t.section("a run cancelled over the socket: its done says so, there is no other reply");
    let msg = json!({"type": "user_message", "agent_id": slow, "message": "hello there", "request_id": "r2"});
    let started: Value = serde_json::from_str(&exchange(t, ws, &msg.to_string()).await).unwrap();
    let run = started["run_id"].as_str().expect("run id").to_owned();
    while !ws.recv(t).await.contains("internal_monologue") {}
    let frame = json!({"type": "cancel", "run_id": run, "request_id": "c2"});
    ws.send(t, &frame.to_string()).await;
    until_done(t, ws, &run).await;
    let frame = json!({"type": "unsubscribe", "channel": format!("agent:{slow}")});
    exchange(t, ws, &frame.to_string()).await;
}

async fn too_many_subscriptions(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("the 65th channel of a socket");
    t.note("64 channels subscribed first (agent: and logs: of 32 agents), unrecorded");
    let mut ws = Socket::connect(gw, key).await;
    for i in 0..32 {
        let r = gw
            .req_as(&key.secret, Method::POST, "/v1/agents")
            .json(&json!({"name": format!("many-{i}")}))
            .send()
            .await
            .expect("create");
        let id = r.json::<Value>().await.expect("agent")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        for kind in ["agent", "logs"] {
            let frame = json!({"type": "subscribe", "channel": format!("{kind}:{id}")});
            ws.send(&mut Transcript::new("unrecorded"), &frame.to_string())
                .await;
            assert!(ws.text().await.contains("subscribed"));
        }
    }
    let frame = json!({"type": "subscribe", "channel": "run:run-65", "request_id": "65"});
    exchange(t, &mut ws, &frame.to_string()).await;
}

async fn handshakes(t: &mut Transcript, gw: &TestGateway) {
    t.section("handshakes refused before the upgrade");
    ws_refused(t, gw, None).await;
    let bad = Key {
        label: "unknown",
        secret: "wk_nope_nope".into(),
    };
    ws_refused(t, gw, Some(&bad)).await;
    let logs = Key {
        label: "logs-only",
        secret: gw.mint_key("default", &["logs"]).await,
    };
    ws_refused(t, gw, Some(&logs)).await;
    let capped = Key {
        label: "capped",
        secret: gw.mint_key("default", &["chat"]).await,
    };
    t.http(gw, Req::get("/v1/ws").key(&capped)).await;
    t.note("three sockets open with key capped (the limit is 3 per key), then a fourth:");
    let _held = (
        Socket::connect(gw, &capped).await,
        Socket::connect(gw, &capped).await,
        Socket::connect(gw, &capped).await,
    );
    ws_refused(t, gw, Some(&capped)).await;
}

async fn history_expired(t: &mut Transcript) {
    t.section("a cursor older than the kept history (a gateway keeping 4 events per channel)");
    let gw = TestGateway::builder()
        .config(|c| c.history_len = 4)
        .spawn()
        .await;
    let key = main_key(&gw).await;
    let agent = create(t, &gw, &key, json!({"name": "golden-short"})).await;
    let send = Req::post(
        format!("/v1/agents/{agent}/messages"),
        &json!({"message": "what time is it?"}),
    );
    super::quietly(&gw, send.key(&key)).await;
    settled(&gw, &key, &agent, 1).await;
    let mut ws = Socket::connect(&gw, &key).await;
    for kind in ["agent", "logs"] {
        let frame = json!({"type": "subscribe", "channel": format!("{kind}:{agent}"), "after": 0, "request_id": "old"});
        exchange(t, &mut ws, &frame.to_string()).await;
    }
}
