//! `events_endings.txt`: every other way a run goes and ends, each as the
//! POST's SSE stream: `done` with `max_steps` and `cancelled`, an upstream
//! model's token deltas, `function_message` with `status: "error"` (a
//! webhook that fails, one the SSRF guard refuses), a tool skipped with a
//! `warn` log line, and `error` + `done` (`error`) for each upstream
//! failure: a 500, a broken stream, an idle stream, no provider at all; with
//! the log pages (info, warn, error lines) and the failed run's record.
//!
//! Not reachable from a client: the `error` codes `internal_error` (a panic
//! in a run), `model_error` (a model stream that ends without an answer),
//! `unavailable` (event delivery failed), `interrupted` (a run settled after
//! its gateway crashed) and `model_unavailable` (only with the Redis queue).

use serde_json::{json, Value};

use super::{
    check, field, main_key, quietly, settled,
    transcript::{Key, Open, Req},
    Transcript,
};
use crate::{
    common::TestGateway,
    fake_provider::{FakeProvider, Webhook},
    runs::{with_provider, with_provider_private},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_every_way_a_run_ends() {
    let fp = FakeProvider::start().await;
    let hook = Webhook::start().await;
    let gw = with_provider(&fp).await;
    let key = main_key(&gw).await;
    let mut t = Transcript::new("every way a run ends, tool errors, log levels");
    t.section("done with max_steps: an echo agent allowed one model call asks for the time");
    let agent = create(
        &mut t,
        &gw,
        &key,
        json!({"name": "golden-max", "metadata": {"max_steps": 1}}),
    )
    .await;
    run(&mut t, &gw, &key, &agent, "what time is it?").await;
    logs(&mut t, &gw, &key, &agent).await;
    cancelled(&mut t, &gw, &key).await;
    t.section("an upstream model's token deltas");
    let agent = create(
        &mut t,
        &gw,
        &key,
        json!({"name": "golden-up", "model": "upstream/fake-text"}),
    )
    .await;
    run(&mut t, &gw, &key, &agent, "hi").await;
    tools(&mut t, &gw, &key, &hook).await;
    for (model, what) in [
        ("fake-500", "the provider answers 500"),
        ("fake-broken", "the provider's stream breaks"),
        (
            "fake-stall",
            "the provider goes silent (idle timeout of 1 s)",
        ),
    ] {
        t.section(&format!("error then done (error): {what}"));
        let body = json!({"name": format!("golden-{model}"), "model": format!("upstream/{model}")});
        let agent = create(&mut t, &gw, &key, body).await;
        let frames = run(&mut t, &gw, &key, &agent, "hi").await;
        if model == "fake-500" {
            logs(&mut t, &gw, &key, &agent).await;
            let run_id = field(&frames[0], "run_id");
            let path = format!("/v1/runs/{}", run_id.as_str().expect("run id"));
            t.http(&gw, Req::get(path).key(&key)).await;
        }
    }
    unreachable_provider(&mut t).await;
    refused_webhook(&mut t, &fp, &hook).await;
    check("events_endings.txt", t);
}

async fn create(t: &mut Transcript, gw: &TestGateway, key: &Key, body: Value) -> String {
    t.http(gw, Req::post("/v1/agents", &body).key(key))
        .await
        .str("id")
}

/// A streamed run with token deltas, recorded whole; its frames. Its
/// replay from the store must be the same bytes (checked, not recorded).
async fn run(
    t: &mut Transcript,
    gw: &TestGateway,
    key: &Key,
    agent: &str,
    text: &str,
) -> Vec<String> {
    let body = json!({"message": text, "stream": true, "stream_tokens": true});
    let req = Req::post(format!("/v1/agents/{agent}/messages"), &body).key(key);
    let frames = super::transcript::frames(&t.http(gw, req).await.body);
    settled(gw, key, agent, 1).await;
    let run = field(&frames[0], "run_id");
    let path = format!("/v1/runs/{}/stream", run.as_str().expect("run id"));
    let replay = quietly(gw, Req::get(path).key(key)).await;
    assert_eq!(
        super::transcript::frames(&replay.body),
        frames,
        "the replay from the store is the live stream, byte for byte"
    );
    frames
}

async fn logs(t: &mut Transcript, gw: &TestGateway, key: &Key, agent: &str) {
    t.http(gw, Req::get(format!("/v1/agents/{agent}/logs")).key(key))
        .await;
}

async fn cancelled(t: &mut Transcript, gw: &TestGateway, key: &Key) {
    t.section("done with cancelled: POST /v1/runs/{id}/cancel during a slow run");
    let body = json!({"name": "golden-slow", "metadata": {"echo_delay_ms": 5000}});
    let agent = create(t, gw, key, body).await;
    let body = json!({"message": "hello there", "stream": true, "stream_tokens": true});
    let req = Req::post(format!("/v1/agents/{agent}/messages"), &body).key(key);
    let mut posted = Open::new(gw, req).await;
    posted
        .until(|s| s.contains("event: internal_monologue\n"))
        .await;
    let run = field(&posted.frames()[0], "run_id");
    let run = run.as_str().expect("run id").to_owned();
    let cancel = format!("/v1/runs/{run}/cancel");
    t.note("the run's stream, opened first, had its internal_monologue when this cancel went:");
    t.http(gw, Req::post(&cancel, &json!({})).key(key)).await;
    posted.read_to_end().await;
    t.stream(&posted);
    t.note("cancelling a run that is over answers it unchanged:");
    t.http(gw, Req::post(&cancel, &json!({})).key(key)).await;
    settled(gw, key, &agent, 1).await;
    let replay = quietly(gw, Req::get(format!("/v1/runs/{run}/stream")).key(key)).await;
    let replay = super::transcript::frames(&replay.body);
    assert_eq!(
        replay,
        posted.frames(),
        "a cancelled run replays as it streamed"
    );
    logs(t, gw, key, &agent).await;
}

async fn tools(t: &mut Transcript, gw: &TestGateway, key: &Key, hook: &Webhook) {
    t.section("function_message with status error: a webhook answering 500, then get_time");
    let body = json!({"name": "failing_hook", "description": "always fails", "url": format!("{}/fail", hook.base),
        "json_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let tool = t
        .http(gw, Req::post("/v1/tools", &body).key(key))
        .await
        .str("id");
    let body = json!({"name": "golden-tools", "model": "upstream/fake-tools", "tools": [tool]});
    let agent = create(t, gw, key, body).await;
    run(t, gw, key, &agent, "weather in Paris?").await;
    logs(t, gw, key, &agent).await;
    t.section("a tool deleted after the agent named it: skipped, with a warn log line");
    let body = json!({"name": "gone", "kind": "builtin"});
    let tool = t
        .http(gw, Req::post("/v1/tools", &body).key(key))
        .await
        .str("id");
    let agent = create(t, gw, key, json!({"name": "golden-gone", "tools": [tool]})).await;
    let delete = Req::new(reqwest::Method::DELETE, format!("/v1/tools/{tool}"));
    t.http(gw, delete.key(key)).await;
    run(t, gw, key, &agent, "hi").await;
    logs(t, gw, key, &agent).await;
}

async fn unreachable_provider(t: &mut Transcript) {
    t.section("error then done (error): the provider refuses connections");
    let gw = TestGateway::builder().provider_unreachable().spawn().await;
    let key = main_key(&gw).await;
    let agent = create(
        t,
        &gw,
        &key,
        json!({"name": "golden-nowhere", "model": "upstream/m"}),
    )
    .await;
    run(t, &gw, &key, &agent, "hi").await;
}

async fn refused_webhook(t: &mut Transcript, fp: &FakeProvider, hook: &Webhook) {
    t.section("function_message with status error: a webhook on a private address, refused");
    let gw = with_provider_private(fp, false).await;
    let key = main_key(&gw).await;
    let body = json!({"name": "private_hook", "url": format!("{}/ok", hook.base)});
    let tool = t
        .http(&gw, Req::post("/v1/tools", &body).key(&key))
        .await
        .str("id");
    let body = json!({"name": "golden-private", "model": "upstream/fake-tools", "tools": [tool]});
    let agent = create(t, &gw, &key, body).await;
    run(t, &gw, &key, &agent, "weather in Paris?").await;
    assert_eq!(
        hook.bodies().len(),
        1,
        "only the first gateway's webhook was called"
    );
}
