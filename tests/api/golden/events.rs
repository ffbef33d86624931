//! One echo run ("what time is it?": a monologue, a `get_time` call, token
//! deltas, the reply, usage, done) seen on every transport at once: the
//! POST's own stream, the agent's event and log tails, a WebSocket on both
//! channels; then replayed from the store (whole, after `Last-Event-ID`,
//! after `?after=`), a run followed live from its middle, and the agent's
//! history as JSON (`history.txt`).
//!
//! Beyond the bytes it asserts that every transport carries the same event:
//! the POST stream equals the `/events` tail without `user_message`, the
//! replays equal the live frames byte for byte, each WebSocket frame is the
//! event's JSON with `type` spliced in, and the history pages hold each
//! event's exact JSON.

use serde_json::json;

use super::{
    as_ws_frame, check, field, main_key, settled,
    socket::Socket,
    transcript::{data, frames, Key, Open, Req},
    Transcript,
};
use crate::common::{spawn_gateway, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_echo_run_on_every_transport() {
    let gw = spawn_gateway().await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("an echo run on every SSE route and over WebSocket");
    t.section("an echo agent");
    let agent = t
        .http(
            &gw,
            Req::post("/v1/agents", &json!({"name": "golden-echo"})).key(&key),
        )
        .await
        .str("id");
    let (run, posted) = live_run(&mut t, &gw, &key, &agent).await;
    replays(&mut t, &gw, &key, &agent, &run, &posted).await;
    followed_live(&mut t, &gw, &key).await;
    t.section("Accept: text/event-stream instead of `stream` (no token deltas)");
    t.http(
        &gw,
        Req::post(
            format!("/v1/agents/{agent}/messages"),
            &json!({"message": "hello there"}),
        )
        .header("accept", "text/event-stream")
        .key(&key),
    )
    .await;
    settled(&gw, &key, &agent, 2).await;
    check("sse_echo_run.txt", t);
    history(&gw, &key, &agent, &run).await;
}

/// The run with every live transport open; returns its id and its frames.
async fn live_run(
    t: &mut Transcript,
    gw: &TestGateway,
    key: &Key,
    agent: &str,
) -> (String, Vec<String>) {
    let mut events = Open::new(gw, Req::get(format!("/v1/agents/{agent}/events")).key(key)).await;
    let mut logs = Open::new(
        gw,
        Req::get(format!("/v1/agents/{agent}/logs/stream")).key(key),
    )
    .await;
    let mut ws = subscribed_socket(t, gw, key, agent).await;
    t.section("the run: POST /v1/agents/{id}/messages with stream and stream_tokens");
    let body = json!({"message": "what time is it?", "stream": true, "stream_tokens": true});
    let posted = t
        .http(
            gw,
            Req::post(format!("/v1/agents/{agent}/messages"), &body).key(key),
        )
        .await;
    let posted = frames(&posted.body);
    let run = field(&posted[0], "run_id")
        .as_str()
        .expect("run id")
        .to_owned();
    events.until(|s| s.contains("event: done\n")).await;
    logs.until(|s| s.contains("run ended")).await;
    t.section("GET /v1/agents/{id}/events, opened before the run, read to its done");
    t.stream(&events);
    t.section("GET /v1/agents/{id}/logs/stream, opened before the run, read to its last line");
    t.stream(&logs);
    let tail = events.frames();
    let without_input: Vec<&String> = tail
        .iter()
        .filter(|f| !f.contains("event: user_message\n"))
        .collect();
    assert_eq!(
        without_input,
        posted.iter().collect::<Vec<_>>(),
        "the POST stream is the tail without the user's message, byte for byte"
    );
    same_over_websocket(t, &mut ws, &run, &tail, &logs.frames()).await;
    settled(gw, key, agent, 1).await;
    (run, posted)
}

/// A socket subscribed to the agent's events (`request_id` a string) and
/// logs (a number).
async fn subscribed_socket(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) -> Socket {
    t.section("a WebSocket subscribed to the agent's events and logs before the run");
    let mut ws = Socket::connect(gw, key).await;
    for (ch, rid) in [("agent", "\"a\""), ("logs", "2")] {
        let frame =
            format!(r#"{{"type":"subscribe","channel":"{ch}:{agent}","request_id":{rid}}}"#);
        ws.send(t, &frame).await;
        ws.recv(t).await;
    }
    ws
}

/// Records the run's WebSocket frames and checks each is the event (or log
/// line) its SSE tail carried, with `type` spliced in.
async fn same_over_websocket(
    t: &mut Transcript,
    ws: &mut Socket,
    run: &str,
    tail: &[String],
    logs: &[String],
) {
    t.section("the same run as WebSocket frames (each channel in its own order)");
    let (on_agent, on_logs) = ws_frames(ws, run).await;
    for f in on_agent.iter().chain(&on_logs) {
        t.line(&format!("ws< {f}"));
    }
    let want: Vec<String> = tail.iter().map(|f| as_ws_frame(data(f))).collect();
    assert_eq!(on_agent, want, "each WebSocket frame is the SSE event");
    let want: Vec<String> = logs.iter().map(|f| as_ws_frame(data(f))).collect();
    assert_eq!(
        on_logs, want,
        "each WebSocket log frame is the SSE log line"
    );
}

/// A socket's frames up to the run's `done` and its "run ended" log line,
/// split by channel: the two channels interleave by timing, each is in order.
async fn ws_frames(ws: &mut Socket, run: &str) -> (Vec<String>, Vec<String>) {
    let (mut agent, mut logs) = (Vec::new(), Vec::new());
    let mut ended = (false, false);
    while ended != (true, true) {
        let f = ws.text().await;
        if f.contains(r#""message_type":"log""#) {
            ended.1 |= f.contains("run ended");
            logs.push(f);
        } else {
            ended.0 |= f.contains(r#""message_type":"done""#) && f.contains(run);
            agent.push(f);
        }
    }
    (agent, logs)
}

/// The finished run from the store, and the tails from their histories.
async fn replays(
    t: &mut Transcript,
    gw: &TestGateway,
    key: &Key,
    agent: &str,
    run: &str,
    posted: &[String],
) {
    t.section("replay: GET /v1/runs/{id}/stream after the run");
    let path = format!("/v1/runs/{run}/stream");
    let whole = frames(&t.http(gw, Req::get(&path).key(key)).await.body);
    assert_eq!(
        whole, posted,
        "the replay from the store is the live stream, byte for byte"
    );
    let seq3 = field(&whole[2], "seq").as_u64().expect("seq");
    t.section("replay with Last-Event-ID (the third event's seq)");
    let req = Req::get(&path).header("last-event-id", &seq3.to_string());
    let resumed = frames(&t.http(gw, req.key(key)).await.body);
    assert_eq!(
        resumed,
        whole[3..],
        "resumed after the third event, nothing lost"
    );
    t.section("replay with ?after= (the same cursor)");
    let req = Req::get(format!("{path}?after={seq3}"));
    assert_eq!(frames(&t.http(gw, req.key(key)).await.body), resumed);
    t.section("GET /v1/agents/{id}/events?after=0: the history, then live");
    let mut events = Open::new(
        gw,
        Req::get(format!("/v1/agents/{agent}/events?after=0")).key(key),
    )
    .await;
    events.until(|s| s.contains("event: done\n")).await;
    t.stream(&events);
    let replayed: Vec<String> = events
        .frames()
        .into_iter()
        .filter(|f| !f.contains("event: user_message\n"))
        .collect();
    assert_eq!(replayed, whole, "the tail's history is the run's replay");
    t.section("GET /v1/agents/{id}/logs/stream?after=0");
    let mut logs = Open::new(
        gw,
        Req::get(format!("/v1/agents/{agent}/logs/stream?after=0")).key(key),
    )
    .await;
    logs.until(|s| s.contains("run ended")).await;
    t.stream(&logs);
}

/// A slow run whose `/v1/runs/{id}/stream` is opened while it runs: the
/// stored part and the live part join without a seam.
async fn followed_live(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("a run followed live: GET /v1/runs/{id}/stream opened during the run");
    let body = json!({"name": "golden-slow", "metadata": {"echo_delay_ms": 100}});
    let slow = t
        .http(gw, Req::post("/v1/agents", &body).key(key))
        .await
        .str("id");
    let body = json!({"message": "hello there", "stream": true, "stream_tokens": true});
    let mut posted = Open::new(
        gw,
        Req::post(format!("/v1/agents/{slow}/messages"), &body).key(key),
    )
    .await;
    posted
        .until(|s| s.contains("event: internal_monologue\n"))
        .await;
    let run = field(&posted.frames()[0], "run_id");
    let run = run.as_str().expect("run id");
    let mut followed = Open::new(gw, Req::get(format!("/v1/runs/{run}/stream")).key(key)).await;
    followed.read_to_end().await;
    posted.read_to_end().await;
    t.stream(&posted);
    t.stream(&followed);
    assert_eq!(
        followed.frames(),
        posted.frames(),
        "joined live, no gap, no duplicate"
    );
    settled(gw, key, &slow, 1).await;
}

/// `history.txt`: JSON-mode runs, sessions, and the history and log pages.
async fn history(gw: &TestGateway, key: &Key, agent: &str, run: &str) {
    let mut t = Transcript::new("history as JSON: messages, logs, sessions, runs");
    let messages = format!("/v1/agents/{agent}/messages");
    t.section("the agent's history after two runs (default session)");
    let page = t.http(gw, Req::get(&messages).key(key)).await;
    let mut tail = Open::new(
        gw,
        Req::get(format!("/v1/agents/{agent}/events?after=0")).key(key),
    )
    .await;
    tail.until(|s| s.matches("event: done\n").count() == 2)
        .await;
    for f in tail.frames() {
        assert!(
            page.text().contains(data(&f)),
            "history holds the event's exact JSON: {f}"
        );
    }
    t.section("pages of it");
    let second = t
        .http(gw, Req::get(format!("{messages}?limit=3")).key(key))
        .await;
    let cursor = second.json()["pagination"]["next_cursor"].clone();
    let cursor = cursor.as_str().expect("a next page");
    t.http(
        gw,
        Req::get(format!("{messages}?limit=3&after={cursor}")).key(key),
    )
    .await;
    t.http(
        gw,
        Req::get(format!("{messages}?limit=2&offset=4")).key(key),
    )
    .await;
    history_runs(&mut t, gw, key, agent, run).await;
    check("history.txt", t);
}

/// The log pages, the first run's record, then runs that add to the history:
/// one in JSON mode, one with `messages` in a session of its own.
async fn history_runs(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str, run: &str) {
    let messages = format!("/v1/agents/{agent}/messages");
    t.section("the agent's log lines");
    let logs = format!("/v1/agents/{agent}/logs");
    let page = t.http(gw, Req::get(&logs).key(key)).await;
    let mut tail = Open::new(gw, Req::get(format!("{logs}/stream?after=0")).key(key)).await;
    tail.until(|s| s.matches("run ended").count() == 2).await;
    for f in tail.frames() {
        assert!(
            page.text().contains(data(&f)),
            "the log page holds the line's exact JSON: {f}"
        );
    }
    t.http(gw, Req::get(format!("{logs}?limit=2")).key(key))
        .await;
    t.section("the first run's status");
    t.http(gw, Req::get(format!("/v1/runs/{run}")).key(key))
        .await;
    t.section("a JSON-mode run (no `stream`): the run's events in one body");
    let body = json!({"message": "hello there"});
    t.http(gw, Req::post(&messages, &body).key(key)).await;
    settled(gw, key, agent, 3).await;
    t.section("`messages` instead of `message`, in a session of its own");
    let sessions = format!("/v1/agents/{agent}/sessions");
    let session = t
        .http(gw, Req::post(&sessions, &json!({"name": "side"})).key(key))
        .await
        .str("id");
    let body = json!({"messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}], "session_id": session});
    t.http(gw, Req::post(&messages, &body).key(key)).await;
    settled(gw, key, agent, 4).await;
    t.http(
        gw,
        Req::get(format!("{messages}?session_id={session}")).key(key),
    )
    .await;
    t.section("the default session from ?offset=20: the other session's run is not in it");
    let tail = Req::get(format!("{messages}?offset=20"));
    t.http(gw, tail.key(key)).await;
}
