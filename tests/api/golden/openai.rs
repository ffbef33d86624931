//! `openai.txt`: the OpenAI-compatible answers: `chat.completion` bodies and
//! `chat.completion.chunk` streams through `[DONE]` (with and without
//! `stream_options.include_usage`), from an agent and relayed from
//! `upstream/<model>` (the fake provider's bytes, untouched), an error
//! after the first byte of a stream (`data: {"error":…}` then `[DONE]`),
//! and `/v1/models`.

use serde_json::{json, Value};

use super::{
    check, main_key,
    transcript::{Key, Req},
    Transcript,
};
use crate::{common::TestGateway, fake_provider::FakeProvider, runs::with_provider};

const PATH: &str = "/v1/chat/completions";

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn streamed(mut body: Value, usage: bool) -> Value {
    body["stream"] = json!(true);
    if usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_openai_answers() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("/v1/chat/completions and /v1/models");
    t.section("an echo agent as a model");
    let agent = create(&mut t, &gw, &key, json!({"name": "golden-openai"})).await;
    agent_answers(&mut t, &gw, &key, &agent).await;
    relayed(&mut t, &gw, &key).await;
    t.section("GET /v1/models: the account's agents, then the provider's models");
    t.http(&gw, Req::get("/v1/models").key(&key)).await;
    check("openai.txt", t);
}

async fn create(t: &mut Transcript, gw: &TestGateway, key: &Key, body: Value) -> String {
    t.http(gw, Req::post("/v1/agents", &body).key(key))
        .await
        .str("id")
}

async fn post(t: &mut Transcript, gw: &TestGateway, key: &Key, body: Value) {
    t.http(gw, Req::post(PATH, &body).key(key)).await;
}

async fn agent_answers(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.section("an agent's chat.completion (only the last user message is new input)");
    let body = json!({"model": agent, "messages": [
        {"role": "system", "content": "ignored: the agent has its own"},
        {"role": "user", "content": "an earlier turn, ignored"},
        {"role": "user", "content": "hello there"},
    ]});
    post(t, gw, key, body).await;
    t.section("content as parts; a tool call inside the run");
    let parts = json!({"model": agent, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what time"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "is it?"}]}]});
    post(t, gw, key, parts).await;
    t.section("a session named by `user`");
    let mut body = ask(agent, "hello alice");
    body["user"] = json!("alice");
    post(t, gw, key, body).await;
    t.http(
        gw,
        Req::get(format!("/v1/agents/{agent}/sessions")).key(key),
    )
    .await;
    t.section("chat.completion.chunk stream, without and with include_usage");
    for usage in [false, true] {
        post(t, gw, key, streamed(ask(agent, "hello there"), usage)).await;
    }
    t.section("finish_reason length: an agent stopped by max_steps (no reply)");
    let body = json!({"name": "golden-openai-max", "metadata": {"max_steps": 1}});
    let max = create(t, gw, key, body).await;
    post(t, gw, key, ask(&max, "what time is it?")).await;
    post(t, gw, key, streamed(ask(&max, "what time is it?"), true)).await;
    t.section("an agent whose run fails: the stream's error after the first byte, then [DONE]");
    let body = json!({"name": "golden-openai-fails", "model": "upstream/fake-500"});
    let fails = create(t, gw, key, body).await;
    post(t, gw, key, streamed(ask(&fails, "hi"), true)).await;
}

async fn relayed(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("upstream/fake-text relayed: the provider's bytes as they came");
    post(t, gw, key, ask("upstream/fake-text", "hi")).await;
    for usage in [false, true] {
        post(t, gw, key, streamed(ask("upstream/fake-text", "hi"), usage)).await;
    }
    t.section("upstream/fake-tools relayed: tool call chunks");
    let mut body = streamed(ask("upstream/fake-tools", "hi"), false);
    body["tools"] = json!([{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]);
    post(t, gw, key, body).await;
    t.section("relayed streams that fail after the first byte: broken, then silent (1 s)");
    for model in ["upstream/fake-broken", "upstream/fake-stall"] {
        post(t, gw, key, streamed(ask(model, "hi"), false)).await;
    }
}
