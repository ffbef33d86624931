//! Agent runs over the real gateway: `POST /v1/agents/{id}/messages` as SSE
//! and JSON, tools (built-in and webhook), upstream models against a real
//! local fake provider, cancellation, history, logs and restarts.

use std::{pin::Pin, time::Duration};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use weir::config::ServeConfig;

mod approval;
mod approval_fields;
mod approval_models;
mod approval_relay;
mod history;
mod reads;
mod upstream;

use crate::{
    common::{expect_error, poll, spawn_gateway, Api, TestGateway},
    fake_provider::FakeProvider,
    protocol::assert_valid,
};

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: String,
    pub event: String,
    pub data: Value,
}

type EvStream = Pin<Box<dyn Stream<Item = Ev> + Send>>;

/// Reads an SSE response with eventsource-stream (`: ping` comments skipped).
pub fn sse(resp: Response) -> EvStream {
    Box::pin(resp.bytes_stream().eventsource().map(|e| {
        let e = e.expect("well-formed SSE");
        let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone()));
        Ev {
            id: e.id,
            event: e.event,
            data,
        }
    }))
}

/// The next event, failing the test after 10 s.
pub async fn next(s: &mut EvStream) -> Option<Ev> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an SSE event within 10 s")
}

/// Every event until the stream ends.
pub async fn all(resp: Response) -> Vec<Ev> {
    let mut s = sse(resp);
    let mut out = Vec::new();
    while let Some(ev) = next(&mut s).await {
        out.push(ev);
    }
    out
}

pub fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter()
        .map(|e| e["message_type"].as_str().unwrap_or("?"))
        .collect()
}

pub fn of_type<'a>(evs: &'a [Value], t: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["message_type"] == t).collect()
}

/// Creates an agent with extra fields (`model`, `metadata`, `tools`, …).
pub async fn agent_with(gw: &TestGateway, body: Value) -> String {
    gw.create_agent_as(&gw.key, body).await
}

/// Sends a message and returns the response (SSE or JSON by `body`).
pub async fn send(gw: &TestGateway, agent: &str, body: Value) -> Response {
    gw.post(&format!("/v1/agents/{agent}/messages"), body).await
}

/// A streamed run's event payloads, checked frame by frame: SSE `id` is the
/// seq, `event` the message_type, seq strictly increasing, common fields
/// present, every event schema-valid, exactly one `done`, last.
pub async fn run_sse(gw: &TestGateway, agent: &str, body: Value) -> Vec<Value> {
    let resp = send(gw, agent, body).await;
    assert_eq!(resp.status(), 200);
    let evs = all(resp).await;
    check_run(&evs, agent)
}

pub fn check_run(evs: &[Ev], agent: &str) -> Vec<Value> {
    assert!(!evs.is_empty(), "no events");
    let run_id = evs[0].data["run_id"].as_str().expect("run_id").to_owned();
    let mut last = 0;
    for e in evs {
        let d = &e.data;
        assert_valid("event.json", d);
        let seq = d["seq"].as_u64().expect("seq");
        assert!(seq > last, "seq strictly increasing: {seq} after {last}");
        last = seq;
        assert_eq!(e.id, seq.to_string(), "SSE id is the seq");
        assert_eq!(
            e.event,
            d["message_type"].as_str().unwrap(),
            "SSE event is the message_type"
        );
        assert!(d["id"].as_str().unwrap().starts_with("msg-"));
        assert_eq!(d["run_id"], run_id.as_str());
        assert_eq!(d["agent_id"], agent);
        assert!(d["session_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(d["date"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert_ne!(
            d["message_type"], "user_message",
            "the user's message is not echoed"
        );
    }
    let data: Vec<Value> = evs.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        of_type(&data, "done").len(),
        1,
        "exactly one done: {:?}",
        types(&data)
    );
    assert_eq!(data.last().unwrap()["message_type"], "done");
    data
}

