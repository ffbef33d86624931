//! `kind = "anthropic"` through the gateway: a route to the real local
//! Messages server ([`FakeAnthropic`]) answers ordinary OpenAI chunks, tool
//! calls and usage included, and takes part in fallback and `mid_stream`
//! with OpenAI-compatible providers (protocol/providers.md).

use reqwest::Response;
use serde_json::{json, Value};
use weir::{config::ServeConfig, providers::ProvidersConfig};

use crate::{
    common::{Api, FakeAnthropic, TestGateway},
    fake_provider::{FakeProvider, PART},
    routing::text_of,
};

/// A gateway with provider `claude` (the fake Messages server) and `oai`
/// (the fake OpenAI one), and `routes`.
async fn gateway(claude: &FakeAnthropic, oai: &FakeProvider, routes: &str) -> TestGateway {
    let toml = format!(
        "[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-test\"\n\n\
         [[providers]]\nname = \"oai\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n{routes}",
        claude.url, oai.url
    );
    let lists = ProvidersConfig::from_toml(&toml).expect("valid lists");
    TestGateway::builder()
        .config(move |c: &mut ServeConfig| c.providers = lists)
        .spawn()
        .await
}

/// A 200's chunks (routing.rs's reader).
async fn chunks(resp: Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    crate::routing::chunks(resp).await
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn an_anthropic_route_answers_openai_chunks_with_usage() {
    let (claude, oai) = (FakeAnthropic::start().await, FakeProvider::start().await);
    let gw = gateway(&claude, &oai, "[[routes]]\nname = \"claude\"\ntargets = [{ provider = \"claude\", model = \"claude-text\" }]\n").await;
    let r = gw.post("/v1/chat/completions", ask("claude", true)).await;
    assert_eq!(r.headers()["x-weir-provider"], "claude");
    let got = chunks(r).await;
    assert_eq!(text_of(&got), "Hello world");
    let body: Vec<&Value> = got.iter().filter(|c| c.is_object()).collect();
    assert!(body
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == body[0]["id"]));
    let usage = body
        .iter()
        .find_map(|c| c.get("usage").filter(|u| u.is_object()))
        .expect("usage");
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(11), Some(2))
    );
    let sent = claude.requests().pop().unwrap();
    assert_eq!(sent["model"], "claude-text");
    assert_eq!(sent["system"], "be brief", "{sent}");
    assert_eq!(
        claude.header("x-api-key")[0].as_deref(),
        Some("sk-ant-test")
    );
    // Non-streamed: one chat.completion.
    let r = gw.post("/v1/chat/completions", ask("claude", false)).await;
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["message"]["content"], "Hello world");
}

#[tokio::test]
async fn anthropic_tool_calls_arrive_as_openai_tool_call_chunks() {
    let (claude, oai) = (FakeAnthropic::start().await, FakeProvider::start().await);
    let gw = gateway(&claude, &oai, "[[routes]]\nname = \"t\"\ntargets = [{ provider = \"claude\", model = \"claude-tools\" }]\n").await;
    let mut body = ask("t", true);
    body["tools"] = json!([{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]);
    let got = chunks(gw.post("/v1/chat/completions", body).await).await;
    let args: String = got
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"expression": "6*7"})
    );
    let finish = got.iter().find_map(|c| {
        c.pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
    });
    assert_eq!(finish, Some("tool_calls"));
}

#[tokio::test]
async fn an_anthropic_failure_falls_back_and_an_error_after_200_is_an_error_line() {
    let (claude, oai) = (FakeAnthropic::start().await, FakeProvider::start().await);
    let routes = "[[routes]]\nname = \"f\"\ntargets = [{ provider = \"claude\", model = \"claude-529\" }, { provider = \"oai\", model = \"fake-text\" }]\n\
        [[routes]]\nname = \"mid\"\ntargets = [{ provider = \"claude\", model = \"claude-overloaded-mid\" }, { provider = \"oai\", model = \"fake-text\" }]\n\
        [[routes]]\nname = \"bad\"\ntargets = [{ provider = \"claude\", model = \"claude-text\" }]\n";
    let gw = gateway(&claude, &oai, routes).await;
    let r = gw.post("/v1/chat/completions", ask("f", true)).await;
    assert_eq!(r.headers()["x-weir-provider"], "oai", "529 moved on");
    assert_eq!(text_of(&chunks(r).await), "Hello world");
    let got = chunks(gw.post("/v1/chat/completions", ask("mid", true)).await).await;
    let err = &got[got.len() - 2]["error"];
    assert_eq!(err["code"], "upstream_stream_error", "{got:?}");
    assert!(
        err["message"].as_str().unwrap().contains("overloaded"),
        "{err}"
    );
    // A request Anthropic cannot take is the caller's 400, before any send.
    let mut odd = ask("bad", false);
    odd["tools"] = json!("not a list");
    let sent = claude.requests().len();
    let r = gw.post("/v1/chat/completions", odd).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "tools", "{e}");
    assert_eq!(claude.requests().len(), sent, "nothing was sent");
}

#[tokio::test]
async fn an_openai_stream_cut_halfway_is_finished_by_anthropic() {
    let (claude, oai) = (FakeAnthropic::start().await, FakeProvider::start().await);
    let routes = "[[routes]]\nname = \"c\"\nmid_stream = \"continue\"\n\
        targets = [{ provider = \"oai\", model = \"fake-drop\" }, { provider = \"claude\", model = \"claude-text\", weight = 0 }]\n";
    let gw = gateway(&claude, &oai, routes).await;
    let got = chunks(gw.post("/v1/chat/completions", ask("c", true)).await).await;
    let body: Vec<&Value> = got.iter().filter(|c| c.is_object()).collect();
    assert!(
        body.iter()
            .all(|c| c.get("error").is_none() && c["id"] == "chatcmpl-drop"),
        "{got:?}"
    );
    assert_eq!(text_of(&got), format!("{}Hello world", PART[..2].concat()));
    let sent = claude.requests().pop().unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant", "the prefill: {sent}");
}
