//! `/v1/ws` over a real socket with tokio-tungstenite: bad frames keep the
//! socket open, two channels and unsubscribe, account isolation, runs
//! started over the socket (same seqs as SSE), size limit, drain.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::{
    common::{expect_error, spawn_gateway, Api, TestGateway},
    streams::{run_to_end, setup},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn connect(gw: &TestGateway, key: &str) -> Socket {
    let url = gw.ws_url(key);
    connect_async(url).await.expect("websocket handshake").0
}

async fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// The next frame of any kind.
async fn frame(ws: &mut Socket) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("socket open")
        .expect("readable frame")
}

/// The next JSON text frame (control frames skipped).
async fn recv(ws: &mut Socket) -> Value {
    loop {
        match frame(ws).await {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Frames until the `done` of `run_id`, inclusive.
async fn until_done(ws: &mut Socket, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = recv(ws).await;
        let done = v["message_type"] == "done" && v["run_id"] == run_id;
        out.push(v);
        if done {
            return out;
        }
    }
}

/// The close frame that ends the socket.
async fn close_code(ws: &mut Socket) -> CloseCode {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code,
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close frame: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_socket_still_answers() {
    let gw = spawn_gateway().await;
    let key = gw.mint_key("default", &["*"]).await;
    let mut ws = connect(&gw, &key).await;
    ws.send(Message::text("{\"type\": ")).await.unwrap();
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("validation_error"))
    );
    assert!(e["message"].as_str().unwrap().contains("JSON"), "{e}");
    assert_eq!(e["request_id"], Value::Null);
    send(&mut ws, json!({"type": "shout", "request_id": "r1"})).await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("unknown_type"), Some("r1"))
    );
    send(
        &mut ws,
        json!({"type": "user_message", "message": "no agent", "request_id": 2}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(e["code"], "validation_error");
    assert!(e["message"].as_str().unwrap().contains("agent_id"), "{e}");
    assert_eq!(e["request_id"], 2);
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "validation_error");
    send(&mut ws, json!({"type": "ping", "request_id": "p"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "pong", "request_id": "p"})
    );
    // Protocol-level ping too.
    ws.send(Message::Ping(b"hb".to_vec().into())).await.unwrap();
    assert!(matches!(frame(&mut ws).await, Message::Pong(p) if &p[..] == b"hb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_on_one_socket_then_unsubscribe_one() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let mut ws = connect(&gw, &key).await;
    for ch in [format!("agent:{agent}"), format!("logs:{agent}")] {
        send(
            &mut ws,
            json!({"type": "subscribe", "channel": ch, "request_id": ch}),
        )
        .await;
        assert_eq!(
            recv(&mut ws).await,
            json!({"type": "subscribed", "channel": ch, "request_id": ch})
        );
    }
    let run = run_to_end(&gw, &key, &agent, json!({"message": "hello"})).await;
    let mut kinds = Vec::new();
    // Log lines may trail the run's done: read until both channels spoke.
    while !(kinds.contains(&"done".to_string()) && kinds.contains(&"log".to_string())) {
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "agent_response");
        kinds.push(v["message_type"].as_str().unwrap().to_owned());
    }
    assert!(
        kinds.contains(&"assistant_message".to_string()),
        "{kinds:?}"
    );
    send(
        &mut ws,
        json!({"type": "unsubscribe", "channel": format!("logs:{agent}")}),
    )
    .await;
    // Stray log lines of the first run may still be queued before the reply.
    loop {
        let v = recv(&mut ws).await;
        if v["type"] == "unsubscribed" {
            assert_eq!(v["channel"], format!("logs:{agent}"));
            break;
        }
        assert_eq!(v["message_type"], "log", "{v}");
    }
    let run2 = run_to_end(&gw, &key, &agent, json!({"message": "again"})).await;
    let frames = until_done(&mut ws, &run2).await;
    assert!(
        frames.iter().all(|v| v["message_type"] != "log"),
        "logs channel is off"
    );
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        recv(&mut ws).await["type"],
        "pong",
        "and nothing of logs came in between"
    );
    assert_ne!(run, run2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_agent_is_not_found() {
    let gw = spawn_gateway().await;
    let (_, agent) = setup(&gw, json!({})).await;
    let other = gw.mint_key("other", &["*"]).await;
    let mut ws = connect(&gw, &other).await;
    for (frame, code) in [
        (
            json!({"type": "subscribe", "channel": format!("agent:{agent}"), "request_id": "s"}),
            "agent_not_found",
        ),
        (
            json!({"type": "subscribe", "channel": format!("logs:{agent}"), "request_id": "s"}),
            "agent_not_found",
        ),
        (
            json!({"type": "user_message", "agent_id": agent, "message": "hi", "request_id": "s"}),
            "agent_not_found",
        ),
        (
            json!({"type": "subscribe", "channel": "run:run-missing", "request_id": "s"}),
            "run_not_found",
        ),
    ] {
        send(&mut ws, frame).await;
        let e = recv(&mut ws).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{e}"
        );
        assert_eq!(e["request_id"], "s");
    }
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_needs_a_chat_key() {
    let gw = spawn_gateway().await;
    let url = format!("ws://{}/v1/ws", gw.addr);
    let status = |r: Result<_, tungstenite::Error>| match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("handshake should be refused"),
    };
    assert_eq!(status(connect_async(url.clone()).await), 401);
    let logs_only = gw.mint_key("default", &["logs"]).await;
    assert_eq!(
        status(connect_async(format!("{url}?api_key={logs_only}")).await),
        403
    );
    // A plain GET is not a handshake: an error envelope, not a hang.
    let chat = gw.mint_key("default", &["chat"]).await;
    let r = gw
        .req_as(&chat, Method::GET, "/v1/ws")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "validation_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_socket_has_the_same_seqs_as_sse() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let sse = gw
        .req_as(&key, Method::GET, &format!("/v1/agents/{agent}/events"))
        .send()
        .await
        .unwrap();
    let mut sse = Box::pin(eventsource_stream::Eventsource::eventsource(
        sse.bytes_stream(),
    ));
    let mut ws = connect(&gw, &key).await;
    send(&mut ws, json!({"type": "user_message", "agent_id": agent, "message": "what time is it?", "request_id": "r1"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(
        started["type"], "run_started",
        "run_started comes first: {started}"
    );
    assert_eq!(started["request_id"], "r1");
    let run = started["run_id"].as_str().unwrap().to_owned();
    let over_ws = until_done(&mut ws, &run).await;
    let kinds: Vec<&str> = over_ws
        .iter()
        .map(|v| v["message_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"function_message") && kinds.contains(&"assistant_message"),
        "{kinds:?}"
    );
    let mut over_sse = Vec::new();
    while over_sse.len() < over_ws.len() {
        let ev = tokio::time::timeout(WAIT, sse.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        over_sse.push(serde_json::from_str::<Value>(&ev.data).unwrap());
    }
    for (w, s) in over_ws.iter().zip(&over_sse) {
        let mut w = w.clone();
        w.as_object_mut().unwrap().remove("type");
        assert_eq!(&w, s, "one event, one seq, every transport");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_1009() {
    let gw = spawn_gateway().await;
    let key = gw.mint_key("default", &["chat"]).await;
    let mut ws = connect(&gw, &key).await;
    let big = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let _ = ws.send(Message::text(big)).await;
    assert_eq!(close_code(&mut ws).await, CloseCode::Size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_gateway_closes_sockets_with_1001() {
    let mut gw = spawn_gateway().await;
    let key = gw.mint_key("default", &["chat"]).await;
    let mut ws = connect(&gw, &key).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    let reader = tokio::spawn(async move { close_code(&mut ws).await });
    tokio::time::timeout(WAIT, gw.shutdown())
        .await
        .expect("drains in time");
    assert_eq!(reader.await.unwrap(), CloseCode::Away);
}
