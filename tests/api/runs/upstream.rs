//! Runs on `upstream/<model>` against a real local fake provider, and
//! webhook tools against a real local HTTP server.

use std::time::Duration;

use serde_json::{json, Value};

use super::{
    agent_with, get_json, next, run_sse, send, sse, types, wait_run, with_provider,
    with_provider_private, Ev, EvStream,
};
use crate::{
    common::{eventually, expect_error, spawn_gateway, Api, TestGateway},
    fake_provider::{FakeProvider, Webhook},
};

#[tokio::test]
async fn webhook_tools_succeed_and_fail_without_failing_the_run() {
    let fp = FakeProvider::start().await;
    let hook = Webhook::start().await;
    let gw = with_provider(&fp).await;
    for (path, ok) in [("/ok", true), ("/fail", false)] {
        let name = format!("weather{}", path.replace('/', "_"));
        let tool = json!({"name": name, "description": "weather", "kind": "webhook", "url": format!("{}{path}", hook.base),
            "json_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
        let r = gw.post("/v1/tools", tool).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let tool_id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let agent = agent_with(
            &gw,
            json!({"model": "upstream/fake-tools", "tools": [tool_id]}),
        )
        .await;
        let evs = run_sse(
            &gw,
            &agent,
            json!({"message": "weather in Paris?", "stream": true}),
        )
        .await;
        assert_eq!(
            types(&evs),
            [
                "function_message",
                "function_message",
                "assistant_message",
                "usage",
                "done"
            ]
        );
        let f = &evs[0]["message"];
        assert_eq!(f["function"], name.as_str());
        assert_eq!(f["args"], json!({"expression": "6*7", "city": "Paris"}));
        assert_eq!(
            evs[1]["message"]["function"], "get_time",
            "the second, interleaved call"
        );
        if ok {
            assert_eq!(f["status"], "success");
            assert_eq!(f["result"], json!({"temp": 21}));
            assert_eq!(evs[2]["message"], "Tool said: {\"temp\":21}");
        } else {
            assert_eq!(f["status"], "error");
            let why = f["result"].as_str().unwrap();
            assert!(
                why.contains("500") && why.contains("webhook exploded"),
                "{why}"
            );
            assert!(evs[2]["message"]
                .as_str()
                .unwrap()
                .starts_with("Tool said: webhook answered 500"));
        }
        assert_eq!(evs[4]["stop_reason"], "end_turn");
        let run = wait_run(&gw, evs[0]["run_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "completed");
        assert_eq!(run["error_code"], Value::Null, "{run}");
    }
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2);
    assert!(bodies
        .iter()
        .all(|b| *b == json!({"expression": "6*7", "city": "Paris"})));
}

#[tokio::test]
async fn by_default_webhook_tools_cannot_reach_private_addresses() {
    let fp = FakeProvider::start().await;
    let hook = Webhook::start().await;
    let gw = with_provider_private(&fp, false).await;
    let port = hook.base.rsplit(':').next().unwrap().to_owned();
    // An IP literal (checked before the call) and a name that resolves to
    // loopback (checked by the resolver): neither is reached.
    for (i, url) in [
        format!("{}/ok", hook.base),
        format!("http://localhost:{port}/ok"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("weather_{i}");
        let tool = json!({"name": name, "description": "weather", "kind": "webhook", "url": url,
            "json_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
        let r = gw.post("/v1/tools", tool).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let tool_id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let agent = agent_with(
            &gw,
            json!({"model": "upstream/fake-tools", "tools": [tool_id]}),
        )
        .await;
        let evs = run_sse(
            &gw,
            &agent,
            json!({"message": "weather in Paris?", "stream": true}),
        )
        .await;
        let f = &evs[0]["message"];
        assert_eq!(f["function"], name.as_str(), "{url}");
        assert_eq!(f["status"], "error", "{url}: {f}");
        let why = f["result"].as_str().unwrap();
        assert!(
            why.contains("not public") && why.contains("--webhook-allow-private"),
            "{url}: {why}"
        );
        // The run goes on: the model sees the error and answers.
        assert_eq!(types(&evs).last().copied(), Some("done"));
        assert_eq!(evs.last().unwrap()["stop_reason"], "end_turn");
    }
    assert!(hook.bodies().is_empty(), "nothing reached the webhook");
}

#[tokio::test]
async fn upstream_model_streams_tool_calls_history_and_usage() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let agent = agent_with(
        &gw,
        json!({"model": "upstream/fake-tools", "tools": ["calculator"], "system": "be exact"}),
    )
    .await;
    let evs = run_sse(
        &gw,
        &agent,
        json!({"message": "6 times 7?", "stream": true, "stream_tokens": true}),
    )
    .await;
    assert_eq!(
        types(&evs),
        [
            "function_message",
            "function_message",
            "assistant_delta",
            "assistant_message",
            "usage",
            "done"
        ]
    );
    let calc = &evs[0]["message"];
    assert_eq!(calc["function"], "calculator");
    assert_eq!(calc["result"], 42);
    assert_eq!(calc["status"], "success");
    assert_eq!(evs[3]["message"], "Tool said: 42");
    // Usage summed over both model calls (11 + 2 each).
    assert_eq!(
        (
            evs[4]["prompt_tokens"].as_u64(),
            evs[4]["completion_tokens"].as_u64(),
            evs[4]["total_tokens"].as_u64()
        ),
        (Some(22), Some(4), Some(26))
    );
    let reqs = fp.requests();
    assert_eq!(reqs.len(), 2);
    // Both model calls carried the configured provider key.
    assert_eq!(
        fp.authorizations(),
        [
            Some("Bearer sk-fake".to_owned()),
            Some("Bearer sk-fake".to_owned())
        ]
    );
    let first = &reqs[0];
    assert_eq!(first["model"], "fake-tools");
    assert_eq!(first["stream"], true);
    assert_eq!(first["stream_options"]["include_usage"], true);
    assert_eq!(first["tools"][0]["function"]["name"], "calculator");
    assert_eq!(
        first["messages"],
        json!([{"role": "system", "content": "be exact"}, {"role": "user", "content": "6 times 7?"}])
    );
    let second = reqs[1]["messages"].as_array().unwrap();
    assert_eq!(second[2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        second[2]["tool_calls"][0]["function"]["arguments"],
        "{\"expression\":\"6*7\",\"city\":\"Paris\"}"
    );
    assert_eq!(
        second[3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "42"})
    );
    assert_eq!(second[4]["tool_call_id"], "call_2");

    // A second message: the model sees the session's history.
    let text = agent_with(&gw, json!({"model": "upstream/fake-text"})).await;
    run_sse(&gw, &text, json!({"message": "first", "stream": true})).await;
    let evs = run_sse(
        &gw,
        &text,
        json!({"message": "second", "stream": true, "stream_tokens": true}),
    )
    .await;
    assert_eq!(
        types(&evs),
        [
            "assistant_delta",
            "assistant_delta",
            "assistant_message",
            "usage",
            "done"
        ]
    );
    assert_eq!(evs[2]["message"], "Hello world");
    assert_eq!(evs[3]["total_tokens"], 13);
    let last = fp.requests().pop().unwrap();
    assert_eq!(
        last["messages"],
        json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Hello world"},
            {"role": "user", "content": "second"},
        ])
    );
}

#[tokio::test]
async fn upstream_failures_end_with_error_then_done() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    for (model, code, needle) in [
        ("fake-500", "upstream_error", "500"),
        ("fake-broken", "upstream_stream_error", "broke"),
        ("fake-stall", "upstream_timeout", "idle"),
    ] {
        let agent = agent_with(&gw, json!({"model": format!("upstream/{model}")})).await;
        let evs = run_sse(&gw, &agent, json!({"message": "hi", "stream": true})).await;
        let t = types(&evs);
        assert_eq!(&t[t.len() - 2..], ["error", "done"], "{model}: {t:?}");
        let err = &evs[evs.len() - 2];
        assert_eq!(err["code"], code, "{model}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{model}: {err}"
        );
        assert_eq!(evs.last().unwrap()["stop_reason"], "error");
        let run = wait_run(&gw, err["run_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "failed");
        assert_eq!(run["stop_reason"], "error");
        assert!(run["error"].as_str().is_some_and(|e| !e.is_empty()));
        // The run keeps its `error` event's code.
        assert_eq!(run["error_code"], code, "{model}: {run}");
    }
    // A provider that refuses connections.
    let refused = TestGateway::builder().provider_unreachable().spawn().await;
    let agent = agent_with(&refused, json!({"model": "upstream/m"})).await;
    let evs = run_sse(&refused, &agent, json!({"message": "hi", "stream": true})).await;
    let err = &evs[evs.len() - 2];
    assert_eq!(err["code"], "upstream_unavailable", "{err}");
    let run = wait_run(&refused, err["run_id"].as_str().unwrap()).await;
    assert_eq!(
        (&run["status"], &run["error_code"]),
        (&json!("failed"), &json!("upstream_unavailable")),
        "{run}"
    );
    // No provider configured: the agent's model is refused up front, as
    // a conflict between the agent and the gateway (the request is fine).
    let plain = spawn_gateway().await;
    let agent = agent_with(&plain, json!({"model": "upstream/x"})).await;
    let e = expect_error(
        send(&plain, &agent, json!({"message": "hi"})).await,
        409,
        "conflict",
    )
    .await;
    assert!(e["error"]["message"].as_str().unwrap().contains("provider"));
}

#[tokio::test]
async fn disconnect_cancels_the_upstream_request() {
    let slow = SlowRun::start("go").await;
    let (fp, gw, s) = (&slow.fp, &slow.gw, slow.stream);
    assert_eq!(slow.first.event, "assistant_delta");
    let run_id = slow.run_id;
    let left = std::time::Instant::now();
    drop(s);
    assert!(
        fp.hung_up_within(Duration::from_millis(500)).await,
        "the provider saw no hang-up"
    );
    eprintln!(
        "provider saw the hang-up {} ms after the client left",
        left.elapsed().as_millis()
    );
    assert_eq!(wait_run(gw, &run_id).await["status"], "cancelled");
    assert_eq!(fp.completed(), 0);
}

/// A streamed run on `upstream/fake-slow` (a chunk every 50 ms for ten
/// seconds), its first event read.
struct SlowRun {
    fp: FakeProvider,
    gw: TestGateway,
    agent: String,
    stream: EvStream,
    first: Ev,
    run_id: String,
}

impl SlowRun {
    async fn start(message: &str) -> Self {
        let fp = FakeProvider::start().await;
        let gw = with_provider(&fp).await;
        let agent = agent_with(&gw, json!({"model": "upstream/fake-slow"})).await;
        let body = json!({"message": message, "stream": true, "stream_tokens": true});
        let mut stream = sse(send(&gw, &agent, body).await);
        let first = next(&mut stream).await.expect("a first event");
        let run_id = first.data["run_id"].as_str().unwrap().to_owned();
        Self {
            fp,
            gw,
            agent,
            stream,
            first,
            run_id,
        }
    }
}

#[tokio::test]
async fn a_runs_opening_writes_are_stored_while_its_model_still_streams() {
    // The user message and the "run started" line are written beside the
    // first model call (issue 22), not after it: a client reading the
    // session or the logs during a long answer finds both.
    let slow = SlowRun::start("slowly, please").await;
    let (gw, agent, run_id) = (&slow.gw, &slow.agent, &slow.run_id);
    let list = |what: &'static str| {
        let path = format!("/v1/agents/{agent}/{what}?limit=1000");
        async move {
            get_json(gw, &path).await["data"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    let user_message_stored = eventually(|| async {
        list("messages")
            .await
            .iter()
            .any(|e| e["message_type"] == "user_message" && e["message"] == "slowly, please")
    })
    .await;
    assert!(user_message_stored, "the user message was not stored");
    let opening_line_stored = eventually(|| async {
        list("logs").await.iter().any(|l| {
            l["run_id"] == run_id.as_str()
                && l["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("run started")
        })
    })
    .await;
    assert!(opening_line_stored, "the run's opening line was not stored");
    // Both while the model still streams (fake-slow: ten seconds of chunks).
    let run = get_json(gw, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "running");
    assert_eq!(slow.fp.completed(), 0);
}
