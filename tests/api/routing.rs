//! Issue 19 end to end: routes over two real fake providers (tests/api/
//! fake_provider.rs), through the real gateway. Each failure the fakes can
//! produce (500, 429 + Retry-After, a stall before the first byte, a stream
//! dropped after two chunks, malformed SSE) ends as protocol/providers.md
//! says, and every streamed answer is valid SSE ending with `[DONE]`.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use weir::{config::ServeConfig, providers::ProvidersConfig};

use crate::{
    common::{mint, Api, TestGateway},
    fake_provider::{FakeProvider, PART, TEXT_COMPLETION},
};

/// A gateway with providers `a` and `b` (one fake each) and `routes`
/// (TOML `[[routes]]` tables); `a_extra` is added to provider `a`'s table.
pub async fn gateway(
    a: &FakeProvider,
    b: &FakeProvider,
    a_extra: &str,
    routes: &str,
) -> TestGateway {
    let toml = format!(
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-a\"\n{a_extra}\n\
         [[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-b\"\n\n{routes}",
        a.url, b.url
    );
    let lists = ProvidersConfig::from_toml(&toml).expect("valid lists");
    TestGateway::builder()
        .config(move |c: &mut ServeConfig| c.providers = lists)
        .spawn()
        .await
}

pub fn route(name: &str, a_model: &str, b_model: &str, mid_stream: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmid_stream = \"{mid_stream}\"\n\
         targets = [{{ provider = \"a\", model = \"{a_model}\" }}, {{ provider = \"b\", model = \"{b_model}\", weight = 0 }}]\n"
    )
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// The `data:` payloads of a stream, each as JSON (`[DONE]` as a string).
pub(crate) async fn chunks(resp: Response) -> Vec<Value> {
    let mut s = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a chunk within 10 s")
    {
        let ev = ev.expect("well-formed SSE");
        out.push(match ev.data.as_str() {
            "[DONE]" => json!("[DONE]"),
            d => serde_json::from_str(d).expect("every data line is JSON"),
        });
    }
    assert_eq!(out.last(), Some(&json!("[DONE]")), "{out:?}");
    out
}

/// The content deltas of `chunks`, joined.
pub(crate) fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

fn provider_of(r: &Response) -> &str {
    r.headers()["x-weir-provider"].to_str().unwrap()
}

#[tokio::test]
async fn a_500_falls_back_to_the_next_target_and_the_answer_names_it() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let gw = gateway(&a, &b, "", &route("fast", "fake-500", "fake-text", "error")).await;
    let r = gw.post("/v1/chat/completions", ask("fast", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(provider_of(&r), "b");
    assert_eq!(r.text().await.unwrap(), TEXT_COMPLETION);
    // `upstream/<route>` is the same route; streamed, it is one clean answer.
    let r = gw
        .post("/v1/chat/completions", ask("upstream/fast", true))
        .await;
    assert_eq!(provider_of(&r), "b");
    let got = chunks(r).await;
    assert_eq!(text_of(&got), "Hello world");
    assert!(got.iter().all(|c| c.get("error").is_none()));
    assert_eq!(a.requests().len(), 2);
    assert!(a.requests().iter().all(|r| r["model"] == "fake-500"));
    assert!(b.requests().iter().all(|r| r["model"] == "fake-text"));
    assert_eq!(b.authorizations()[0].as_deref(), Some("Bearer sk-b"));
    // /v1/models lists the route.
    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "fast"),
        "{models}"
    );
}

#[tokio::test]
async fn a_429_cools_its_provider_down_for_its_retry_after() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = route("fast", "fake-429", "fake-text", "error")
        + "[[routes]]\nname = \"only-a\"\ntargets = [{ provider = \"a\", model = \"fake-429\" }]\n";
    let gw = gateway(&a, &b, "", &routes).await;
    let r = gw.post("/v1/chat/completions", ask("fast", false)).await;
    assert_eq!((r.status().as_u16(), provider_of(&r)), (200, "b"));
    // `a` asked for 30 s: the next requests do not go to it at all.
    let r = gw.post("/v1/chat/completions", ask("fast", true)).await;
    assert_eq!(provider_of(&r), "b");
    chunks(r).await;
    assert_eq!(a.requests().len(), 1, "a is cooling down");
    let r = gw.post("/v1/chat/completions", ask("only-a", false)).await;
    assert_eq!(r.status(), 503, "every target is cooling down");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(a.requests().len(), 1);
}

