//! The Anthropic translation against a real local Messages server
//! ([`FakeAnthropic`]): requests built by `request_from_openai` with
//! `headers()`, sent over HTTP, and its SSE read by an EventSource parser and
//! fed to `StreamTranslator`, as the relay does.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use weir::providers::anthropic::{
    headers, request_from_openai, response_to_openai, AnthropicError, StreamTranslator,
    MESSAGES_PATH,
};

use crate::common::{anthropic::PART, eventually, sse, FakeAnthropic};

async fn send(fake: &FakeAnthropic, openai: Value) -> reqwest::Response {
    let model = openai["model"].as_str().unwrap().to_owned();
    let body = request_from_openai(&openai, &model).expect("translatable");
    let mut req = reqwest::Client::new()
        .post(format!("{}{MESSAGES_PATH}", fake.url))
        .json(&body);
    for (name, value) in headers("sk-ant-test").unwrap() {
        req = req.header(name, value);
    }
    req.send().await.expect("the fake answers")
}

/// Every chunk of a streamed answer, and how the stream ended.
async fn translate(r: reqwest::Response) -> (Vec<Value>, StreamTranslator, Option<AnthropicError>) {
    assert_eq!(r.status(), 200);
    let mut t = StreamTranslator::new("chatcmpl-x".into(), "upstream/c".into(), 1, true);
    let mut chunks = Vec::new();
    let mut events = Box::pin(r.bytes_stream().eventsource());
    while let Some(Ok(e)) = tokio::time::timeout(sse::WAIT, events.next())
        .await
        .expect("in time")
    {
        match t.on_event(&e.event, &e.data) {
            Ok(c) => chunks.extend(c),
            Err(err) => return (chunks, t, Some(err)),
        }
    }
    (chunks, t, None)
}

fn contents(chunks: &[Value]) -> String {
    let text = |c: &Value| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .map(str::to_owned)
    };
    chunks.iter().filter_map(text).collect()
}

fn chat(model: &str, messages: Value) -> Value {
    json!({"model": model, "messages": messages, "stream": true, "stream_options": {"include_usage": true}})
}

#[tokio::test]
async fn text_streams_as_chunks_with_usage() {
    let fake = FakeAnthropic::start().await;
    let r = send(
        &fake,
        chat(
            "claude-text",
            json!([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]),
        ),
    )
    .await;
    let (chunks, t, err) = translate(r).await;
    assert_eq!(err, None);
    assert!(t.done());
    assert_eq!(contents(&chunks), "Hello world");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13})
    );
    assert_eq!(fake.header("x-api-key"), [Some("sk-ant-test".into())]);
    assert_eq!(
        fake.header("anthropic-version"),
        [Some("2023-06-01".into())]
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent["system"], "S");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(fake.completed(), 1);
}

#[tokio::test]
async fn a_prefill_is_continued() {
    let fake = FakeAnthropic::start().await;
    let messages =
        json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]);
    let (chunks, t, _) = translate(send(&fake, chat("claude-text", messages)).await).await;
    assert!(t.done());
    assert_eq!(contents(&chunks), " world");
}

#[tokio::test]
async fn tool_use_round_trip() {
    let fake = FakeAnthropic::start().await;
    let tools = json!([{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]);
    let mut req = chat("claude-tools", json!([{"role": "user", "content": "6*7?"}]));
    req["tools"] = tools.clone();
    let (chunks, _, err) = translate(send(&fake, req).await).await;
    assert_eq!(err, None);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "toolu_fake1");
    assert_eq!(calls[0][0]["function"]["name"], "calc");
    let args: String = calls
        .iter()
        .map(|c| c[0]["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"expression": "6*7"})
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");

    let mut next = chat(
        "claude-tools",
        json!([
            {"role": "user", "content": "6*7?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_fake1", "type": "function", "function": {"name": "calc", "arguments": args}}]},
            {"role": "tool", "tool_call_id": "toolu_fake1", "content": "42"}
        ]),
    );
    next["tools"] = tools;
    let (chunks, _, _) = translate(send(&fake, next).await).await;
    assert_eq!(contents(&chunks), "Tool said: 42");
}

#[tokio::test]
async fn non_streamed_answers_translate() {
    let fake = FakeAnthropic::start().await;
    let mut req = chat("claude-text", json!([{"role": "user", "content": "Hi"}]));
    req["stream"] = false.into();
    let r = send(&fake, req).await;
    assert_eq!(r.status(), 200);
    let out = response_to_openai(&r.json().await.unwrap(), "chatcmpl-y", "upstream/c", 5).unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(out["usage"]["total_tokens"], 13);
}

#[tokio::test]
async fn errors_before_the_stream_keep_their_type_and_status() {
    let fake = FakeAnthropic::start().await;
    let table = [
        ("claude-500", 500, "api_error"),
        ("claude-529", 529, "overloaded_error"),
        ("claude-429", 429, "rate_limit_error"),
        ("claude-nope", 404, "not_found_error"),
    ];
    for (model, status, kind) in table {
        let r = send(&fake, chat(model, json!([]))).await;
        assert_eq!(r.status().as_u16(), status, "{model}");
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(retry.is_some(), model == "claude-429", "{model}");
        let err = AnthropicError::from_body(&r.json().await.unwrap());
        assert!(
            matches!(&err, AnthropicError::Upstream { kind: k, .. } if k == kind),
            "{model}: {err:?}"
        );
        assert_eq!(err.status().as_u16(), status);
    }
    let r = reqwest::Client::new()
        .post(format!("{}{MESSAGES_PATH}", fake.url))
        .json(&json!({"model": "claude-text", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no x-api-key");
}

#[tokio::test]
async fn failures_after_the_200_are_seen() {
    let fake = FakeAnthropic::start().await;
    let (chunks, t, err) =
        translate(send(&fake, chat("claude-overloaded-mid", json!([]))).await).await;
    assert_eq!(contents(&chunks), "Hel");
    assert_eq!(
        err,
        Some(AnthropicError::Upstream {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        })
    );
    assert!(!t.done());

    let (chunks, t, err) = translate(send(&fake, chat("claude-drop", json!([]))).await).await;
    assert_eq!(
        contents(&chunks),
        PART.concat(),
        "every piece before the break"
    );
    assert_eq!(err, None, "a broken connection, not an error event");
    assert!(!t.done(), "no message_stop: the relay must not end cleanly");

    let (_, t, err) = translate(send(&fake, chat("claude-malformed", json!([]))).await).await;
    assert!(matches!(err, Some(AnthropicError::Malformed(_))), "{err:?}");
    assert!(!t.done());
}

#[tokio::test]
async fn a_stalled_stream_counts_the_hang_up() {
    let fake = FakeAnthropic::start().await;
    let r = send(&fake, chat("claude-stall", json!([]))).await;
    let mut events = Box::pin(r.bytes_stream().eventsource());
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.event, "message_start");
    drop(events);
    assert!(eventually(|| async { fake.hangups() == 1 }).await);
}