pub async fn get_json(gw: &TestGateway, path: &str) -> Value {
    let r = gw.get(path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// Polls the run until it leaves `running` (5 s at most).
pub async fn wait_run(gw: &TestGateway, run_id: &str) -> Value {
    let done = poll(Duration::from_secs(5), || async {
        let run = get_json(gw, &format!("/v1/runs/{run_id}")).await;
        (run["status"] != "running").then_some(run)
    })
    .await;
    done.unwrap_or_else(|| panic!("run {run_id} still running after 5 s"))
}

/// A gateway on `fp`; webhook tools may reach private addresses (the
/// tests' webhook servers are on 127.0.0.1).
pub async fn with_provider(fp: &FakeProvider) -> TestGateway {
    with_provider_private(fp, true).await
}

/// [`with_provider`], with `--webhook-allow-private` as given.
pub async fn with_provider_private(fp: &FakeProvider, allow_private: bool) -> TestGateway {
    let url = fp.url.clone();
    TestGateway::builder()
        .config(move |c: &mut ServeConfig| {
            c.provider_url = Some(url);
            c.provider_key = Some("sk-fake".into());
            c.first_token_timeout_secs = 2;
            c.idle_timeout_secs = 1;
            c.webhook_allow_private = allow_private;
        })
        .spawn()
        .await
}

#[tokio::test]
async fn echo_run_over_sse_is_ordered_and_complete() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let resp = send(
        &gw,
        &agent,
        json!({"message": "hello there", "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let evs = check_run(&all(resp).await, &agent);
    assert_eq!(
        types(&evs),
        ["internal_monologue", "assistant_message", "usage", "done"]
    );
    assert_eq!(evs[1]["message"], "You said: \"hello there\"");
    assert_eq!(evs[3]["stop_reason"], "end_turn");
    let u = &evs[2];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert!(u["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn json_mode_answers_after_the_run_and_accept_header_selects_sse() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let r = send(
        &gw,
        &agent,
        json!({"messages": [{"role": "user", "content": "one"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = r.json().await.unwrap();
    let run_id = body["run_id"].as_str().unwrap();
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(
        types(msgs),
        ["internal_monologue", "assistant_message", "usage", "done"]
    );
    assert!(msgs.iter().all(|m| m["run_id"] == run_id));
    let run = get_json(&gw, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["stop_reason"], "end_turn");
    assert_eq!(run["agent_id"], agent.as_str());
    assert_eq!(run["session_id"], msgs[0]["session_id"]);

    let r = gw
        .req(Method::POST, &format!("/v1/agents/{agent}/messages"))
        .header("accept", "text/event-stream")
        .json(&json!({"message": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let evs = check_run(&all(r).await, &agent);
    assert_eq!(evs[1]["message"], "You said: \"two\"");
    assert_eq!(
        evs[0]["session_id"], msgs[0]["session_id"],
        "the default session is reused"
    );
}

#[tokio::test]
async fn asking_for_the_time_calls_get_time() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let evs = run_sse(
        &gw,
        &agent,
        json!({"message": "What time is it?", "stream": true}),
    )
    .await;
    assert_eq!(
        types(&evs),
        [
            "internal_monologue",
            "function_message",
            "assistant_message",
            "usage",
            "done"
        ]
    );
    let f = &evs[1]["message"];
    assert_eq!(f["function"], "get_time");
    assert_eq!(f["status"], "success");
    assert_eq!(f["args"], json!({}));
    let time = f["result"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    assert_eq!(
        evs[2]["message"],
        format!("You said: \"What time is it?\". The current time is {time}.")
    );
}

#[tokio::test]
async fn stream_tokens_deltas_concatenate_to_the_reply() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let body = json!({"message": "split me into  pieces", "stream": true, "stream_tokens": true});
    let evs = run_sse(&gw, &agent, body).await;
    let deltas = of_type(&evs, "assistant_delta");
    assert!(deltas.len() >= 4, "{:?}", types(&evs));
    let joined: String = deltas
        .iter()
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    let reply = of_type(&evs, "assistant_message")[0]["message"]
        .as_str()
        .unwrap();
    assert_eq!(joined, reply);
    // Deltas come before the whole message, after the monologue.
    let t = types(&evs);
    assert_eq!(t[0], "internal_monologue");
    assert_eq!(&t[t.len() - 3..], ["assistant_message", "usage", "done"]);
    // Without stream_tokens there are none.
    let evs = run_sse(&gw, &agent, json!({"message": "no deltas", "stream": true})).await;
    assert!(of_type(&evs, "assistant_delta").is_empty());
}

#[tokio::test]
async fn max_steps_stops_a_run_that_keeps_calling_tools() {
    let gw = spawn_gateway().await;
    let agent = agent_with(&gw, json!({"metadata": {"max_steps": 1}})).await;
    let evs = run_sse(
        &gw,
        &agent,
        json!({"message": "the time please", "stream": true}),
    )
    .await;
    assert_eq!(
        types(&evs),
        ["internal_monologue", "function_message", "usage", "done"]
    );
    assert_eq!(evs[3]["stop_reason"], "max_steps");
    let run = get_json(
        &gw,
        &format!("/v1/runs/{}", evs[0]["run_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["stop_reason"], "max_steps");
}

const LONG: &str =
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";

#[tokio::test]
async fn cancel_mid_run_ends_with_done_cancelled() {
    let gw = spawn_gateway().await;
    let agent = agent_with(&gw, json!({"metadata": {"echo_delay_ms": 100}})).await;
    let resp = send(
        &gw,
        &agent,
        json!({"message": LONG, "stream": true, "stream_tokens": true}),
    )
    .await;
    let mut s = sse(resp);
    let mut seen = Vec::new();
    let run_id = loop {
        let ev = next(&mut s).await.expect("an event");
        seen.push(ev.clone());
        if ev.event == "assistant_delta" {
            break ev.data["run_id"].as_str().unwrap().to_owned();
        }
    };
    let r = gw
        .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["stop_reason"], "cancelled");
    while let Some(ev) = next(&mut s).await {
        seen.push(ev);
    }
    let evs = check_run(&seen, &agent);
    assert_eq!(evs.last().unwrap()["stop_reason"], "cancelled");
    assert!(
        of_type(&evs, "assistant_message").is_empty(),
        "cancelled before the reply"
    );
    // Cancelling again is harmless; an unknown run is 404.
    let again: Value = gw
        .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "cancelled");
    expect_error(
        gw.post("/v1/runs/run-nope/cancel", json!({})).await,
        404,
        "run_not_found",
    )
    .await;
    expect_error(gw.get("/v1/runs/run-nope").await, 404, "run_not_found").await;
}

#[tokio::test]
async fn client_disconnect_cancels_unless_background() {
    let gw = spawn_gateway().await;
    let agent = agent_with(&gw, json!({"metadata": {"echo_delay_ms": 50}})).await;
    for background in [false, true] {
        let body = json!({"message": LONG, "stream": true, "background": background});
        let mut s = sse(send(&gw, &agent, body).await);
        let first = next(&mut s).await.expect("first event");
        let run_id = first.data["run_id"].as_str().unwrap().to_owned();
        drop(s);
        let run = wait_run(&gw, &run_id).await;
        if background {
            assert_eq!(
                run["status"], "completed",
                "a background run outlives its client"
            );
        } else {
            assert_eq!(
                run["status"], "cancelled",
                "a client that leaves cancels its run"
            );
        }
    }
    // The same for a JSON-mode request whose client gives up.
    let req = gw
        .req(Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({"message": LONG}));
    let gone = tokio::time::timeout(Duration::from_millis(300), req.send()).await;
    assert!(gone.is_err(), "the JSON answer needs the whole run");
    let history = get_json(&gw, &format!("/v1/agents/{agent}/messages?limit=1000")).await;
    let last_run = history["data"].as_array().unwrap().last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_run(&gw, &last_run).await["status"], "cancelled");
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let path = format!("/v1/agents/{agent}/messages");
    for (body, what) in [
        (json!({}), "message"),
        (json!({"message": ""}), "message"),
        (
            json!({"message": "a", "messages": [{"role": "user", "content": "b"}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "b"}]}),
            "role",
        ),
        (json!({"messages": [{"content": "b"}]}), "role"),
        (json!({"message": "a", "stream": "yes"}), "stream"),
    ] {
        let e = expect_error(gw.post(&path, body.clone()).await, 400, "validation_error").await;
        assert!(
            e["error"]["message"].as_str().unwrap().contains(what),
            "{body} -> {e}"
        );
    }
    expect_error(
        gw.post(&path, json!({"message": "a", "session_id": "ses-nope"}))
            .await,
        404,
        "session_not_found",
    )
    .await;
    expect_error(
        gw.post("/v1/agents/agent-nope/messages", json!({"message": "a"}))
            .await,
        404,
        "agent_not_found",
    )
    .await;
    // Another account's agent does not exist for this key.
    let other = gw.mint_key("other", &["*"]).await;
    let r = gw
        .req_as(&other, Method::POST, &path)
        .json(&json!({"message": "a"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "agent_not_found").await;
    let r = gw.req_as(&other, Method::GET, &path).send().await.unwrap();
    expect_error(r, 404, "agent_not_found").await;
    // A stopped agent refuses, a started one answers again.
    assert_eq!(
        gw.post(&format!("/v1/agents/{agent}/stop"), json!({}))
            .await
            .status(),
        200
    );
    expect_error(
        gw.post(&path, json!({"message": "a"})).await,
        409,
        "agent_stopped",
    )
    .await;
    assert_eq!(
        gw.post(&format!("/v1/agents/{agent}/start"), json!({}))
            .await
            .status(),
        200
    );
    assert_eq!(gw.post(&path, json!({"message": "a"})).await.status(), 200);
    // Scopes: chat for messages, logs for logs.
    let reader = gw.mint_key("default", &["agents:read"]).await;
    let r = gw
        .req_as(&reader, Method::POST, &path)
        .json(&json!({"message": "a"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    let chat = gw.mint_key("default", &["chat"]).await;
    let r = gw
        .req_as(&chat, Method::GET, &format!("/v1/agents/{agent}/logs"))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
}