#[tokio::test]
async fn the_last_429_goes_back_to_the_caller_with_its_retry_after() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes =
        "[[routes]]\nname = \"only-a\"\ntargets = [{ provider = \"a\", model = \"fake-429\" }]\n";
    let gw = gateway(&a, &b, "", routes).await;
    let r = gw.post("/v1/chat/completions", ask("only-a", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(provider_of_or_none(&r), None);
    assert_eq!(r.headers()["retry-after"], "30");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

fn provider_of_or_none(r: &Response) -> Option<&str> {
    r.headers()
        .get("x-weir-provider")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_stall_before_the_first_byte_moves_to_the_next_target() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = route("fast", "fake-stall-first", "fake-text", "error");
    let gw = gateway(&a, &b, "first_token_timeout_secs = 1", &routes).await;
    let r = gw.post("/v1/chat/completions", ask("fast", true)).await;
    assert_eq!((r.status().as_u16(), provider_of(&r)), (200, "b"));
    assert_eq!(text_of(&chunks(r).await), "Hello world");
    assert!(
        a.hung_up_within(Duration::from_secs(5)).await,
        "the stalled request is closed"
    );
}

#[tokio::test]
async fn mid_stream_error_ends_with_an_error_line_then_done() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = route("fast", "fake-drop", "fake-text", "error")
        + &route("bad", "fake-malformed", "fake-text", "error");
    let gw = gateway(&a, &b, "", &routes).await;
    for (model, text) in [("fast", PART[..2].concat()), ("bad", "Hi".to_owned())] {
        let r = gw.post("/v1/chat/completions", ask(model, true)).await;
        assert_eq!(provider_of(&r), "a");
        let got = chunks(r).await;
        assert_eq!(text_of(&got), text);
        let err = &got[got.len() - 2]["error"];
        assert_eq!(err["code"], "upstream_stream_error", "{got:?}");
    }
    assert!(
        b.requests().is_empty(),
        "no second target with mid_stream = error"
    );
}

#[tokio::test]
async fn mid_stream_continue_splices_one_completion_from_two_providers() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let gw = gateway(
        &a,
        &b,
        "",
        &route("fast", "fake-drop", "fake-text", "continue"),
    )
    .await;
    let r = gw.post("/v1/chat/completions", ask("fast", true)).await;
    assert_eq!(provider_of(&r), "a", "the header names who started");
    let got = chunks(r).await;
    let body: Vec<&Value> = got.iter().filter(|c| c.is_object()).collect();
    assert!(body.iter().all(|c| c.get("error").is_none()), "{got:?}");
    assert!(
        body.iter()
            .all(|c| c["id"] == "chatcmpl-drop" && c["model"] == "fake-drop"),
        "{got:?}"
    );
    assert_eq!(text_of(&got), format!("{}Hello world", PART[..2].concat()));
    let roles = body
        .iter()
        .filter(|c| c.pointer("/choices/0/delta/role").is_some())
        .count();
    assert_eq!(roles, 1, "one assistant role across the switch");
    // `b` was asked to continue the text `a` had streamed.
    let sent = b.requests().pop().unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"role": "assistant", "content": PART[..2].concat()})
    );
    assert!(
        body.iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "no usage chunk the client did not ask for"
    );
}

