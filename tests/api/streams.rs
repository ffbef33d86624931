//! The SSE routes over a real gateway with real clients: exact framing and
//! headers, resume with `Last-Event-ID` and `?after=` (no gap, no duplicate,
//! also while a run is publishing), run replay, history expiry, and the
//! errors found before the first byte.

use eventsource_stream::Event;
use futures::{Stream, StreamExt};
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::common::{
    expect_error, spawn_gateway,
    sse::{events, next_event, WAIT},
    Api, TestGateway,
};

/// An all-scope key with a generous rate limit, and an agent of its account.
pub async fn setup(gw: &TestGateway, metadata: Value) -> (String, String) {
    let key = gw.mint_key("default", &["*"]).await;
    let id = gw
        .create_agent_as(&key, json!({"name": "streamer", "metadata": metadata}))
        .await;
    (key, id)
}

/// Sends a message and waits for the run to end (JSON mode); returns the run id.
pub async fn run_to_end(gw: &impl Api, key: &str, agent: &str, body: Value) -> String {
    let r = gw
        .req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "send message");
    r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn open(gw: &TestGateway, key: &str, path: &str, last_event_id: Option<u64>) -> Response {
    let mut req = gw.req_as(key, Method::GET, path);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r
}

/// Events up to and including the `done` of `run_id`.
pub async fn until_done(s: &mut (impl Stream<Item = Event> + Unpin), run_id: &str) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = next_event(s).await;
        let data: Value = serde_json::from_str(&e.data).unwrap();
        out.push(e.clone());
        if e.event == "done" && data["run_id"] == run_id {
            return out;
        }
    }
}

