//! `/v1/ws` over a real socket: every frame sent is checked against
//! `ws-client.json` (except the deliberately bad ones), every frame received
//! against `ws-server.json`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::{assert_invalid, assert_valid};
use crate::common::{spawn_gateway, Api, TestGateway};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn connect(gw: &TestGateway) -> Socket {
    let url = gw.ws_url(&gw.key);
    connect_async(url).await.expect("websocket handshake").0
}

/// Sends a frame that the client schema accepts.
async fn send(ws: &mut Socket, frame: Value) {
    assert_valid("ws-client.json", &frame);
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// Sends raw text (for frames that are wrong on purpose).
async fn send_raw(ws: &mut Socket, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next text frame, validated against `ws-server.json`.
async fn recv(ws: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                assert_valid("ws-server.json", &v);
                if v["type"] == "agent_response" {
                    // An agent_response is an event with `type` added.
                    let mut ev = v.clone();
                    ev.as_object_mut().unwrap().remove("type");
                    assert_valid("event.json", &ev);
                }
                return v;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Frames until one matches `pred`; returns them all (the match last).
async fn until(ws: &mut Socket, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = recv(ws).await;
        let done = pred(&v);
        out.push(v);
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_both_ways_matches_the_schemas() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("ws").await;
    let mut ws = connect(&gw).await;

    send(&mut ws, json!({"type": "ping", "request_id": "p1"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "pong", "request_id": "p1"})
    );
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong"}));

    // Bad frames get an error frame and the socket lives on.
    send_raw(&mut ws, "{nope").await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("validation_error"))
    );
    assert!(e["request_id"].is_null());
    let shout = json!({"type": "shout", "request_id": 7});
    assert_invalid("ws-client.json", &shout);
    send_raw(&mut ws, &shout.to_string()).await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), &e["request_id"]),
        (Some("unknown_type"), &json!(7))
    );
    let bad = json!({"type": "subscribe", "channel": "bogus", "request_id": "b"});
    assert_invalid("ws-client.json", &bad);
    send_raw(&mut ws, &bad.to_string()).await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["channel"].as_str()),
        (Some("validation_error"), Some("bogus"))
    );
    send(
        &mut ws,
        json!({"type": "subscribe", "channel": "agent:agent-none"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "agent_not_found");
    send(
        &mut ws,
        json!({"type": "cancel", "run_id": "run-none", "request_id": "c"}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("run_not_found"), Some("c"))
    );

    // A run: logs and agent events on one socket.
    let logs = format!("logs:{agent}");
    send(
        &mut ws,
        json!({"type": "subscribe", "channel": logs, "request_id": "s1"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "subscribed", "channel": logs, "request_id": "s1"})
    );
    send(
        &mut ws,
        json!({"type": "user_message", "agent_id": agent, "message": "what time is it?",
        "stream_tokens": true, "request_id": "r1"}),
    )
    .await;
    let frames = until(&mut ws, |v| v["message_type"] == "done").await;
    let started = frames
        .iter()
        .find(|v| v["type"] == "run_started")
        .expect("run_started");
    assert_eq!(started["request_id"], "r1");
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let first_event = frames
        .iter()
        .position(|v| v["type"] == "agent_response" && v["message_type"] != "log");
    let started_at = frames.iter().position(|v| v["type"] == "run_started");
    assert!(
        started_at < first_event,
        "run_started comes before the run's events"
    );
    let types: Vec<&str> = frames
        .iter()
        .filter_map(|v| v["message_type"].as_str())
        .collect();
    for t in [
        "user_message",
        "internal_monologue",
        "function_message",
        "assistant_delta",
        "assistant_message",
        "usage",
        "log",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }

    // One run replayed on its own channel, ending after its done.
    let run = format!("run:{run_id}");
    send(
        &mut ws,
        json!({"type": "subscribe", "channel": run, "after": 0}),
    )
    .await;
    let replay = until(&mut ws, |v| v["message_type"] == "done").await;
    // Late log lines of the run may interleave; the run channel's own frames:
    let own: Vec<&Value> = replay
        .iter()
        .filter(|v| v["message_type"] != "log")
        .collect();
    assert_eq!(
        *own[0],
        json!({"type": "subscribed", "channel": run}),
        "subscribed comes first"
    );
    assert_eq!(
        own[1]["message_type"], "internal_monologue",
        "the replay starts at the run's first answer event"
    );
    assert!(
        own.iter().all(|v| v["message_type"] != "user_message"),
        "run channels do not show the input"
    );
    send(&mut ws, json!({"type": "unsubscribe", "channel": logs})).await;
    until(&mut ws, |v| v["type"] == "unsubscribed").await;

    // A message over the limit closes the socket with 1009.
    ws.send(Message::text("x".repeat((1 << 20) + 1))).await.ok();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::Size, "close 1009");
                break;
            }
            Some(Ok(Message::Text(t))) => {
                assert_valid("ws-server.json", &serde_json::from_str(&t).unwrap())
            }
            Some(Ok(_)) => {}
            other => panic!("expected close 1009, got {other:?}"),
        }
    }
}