#[tokio::test]
async fn the_circuit_opens_after_consecutive_failures_and_shows_in_providers() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = route("fast", "fake-500", "fake-text", "error");
    let gw = gateway(&a, &b, "breaker_failures = 2", &routes).await;
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", ask("fast", false)).await;
        assert_eq!((r.status().as_u16(), provider_of(&r)), (200, "b"));
    }
    assert_eq!(a.requests().len(), 2, "skipped once its circuit opened");
    // Only an operator key (minted as `weir keys create` does) may look.
    let r = gw.get("/v1/providers").await;
    assert_eq!(r.status(), 403, "`*` does not include `providers`");
    let (_, operator) = mint(gw.store.as_ref(), "default", &["providers"], 100).await;
    let r = gw
        .req_as(&operator, Method::GET, "/v1/providers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    crate::protocol::assert_valid("providers.json", &list);
    let a_state = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a_state["circuit"], "open", "{list}");
    assert_eq!(a_state["consecutive_failures"], 2);
    assert!(a_state["open_for_secs"]
        .as_u64()
        .is_some_and(|s| s > 0 && s <= 30));
    assert!(!list.to_string().contains("sk-a"), "no key in the list");
    let metrics = gw.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("weir_provider_circuit{provider=\"a\"}"),
        "{metrics}"
    );
    // The API cannot grant the operator scope, not even to itself.
    let r = gw.post("/v1/keys", json!({"scopes": ["providers"]})).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn relayed_usage_is_recorded_under_the_provider_that_served_it() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let gw = gateway(&a, &b, "", &route("fast", "fake-500", "fake-text", "error")).await;
    let mut body = ask("fast", true);
    body["stream_options"] = json!({"include_usage": true});
    chunks(gw.post("/v1/chat/completions", body).await).await;
    let line = crate::common::poll(Duration::from_secs(10), || async {
        let page: Value = gw
            .get("/v1/usage?group_by=provider")
            .await
            .json()
            .await
            .ok()?;
        let data = page["data"].as_array()?.clone();
        data.into_iter()
            .find(|l| l["value"] == "b" && l["completion_tokens"].as_i64() > Some(0))
    })
    .await
    .expect("a usage line for provider b");
    assert_eq!(
        (
            line["prompt_tokens"].as_i64(),
            line["completion_tokens"].as_i64()
        ),
        (Some(11), Some(2)),
        "the provider's own count"
    );
}

#[tokio::test]
async fn an_agent_on_upstream_route_falls_back_as_the_relay_does() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let gw = gateway(&a, &b, "", &route("fast", "fake-500", "fake-text", "error")).await;
    let agent = crate::runs::agent_with(&gw, json!({"model": "upstream/fast"})).await;
    let evs = crate::runs::run_sse(&gw, &agent, json!({"message": "hi", "stream": true})).await;
    let message = evs
        .iter()
        .find(|e| e["message_type"] == "assistant_message")
        .expect("an answer");
    assert_eq!(message["message"], "Hello world", "{evs:?}");
    assert_eq!(a.requests().len(), 1);
    assert_eq!(b.requests()[0]["model"], "fake-text");
}

#[tokio::test]
async fn a_key_limited_to_some_models_uses_and_sees_only_those_routes() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = route("fast", "fake-text", "fake-text", "error")
        + &route("other", "fake-text", "fake-text", "error");
    let gw = gateway(&a, &b, "", &routes).await;
    let key = gw
        .create_key(json!({"scopes": ["chat"], "models": ["fast"]}))
        .await;
    for (model, status) in [("fast", 200), ("upstream/fast", 200), ("other", 404)] {
        let r = gw
            .req_as(&key, Method::POST, "/v1/chat/completions")
            .json(&ask(model, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{model}");
    }
    let models: Value = gw
        .req_as(&key, Method::GET, "/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["fast"], "{models}");
}

#[tokio::test]
async fn a_hang_up_after_a_switch_reaches_the_provider_then_serving() {
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let gw = gateway(
        &a,
        &b,
        "",
        &route("fast", "fake-drop", "fake-slow", "continue"),
    )
    .await;
    let r = gw.post("/v1/chat/completions", ask("fast", true)).await;
    let mut s = r.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("t1 ") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("b streams")
            .expect("not the end")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(s);
    assert!(
        b.hung_up_within(Duration::from_secs(5)).await,
        "b's request was closed"
    );
    assert_eq!(b.completed(), 0);
}