pub fn seqs(evs: &[Event]) -> Vec<u64> {
    evs.iter().map(|e| e.id.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_framing_and_headers_are_exact() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let r = open(&gw, &key, &format!("/v1/agents/{agent}/events"), None).await;
    let h = r.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut body = r.bytes_stream();
    let mut raw = Vec::new();
    // The first bytes arrive before any event exists.
    while raw.len() < 8 {
        raw.extend_from_slice(
            &tokio::time::timeout(WAIT, body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        raw.starts_with(b": ping\n\n"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    let run = run_to_end(&gw, &key, &agent, json!({"message": "hi"})).await;
    let done_marker = b"event: done\n";
    while !raw.windows(done_marker.len()).any(|w| w == done_marker) || !raw.ends_with(b"\n\n") {
        raw.extend_from_slice(
            &tokio::time::timeout(WAIT, body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    let text = String::from_utf8(raw).unwrap();
    let mut last_seq = 0;
    for frame in text
        .split("\n\n")
        .filter(|f| !f.is_empty() && *f != ": ping")
    {
        let lines: Vec<&str> = frame.split('\n').collect();
        assert_eq!(lines.len(), 3, "exactly id/event/data: {frame:?}");
        let id: u64 = lines[0].strip_prefix("id: ").unwrap().parse().unwrap();
        let event = lines[1].strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["seq"], id);
        assert_eq!(data["message_type"], event);
        assert_eq!(data["run_id"], run.as_str());
        assert!(id > last_seq, "seq strictly increasing");
        last_seq = id;
    }
    assert!(
        text.contains("event: user_message\n"),
        "/events shows the agent's input too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_or_after_has_no_gap_and_no_duplicate() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut first = events(open(&gw, &key, &path, None).await);
    let run1 = run_to_end(&gw, &key, &agent, json!({"message": "one"})).await;
    let run2 = run_to_end(&gw, &key, &agent, json!({"message": "what time is it?"})).await;
    let mut all = until_done(&mut first, &run1).await;
    all.extend(until_done(&mut first, &run2).await);
    let all_seqs = seqs(&all);
    assert!(
        all_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one agent, contiguous: {all_seqs:?}"
    );

    let cut = all_seqs[2];
    let header = events(open(&gw, &key, &path, Some(cut)).await);
    let query = events(open(&gw, &key, &format!("{path}?after={cut}"), None).await);
    // Both given: the header (the newer cursor) wins over the query.
    let both = gw
        .req_as(&key, Method::GET, &format!("{path}?after=0"))
        .header("last-event-id", cut.to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = [header, query, events(both)];
    for r in resumed.iter_mut() {
        let got = until_done(r, &run2).await;
        assert_eq!(seqs(&got), all_seqs[3..].to_vec());
        let datas: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
        let want: Vec<&str> = all[3..].iter().map(|e| e.data.as_str()).collect();
        assert_eq!(datas, want, "replayed bytes are the live bytes");
    }
    // …and each goes on live from the next seq.
    let run3 = run_to_end(&gw, &key, &agent, json!({"message": "three"})).await;
    let live = until_done(&mut first, &run3).await;
    assert_eq!(seqs(&live)[0], all_seqs.last().unwrap() + 1);
    for r in resumed.iter_mut() {
        assert_eq!(seqs(&until_done(r, &run3).await), seqs(&live));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_a_run_is_publishing_has_no_gap_and_no_duplicate() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({"echo_delay_ms": 15})).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut watcher = events(open(&gw, &key, &path, None).await);
    let (gw_base, key2, agent2) = (gw.base.clone(), key.clone(), agent.clone());
    let sender = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{gw_base}/v1/agents/{agent2}/messages"))
            .bearer_auth(key2)
            .json(&json!({"message": "tell me a fairly long story about rivers", "stream_tokens": true}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    // Take a few events live, then resume a second client mid-run from there.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut watcher).await);
    }
    let run: String = serde_json::from_str::<Value>(&seen[0].data).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .into();
    let cursor = seqs(&seen)[3];
    let mut resumed = events(open(&gw, &key, &path, Some(cursor)).await);
    let rest = until_done(&mut watcher, &run).await;
    let got = until_done(&mut resumed, &run).await;
    assert!(
        rest.len() > 3,
        "the run was still publishing: {}",
        rest.len()
    );
    assert_eq!(seqs(&got), seqs(&rest), "no gap, no duplicate");
    let rest_seqs = seqs(&rest);
    assert!(rest_seqs.windows(2).all(|w| w[1] == w[0] + 1) && rest_seqs[0] == cursor + 1);
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stream_replays_a_finished_run_and_tails_a_live_one() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({"echo_delay_ms": 10})).await;
    let mut agent_events =
        events(open(&gw, &key, &format!("/v1/agents/{agent}/events"), None).await);
    let run = run_to_end(&gw, &key, &agent, json!({"message": "what time is it?"})).await;
    let live: Vec<Event> = until_done(&mut agent_events, &run)
        .await
        .into_iter()
        .filter(|e| e.event != "user_message")
        .collect();
    // Finished: the stored events, same ids and bytes, then the response ends.
    let r = open(&gw, &key, &format!("/v1/runs/{run}/stream"), None).await;
    let replay: Vec<Event> = events(r).collect().await;
    assert_eq!(seqs(&replay), seqs(&live));
    assert_eq!(replay.last().unwrap().event, "done");
    assert_eq!(replay.iter().filter(|e| e.event == "done").count(), 1);
    for (a, b) in replay.iter().zip(&live) {
        assert_eq!(a.data, b.data);
    }
    let cut = seqs(&live)[1];
    let r = open(
        &gw,
        &key,
        &format!("/v1/runs/{run}/stream?after={cut}"),
        None,
    )
    .await;
    let tail: Vec<Event> = events(r).collect().await;
    assert_eq!(seqs(&tail), seqs(&live)[2..].to_vec());

    // Live: start a run in the background, follow it by id while it runs.
    let r = gw
        .req_as(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({"message": "a slower one please", "stream": true, "stream_tokens": true, "background": true}))
        .send()
        .await
        .unwrap();
    let mut own = events(r);
    let first: Value = serde_json::from_str(&next_event(&mut own).await.data).unwrap();
    let run2 = first["run_id"].as_str().unwrap().to_owned();
    let r = open(&gw, &key, &format!("/v1/runs/{run2}/stream"), None).await;
    let followed: Vec<Event> = tokio::time::timeout(WAIT, events(r).collect())
        .await
        .expect("ends after done");
    let all_agent = until_done(&mut agent_events, &run2).await;
    let want: Vec<u64> = seqs(
        &all_agent
            .into_iter()
            .filter(|e| e.event != "user_message")
            .collect::<Vec<_>>(),
    );
    assert_eq!(seqs(&followed), want);
    assert_eq!(followed.last().unwrap().event, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_the_first_byte_are_json_envelopes() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let get = |path: String| gw.req_as(&key, Method::GET, &path).send();
    let e = expect_error(
        get(format!("/v1/agents/{agent}/events?after=abc"))
            .await
            .unwrap(),
        400,
        "validation_error",
    )
    .await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("after:"),
        "{e}"
    );
    let r = gw
        .req_as(&key, Method::GET, &format!("/v1/agents/{agent}/events"))
        .header("last-event-id", "-4")
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 400, "validation_error").await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID"),
        "{e}"
    );
    expect_error(
        get("/v1/agents/agent-nope/events".into()).await.unwrap(),
        404,
        "agent_not_found",
    )
    .await;
    expect_error(
        get("/v1/agents/agent-nope/logs/stream".into())
            .await
            .unwrap(),
        404,
        "agent_not_found",
    )
    .await;
    expect_error(
        get("/v1/runs/run-nope/stream".into()).await.unwrap(),
        404,
        "run_not_found",
    )
    .await;
    // Another account's agent and run are "not found", never "forbidden".
    let run = run_to_end(&gw, &key, &agent, json!({"message": "mine"})).await;
    let other = gw.mint_key("other", &["*"]).await;
    let as_other = |path: String| gw.req_as(&other, Method::GET, &path).send();
    expect_error(
        as_other(format!("/v1/agents/{agent}/events"))
            .await
            .unwrap(),
        404,
        "agent_not_found",
    )
    .await;
    expect_error(
        as_other(format!("/v1/runs/{run}/stream")).await.unwrap(),
        404,
        "run_not_found",
    )
    .await;
    // Scopes: logs need `logs`, events need `chat`.
    let chat_only = gw.mint_key("default", &["chat"]).await;
    let r = gw
        .req_as(
            &chat_only,
            Method::GET,
            &format!("/v1/agents/{agent}/logs/stream"),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    let logs_only = gw.mint_key("default", &["logs"]).await;
    let r = gw
        .req_as(
            &logs_only,
            Method::GET,
            &format!("/v1/agents/{agent}/events"),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_history_gets_one_error_frame() {
    let gw = TestGateway::builder()
        .config(|cfg| cfg.history_len = 3)
        .spawn()
        .await;
    let (key, agent) = setup(&gw, json!({})).await;
    run_to_end(
        &gw,
        &key,
        &agent,
        json!({"message": "more than three events"}),
    )
    .await;
    let r = open(
        &gw,
        &key,
        &format!("/v1/agents/{agent}/events?after=1"),
        None,
    )
    .await;
    let body = tokio::time::timeout(WAIT, r.text())
        .await
        .expect("the response ends")
        .unwrap();
    let (ping, rest) = body.split_once("\n\n").unwrap();
    assert_eq!(ping, ": ping");
    let frame = rest.strip_suffix("\n\n").unwrap();
    let data = frame
        .strip_prefix("event: error\ndata: ")
        .expect("no id line, just event and data");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["code"], "history_expired");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(!body.contains("\nid:") && !body.starts_with("id:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stream_tails_the_runs_log_lines() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let mut logs = events(open(&gw, &key, &format!("/v1/agents/{agent}/logs/stream"), None).await);
    run_to_end(&gw, &key, &agent, json!({"message": "hello"})).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(next_event(&mut logs).await);
    }
    for e in &got {
        assert_eq!(e.event, "log");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["seq"].to_string(), e.id);
        assert!(v["level"].is_string() && v["message"].is_string(), "{v}");
    }
    let s = seqs(&got);
    assert!(s[1] > s[0]);
    // Resume the log stream from the first line: the second one comes again, once.
    let mut again = events(
        open(
            &gw,
            &key,
            &format!("/v1/agents/{agent}/logs/stream"),
            Some(s[0]),
        )
        .await,
    );
    assert_eq!(next_event(&mut again).await.id, s[1].to_string());
}
